"""Surveillance by US county: the real Synthea bundles (Massachusetts addresses with ZIP codes) through
the real Ingest server, counted per county and day — whole bundles and bulk files alike."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from healthai.surveillance import SurveillanceCounts, place_level

from .conftest import serve
from .test_bulk_export_counts import ingest, synthea_export


def test_cases_count_per_county_from_whole_bundles_and_bulk_files(tmp_path: Path, shared_data: Path) -> None:
    payloads, syndrome, files = synthea_export(shared_data)
    for server in serve(tmp_path / "bundles"):
        ingest(server, payloads)
        counts = SurveillanceCounts(server.plugin.store, {syndrome.name: syndrome})
        state = counts.counts(syndrome.name, "D")
        county = counts.counts(syndrome.name, "D", level="county")
        waiting = counts.uncounted(syndrome.name, level="county")
    assert list(state.columns) == ["US-MA"] and len(county.columns) >= 10
    assert all(c.startswith("25") and len(c) == 5 for c in county.columns)  # Massachusetts FIPS
    # a case is in exactly one county; those of a patient whose ZIP code has no county wait, counted
    assert 0 < waiting < 20
    total_state, total_county = int(state.to_numpy().sum()), int(county.to_numpy().sum())
    assert total_county <= total_state and total_county >= total_state - waiting

    for server in serve(tmp_path / "bulk"):
        ingest(server, [files["Condition"], files["Encounter"], files["Patient"]])  # conditions first
        bulk = SurveillanceCounts(server.plugin.store, {syndrome.name: syndrome})
        pd.testing.assert_frame_equal(bulk.counts(syndrome.name, "D", level="county"), county)


def test_the_level_follows_the_model_region_ids() -> None:
    assert place_level(["25017", "25025"]) == "county"
    assert place_level(["US-MA", "US-NY"]) == "region" and place_level(["JP-13"]) == "region"
    assert place_level(["25017", "US-MA"]) == "region" and place_level([]) == "region"
