"""An agency's own syndromes from a TOML file (``healthai.surveillance.syndrome_file``): loaded beside the
built-in ones, refused with the key named when wrong, and counted from real FHIR in a real store by
``healthai counts --syndromes``, ``train forecast --from-store --syndromes`` and the server's setting."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from healthai.app.settings import Settings
from healthai.cli import main
from healthai.errors import InvalidInput
from healthai.ingest.plugin import IngestPlugin
from healthai.store import ParquetStore
from healthai.surveillance.syndrome_file import load_syndromes
from healthai.surveillance.syndromes import SYNDROMES

from .test_surveillance_labs import patient, store_payloads

MEASLES = """
[syndromes.measles]
description = "measles"
icd10 = ["b05"]
snomed = ["14189004"]
"""


def test_a_file_adds_syndromes_beside_the_built_in_ones(tmp_path: Path) -> None:
    path = tmp_path / "syndromes.toml"
    path.write_text(MEASLES + '\n[syndromes.pertussis_lab]\nlab_loinc = ["43913-3"]\n')
    got = load_syndromes(path)
    assert set(got) == set(SYNDROMES) | {"measles", "pertussis_lab"}
    assert got["measles"].icd10_prefixes == ("B05",) and got["measles"].snomed_codes == {"14189004"}
    pertussis = got["pertussis_lab"]
    assert pertussis.lab_loincs == {"43913-3"} and pertussis.description == "pertussis_lab"
    assert load_syndromes(None) == SYNDROMES


@pytest.mark.parametrize(("text", "message"), [
    ('[syndromes.ili]\nicd10 = ["J11"]', "'ili' is built in and cannot be redefined"),
    ('[syndromes.Measles]\nicd10 = ["B05"]', "a name is lower-case letters"),
    ('[syndromes.measles]\nicd10 = ["B05"]\nicd9 = ["055"]', r"unknown keys \['icd9'\]"),
    ('[syndromes.measles]\nicd10 = ["B5"]', r"icd10 \['B5'\] are not valid codes"),
    ('[syndromes.measles]\nsnomed = [14189004]', "snomed must be a list of strings"),
    ('[syndromes.measles]\ndescription = "measles"', "needs at least one code"),
    ('[measles]\nicd10 = ["B05"]', r"needs \[syndromes.NAME\] tables and nothing else"),
    ("[syndromes.measles\n", "not TOML"),
    ('[syndromes.flua]\nlab_loinc = ["92142-8"]',  # flu A RNA is 92142-9
     r"\[syndromes.flua\]: lab_loinc \['92142-8'\] fail the LOINC check digit"),
    ('[syndromes.flu2]\nsnomed = ["6142005"]',  # influenza is 6142004
     r"\[syndromes.flu2\]: snomed \['6142005'\] fail the SNOMED CT check digit"),
    ('[syndromes.flu3]\nsnomed = ["6142004", "6142014"]', r"snomed \['6142014'\] fail"),
])
def test_a_wrong_file_is_refused_naming_the_syndrome_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "syndromes.toml"
    path.write_text(text)
    with pytest.raises(InvalidInput, match=message) as e:
        load_syndromes(path)
    assert e.value.field == "syndromes" and str(path) in e.value.message
    with pytest.raises(InvalidInput, match="No such file"):
        load_syndromes(tmp_path / "missing.toml")


def test_counts_and_the_server_count_a_syndrome_of_the_file(tmp_path: Path, capsys) -> None:
    path = tmp_path / "syndromes.toml"
    path.write_text(MEASLES)
    store = ParquetStore(str(tmp_path / "store")).open()
    condition = {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},
                 "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "B05.9"}]},
                 "onsetDateTime": "2026-01-06T09:00:00Z"}
    store_payloads(store, [patient("p1", "MA"), condition])
    store.close()
    out = tmp_path / "counts.csv"
    argv = ["counts", "--store", str(tmp_path / "store"), "--syndrome", "measles", "--out", str(out)]
    assert main(argv) == 2
    assert "syndrome 'measles' is not one of" in capsys.readouterr().err
    assert main([*argv, "--syndromes", str(path)]) == 0
    table = pd.read_csv(out)
    assert table.to_dict("records") == [{"region": "US-MA", "period": "2026-01-05", "count": 1}]
    settings = Settings(dev_mode=True, store_uri=str(tmp_path / "store"), syndromes_file=path)
    assert "measles" in IngestPlugin(settings).surveillance.syndromes
    with pytest.raises(InvalidInput, match="needs at least one code"):
        path.write_text('[syndromes.measles]\ndescription = "measles"')
        IngestPlugin(settings)


def test_dotless_icd10_codes_are_read_as_ingest_reads_them(tmp_path: Path) -> None:
    path = tmp_path / "syndromes.toml"
    path.write_text('[syndromes.flu_b]\nicd10 = ["J101", "j10.81", "J11"]\n')
    assert load_syndromes(path)["flu_b"].icd10_prefixes == ("J10.1", "J10.81", "J11")
