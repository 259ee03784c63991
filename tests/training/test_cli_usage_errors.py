"""``healthai train``'s usage errors and records: an empty ``--seeds``, an unknown ``--device``, ``--threads``
after the sub-command, a missing ``--data-root`` (and its default from another folder), the run record of a
forecaster trained on DP counts, ``train tables --from-runs`` (its file and its seed counts) and the
training README's Python snippet."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

from healthai_training import cli
from tests.training.test_forecast_loop import FIRST_MONDAY, REGIONS, WEEKS, normalized_store, weekly_cases

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")
README = Path(__file__).resolve().parents[2] / "training" / "README.md"


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="healthai")
    cli.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def _run(argv: list[str]) -> int:
    args = _parse(argv)
    return int(args.func(args))


KINDS = [["risk", "--dataset", "heart"], ["forecast"], ["backtest"]]


@pytest.mark.parametrize(("kind", "bad"), [
    *[(k, b) for k in [*KINDS, ["tables"]] for b in (["--seeds", ""], ["--seeds", " , "])],
    *[(k, ["--device", "gpu"]) for k in KINDS],
])
def test_empty_seeds_and_unknown_device_are_usage_errors(kind: list[str], bad: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as e:
        _parse(["train", *kind, *bad])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert bad[0] in err and ("at least one" in err or "auto, cpu, cuda" in err)


def test_seeds_each_once_and_cuda_n_parses() -> None:
    args = _parse(["train", "forecast", "--seeds", "1,0,1", "--device", "cuda:1"])
    assert args.seeds == [1, 0] and args.device == "cuda:1"


def test_resolve_device_refuses_unknown_names() -> None:
    from healthai_training.common import resolve_device
    from healthai_training.errors import TrainingInputError

    with pytest.raises(TrainingInputError, match="auto, cpu, cuda"):
        resolve_device("gpu")


@pytest.mark.parametrize("kind", [["risk"], ["forecast"], ["backtest"], ["tables"], ["domains", "card.json"]])
def test_threads_before_or_after_the_subcommand(kind: list[str]) -> None:
    assert _parse(["train", *kind]).threads == 1
    assert _parse(["train", *kind, "--threads", "3"]).threads == 3
    assert _parse(["train", "--threads", "4", *kind]).threads == 4


@pytest.mark.parametrize("argv", [
    ["risk", "--dataset", "heart", "--non-private"],
    ["risk", "--dataset", "diabetes130", "--non-private"],
    ["forecast", "--dataset", "japan", "--epochs", "1"],
    ["backtest", "--dataset", "us_states", "--epochs", "1"],
])
def test_missing_data_root_names_the_flag_and_path(tmp_path: Path, capsys, argv: list[str]) -> None:
    root = tmp_path / "nowhere"
    code = _run(["train", *argv, "--data-root", str(root), "--runs-dir", str(tmp_path / "runs")])
    out = capsys.readouterr().out
    assert code == 2
    assert out.startswith(f"error: --data-root {root}: {root}/")
    assert not (tmp_path / "runs").exists()


def test_default_data_root_from_another_folder(shared_data: Path, tmp_path: Path, monkeypatch,
                                               capsys) -> None:
    from healthai_training.common import default_data_root

    monkeypatch.chdir(tmp_path)  # not the repository root: ../shared/data is not there
    assert default_data_root().resolve() == shared_data.resolve()
    code = _run(["train", "risk", "--dataset", "heart", "--non-private", "--epochs", "1", "--no-export",
                 "--runs-dir", str(tmp_path / "runs")])
    assert code == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["epsilon"] is None


@pytest.fixture(scope="module")
def store_and_graph(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("counts")
    return normalized_store(root, dict(zip(REGIONS.values(), weekly_cases().T, strict=True)))


def test_dp_counts_run_records_the_cards_privacy(store_and_graph, tmp_path: Path, capsys) -> None:
    store, graph = store_and_graph
    last = FIRST_MONDAY.fromordinal(FIRST_MONDAY.toordinal() + 7 * WEEKS - 1)
    repo, runs = tmp_path / "models", tmp_path / "runs"
    repo.mkdir()
    code = _run(["train", "forecast", "--from-store", str(store), "--graph", str(graph),
                 "--count-epsilon", "2", "--count-start", FIRST_MONDAY.isoformat(), "--count-end",
                 last.isoformat(), "--no-stack",
                 "--epochs", "1", "--hidden", "8", "--variants", "custom", "--runs-dir", str(runs),
                 "--export-to", str(repo), "--model-name", "f"])
    assert code == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    card = json.loads((repo / "f/1/model_card.json").read_text())["privacy"]
    run_dir = Path(line["run_dir"])
    metrics = json.loads((run_dir / "metrics.json").read_text())["privacy"]
    assert metrics == card and metrics["private"] is True and metrics["privacy_unit"] == "patient"
    assert line["epsilon"] == pytest.approx(2.0) and line["privacy_unit"] == "patient"
    assert "-counteps2-" in run_dir.name and "nonprivate" not in run_dir.name
    from healthai_training.report import tables_from_runs

    assert "DP counts ε=2 per patient (1 seed)" in tables_from_runs(runs)


def _forecast_metrics(seed: int, *, ensemble: list[int] | None = None, dataset: str = "japan") -> dict:
    cell = {"rmse": 100.0 + seed, "mae": 1.0, "pcc": 0.9, "wis": 2.0, "coverage50": 0.5, "coverage95": 0.9,
            "baselines": {"lag52": {"rmse": 300.0}, "seasonal_mean_2x5": {"rmse": 250.0},
                          "last_value": {"rmse": 150.0}}}
    return {"dataset": dataset, "mode": "seasonal", "stack": {}, "config": {"seed": seed},
            "privacy": {"private": False, "epsilon": None, "delta": None},
            "test": {h: dict(cell) for h in ("2", "3", "5", "10", "15")},
            **({"ensemble_seeds": ensemble} if ensemble else {})}


def test_tables_from_runs_counts_seeds_and_writes_the_file(tmp_path: Path, capsys) -> None:
    runs = tmp_path / "runs"
    payloads = {"a-seed0": _forecast_metrics(0), "b-seed1": _forecast_metrics(1),
                "c-ens0-1": _forecast_metrics(0, ensemble=[0, 1]),
                "d-own": _forecast_metrics(0, dataset="counts"),
                "e-own-again": _forecast_metrics(0, dataset="counts")}
    for name, payload in payloads.items():
        (runs / name).mkdir(parents=True)
        (runs / name / "metrics.json").write_text(json.dumps(payload))
    assert _run(["train", "tables", "--from-runs", "--runs-dir", str(runs)]) == 0
    printed = capsys.readouterr().out
    heads = [line for line in printed.splitlines() if line.startswith("###")]
    assert heads == ["### counts, mode seasonal, stack, non-private (2 runs, 1 seed)",
                     "### japan, mode seasonal, stack, non-private (2 seeds)",
                     "### japan, mode seasonal, stack, non-private (ensemble of seeds 0,1, 1 run)"]
    assert "| 2 | 100.0 ± 0.0 | 1.0 ± 0.0 | 0.900 | 2.0 ± 0.0 | 0.50 | 0.90 | – | 300 |" in printed
    assert (runs / "tables.md").read_text().strip() == printed.strip()


def test_readme_python_snippet_runs(tmp_path: Path, monkeypatch) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    (snippet,) = [b for b in blocks if "build_forecaster(" in b]
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, "README.md", "exec"), {})
    assert (tmp_path / "out/forecast_x").is_dir()
