"""Fixtures of the normalization tests: a pinned context, the map fixtures, the Synthea bundles."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from healthai.normalize.context import NormalizeContext
from healthai.normalize.maps import SnomedIcd10Map

FIXTURES = Path(__file__).resolve().parent / "fixtures"
NLM_MAP = FIXTURES / "der2_iisssccRefset_ExtendedMapSnapshot_FIXTURE.txt"
OMOP_CONCEPT = FIXTURES / "CONCEPT.csv"
OMOP_RELATIONSHIP = FIXTURES / "CONCEPT_RELATIONSHIP.csv"
KEY = b"test-key-not-a-secret-0123456789"
REFERENCE_DATE = dt.date(2026, 11, 1)


@pytest.fixture(scope="session")
def ctx() -> NormalizeContext:
    return NormalizeContext.create(key=KEY, reference_date=REFERENCE_DATE)


@pytest.fixture(scope="session")
def nlm_map() -> SnomedIcd10Map:
    return SnomedIcd10Map.load_nlm(NLM_MAP)


@pytest.fixture(scope="session")
def ctx_with_map() -> NormalizeContext:
    return NormalizeContext.create(key=KEY, reference_date=REFERENCE_DATE, snomed_map_nlm=NLM_MAP)


@pytest.fixture(scope="session")
def bundle_paths(shared_data: Path) -> list[Path]:
    paths = sorted((shared_data / "fhir").glob("*.json"))
    assert len(paths) == 23
    return paths
