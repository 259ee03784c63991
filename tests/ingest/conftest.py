"""Fixtures: a real Ingest server on 127.0.0.1 (free port) over a temporary Parquet store."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from healthai.app.settings import Settings
from healthai.app.testing import serve_in_thread
from healthai.ingest.plugin import IngestPlugin
from healthai.normalize.context import NormalizeContext
from healthai.v1 import ingest_pb2_grpc

KEY = bytes(range(32))
REFERENCE_DATE = dt.date(2026, 6, 1)


@dataclass
class IngestServer:
    stub: ingest_pb2_grpc.IngestStub
    plugin: IngestPlugin
    store_dir: Path
    port: int


def make_settings(store_dir: Path, **overrides: object) -> Settings:
    return Settings(port=0, store_uri=str(store_dir), dev_mode=True, **overrides)


def context() -> NormalizeContext:
    return NormalizeContext.create(key=KEY, reference_date=REFERENCE_DATE)


@pytest.fixture
def ingest_server(tmp_path: Path) -> Iterator[IngestServer]:
    yield from serve(tmp_path / "store", max_message_bytes=4 * 1024 * 1024, max_records_per_request=5000)


def serve(store_dir: Path, **overrides: object) -> Iterator[IngestServer]:
    settings = make_settings(store_dir, **overrides)
    plugin = IngestPlugin(settings, ctx=context())
    with serve_in_thread(settings, [plugin]) as running, \
            grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        yield IngestServer(ingest_pb2_grpc.IngestStub(channel), plugin, store_dir, running.port)
