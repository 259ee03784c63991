"""A ``--syndromes`` file's LOINC and SNOMED CT codes pass their check digits (a typo is refused, naming
the syndrome, key and code, not counted as an all-zero series); ``healthai counts --nowcast`` says why
it has nothing to estimate (no recent period; records without a place of the level) in plain words."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from healthai.cli import main
from healthai.normalize.fhir import normalize_fhir
from healthai.store import ParquetStore
from healthai.surveillance.syndrome_file import load_syndromes
from tests.ingest.conftest import context


def test_valid_codes_load_and_the_cli_refuses_a_typo(tmp_path: Path, capsys) -> None:
    path = tmp_path / "syndromes.toml"
    path.write_text('[syndromes.flua]\nlab_loinc = ["92142-9"]\nsnomed = ["6142004"]\n')
    got = load_syndromes(path)["flua"]
    assert got.lab_loincs == frozenset({"92142-9"}) and got.snomed_codes == frozenset({"6142004"})
    ParquetStore(str(tmp_path / "store")).open().close()
    path.write_text('[syndromes.flua]\nlab_loinc = ["92142-8"]\n')
    argv = ["counts", "--store", str(tmp_path / "store"), "--syndromes", str(path), "--syndrome", "flua"]
    assert main(argv) == 2
    assert "lab_loinc ['92142-8'] fail the LOINC check digit" in capsys.readouterr().err


# ---------------------------------------------------------------- the nowcast's words
def _store(root: Path, days: list[tuple[dt.date, dt.date]], address: dict) -> None:
    """One influenza case per (onset, stored) day pair, its patient at ``address``."""
    store = ParquetStore(str(root)).open()
    ctx = context()
    for i, (onset, stored) in enumerate(days):
        patient = {"resourceType": "Patient", "id": f"p{i}", "address": [address]}
        condition = {"resourceType": "Condition", "id": f"c{i}", "subject": {"reference": f"Patient/p{i}"},
                     "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "J11.1"}]},
                     "onsetDateTime": onset.isoformat()}
        bundle = {"resourceType": "Bundle", "type": "collection",
                  "entry": [{"resource": patient}, {"resource": condition}]}
        out = normalize_fhir(bundle, ctx=ctx, source="s")
        store.commit({k: t for k, t in out.tables.items() if t.num_rows},
                     now=dt.datetime.combine(stored, dt.time(12), dt.UTC))
    store.close()


def test_a_nowcast_with_no_recent_period_says_so_without_empty_dates(tmp_path: Path, capsys) -> None:
    onset = dt.date(2025, 6, 2)
    _store(tmp_path / "store", [(onset, onset + dt.timedelta(days=1))] * 3, {"state": "MA", "country": "US"})
    argv = ["counts", "--store", str(tmp_path / "store"), "--nowcast", "--as-of", "2026-05-01"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "periods  to " not in err and "chain ladder" not in err
    assert "no period listed ended less than 28 days before 2026-05-01: every count is final" in err


def test_a_county_nowcast_of_records_without_a_county_names_that_cause(tmp_path: Path, capsys) -> None:
    as_of = dt.date(2026, 5, 4)
    days = [(as_of - dt.timedelta(days=d), as_of - dt.timedelta(days=d - 1)) for d in range(2, 60)]
    _store(tmp_path / "store", days, {"state": "MA", "country": "US"})  # a state, no county
    argv = ["counts", "--store", str(tmp_path / "store"), "--nowcast", "--as-of", as_of.isoformat()]
    assert main([*argv, "--level", "county"]) == 2
    err = capsys.readouterr().err
    assert "58 matching records of the store have no county or no date" in err
    assert "loaded in bulk" not in err
    assert main(argv) == 0  # by state they are counted, and nowcast
    assert "chain ladder" in capsys.readouterr().err
