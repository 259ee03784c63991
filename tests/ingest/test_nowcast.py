"""Nowcasts of the latest weeks from the store's ingest dates (``healthai counts --nowcast``): real FHIR
through the normalizer, a real Parquet store whose commits are dated as the records arrived."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from healthai.cli import main
from healthai.errors import InvalidInput
from healthai.normalize.fhir import normalize_fhir
from healthai.store import ParquetStore
from healthai.surveillance import SurveillanceCounts
from healthai.surveillance.nowcast import DEVELOPMENTS, POOLINGS, nowcast

from .conftest import context

FIRST = dt.date(2026, 1, 5)  # a Monday: ISO weeks
WEEKS = 14
AS_OF = FIRST + dt.timedelta(weeks=WEEKS)  # the Monday after the last week


def _bundle(i: int, day: dt.date, state: str) -> dict:
    patient = {"resourceType": "Patient", "id": f"p{i}", "gender": "female", "birthDate": "1980-03-03",
               "address": [{"use": "home", "state": state, "country": "US"}]}
    condition = {"resourceType": "Condition", "id": f"c{i}", "subject": {"reference": f"Patient/p{i}"},
                 "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "J11.1"}]},
                 "onsetDateTime": f"{day.isoformat()}T09:00:00-05:00"}
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": patient},
                                                                      {"resource": condition}]}


def _fill(root: Path, *, bulk: dt.date | None = None, pace: dict[str, float] | None = None,
          loaded_before: dt.date | None = None) -> pd.DataFrame:
    """About 40 influenza cases a week in two states, each stored 0-20 days after its onset (geometric,
    success probability ``pace[state]``, default 0.2 in both; or all on ``bulk``; or, with onset before
    ``loaded_before``, on that day); returns every case with its onset and storage day."""
    pace = pace or {"MA": 0.2, "NH": 0.2}
    rng = np.random.default_rng(0)
    rows = []
    for i in range(40 * WEEKS):
        day = FIRST + dt.timedelta(days=int(rng.integers(0, 7 * WEEKS)))
        state = "MA" if i % 3 else "NH"
        delay = int(min(rng.geometric(pace[state]) - 1, 20))
        loaded = loaded_before if loaded_before is not None and day < loaded_before else None
        rows.append((i, day, state, bulk or loaded or day + dt.timedelta(days=delay)))
    cases = pd.DataFrame(rows, columns=["i", "day", "state", "stored"])
    store = ParquetStore(str(root)).open()
    ctx = context()
    for stored, group in cases.groupby("stored"):
        tables: dict[str, list] = {}
        for r in group.itertuples():
            out = normalize_fhir(_bundle(r.i, r.day, r.state), ctx=ctx, source="s")
            for kind, table in out.tables.items():
                if table.num_rows:
                    tables.setdefault(kind, []).append(table)
        store.commit({k: pa.concat_tables(v) for k, v in tables.items()},
                     now=dt.datetime.combine(stored, dt.time(12), dt.UTC))
    store.close()
    return cases


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    root = tmp_path_factory.mktemp("live")
    return root, _fill(root)


def _truth(cases: pd.DataFrame) -> pd.Series:
    week = pd.to_datetime(cases["day"]) - pd.to_timedelta(pd.to_datetime(cases["day"]).dt.day_of_week, "D")
    return cases.groupby(week).size()


def test_the_latest_weeks_are_scaled_up_toward_what_arrives_later(live) -> None:
    root, cases = live
    store = ParquetStore(str(root)).open()
    try:
        got = nowcast(store, as_of=AS_OF, max_delay=21, window_days=56)
    finally:
        store.close()
    truth = _truth(cases)
    table = got.table.assign(period=pd.to_datetime(got.table["period"]))
    per_week = table.groupby("period")[["count", "nowcast"]].sum()
    last3 = per_week.index[-3:]
    observed_gap = abs(per_week.loc[last3, "count"].sum() - truth.loc[last3].sum())
    nowcast_gap = abs(per_week.loc[last3, "nowcast"].sum() - truth.loc[last3].sum())
    assert per_week.loc[last3, "count"].sum() < truth.loc[last3].sum()  # not stored yet
    assert nowcast_gap < 0.5 * observed_gap
    f = got.completeness.to_numpy()
    # geometric(0.2) delays from onset: about half a week's cases are stored by the day it ends
    assert np.all(np.diff(f) >= 0) and f[-1] == 1.0 and 0.4 < f[0] < 0.7 < f[7] < 0.97
    old = table[table["days_since_end"] >= 21]
    assert (old["nowcast"] == old["count"]).all() and (old["completeness"] == 1.0).all()
    assert (old["nowcast_q05"] == old["count"]).all() and (old["nowcast_q95"] == old["count"]).all()
    recent = table[table["days_since_end"] < 21]
    assert (recent["nowcast_q05"] >= recent["count"]).all()
    assert (recent["nowcast_q05"] <= recent["nowcast"]).all()
    assert (recent["nowcast"] <= recent["nowcast_q95"]).all()
    assert (recent["nowcast_q95"] > recent["nowcast_q05"]).any()
    assert got.card()["max_delay_days"] == 21 and got.cases_in_window >= 20
    assert "Beta(n F, n (1 - F))" in got.card()["interval"]
    store = ParquetStore(str(root)).open()
    try:  # F's own error widens the interval (a little: hundreds of cases behind F); the point stays
        known = nowcast(store, as_of=AS_OF, max_delay=21, window_days=56, interval="known").table
    finally:
        store.close()
    assert (known["nowcast"] == got.table["nowcast"]).all()
    assert (got.table["nowcast_q05"] <= known["nowcast_q05"]).all()
    assert (got.table["nowcast_q95"] >= known["nowcast_q95"]).all()
    assert (got.table["nowcast_q95"] - got.table["nowcast_q05"]).sum() > (
        known["nowcast_q95"] - known["nowcast_q05"]).sum()


def test_observed_counts_are_the_stores_counts(live) -> None:
    root, _ = live
    store = ParquetStore(str(root)).open()
    try:
        got = nowcast(store, as_of=AS_OF + dt.timedelta(days=60), max_delay=21)
        exact = SurveillanceCounts(store).counts("ili", "W", completed_by=AS_OF + dt.timedelta(days=60))
    finally:
        store.close()
    wide = got.table.pivot(index="period", columns="region", values="count")
    np.testing.assert_array_equal(wide.to_numpy(), exact.to_numpy())
    assert (got.table["nowcast"] == got.table["count"]).all()  # everything is mature by then


def test_a_store_loaded_in_bulk_has_no_delays_to_learn_from(tmp_path: Path) -> None:
    _fill(tmp_path / "bulk", bulk=AS_OF)
    store = ParquetStore(str(tmp_path / "bulk")).open()
    try:
        with pytest.raises(InvalidInput, match="a store loaded in bulk has no delays") as e:
            nowcast(store, as_of=AS_OF - dt.timedelta(days=1))  # nothing stored yet
        assert e.value.field == "as_of"
        with pytest.raises(InvalidInput, match=r"hold 0 cases.*loaded in bulk.*1 days stored more records "
                                                 "late than in time"):
            nowcast(store, as_of=AS_OF + dt.timedelta(days=10))  # the load's delays are not reporting's
        settled = nowcast(store, as_of=AS_OF + dt.timedelta(days=60))  # every period mature: as observed
        assert (settled.table["nowcast"] == settled.table["count"]).all() and settled.load_days == 1
    finally:
        store.close()


def test_each_place_reports_at_its_own_pace(tmp_path: Path) -> None:
    """Massachusetts' records arrive in a day on average, New Hampshire's in eleven: one pooled delay
    distribution over-corrects one and under-corrects the other; each place's own (partially pooled
    toward the pooled one, the default) follows both."""
    cases = _fill(tmp_path / "paced", pace={"MA": 0.5, "NH": 0.08})
    truth = cases.assign(period=pd.to_datetime(cases["day"]) - pd.to_timedelta(
        pd.to_datetime(cases["day"]).dt.day_of_week, "D"), region="US-" + cases["state"])
    final = truth.groupby(["region", "period"]).size()
    store = ParquetStore(str(tmp_path / "paced")).open()
    try:
        got = {p: nowcast(store, as_of=AS_OF, max_delay=21, window_days=56, pooling=p) for p in POOLINGS}
        with pytest.raises(InvalidInput, match="pooling 'none' is not one of partial, pooled") as e:
            nowcast(store, as_of=AS_OF, pooling="none")
        assert e.value.field == "pooling"
    finally:
        store.close()
    errors = {}
    for pooling, result in got.items():
        recent = result.table[result.table["days_since_end"] < 21]
        cells = list(zip(recent["region"], pd.to_datetime(recent["period"]), strict=True))
        errors[pooling] = np.abs(recent["nowcast"].to_numpy() - final.reindex(cells, fill_value=0).to_numpy())
    assert errors["partial"].sum() < 0.5 * errors["pooled"].sum()
    latest = got["partial"].table.groupby("region")["completeness"].min()
    assert latest["US-MA"] > 0.8 and latest["US-NH"] < 0.5  # the last week, a day after it ended
    card = got["partial"].card()
    assert card["pooling"] == "partial" and "weight of 20 cases" in card["method"]
    pooled = got["pooled"].table.groupby("region")["completeness"].min()
    assert pooled["US-MA"] == pooled["US-NH"]


def test_a_load_of_history_before_the_live_feed_teaches_no_delays(tmp_path: Path) -> None:
    """An agency loads seven weeks of history in one day, then its feed goes live: that day's delays
    (up to seven weeks) are the load's, not reporting's, so the nowcast learns from the live days."""
    go_live = FIRST + dt.timedelta(weeks=7)
    _fill(tmp_path / "loaded", loaded_before=go_live)
    store = ParquetStore(str(tmp_path / "loaded")).open()
    try:
        got = nowcast(store, as_of=AS_OF, max_delay=21, window_days=56)
    finally:
        store.close()
    assert got.load_days == 1 and got.card()["load_days"] == 1
    f = got.completeness.to_numpy()
    assert 0.4 < f[0] < 0.7 < f[7] < 0.97  # geometric(0.2) delays, as learned from a live feed


def test_the_triangle_sees_delays_lengthen_before_the_mature_periods_do(tmp_path: Path) -> None:
    """Delays jump from about 1 day to about 11 in the last four weeks: the development factors of
    the latest periods show it, the mature periods' shares cannot yet."""
    store_dir = tmp_path / "slowing"
    rng = np.random.default_rng(1)
    store = ParquetStore(str(store_dir)).open()
    ctx, by_day = context(), {}
    for i in range(60 * WEEKS):
        day = FIRST + dt.timedelta(days=int(rng.integers(0, 7 * WEEKS)))
        p = 0.08 if day >= AS_OF - dt.timedelta(weeks=4) else 0.5
        stored = day + dt.timedelta(days=int(min(rng.geometric(p) - 1, 20)))
        by_day.setdefault(stored, []).append((i, day))
    for stored, rows in sorted(by_day.items()):
        tables: dict[str, list] = {}
        for i, day in rows:
            for kind, table in normalize_fhir(_bundle(i, day, "MA"), ctx=ctx, source="s").tables.items():
                if table.num_rows:
                    tables.setdefault(kind, []).append(table)
        store.commit({k: pa.concat_tables(v) for k, v in tables.items()},
                     now=dt.datetime.combine(stored, dt.time(12), dt.UTC))
    try:
        got = {d: nowcast(store, as_of=AS_OF, max_delay=21, window_days=56, development=d)
               for d in DEVELOPMENTS}
    finally:
        store.close()
    assert got["triangle"].completeness[1] < got["mature"].completeness[1] - 0.04  # slower, seen sooner
    last = {d: g.table["nowcast"].iloc[-1] for d, g in got.items()}
    assert last["triangle"] > last["mature"]  # the latest week scaled up further
    assert got["triangle"].card()["development"] == "triangle"


