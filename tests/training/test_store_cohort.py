"""``healthai train risk --from-store``: a readmission cohort built from an ingest store.

The store is filled through the ingest core the Ingest RPC runs (normalize → Parquet commit) with the
23 Synthea bundles of ../shared/data/fhir (SNOMED conditions mapped with the NLM fixture map), one
crafted patient whose encounter sequence fixes each outcome case, and a generated cohort with a
planted readmission signal (Synthea has 5 adult inpatients: too few to split and train on)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import uuid
from pathlib import Path

import grpc
import numpy as np
import pandas as pd
import pytest

from healthai.app.settings import Settings
from healthai.app.testing import serve_in_thread
from healthai.ingest.service import IngestCore
from healthai.normalize import features
from healthai.normalize.context import NormalizeContext
from healthai.normalize.identity import record_system
from healthai.serving.plugin import plugin
from healthai.serving.settings import ServingSettings
from healthai.store import ParquetStore
from healthai.v1 import ingest_pb2, risk_pb2, risk_pb2_grpc
from healthai_training import cli
from healthai_training.export import run_onnx
from healthai_training.risk.cohort import load_cohort
from healthai_training.risk.store_cohort import TARGET, StoreCohortOptions, build_store_cohort, read_store
from tests.training import store_cohort_fhir as fhir

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")
REPO = Path(__file__).resolve().parents[2]
NLM_MAP = REPO / "tests/normalize/fixtures/der2_iisssccRefset_ExtendedMapSnapshot_FIXTURE.txt"
KEY = b"test-key-not-a-secret-0123456789"
HOSPITAL = "hospital-a"
DIRK = "Dirk_Kuhlman_1e503533-b8c2-42cb-a6d5-bbd7d70d07ad.json"  # diabetes, CKD; one stay in Dec 2020


@pytest.fixture(scope="module")
def ctx() -> NormalizeContext:
    return NormalizeContext.create(key=KEY, reference_date=dt.date(2026, 11, 1), snomed_map_nlm=NLM_MAP)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, shared_data: Path, ctx: NormalizeContext) -> str:
    uri = str(tmp_path_factory.mktemp("store"))
    parquet = ParquetStore(uri).open()
    core = IngestCore(ctx, parquet, max_records=1_000_000)
    payloads = [("synthea", p.read_bytes()) for p in sorted((shared_data / "fhir").glob("*.json"))]
    payloads += [(HOSPITAL, fhir.crafted_bundle()), (HOSPITAL, fhir.generated_bundle(n=200))]
    for source, payload in payloads:
        request = ingest_pb2.IngestRequest(source=source, fhir=ingest_pb2.FhirPayload(json=payload))
        batch = core.normalize(request)
        core.commit(batch.tables, uuid.uuid4().hex)
    parquet.close()
    return uri


@pytest.fixture(scope="module")
def frames(store: str) -> dict[str, pd.DataFrame]:
    return read_store(store)


def _crafted(table: pd.DataFrame, ctx: NormalizeContext) -> pd.DataFrame:
    pid = ctx.pseudonymizer.pseudonym(record_system(HOSPITAL, "Patient"), "crafted-patient-1")
    return table[table["patient_id"] == pid].sort_values("discharge").reset_index(drop=True)


def test_outcome_of_a_crafted_encounter_sequence(frames: dict, ctx: NormalizeContext) -> None:
    cohort = build_store_cohort(frames)
    rows = _crafted(cohort.table, ctx)
    # Readmitted 29 days after discharge → 1, 31 days → 0, exactly 30 → 1, 20 months → 0; the last
    # stay's window ends after the source's last stored date (2024-12-31): excluded, not labelled 0.
    assert rows["discharge"].tolist() == [pd.Timestamp(d) for _, d in fhir.CRAFTED_STAYS[:4]]
    assert rows[TARGET].tolist() == list(fhir.CRAFTED_LABELS)
    assert cohort.report["counts"]["excluded_censored_window_after_data_end"] >= 1
    assert cohort.report["data_end"][HOSPITAL] == fhir.DATA_END.isoformat()
    # One index per patient on request: the first stay, or the last uncensored one.
    first = build_store_cohort(frames, StoreCohortOptions(per_patient="first"))
    last = build_store_cohort(frames, StoreCohortOptions(per_patient="last"))
    assert first.table["patient_id"].is_unique and last.table["patient_id"].is_unique
    assert _crafted(first.table, ctx)[TARGET].tolist() == [1]
    assert _crafted(last.table, ctx)[TARGET].tolist() == [0]
    # A data end given by the caller censors more: the window of the third stay (to 2023-04-09) passes it.
    early = build_store_cohort(frames, StoreCohortOptions(data_end=dt.datetime(2023, 4, 1, tzinfo=dt.UTC)))
    assert _crafted(early.table, ctx)[TARGET].tolist() == [1, 0]
    # Any encounter as index: the emergency visit of 2022-11-01 is one; no admission within 30 days.
    anyc = _crafted(build_store_cohort(frames, StoreCohortOptions(index_encounter="any")).table, ctx)
    assert len(anyc) == 5 and anyc[TARGET].tolist() == [0, 1, 0, 1, 0]


def test_features_of_the_crafted_patient(frames: dict, ctx: NormalizeContext) -> None:
    rows = _crafted(build_store_cohort(frames).table, ctx)
    birth = dt.date(1950, 3, 15)  # born 1950-03-21, stored as 1950-03 → the 15th
    ages = [(d.date() - birth).days / 365.2425 for _, d in fhir.CRAFTED_STAYS[:4]]
    np.testing.assert_allclose(rows["age_years"], ages, rtol=1e-9)
    assert rows["sex_male"].tolist() == [1.0] * 4
    assert rows["length_of_stay_days"].tolist() == [3.0, 3.0, 2.0, 3.0]
    # the reading after discharge 1 counts from stay 2 on
    assert rows["sbp_last"].tolist() == [160.0, 170.0, 170.0, 170.0]
    np.testing.assert_allclose(rows["creatinine_mg_dl"], 1.5, rtol=1e-4)  # sent as 132.6 umol/L
    assert rows["heart_rate_last"].tolist() == [88.0] * 4
    assert rows["charlson_index"].tolist() == [1.0, 1.0, 2.0, 2.0]  # CHF; + diabetes from March 2023
    assert rows["prior_inpatient_365d"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert rows["prior_emergency_365d"].tolist() == [1.0] * 4
    assert rows["dbp_last"].isna().all() and rows["glucose_mg_dl"].isna().all()  # never measured


def test_rarely_measured_features_left_out_and_federated_imputation(frames: dict) -> None:
    everything = build_store_cohort(frames, StoreCohortOptions(min_measured=0))
    assert everything.report["features_left_out"] == []
    sparse = build_store_cohort(frames, StoreCohortOptions(min_measured=100))  # HbA1c: 2 Synthea patients
    left_out = sparse.report["features_left_out"]
    assert "hba1c_pct" in left_out and "sbp_last" not in left_out
    assert "hba1c_pct" not in sparse.table and "[features.hba1c_pct]" not in sparse.spec_toml
    # A federated site: data-independent imputation (domain midpoints), every numeric feature bounded.
    data = everything.risk_data(seed=0, impute="midpoint")
    assert np.isfinite(data.x).all()
    assert data.description["patients"] == everything.table["patient_id"].nunique()


def _raw_latest(entries: list[dict], code: str, before: str) -> float:
    """Latest value of a LOINC code (as an Observation or a panel component) at or before ``before``."""
    hits = []
    for r in (e["resource"] for e in entries if e["resource"]["resourceType"] == "Observation"):
        when = r.get("effectiveDateTime", "")
        parts = [r, *r.get("component", [])]
        for part in parts:
            coded = any(c["code"] == code for c in part["code"]["coding"])
            if coded and "valueQuantity" in part and pd.Timestamp(when) <= pd.Timestamp(before):
                hits.append((pd.Timestamp(when), part["valueQuantity"]["value"]))
    return sorted(hits, key=lambda h: h[0])[-1][1]


def test_synthea_patient_by_hand_and_the_shared_feature_definitions(
    frames: dict, shared_data: Path, ctx: NormalizeContext
) -> None:
    cohort = build_store_cohort(frames, StoreCohortOptions(min_measured=0))  # keep every measurement
    table = cohort.table
    entries = json.loads((shared_data / "fhir" / DIRK).read_text())["entry"]
    pid = ctx.pseudonymizer.pseudonym(record_system("synthea", "Patient"),
                                      next(e["resource"]["id"] for e in entries
                                           if e["resource"]["resourceType"] == "Patient"))
    row = table[table["patient_id"] == pid]
    assert len(row) == 1
    row = row.iloc[0]
    stay = next(e["resource"]["period"] for e in entries if e["resource"]["resourceType"] == "Encounter"
                and e["resource"]["class"]["code"] == "IMP")
    discharge, admit = pd.Timestamp(stay["end"]), pd.Timestamp(stay["start"])
    assert row["discharge"] == discharge and row[TARGET] == 0  # no later admission before 2021-03-30
    assert row["age_years"] == pytest.approx((discharge.date() - dt.date(1971, 12, 15)).days / 365.2425)
    assert row["length_of_stay_days"] == pytest.approx((discharge - admit).total_seconds() / 86400)
    for name, code in (("sbp_last", "8480-6"), ("dbp_last", "8462-4"), ("bmi", "39156-5"),
                       ("glucose_mg_dl", "2339-0"), ("creatinine_mg_dl", "38483-4"), ("hba1c_pct", "4548-4")):
        assert row[name] == pytest.approx(_raw_latest(entries, code, stay["end"])), name
    encounters = [e["resource"] for e in entries if e["resource"]["resourceType"] == "Encounter"]
    year_before = [e["class"]["code"] for e in encounters
                   if admit - pd.Timedelta(days=365) <= pd.Timestamp(e["period"]["start"]) < admit]
    assert row["prior_outpatient_365d"] == year_before.count("AMB")
    assert row["prior_emergency_365d"] == year_before.count("EMER")
    # Every Synthea index row agrees with healthai.normalize.features.patient_features (the definition
    # the Risk service documents) evaluated at its discharge.
    enc = frames["encounter"]
    ids = set(enc.loc[enc["source"] == "synthea", "patient_id"]) & set(table["patient_id"])
    names = ("age_years", "sex_male", "sbp_last", "dbp_last", "bmi", "hba1c_pct", "creatinine_mg_dl",
             "glucose_mg_dl", "sodium_mmol_l", "potassium_mmol_l", "charlson_index")
    checked = 0
    for _, p in frames["patient"][frames["patient"]["patient_id"].isin(ids)].iterrows():
        own = p["patient_id"]
        mine = {k: frames[k][frames[k]["patient_id"] == own] for k in ("observation", "condition")}
        mine = {k: v.astype(object).where(v.notna(), None) for k, v in mine.items()}  # None, as stored
        for _, r in table[table["patient_id"] == p["patient_id"]].iterrows():
            ref = features.patient_features(p.to_dict(), observations=mine["observation"].to_dict("records"),
                                            conditions=mine["condition"].to_dict("records"),
                                            at=r["discharge"].to_pydatetime())
            for name in names:
                a, b = float(r[name]), ref[name]
                assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b), (name, a, b)
            checked += 1
    assert len(ids) == 5 and checked == 57  # the adult Synthea inpatients and their uncensored stays


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="healthai")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_cli_from_store_trains_a_card_with_privacy_and_domains_served_by_risk_score(
    store: str, tmp_path: Path, ctx: NormalizeContext
) -> None:
    repo, out, cohort_dir = tmp_path / "repo", tmp_path / "metrics.json", tmp_path / "cohort"
    code = _run(["train", "risk", "--from-store", store, "--outcome", "readmission30", "--index-encounter",
                 "inpatient", "--cohort-dir", str(cohort_dir), "--epsilon", "3",  # settings sized to it
                 "--runs-dir", str(tmp_path / "runs"),
                 "--export-to", str(repo), "--json", str(out)])
    assert code == 0
    summary = json.loads(out.read_text())
    assert set(summary) == {"auroc", "auprc", "brier", "epsilon"} and 0 < summary["epsilon"] <= 3.0
    name = "risk_store_readmission30_inpatient"
    card = json.loads((repo / name / "1/model_card.json").read_text())
    assert card["metrics"]["config_source"]["user_overrides"] == []  # risk.defaults, sized to the cohort
    assert card["metrics"]["config"]["batch_size"] == 256 and card["metrics"]["config"]["hidden"] == 0
    privacy = card["privacy"]
    assert privacy["epsilon"] == summary["epsilon"] and privacy["delta"] == 1e-5 and privacy["private"]
    assert privacy["privacy_unit"].startswith("patient (column 'patient_id'")
    assert "one patient with all of their rows" in privacy["guarantee"]
    outcome = "outcome = an inpatient admission starting after the discharge and within 30 days"
    assert outcome in card["data"]["spec"]
    domain = {f["name"]: f["domain"] for f in card["features"]}
    assert domain["sbp_last_missing"] == {"kind": "binary"}
    assert domain["sbp_last"]["clinical"] == [40.0, 300.0] and domain["sbp_last"]["min"] >= 40.0
    assert domain["prior_inpatient_365d"]["integer"] is True
    names = [f["name"] for f in card["features"]]
    # The served model: Risk.Score over a real gRPC server answers with the exported graph's output.
    data, _ = load_cohort(cohort_dir / "cohort.parquet", cohort_dir / "cohort.toml", seed=0)
    table = pd.read_parquet(cohort_dir / "cohort.parquet")
    assert data.description["rows_dropped"] == 0  # data.x rows are the table's
    rows = np.flatnonzero(table["patient_id"].to_numpy() == _crafted(table, ctx)["patient_id"].iloc[0])
    x = data.x[rows]
    assert len(x) == 4
    filled = data.missing[rows]
    for j in np.flatnonzero(filled.any(axis=0)):  # a DP card fills with its released values (risk.release)
        x[filled[:, j], j] = card["imputation"]["values"][names[j]]
    expected = run_onnx(repo / name / "1/model.onnx", {"features": x}).ravel()
    serving = ServingSettings(model_repository=repo, reload_poll_s=0.0)
    settings = Settings(port=0, dev_mode=True, serving=serving)
    with serve_in_thread(settings, [plugin(settings=settings)]) as running, \
            grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = risk_pb2_grpc.RiskStub(channel)
        reply = stub.Score(risk_pb2.ScoreRequest(model_name=name, feature_names=names,
                                                 features=x.reshape(-1).tolist()), timeout=30)
        np.testing.assert_allclose(reply.probability, expected, rtol=1e-5)
        # charlson_index left out: the server derives it from the codes (CHF + diabetes = 2 at stay 3).
        given = [n for n in names if n != "charlson_index"]
        row = x[2:3, [names.index(n) for n in given]]
        derived = stub.Score(risk_pb2.ScoreRequest(
            model_name=name, feature_names=given, features=row.reshape(-1).tolist(),
            diagnoses=[risk_pb2.DiagnosisCodes(codes=["I50.9", "E11.9"], system="icd10")]), timeout=30)
        assert derived.probability[0] == pytest.approx(expected[2], rel=1e-5)
        bad = x[:1].copy()
        bad[0, names.index("sbp_last")] = 400.0  # outside the clinical limit 300
        with pytest.raises(grpc.RpcError) as err:
            stub.Score(risk_pb2.ScoreRequest(model_name=name, feature_names=names,
                                             features=bad.reshape(-1).tolist()), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "sbp_last" in err.value.details()


def test_cli_from_store_input_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    ParquetStore(str(empty)).open().close()
    assert _run(["train", "risk", "--from-store", str(empty), "--runs-dir", str(tmp_path)]) == 2
    assert "holds no patient or encounter records" in capsys.readouterr().out
    assert _run(["train", "risk", "--from-store", str(empty), "--table", "x.csv", "--spec", "x.toml"]) == 2
    assert "give --from-store, or --table/--spec, or --dataset" in capsys.readouterr().out
    assert _run(["train", "risk", "--from-store", str(tmp_path / "typo"), "--runs-dir", str(tmp_path)]) == 2
    assert "no such directory" in capsys.readouterr().out and not (tmp_path / "typo").exists()
