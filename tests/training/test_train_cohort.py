"""``healthai train risk --table --spec``: any cohort table + TOML spec → run folder, card with domains,
ONNX served by Risk.Score; patient-level DP when patients have several rows; clear input errors."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from healthai.app.settings import Settings
from healthai.app.testing import serve_in_thread
from healthai.errors import InputFileError
from healthai.serving.plugin import plugin
from healthai.serving.settings import ServingSettings
from healthai.v1 import risk_pb2, risk_pb2_grpc
from healthai_training import cli
from healthai_training.export import run_onnx
from healthai_training.privacy import PrivacySettings, make_private
from healthai_training.risk.cohort import build_cohort, load_cohort, load_spec
from healthai_training.risk.defaults import cohort_risk_defaults
from healthai_training.risk.patients import batch_loss, patient_tensors
from healthai_training.risk.train import RiskConfig, train_risk

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")
HEART = "risk/uci_heart_disease/heart_disease_4sites.csv"
SPEC = Path(__file__).resolve().parents[2] / "training/examples/heart_cohort.toml"


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="healthai")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_cli_trains_exports_card_with_domains_and_risk_score_serves_it(
    shared_data: Path, tmp_path: Path
) -> None:
    repo, out = tmp_path / "repo", tmp_path / "metrics.json"
    code = _run(["train", "risk", "--table", str(shared_data / HEART), "--spec", str(SPEC), "--epsilon", "3",
                 "--runs-dir", str(tmp_path / "runs"), "--export-to", str(repo), "--json", str(out)])
    assert code == 0
    summary = json.loads(out.read_text())
    assert set(summary) == {"auroc", "auprc", "brier", "epsilon"}
    # The DP settings sized to the cohort (552 training patients); 0.85-0.91 on seeds 0-4 at eps 1.2.
    assert 0 < summary["epsilon"] <= 3.0 and summary["auroc"] > 0.8
    (run,) = (tmp_path / "runs").glob("risk-heart_cohort-eps3-seed0*")
    config = json.loads((run / "metrics.json").read_text())["config"]
    assert config | cohort_risk_defaults(552, private=True) == config
    card = json.loads((repo / "risk_heart_cohort/1/model_card.json").read_text())
    names = [f["name"] for f in card["features"]]
    domain = {f["name"]: f["domain"] for f in card["features"]}  # schema: healthai.serving.risk.domains
    assert domain["age"]["kind"] == "range" and (domain["age"]["min"], domain["age"]["max"]) == (18.0, 110.0)
    assert domain["sex_male"] == {"kind": "binary"} and domain["cholesterol_missing"] == {"kind": "binary"}
    groups = {g["name"]: g["features"] for g in card["domains"]["one_hot"]}
    assert groups["cp"] == ["cp_typical_angina", "cp_atypical_angina", "cp_non_anginal", "cp_asymptomatic"]
    assert card["privacy"]["epsilon"] == summary["epsilon"] and card["privacy"]["delta"] == 1e-5
    assert "one row is one patient" in card["privacy"]["guarantee"]
    # The served model answers Risk.Score with the exported graph's probabilities.
    data, _ = load_cohort(shared_data / HEART, SPEC, seed=0)
    x = data.x[:5]
    expected = run_onnx(repo / "risk_heart_cohort/1/model.onnx", {"features": x}).ravel()
    # ... and fills a missing value the spec allows as training did (the card's imputation block)
    imputation = card["imputation"]
    assert imputation["indicators"] == {"cholesterol": "cholesterol_missing",
                                        "max_heart_rate": "max_heart_rate_missing"}
    # a DP card fills with the DP-released value (risk.release), never the exact training mean
    assert imputation["values"]["age"] == card["privacy"]["released"]["features"]["age"]["fill"]
    chol, flag = names.index("cholesterol"), names.index("cholesterol_missing")
    missing, filled = x[:1].copy(), x[:1].copy()
    missing[0, chol] = np.nan
    filled[0, chol], filled[0, flag] = imputation["values"]["cholesterol"], 1.0
    expected_filled = run_onnx(repo / "risk_heart_cohort/1/model.onnx", {"features": filled}).ravel()
    serving = ServingSettings(model_repository=repo, reload_poll_s=0.0)
    settings = Settings(port=0, dev_mode=True, serving=serving)
    with serve_in_thread(settings, [plugin(settings=settings)]) as running:
        import grpc

        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            reply = risk_pb2_grpc.RiskStub(channel).Score(
                risk_pb2.ScoreRequest(model_name="risk_heart_cohort", features=x.reshape(-1).tolist(),
                                      feature_names=names), timeout=30)
            reply_missing = risk_pb2_grpc.RiskStub(channel).Score(
                risk_pb2.ScoreRequest(model_name="risk_heart_cohort", features=missing.reshape(-1).tolist(),
                                      feature_names=names), timeout=30)
    np.testing.assert_allclose(reply.probability, expected, rtol=1e-5)
    np.testing.assert_allclose(reply_missing.probability, expected_filled, rtol=1e-5)


def _visits(shared_data: Path, seed: int = 0) -> pd.DataFrame:
    """The heart patients, each seen 1-4 times (same label, jittered vitals): several rows per patient."""
    df = pd.read_csv(shared_data / HEART)
    rng = np.random.default_rng(seed)
    df["patient"] = [f"p{i:04d}" for i in range(len(df))]
    rows = df.loc[df.index.repeat(rng.integers(1, 5, size=len(df)))].reset_index(drop=True)
    rows["thalach"] = rows["thalach"] + rng.integers(-3, 4, size=len(rows))
    return rows


def test_several_rows_per_patient_use_patient_level_dp(shared_data: Path, tmp_path: Path) -> None:
    table = tmp_path / "visits.parquet"
    _visits(shared_data).to_parquet(table)
    spec_text = SPEC.read_text().replace("rows_are_patients = true", 'patient_id = "patient"')
    spec = tmp_path / "visits.toml"
    spec.write_text(spec_text)
    data, _ = load_cohort(table, spec, seed=0)
    assert data.groups is not None and data.description["patients"] == 920
    train_patients = np.unique(data.groups[data.split["train"]])
    assert not set(train_patients) & set(data.groups[data.split["test"]])  # split by patient
    cfg = RiskConfig(epochs=2, batch_size=64, lr=1e-2, privacy=PrivacySettings(epsilon=2.0))
    result = train_risk(data=data, config=cfg)
    assert result.metrics["training_examples"]["unit"] == "patient"
    assert result.metrics["training_examples"]["count"] == len(train_patients)
    assert result.privacy["sample_rate"] == pytest.approx(1 / np.ceil(len(train_patients) / 64))  # Opacus's q
    assert result.privacy["epsilon"] <= 2.0 and "'patient'" in result.privacy["privacy_unit"]


def test_cohort_defaults_scale_batch_and_epochs_to_the_cohort() -> None:
    small, large = cohort_risk_defaults(379, private=False), cohort_risk_defaults(42_000, private=False)
    assert (small["batch_size"], small["epochs"]) == (38, 200)  # 10 steps an epoch: 2,000 steps
    assert (large["batch_size"], large["epochs"], large["hidden"]) == (256, 20, 32)  # Diabetes 130's
    assert cohort_risk_defaults(10, private=False)["epochs"] == 300
    dp_small, dp_large = cohort_risk_defaults(379, private=True), cohort_risk_defaults(42_000, private=True)
    assert dp_small["batch_size"] == 256 and dp_large["batch_size"] == 2100  # ~20 steps an epoch
    recipe = {"epochs": 15, "lr": 0.25, "hidden": 0, "optimizer": "sgd", "shrink_inputs": True}
    assert dp_small | recipe == dp_small and dp_large | recipe == dp_large


def test_cli_sizes_settings_to_the_patients_and_user_flags_win(shared_data: Path, tmp_path: Path) -> None:
    table, spec = tmp_path / "visits.parquet", tmp_path / "visits.toml"
    _visits(shared_data).to_parquet(table)
    spec.write_text(SPEC.read_text().replace("rows_are_patients = true", 'patient_id = "patient"'))
    code = _run(["train", "risk", "--table", str(table), "--spec", str(spec), "--non-private",
                 "--epochs", "2", "--runs-dir", str(tmp_path / "runs"), "--no-export"])
    assert code == 0
    (run,) = (tmp_path / "runs").glob("risk-*-nonprivate-seed0*")
    metrics = json.loads((run / "metrics.json").read_text())
    patients = metrics["training_examples"]["count"]
    assert metrics["training_examples"]["unit"] == "patient" and patients == 552  # 60 % of 920, not rows
    sized = cohort_risk_defaults(patients, private=False)
    assert metrics["config"] | sized | {"epochs": 2} == metrics["config"] and sized["epochs"] != 2


def test_opacus_clips_one_gradient_per_patient() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 3)).astype(np.float32)
    y = (rng.random(30) > 0.5).astype(np.float32)
    groups = np.repeat(np.arange(10), 3)
    px, py, mask, dropped = patient_tensors(x, y, groups, np.arange(30), max_rows=2, seed=0)
    assert px.shape == (10, 2, 3) and dropped == 10 and mask.sum() == 20
    net = torch.nn.Linear(3, 1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(px, py, mask), batch_size=5)
    model, _, loader, _ = make_private(model=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
                                              loader=loader, settings=PrivacySettings(epsilon=5.0), epochs=1)
    batch = next(b for b in loader if len(b[0]))
    loss, n = batch_loss(model, batch, torch.device("cpu"))
    loss.backward()
    assert net.weight.grad_sample.shape[0] == n  # one per-sample gradient per patient, not per row


def _frame() -> pd.DataFrame:
    return pd.DataFrame({"pid": ["a", "a", "b", "c", "d", "e"] * 5, "age": [50, 51, 60, 70, 40, 30] * 5,
                         "sex": [0, 0, 1, 1, 0, 1] * 5, "kind": ["x", "x", "y", "z", "y", "x"] * 5,
                         "y": [0, 0, 1, 1, 0, 1] * 5})


def _spec(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return path


BASE = '[cohort]\nname = "t"\ntarget = "y"\npatient_id = "pid"\n'


@pytest.mark.parametrize(
    ("spec", "change", "message"),
    [
        ('[features.age]\ntype = "numeric"\ncolumn = "agee"\n', None, "features.age: unknown column 'agee'"),
        ('[features.age]\ntype = "numeric"\n', {"age": ["old"] + [50] * 29},
         "features.age: column 'age' has non-numeric values in 1 rows (first: 1) (values not shown)"),
        ('[features.age]\ntype = "numeric"\nmin = 0\nmax = 65\n', None,
         "column 'age' has values outside [0, 65] in 5 rows (first: 4, 10, 16"),
        ('[features.age]\ntype = "numeric"\n', {"y": [0, 1, 2] * 10}, "target 'y' must be binary 0/1"),
        ('[features.sex]\ntype = "binary"\n', {"sex": [0, 1, 2] * 10},
         "features.sex: column 'sex' has values outside its domain in 10 rows"),
        ('[features.kind]\ntype = "categorical"\ncategories = ["x", "y"]\n', None,
         "features.kind: column 'kind' has values outside its domain in 5 rows (first: 4,"),
        ('[features.age]\ntype = "numeric"\nmissing = "error"\n', {"age": [None] + [50] * 29},
         "column 'age' is missing in 1 rows (first: 1)"),
        ('[features.age]\ntype = "numbr"\n', None, "features.age.type = 'numbr': must be one of numeric"),
        ('[features.age]\ntype = "numeric"\nmn = 0\n', None, "spec [features.age]: unknown keys ['mn']"),
    ],
)
def test_bad_spec_or_table_names_the_field(tmp_path: Path, spec: str, change, message: str) -> None:
    df = _frame()
    for column, values in (change or {}).items():
        df[column] = values
    with pytest.raises(InputFileError) as info:
        build_cohort(df, load_spec(_spec(tmp_path, BASE + spec)), seed=0, source="t")
    assert message in str(info.value.message)


def test_errors_do_not_show_identifiers(tmp_path: Path) -> None:
    """A spec that names the patient id column as the target, or a numeric feature: no id is shown."""
    df = _frame().assign(pid=[f"MRN-{i:05d}" for i in range(30)])
    wrong_target = BASE.replace('target = "y"', 'target = "pid"') + '[features.age]\ntype = "numeric"\n'
    with pytest.raises(InputFileError) as info:
        build_cohort(df, load_spec(_spec(tmp_path, wrong_target)), seed=0, source="t")
    assert "found 30 distinct values (not shown)" in info.value.message and "MRN" not in info.value.message
    wrong_feature = BASE + '[features.age]\ntype = "numeric"\ncolumn = "pid"\n'
    with pytest.raises(InputFileError) as info:
        build_cohort(df, load_spec(_spec(tmp_path, wrong_feature)), seed=0, source="t")
    assert "non-numeric values in 30 rows" in info.value.message and "MRN" not in info.value.message
    labels = _frame().assign(y=["yes", "no"] * 15)  # a few labels are shown: to write positive = [...]
    with pytest.raises(InputFileError, match=r"found values \['no', 'yes'\]"):
        build_cohort(labels, load_spec(_spec(tmp_path, BASE + '[features.age]\ntype = "numeric"\n')), seed=0,
                     source="t")


def test_a_missing_category_is_filled_as_the_most_frequent_one(tmp_path: Path) -> None:
    """Flag by flag, every share under 0.5 would fill none of a group's flags, against the group's
    exactly-one rule (Score would refuse the row): the group's mode is one category."""
    from healthai_training.risk.domains import feature_domains

    df = _frame().assign(kind=[None, "x", "y", "z", "y", "w"] + ["x", "x", "y", "z", "y", "w"] * 4)
    spec = BASE + '[features.kind]\ntype = "categorical"\ncategories = ["x", "y", "z", "w"]\n'
    data = build_cohort(df, load_spec(_spec(tmp_path, spec)), seed=0, source="t")
    filled = {n: v for n, v in data.imputation["values"].items() if n.startswith("kind_")}
    assert sorted(filled.values()) == [0.0, 0.0, 0.0, 1.0]
    train = np.asarray(data.x[data.split["train"]])[:, [f.name.startswith("kind_") for f in data.features]]
    mode = ["x", "y", "z", "w"][int(np.argmax(train.mean(axis=0)))]
    assert filled[f"kind_{mode}"] == 1.0
    assert feature_domains(data)[1]["one_hot"][0]["rule"] == "exactly_one"


