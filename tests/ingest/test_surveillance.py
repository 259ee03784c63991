"""Surveillance counts from stored condition rows: ILI code list, distinct patients, D and W."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from healthai.errors import InvalidInput
from healthai.store import ParquetStore
from healthai.surveillance import ILI, SurveillanceCounts

TS = pa.timestamp("us", tz="UTC")


Row = tuple[str, str, str | None, str | None, str | None, dt.datetime | None]


def conditions(rows: list[Row]) -> pa.Table:
    """rows: (record_key, patient_id, region, icd10_code, snomed_code, onset)."""
    cols = list(zip(*rows, strict=True))
    return pa.table({
        "source": pa.array(["s"] * len(rows)),
        "record_key": pa.array(cols[0], pa.string()),
        "patient_id": pa.array(cols[1], pa.string()),
        "region": pa.array(cols[2], pa.string()),
        "icd10_code": pa.array(cols[3], pa.string()),
        "snomed_code": pa.array(cols[4], pa.string()),
        "onset": pa.array(cols[5], TS),
        "recorded": pa.array([None] * len(rows), TS),
    })


def day(d: int, hour: int = 9) -> dt.datetime:
    return dt.datetime(2026, 1, d, hour, tzinfo=dt.UTC)  # 2026-01-05 is a Monday


@pytest.fixture
def store(tmp_path: Path) -> ParquetStore:
    s = ParquetStore(str(tmp_path)).open()
    s.commit({"condition": conditions([
        ("c1", "p1", "US-MA", "J10.1", None, day(5)),
        ("c2", "p1", "US-MA", None, "6142004", day(5, 18)),   # same patient, same day: counted once
        ("c3", "p2", "US-MA", "J11.1", None, day(5)),
        ("c4", "p3", "US-NY", "j09.x2", None, day(7)),       # lower case ICD-10 still matches
        ("c5", "p4", "US-NY", "J06.9", "444814009", day(7)),  # not ILI
        ("c6", "p5", None, "J10.1", None, day(7)),           # no region: uncounted
        ("c7", "p6", "US-NY", None, "95891005", day(12)),     # next week
    ])})
    return s


def test_ili_code_list_is_documented_and_matches() -> None:
    assert ILI.matches("J10.1", None) and ILI.matches(None, "442438000")
    assert not ILI.matches("J06.9", "444814009") and not ILI.matches(None, None)


def test_daily_counts_distinct_patients_per_region(store: ParquetStore) -> None:
    df = SurveillanceCounts(store).counts("ili", "D")
    assert list(df.columns) == ["US-MA", "US-NY"]
    assert df.index[0] == pd.Timestamp("2026-01-05") and df.index[-1] == pd.Timestamp("2026-01-12")
    assert len(df) == 8 and (df.dtypes == "int64").all()
    assert df.loc["2026-01-05"].to_dict() == {"US-MA": 2, "US-NY": 0}
    assert df.loc["2026-01-07"].to_dict() == {"US-MA": 0, "US-NY": 1}
    assert df.loc["2026-01-12"].to_dict() == {"US-MA": 0, "US-NY": 1}
    assert int(df.to_numpy().sum()) == 4
    assert SurveillanceCounts(store).uncounted("ili") == 1


def test_weekly_counts_start_on_monday_and_sum_days(store: ParquetStore) -> None:
    df = SurveillanceCounts(store).counts("ili", "W")
    assert list(df.index) == [pd.Timestamp("2026-01-05"), pd.Timestamp("2026-01-12")]
    assert df["US-MA"].tolist() == [2, 0] and df["US-NY"].tolist() == [1, 1]


def test_bounds_regions_and_cache_invalidation(store: ParquetStore) -> None:
    counts = SurveillanceCounts(store)
    df = counts.counts("ili", "D", start="2026-01-01", end=dt.date(2026, 1, 6), regions=["US-NY", "US-CA"])
    assert len(df) == 6 and list(df.columns) == ["US-NY", "US-CA"] and int(df.to_numpy().sum()) == 0
    store.commit({"condition": conditions([("c8", "p7", "US-CA", "J10.0", None, day(6))])})
    df = counts.counts("ili", "D", start="2026-01-01", end="2026-01-06", regions=["US-NY", "US-CA"])
    assert df.loc["2026-01-06", "US-CA"] == 1


def test_empty_store_and_bad_queries(tmp_path: Path, store: ParquetStore) -> None:
    empty = SurveillanceCounts(ParquetStore(str(tmp_path / "empty")).open()).counts()
    assert empty.empty
    counts = SurveillanceCounts(store)
    with pytest.raises(InvalidInput, match="freq 'M' is not one of D, W"):
        counts.counts(freq="M")
    with pytest.raises(InvalidInput,
                       match="syndrome 'cholera' is not one of covid, covid_lab, flu_lab, ili, rsv, rsv_lab"):
        counts.counts("cholera")
    with pytest.raises(InvalidInput, match="start 2026-02-01 is after end 2026-01-01"):
        counts.counts(start="2026-02-01", end="2026-01-01")
    with pytest.raises(InvalidInput, match="start 'soon' is not a date"):
        counts.counts(start="soon")


def test_weekly_bounds_name_whole_weeks(store: ParquetStore) -> None:
    """``end`` on a Monday (how a weekly period is labelled) counts that whole week, not one day."""
    df = SurveillanceCounts(store).counts("ili", "W", end="2026-01-05")
    assert list(df.index) == [pd.Timestamp("2026-01-05")] and df.loc["2026-01-05"].to_dict() == {
        "US-MA": 2, "US-NY": 1}  # the NY case is on the Wednesday


def test_mmwr_weeks_start_on_sunday(store: ParquetStore) -> None:
    counts = SurveillanceCounts(store)
    df = counts.counts("ili", "W", week_start="sunday")  # cases on Mon 5, Wed 7 and Mon 12 January
    assert list(df.index) == [pd.Timestamp("2026-01-04"), pd.Timestamp("2026-01-11")]
    assert df["US-MA"].tolist() == [2, 0] and df["US-NY"].tolist() == [1, 1]
    # the week of Sunday the 11th ends on Saturday the 17th
    assert len(counts.counts("ili", "W", week_start="sunday", completed_by=dt.date(2026, 1, 17))) == 1
    assert len(counts.counts("ili", "W", week_start="sunday", completed_by=dt.date(2026, 1, 18))) == 2
    with pytest.raises(InvalidInput, match="week_start 'someday' is not a day of the week"):
        counts.counts("ili", "W", week_start="someday")


def test_period_under_way_is_left_out(store: ParquetStore) -> None:
    """Cases up to Monday 2026-01-12; asked on Wednesday 2026-01-14, that week has not ended: its counts
    are partial, so the last week is the one before. Days end at midnight."""
    counts = SurveillanceCounts(store)
    weekly = counts.counts("ili", "W", completed_by=dt.date(2026, 1, 14))
    assert list(weekly.index) == [pd.Timestamp("2026-01-05")]
    assert list(counts.counts("ili", "W", completed_by=dt.date(2026, 1, 19)).index)[-1] == pd.Timestamp(
        "2026-01-12")  # Monday the 19th: the week of the 12th has ended
    daily = counts.counts("ili", "D", completed_by=dt.date(2026, 1, 12))
    assert daily.index[-1] == pd.Timestamp("2026-01-11")
    daily = counts.counts("ili", "D", completed_by=dt.date(2026, 1, 13))
    assert daily.index[-1] == pd.Timestamp("2026-01-12")
    with pytest.raises(InvalidInput, match=r"end: the week 2026-01-12 to 2026-01-18 has not ended \(today is "
                                           r"2026-01-14\)"):
        counts.counts("ili", "W", end="2026-01-13", completed_by=dt.date(2026, 1, 14))
    assert counts.counts("ili", "W", completed_by=dt.date(2026, 1, 5)).empty  # nothing has ended yet


def test_columns_no_stored_file_has_are_read_as_nulls_of_their_type(tmp_path: Path) -> None:
    """Files written by an older release (or another writer) without snomed_code, county or the UTC
    offsets still count: the missing columns are nulls of their schema type."""
    s = ParquetStore(str(tmp_path)).open()
    s.commit({"condition": conditions([("c1", "p1", "US-MA", "J10.1", None, day(5))]).drop_columns(
        ["snomed_code", "recorded"])})
    counts = SurveillanceCounts(s)
    assert counts.counts("ili", "D").to_dict("list") == {"US-MA": [1]}
    assert counts.counts("ili", "D", level="county").empty and counts.uncounted("ili", level="county") == 1
