"""Differentially private counts (``healthai.surveillance.release``, ``healthai counts --epsilon``):
the per-patient bound, the noise OpenDP adds, the cells fixed in advance, the ledger and the budget.
Real FHIR bundles normalized into a real Parquet store."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from healthai.cli import main
from healthai.errors import InvalidInput
from healthai.normalize.fhir import normalize_fhir
from healthai.store import ParquetStore
from healthai.surveillance import SurveillanceCounts
from healthai.surveillance.release import private_counts, record, spent

from .conftest import context
from .test_counts_cli import ZIPS, flu_bundle

EXACT = 1e9  # an epsilon so large that the noise is 0 with probability 1 - 1e-100000: checks the bound
FREQUENT_DAYS = 10
DECEMBER = {"start": "2025-12-01", "end": "2025-12-28"}  # four whole ISO weeks


def frequent_patient() -> dict:
    """One patient diagnosed with influenza on ten different days (Middlesex county)."""
    patient = {"resourceType": "Patient", "id": "often", "gender": "male", "birthDate": "1970-02-02",
               "address": [{"use": "home", "state": "MA", "postalCode": "02138", "country": "US"}]}
    entries = [{"resource": patient}] + [
        {"resource": {"resourceType": "Condition", "id": f"often-{d}",
                      "subject": {"reference": "Patient/often"},
                      "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "J11.1"}]},
                      "onsetDateTime": f"2025-12-{d + 2:02d}T10:00:00-05:00"}} for d in range(FREQUENT_DAYS)]
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store")
    store = ParquetStore(str(root)).open()
    ctx = context()
    for payload in [flu_bundle(i) for i in range(60)] + [frequent_patient()]:
        out = normalize_fhir(payload, ctx=ctx, source="s")
        store.commit({k: t for k, t in out.tables.items() if t.num_rows})
    store.close()
    return root


@pytest.fixture
def counts(store_dir: Path) -> SurveillanceCounts:
    return SurveillanceCounts(ParquetStore(str(store_dir)).open())


def test_each_patient_adds_at_most_the_bound(counts: SurveillanceCounts) -> None:
    exact = counts.counts("ili", "W", level="county", **DECEMBER)
    assert exact.to_numpy().sum() == 60 + FREQUENT_DAYS
    for bound in (1, 4):
        out = private_counts(counts, epsilon=EXACT, level="county", freq="W", max_cases_per_patient=bound,
                             **DECEMBER)
        assert out.left_out_by_bound == FREQUENT_DAYS - bound
        assert out.frame.to_numpy().sum() == 60 + bound
        assert out.frame[list(ZIPS.values())].sum().sum() == 60 + bound
        assert out.epsilon == pytest.approx(EXACT)


def test_the_cells_are_the_ones_asked_for_not_the_ones_with_cases(counts: SurveillanceCounts) -> None:
    out = private_counts(counts, epsilon=EXACT, level="county", freq="W", **DECEMBER)
    assert len(out.frame.columns) > 3000 and "25017" in out.frame.columns  # every US county
    assert [p.date().isoformat() for p in out.frame.index] == ["2025-12-01", "2025-12-08", "2025-12-15",
                                                               "2025-12-22"]
    asked = private_counts(counts, epsilon=EXACT, regions=["25017", "06037"], level="county", freq="D",
                           start="2025-11-30", end="2025-12-03")
    assert list(asked.frame.columns) == ["06037", "25017"]  # Los Angeles: no case, still a cell
    assert len(asked.frame) == 4 and asked.frame["06037"].eq(0).all()
    by_age = private_counts(counts, epsilon=EXACT, regions=["US-MA", "US-NH"], freq="W", by_age=True,
                            **DECEMBER)
    assert len(by_age.frame.columns) == 2 * 6  # two places x ILINet's five groups and unknown
    assert by_age.frame["US-NH"].to_numpy().sum() == 0
    assert by_age.frame["US-MA"].to_numpy().sum() == 60 + 4


def test_the_noise_is_discrete_laplace_of_scale_bound_over_epsilon(counts: SurveillanceCounts) -> None:
    """Every US county x 52 weeks: the noise's mean and variance against the discrete Laplace's."""
    year = {"start": "2024-12-30", "end": "2025-12-28", "max_cases_per_patient": FREQUENT_DAYS}  # no case cut
    exact = private_counts(counts, epsilon=EXACT, level="county", freq="W", **year)
    out = private_counts(counts, epsilon=2.5, level="county", freq="W", nonnegative=False, **year)
    assert out.epsilon == pytest.approx(2.5) and out.scale == pytest.approx(4.0)
    noise = (out.frame - exact.frame).to_numpy().ravel()
    assert noise.dtype.kind == "i" and noise.size == 52 * len(exact.frame.columns)
    q = math.exp(-1 / 4.0)
    variance = 2 * q / (1 - q) ** 2  # 31.83
    assert abs(noise.mean()) < 6 * math.sqrt(variance / noise.size)
    assert noise.var() == pytest.approx(variance, rel=0.03)  # the estimate's own sd is ~0.5 %
    assert np.mean(noise == 0) == pytest.approx((1 - q) / (1 + q), abs=0.01)
    clamped = private_counts(counts, epsilon=0.5, level="county", freq="W", **DECEMBER)
    assert clamped.frame.to_numpy().min() == 0 and clamped.nonnegative


def test_refusals_name_the_field(counts: SurveillanceCounts) -> None:
    cases = [({"epsilon": 1, "start": None, "end": "2025-12-28", "level": "county"}, "start"),
             ({"epsilon": 1, "level": "region", **DECEMBER}, "regions"),
             ({"epsilon": 0, "level": "county", **DECEMBER}, "epsilon"),
             ({"epsilon": float("nan"), "level": "county", **DECEMBER}, "epsilon"),
             ({"epsilon": 1, "level": "county", "max_cases_per_patient": 0, **DECEMBER},
              "max_cases_per_patient"),
             ({"epsilon": 1, "regions": [], "level": "county", **DECEMBER}, "regions"),
             ({"epsilon": 1, "regions": ["25017"], "level": "region", **DECEMBER}, "regions"),  # a county id
             ({"epsilon": 1, "regions": ["US-MA"], "level": "county", **DECEMBER}, "regions")]
    for kwargs, field in cases:
        with pytest.raises(InvalidInput) as e:
            private_counts(counts, **kwargs)
        assert e.value.field == field, kwargs
    with pytest.raises(InvalidInput, match="has not ended"):
        private_counts(counts, epsilon=1, level="county", start="2025-12-01", end="2025-12-03",
                       completed_by=dt.date(2025, 12, 3), freq="D")


def test_cli_release_card_ledger_and_budget(store_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "published.csv"
    common = ["counts", "--store", str(store_dir), "--level", "county", "--start", "2025-12-01",
              "--end", "2025-12-28", "--epsilon", "1", "--regions", ",".join(ZIPS.values())]
    before, n = spent(ParquetStore(str(store_dir)))
    assert main([*common, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "epsilon 1 per patient" in err and "6 case-days beyond the bound" in err
    table = pd.read_csv(out, dtype={"region": str})
    assert set(table["region"]) == set(ZIPS.values()) and len(table) == 3 * 4 and (table["count"] >= 0).all()
    card = json.loads(out.with_suffix(".privacy.json").read_text())
    assert card["epsilon"] == pytest.approx(1.0) and card["privacy_unit"] == "patient"
    assert card["max_cases_per_patient"] == 4 and card["delta"] == 0.0 and card["cells"] == 12
    assert "left_out_by_bound" not in card  # data-dependent: for the operator only
    assert "biased upwards" in card["reading"] and card["noise_sd"] == pytest.approx(5.64, abs=0.01)
    assert spent(ParquetStore(str(store_dir))) == (pytest.approx(before + 1.0), n + 1)
    assert main([*common, "--budget", str(before + 1.5)]) == 2
    assert "would pass the budget" in capsys.readouterr().err
    assert spent(ParquetStore(str(store_dir)))[1] == n + 1  # the refused release spent nothing
    assert main(["counts", "--store", str(store_dir), "--epsilon", "1", "--regions", "US-MA"]) == 2
    assert "start is required for a private release" in capsys.readouterr().err
    assert main(["counts", "--store", str(store_dir), "--regions", "US-MA"]) == 2  # no --epsilon
    assert "go with --epsilon" in capsys.readouterr().err
    for eps in ("1e-300", "1e300"):  # noise that drowns everything; exact counts called private
        at = common.index("--epsilon") + 1
        assert main([*common[:at], eps, *common[at + 1:]]) == 2
        assert "is outside [0.001, 20]" in capsys.readouterr().err
    assert spent(ParquetStore(str(store_dir)))[1] == n + 1  # nothing recorded


def test_a_concurrent_release_is_counted_before_the_budget_lets_another_through(
    counts: SurveillanceCounts, tmp_path: Path
) -> None:
    """Two releases at once: the one that loses the ledger number re-reads the ledger (with the winner's
    entry in it) and checks the budget again, instead of both passing a check made before either wrote."""
    store = ParquetStore(str(tmp_path / "ledger")).open()
    release = private_counts(counts, epsilon=1, regions=["US-MA"], freq="W", **DECEMBER)
    assert record(store, release, {"use": "first"}, budget=3)[0].endswith("privacy/release-00000001.json")
    create, raced = store.create_exclusive, []

    def another_process_wins(rel: str, body: bytes) -> bool | None:
        if not raced:  # between this release's check and its write, another one takes the next number
            raced.append(rel)
            assert create(rel, json.dumps({"epsilon": 1.5}).encode())
        return create(rel, body)

    store.create_exclusive = another_process_wins  # type: ignore[method-assign]
    with pytest.raises(InvalidInput, match=r"2 recorded releases have spent 2\.5; another 1 would pass"):
        record(store, release, {"use": "second"}, budget=3)
    assert raced == ["privacy/release-00000002.json"] and spent(store) == (2.5, 2)
    path, text = record(store, release, {"use": "third"}, budget=3.5)  # room for it: the next number
    assert path.endswith("release-00000003.json") and json.loads(text)["use"] == "third"
    assert spent(store) == (3.5, 3)


def test_cli_release_places_from_a_headerless_graph_named_by_region_ids(store_dir: Path, tmp_path: Path,
                                                                         capsys) -> None:
    graph = tmp_path / "adj.txt"
    graph.write_text("1,1,0\n1,1,1\n0,1,1\n")
    (tmp_path / "ids.txt").write_text("".join(f"{c}\n" for c in ZIPS.values()))
    december = ["--start", DECEMBER["start"], "--end", DECEMBER["end"]]
    common = ["counts", "--store", str(store_dir), "--level", "county", "--epsilon", "1", "--graph",
              str(graph), *december]
    out = tmp_path / "c.csv"
    assert main([*common, "--region-ids", str(tmp_path / "ids.txt"), "--out", str(out)]) == 0
    assert set(pd.read_csv(out, dtype={"region": str})["region"]) == set(ZIPS.values())
    assert main(common) == 2  # by position (r01 ...): not county ids, refused before any release
    assert "r01" in capsys.readouterr().err
    assert main(["counts", "--store", str(store_dir), "--epsilon", "1", "--regions", "US-MA",
                 "--region-ids", str(tmp_path / "ids.txt"), *december]) == 2
    assert "it needs --graph" in capsys.readouterr().err


class _StoredCases:
    """The one method ``private_counts`` reads: cases as ``SurveillanceCounts.cases`` gives them."""

    def __init__(self, cases: pd.DataFrame) -> None:
        self._cases = cases

    def cases(self, syndrome: str, level: str) -> pd.DataFrame:
        return self._cases.copy()


def test_cases_without_a_patient_are_left_out() -> None:
    """Nobody to bound: a row stored without a patient (``row-…``) is not released."""
    day = pd.Timestamp("2025-12-02")
    cases = pd.DataFrame({"patient_id": ["p1", "p2", "row-0a", "row-0b"], "place": ["US-MA"] * 4,
                          "day": [day] * 4})
    out = private_counts(_StoredCases(cases), epsilon=EXACT, regions=["US-MA"], freq="D", start=day, end=day)
    assert out.unattributed == 2 and out.frame.loc[day, "US-MA"] == 2
