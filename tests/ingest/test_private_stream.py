"""Continual private releases (``healthai counts --stream``): each period released once, each patient
bounded over the calendar year across all releases, epsilon charged once per year, concurrent calls
recomputed, and the stream read back by a server in ``stored_counts = private`` (real FHIR bundles,
real Parquet store, real OpenDP)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from healthai.cli import main
from healthai.errors import InvalidInput
from healthai.normalize.fhir import normalize_fhir
from healthai.store import ParquetStore
from healthai.surveillance import SurveillanceCounts
from healthai.surveillance import stream as dp_stream
from healthai.surveillance.release import spent
from healthai.surveillance.released import ReleasedCounts

from .conftest import context
from .test_private_counts import EXACT, frequent_patient

pytest.importorskip("opendp")
TODAY = dt.date(2026, 1, 20)
MIDDLESEX = "25017"  # the frequent patient's county: ten influenza days, 2 to 11 December 2025


@pytest.fixture
def store(tmp_path: Path) -> ParquetStore:
    s = ParquetStore(str(tmp_path / "store")).open()
    out = normalize_fhir(frequent_patient(), ctx=context(), source="s")
    s.commit({k: t for k, t in out.tables.items() if t.num_rows})
    return s


def _define(store: ParquetStore, epsilon: float = EXACT, **kw) -> dp_stream.StreamSpec:
    settings = {"name": "ili-weekly", "syndrome": "ili", "step": "W", "level": "county",
                "week_start": "monday", "places": [MIDDLESEX], "epsilon": epsilon,
                "max_cases_per_patient": 4, "start": "2025-12-01", **kw}
    return dp_stream.define(store, **settings)


def _release(store: ParquetStore, spec: dp_stream.StreamSpec, end: str,
             **kw) -> dp_stream.StreamRelease | None:
    return dp_stream.release_new_periods(SurveillanceCounts(store), store, spec, completed_by=TODAY, end=end,
                                         nonnegative=False, **kw)


def test_the_bound_holds_over_the_year_across_releases(store: ParquetStore) -> None:
    """Six of the patient's days fall in the week of 1 December, four in the next: two plain releases
    would count 4 + 4; the stream counts 4 in all, and never releases a week twice."""
    spec = _define(store)
    first = _release(store, spec, "2025-12-07")
    assert first.release.frame[MIDDLESEX].tolist() == [4] and first.release.left_out_by_bound == 2
    second = _release(store, spec, "2025-12-14")
    assert second.release.frame.index.tolist() == [pd.Timestamp("2025-12-08")]  # only the new week
    assert second.release.frame[MIDDLESEX].tolist() == [0] and second.release.left_out_by_bound == 4
    assert _release(store, spec, "2025-12-14") is None  # nothing new
    both = ReleasedCounts(store).counts("ili", "W", level="county")  # what a private server reads
    assert both[MIDDLESEX].tolist() == [4, 0]


def test_epsilon_is_charged_once_per_calendar_year(store: ParquetStore) -> None:
    spec = _define(store, epsilon=1.0)
    charged = [_release(store, spec, end).charged for end in ("2025-12-07", "2025-12-21", "2026-01-11")]
    assert charged == pytest.approx([1.0, 0.0, 1.0])  # 2025, 2025 again, then 2026's first release
    assert spent(store) == (pytest.approx(2.0), 3)
    with pytest.raises(InvalidInput, match="has not ended") as err:  # the week under way on TODAY
        _release(store, spec, str(TODAY))
    assert err.value.field == "end"


def test_a_stream_definition_does_not_change(store: ParquetStore) -> None:
    _define(store)
    _define(store, start="2025-12-03")  # the same first week (starts are aligned to periods)
    with pytest.raises(InvalidInput, match="was defined with epsilon") as err:
        _define(store, epsilon=2.0)
    assert err.value.field == "epsilon"
    with pytest.raises(InvalidInput, match="are not 5-digit US county FIPS codes"):
        _define(store, name="other", places=["US-MA"])


def test_a_release_that_lost_its_ledger_number_recomputes(store: ParquetStore) -> None:
    """Another call recorded the same weeks first: this one reads the ledger again and finds nothing
    left to release, instead of releasing them twice."""
    spec = _define(store)
    create, raced = store.create_exclusive, []

    def another_call_wins(rel: str, body: bytes) -> bool | None:
        if rel.startswith("privacy/release-") and not raced:
            raced.append(rel)
            assert _release(store, spec, "2025-12-14") is not None  # the competitor, in full
        return create(rel, body)

    store.create_exclusive = another_call_wins  # type: ignore[method-assign]
    assert _release(store, spec, "2025-12-14") is None
    assert raced == ["privacy/release-00000001.json"] and spent(store)[1] == 1
    assert len(list(Path(store.root, "privacy", "streams").glob("contributions-*.parquet"))) == 1


def test_cli_stream_releases_new_weeks_and_a_private_server_reads_them(store: ParquetStore, tmp_path: Path,
                                                                       capsys) -> None:
    argv = ["counts", "--store", store.root, "--level", "county", "--epsilon", "1", "--regions", MIDDLESEX,
            "--stream", "weekly", "--start", "2025-12-01", "--keep-negative"]
    out = tmp_path / "week.csv"
    assert main([*argv, "--end", "2025-12-14", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "stream weekly: periods of 2025; epsilon 1 per patient and calendar year" in err
    assert "1 charged now" in err
    assert pd.read_csv(out)["period"].tolist() == ["2025-12-01", "2025-12-08"]
    entry = json.loads(out.with_suffix(".privacy.json").read_text())
    assert entry["stream"] == "weekly" and entry["years_charged"] == [2025] and entry["epsilon_charged"] == 1
    assert main([*argv, "--end", "2025-12-14"]) == 0  # nothing new
    assert "nothing released, nothing spent" in capsys.readouterr().err
    assert main([*argv, "--end", "2025-12-28", "--out", str(out)]) == 0
    assert "0 charged now" in capsys.readouterr().err
    assert pd.read_csv(out)["period"].tolist() == ["2025-12-15", "2025-12-22"]
    weeks = ReleasedCounts(ParquetStore(store.root).open()).counts("ili", "W", level="county")
    assert weeks.index.tolist() == list(pd.date_range("2025-12-01", periods=4, freq="7D"))
    assert np.all(weeks.to_numpy() >= 0)  # negatives set to 0 when read for a model
    assert main([*argv[:-1], "--epsilon", "2", "--end", "2026-01-04"]) == 2  # the definition holds
    assert "was defined with epsilon = 1.0" in capsys.readouterr().err
    assert main(["privacy-ledger", "--store", store.root]) == 0
    assert "epsilon 1 spent in all" in capsys.readouterr().err
