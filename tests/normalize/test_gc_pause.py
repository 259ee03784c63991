"""The collector pause around normalization: always restored, also after errors and when nested."""

from __future__ import annotations

import gc

import pyarrow as pa
import pytest

from healthai.errors import InvalidInput
from healthai.normalize.fhir import normalize_fhir
from healthai.normalize.flat import normalize_table
from healthai.normalize.gc_pause import gc_paused


def test_pause_nests_and_restores() -> None:
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner pause found it disabled: leaves it so
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # someone else's pause is not ended by ours
    finally:
        gc.enable()


def test_normalizers_leave_the_collector_enabled(ctx) -> None:
    normalize_fhir(b'{"resourceType": "Patient", "id": "p"}', ctx=ctx, source="s")
    assert gc.isenabled()
    with pytest.raises(InvalidInput):
        normalize_fhir(b"{not json", ctx=ctx, source="s")
    assert gc.isenabled()
    with pytest.raises(InvalidInput):
        normalize_table("observation", pa.table({"patient_id": ["p"]}), ctx=ctx, source="s")
    assert gc.isenabled()