def test_spec_needs_exactly_one_privacy_unit(tmp_path: Path) -> None:
    text = BASE.replace('patient_id = "pid"\n', "") + '[features.age]\ntype = "numeric"\n'
    with pytest.raises(InputFileError, match="exactly one of patient_id"):
        load_spec(_spec(tmp_path, text))


def test_out_of_domain_policies_drop_or_mark_missing(tmp_path: Path) -> None:
    rule = '[features.age]\ntype = "numeric"\nmax = 65\nout_of_domain = "{}"\nmissing = "indicator"\n'
    dropped = build_cohort(_frame(), load_spec(_spec(tmp_path, BASE + rule.format("drop_row"))), seed=0,
                           source="t")
    assert dropped.description["rows_dropped"] == 5 and len(dropped.x) == 25
    marked = build_cohort(_frame(), load_spec(_spec(tmp_path, BASE + rule.format("missing"))), seed=0,
                          source="t")
    names = [f.name for f in marked.features]
    assert names == ["age", "age_missing"] and marked.x[:, 1].sum() == 5
    assert marked.x[3, 0] != 70  # the out-of-domain age was imputed, not kept


def test_cli_bad_table_exits_2_before_training(shared_data: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "t.csv"
    frame = _frame()
    frame["y"] = ["yes", "no", "no", "yes", "no", "no"] * 5
    frame.to_csv(bad, index=False)
    spec = _spec(tmp_path, BASE + '[features.age]\ntype = "numeric"\n')
    code = _run(["train", "risk", "--table", str(bad), "--spec", str(spec), "--runs-dir",
                 str(tmp_path / "runs")])
    assert code == 2
    assert "cohort.target: target 'y' must be binary 0/1" in capsys.readouterr().out
    assert not (tmp_path / "runs").exists()
