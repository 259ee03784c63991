"""The ``healthai train`` sub-commands, run in-process through their own parser."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from healthai_training import cli

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="healthai")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_train_risk_cli_writes_run_and_repository(shared_data: Path, tmp_path: Path, capsys) -> None:
    code = _run(
        [
            "train",
            "risk",
            "--dataset",
            "heart",
            "--epochs",
            "2",
            "--epsilon",
            "3",
            "--data-root",
            str(shared_data),
            "--runs-dir",
            str(tmp_path / "runs"),
            "--export-to",
            str(tmp_path / "repo"),
            "--json",
            str(tmp_path / "risk.json"),
        ]
    )
    assert code == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    out = json.loads((tmp_path / "risk.json").read_text())
    assert out == {**{k: line["test"][k] for k in ("auroc", "auprc", "brier")}, "epsilon": line["epsilon"]}
    assert line["epsilon"] <= 3.0
    assert (tmp_path / "repo/risk_heart/1/model.onnx").is_file()
    assert (Path(line["run_dir"]) / "metrics.json").is_file()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["risk", "--dataset", "heart", "--epsilon", "-1"], "epsilon must be a finite number > 0, got -1.0"),
        (["risk", "--dataset", "heart", "--delta", "1"], "delta must be in (0, 1), got 1.0"),
        (
            ["risk", "--dataset", "heart", "--epsilon", "0.001", "--epochs", "400", "--batch-size", "900"],
            "cannot be reached",
        ),
        (["forecast", "--dataset", "japan", "--epsilon", "0"], "epsilon must be a finite number > 0"),
        (["risk", "--dataset", "heart", "--device", "cuda:7"], None),
    ],
)
def test_bad_arguments_exit_2_before_training(
    shared_data: Path, tmp_path: Path, capsys, argv, message
) -> None:
    import torch

    if message is None:
        if torch.cuda.is_available():
            pytest.skip("a CUDA GPU is present, so --device cuda:7 may be valid")
        message = "no CUDA GPU"
    code = _run(["train", *argv, "--data-root", str(shared_data), "--runs-dir", str(tmp_path / "runs")])
    assert code == 2
    assert message in capsys.readouterr().out
    assert not (tmp_path / "runs").exists()