def test_cli_writes_the_nowcast_columns(live, tmp_path: Path, capsys) -> None:
    root, _ = live
    out = tmp_path / "nowcast.csv"
    assert main(["counts", "--store", str(root), "--nowcast", "--as-of", AS_OF.isoformat(),
                 "--max-delay", "21", "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert list(table.columns) == ["region", "period", "count", "days_since_end", "completeness", "nowcast",
                                   "nowcast_q05", "nowcast_q95"]
    assert set(table["region"]) == {"US-MA", "US-NH"}
    assert "nowcast: chain ladder" in capsys.readouterr().err
    assert main(["counts", "--store", str(root), "--nowcast", "--wide"]) == 2
    assert "--nowcast writes long rows" in capsys.readouterr().err


def test_the_cache_reads_only_new_files_and_matches_a_full_read(live, tmp_path: Path) -> None:
    """The report days come from SurveillanceCounts, which reads each part file once: after one more
    commit its cases equal a fresh full read's."""
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(live[0], root)
    store = ParquetStore(str(root)).open()
    try:
        counts = SurveillanceCounts(store)
        before = counts.cases("ili", "region")
        late = normalize_fhir(_bundle(99_999, AS_OF - dt.timedelta(days=3), "NH"), ctx=context(), source="s")
        store.commit({k: t for k, t in late.tables.items() if t.num_rows},
                     now=dt.datetime.combine(AS_OF, dt.time(12), dt.UTC))
        after = counts.cases("ili", "region")
        full = SurveillanceCounts(store).cases("ili", "region")
    finally:
        store.close()
    on_day = pd.Timestamp(AS_OF)
    assert len(after) == len(before) + 1
    assert (after["reported"] == on_day).sum() == (before["reported"] == on_day).sum() + 1
    def rows(cases: pd.DataFrame) -> pd.DataFrame:  # the same cases, whatever order they were read in
        return cases.sort_values(["patient_id", "day", "reported"]).reset_index(drop=True)

    pd.testing.assert_frame_equal(rows(after), rows(full))


def test_development_factors_by_hand() -> None:
    """A reporting triangle small enough to work out: period A ended 10 days ago (cases stored 0, 0, 1, 2
    and 3 days after its end), period B 2 days ago (0 and 1). Factor k uses every period at least
    k + 1 days past its end: S0/T0 = (2 + 1)/(3 + 2), S1/T1 = (3 + 2)/(4 + 2), S2/T2 = 4/5 (A only), so
    F = (0.4, 2/3, 0.8, 1). A's shares alone would say (0.4, 0.6, 0.8, 1): B's quick second case
    raises F(1). A place with no cases of its own keeps the prior (the pooled F) exactly."""
    from healthai.surveillance.nowcast import _completeness

    delay = np.array([0, 0, 1, 2, 3, 0, 1])
    age = np.array([10] * 5 + [2] * 2)
    np.testing.assert_allclose(_completeness(delay, age, 3), [0.4, 2 / 3, 0.8, 1.0])
    np.testing.assert_allclose(_completeness(delay[:5], age[:5], 3), [0.4, 0.6, 0.8, 1.0])
    pooled = np.array([0.5, 0.7, 0.9, 1.0])
    np.testing.assert_allclose(_completeness(delay[:0], age[:0], 3, prior=pooled), pooled)
