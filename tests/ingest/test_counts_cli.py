"""``healthai counts``: the store's surveillance counts as a CSV that ``train forecast --series`` reads
back; real Synthea bundles normalized and stored for real."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from healthai.cli import main
from healthai.normalize.fhir import normalize_fhir
from healthai.store import ParquetStore
from healthai.surveillance import SurveillanceCounts
from healthai.surveillance.series_file import read_series

from .conftest import context
from .test_synthea_e2e import bundles

ZIPS = {"02138": "25017", "02108": "25025", "01609": "25027"}  # Middlesex, Suffolk, Worcester


# birth dates and the ILINet age group each gives in December 2025 (one patient has none)
BIRTHS = {"2021-01-15": "0-4", "2020-11": "5-24", "1990-06-01": "25-49", "1961": "50-64", "1950-03-03": "65+",
          None: "unknown"}


def flu_bundle(i: int) -> dict:
    """A patient with a ZIP code and an influenza diagnosis one evening (local time, -05:00)."""
    zip_code = list(ZIPS)[i % 3]
    birth = list(BIRTHS)[i % len(BIRTHS)]
    onset = (dt.datetime(2025, 12, 1, 19, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
             + dt.timedelta(days=(i * 5) % 27)).isoformat()
    patient = {"resourceType": "Patient", "id": f"p{i}", "gender": "female",
               "address": [{"use": "home", "state": "MA", "postalCode": zip_code, "country": "US"}]}
    if birth is not None:
        patient["birthDate"] = birth
    condition = {"resourceType": "Condition", "id": f"c{i}", "subject": {"reference": f"Patient/p{i}"},
                 "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "J10.1"}]},
                 "onsetDateTime": onset}
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": patient},
                                                                     {"resource": condition}]}


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """The real Synthea bundles (no influenza among them) and 60 influenza cases in three counties."""
    root = tmp_path_factory.mktemp("store")
    store = ParquetStore(str(root)).open()
    ctx = context()
    payloads = [path.read_bytes() for path in bundles(shared_data)] + [flu_bundle(i) for i in range(60)]
    for payload in payloads:
        out = normalize_fhir(payload, ctx=ctx, source="s")
        store.commit({k: t for k, t in out.tables.items() if t.num_rows})
    store.close()
    return root


def test_counts_csv_is_a_series_train_forecast_reads(store_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "counts.csv"
    assert main(["counts", "--store", str(store_dir), "--syndrome", "ili", "--step", "D", "--level", "county",
                 "--out", str(out)]) == 0
    frame = SurveillanceCounts(ParquetStore(str(store_dir)).open()).counts("ili", "D", level="county")
    written = pd.read_csv(out, dtype={"region": str})
    assert list(written.columns) == ["region", "period", "count"]
    assert written["count"].sum() == frame.to_numpy().sum() > 0
    assert set(written["region"]) == set(frame.columns) == set(ZIPS.values())
    days = {(dt.date(2025, 12, 1) + dt.timedelta(days=d)).isoformat() for d in range(27)}
    assert set(written["period"]) <= days  # the local dates: 19:00-05:00 is the same day, not the next
    series = read_series(out)  # what train forecast --series / train backtest --series take
    assert series.step == "D" and set(series.region_ids) == set(frame.columns)
    assert "ili, " in capsys.readouterr().err


def test_weekly_wide_and_bad_input(store_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "wide.csv"
    assert main(["counts", "--store", str(store_dir), "--wide", "--out", str(out)]) == 0
    wide = pd.read_csv(out)
    assert list(wide.columns) == ["period", "US-MA"]
    assert pd.to_datetime(wide["period"]).dt.day_of_week.eq(0).all()  # weeks start on Monday
    assert main(["counts", "--store", str(tmp_path / "nowhere")]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert main(["counts", "--store", str(store_dir), "--syndrome", "cholera"]) == 2
    assert "syndrome 'cholera' is not one of" in capsys.readouterr().err
    assert not (tmp_path / "nowhere").exists()


def test_counts_by_age_group(store_dir: Path, tmp_path: Path) -> None:
    """ILINet's age groups, from the stored birth year and month; a patient without one is unknown."""
    out = tmp_path / "ages.csv"
    assert main(["counts", "--store", str(store_dir), "--by-age", "--step", "D", "--out", str(out)]) == 0
    rows = pd.read_csv(out, dtype={"region": str})
    assert list(rows.columns) == ["region", "age_group", "period", "count"]
    per_group = rows.groupby("age_group")["count"].sum().to_dict()
    assert per_group == {group: 10 for group in BIRTHS.values()}  # 60 patients, six birth dates
    assert set(rows["region"]) == {"US-MA"}
    assert list(dict.fromkeys(rows["age_group"])) == list(BIRTHS.values())  # youngest first, unknown last
    counts = SurveillanceCounts(ParquetStore(str(store_dir)).open())
    by_age = counts.counts_by_age("ili", "W", level="county")
    assert by_age.to_numpy().sum() == counts.counts("ili", "W", level="county").to_numpy().sum() == 60
    assert set(by_age.columns.get_level_values(0)) == set(ZIPS.values())
    assert main(["counts", "--store", str(store_dir), "--by-age", "--wide"]) == 2


def test_small_cells_are_left_empty_for_publication(store_dir: Path, tmp_path: Path, capsys) -> None:
    full, published = tmp_path / "full.csv", tmp_path / "published.csv"
    common = ["counts", "--store", str(store_dir), "--level", "county", "--step", "W"]
    assert main([*common, "--out", str(full)]) == 0
    assert main([*common, "--suppress-below", "5", "--out", str(published)]) == 0
    before = pd.read_csv(full, dtype={"region": str})
    after = pd.read_csv(published, dtype={"region": str})
    small = before["count"].between(1, 4)
    assert small.any() and (~small & (before["count"] >= 5)).any()  # the test has both kinds
    assert after["count"][small].isna().all()
    assert (after["count"][~small] == before["count"][~small]).all()  # zeros and large counts kept
    assert f"{int(small.sum())} cells under 5 left empty" in capsys.readouterr().err
    assert main([*common, "--suppress-below", "-1"]) == 2
