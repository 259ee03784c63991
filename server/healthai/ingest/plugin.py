"""The Ingest service as a server plugin: owns the normalize context, the store and surveillance.

Health ``healthai.v1.Ingest`` is NOT_SERVING from a store write error until the next commit succeeds
(the SDK retries UNAVAILABLE, so a retried batch is what brings it back)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import grpc

from healthai.app.settings import Settings
from healthai.ingest.key_check import check_store_key
from healthai.ingest.service import IngestCore, IngestServicer
from healthai.normalize.context import NormalizeContext
from healthai.store import ParquetStore
from healthai.surveillance import SurveillanceCounts
from healthai.surveillance.syndrome_file import load_syndromes
from healthai.v1 import ingest_pb2, ingest_pb2_grpc

if TYPE_CHECKING:
    from healthai.app.server import ServiceHealth

log = logging.getLogger(__name__)

SERVICE_NAME = ingest_pb2.DESCRIPTOR.services_by_name["Ingest"].full_name  # "healthai.v1.Ingest"


class IngestPlugin:
    """Builds everything at construction (a missing key or bad map fails start-up early);
    ``start`` opens the store (rebuilding its idempotency index), ``stop`` closes it."""

    service_names = (SERVICE_NAME,)

    def __init__(self, settings: Settings, ctx: NormalizeContext | None = None) -> None:
        self.settings = settings
        self._key_is_random = ctx is None and settings.random_key()
        self.ctx = ctx or NormalizeContext.create(
            key=settings.pseudonym_key(),
            snomed_map_nlm=settings.snomed_map_nlm,
            omop_concept=settings.omop_concept,
            omop_relationship=settings.omop_concept_relationship,
            date_policy=settings.date_policy,
            reference_date=settings.latest_event_date,
            code_systems=settings.code_systems,
        )
        self.store = ParquetStore(settings.store_uri)
        self.surveillance = SurveillanceCounts(self.store, syndromes=load_syndromes(settings.syndromes_file))
        self.core = IngestCore(self.ctx, self.store, settings.max_records_per_request,
                               max_response_bytes=settings.max_message_bytes - 1024)

    def bind_health(self, health: ServiceHealth) -> None:
        def report(writable: bool, reason: str) -> None:
            health.set_ready(SERVICE_NAME, writable, reason)

        self.core.on_store_writable = report

    def add_to_server(self, server: grpc.aio.Server) -> None:
        ingest_pb2_grpc.add_IngestServicer_to_server(IngestServicer(self.core), server)

    async def start(self) -> None:
        await asyncio.to_thread(self.store.open)
        # a dev server's random key changes on every start: checked against the store's, never recorded
        await asyncio.to_thread(check_store_key, self.store, self.ctx.pseudonymizer,
                                record=not self._key_is_random)

    async def stop(self) -> None:
        await asyncio.to_thread(self.store.close)
        log.info("store closed (sequence %d)", self.store.sequence)
