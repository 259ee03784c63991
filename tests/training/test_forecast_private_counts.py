"""`healthai train forecast --from-store --count-epsilon`: the forecaster trained on counts released
under epsilon-DP per patient. Real FHIR bundles (the loop test's) normalized into a real Parquet store;
the card says the guarantee the release's accountant (OpenDP) reports, and the store's ledger has it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from healthai.store import ParquetStore
from healthai.surveillance.release import spent
from healthai_training import cli
from healthai_training.errors import TrainingInputError
from tests.training.test_forecast_loop import FIRST_MONDAY, REGIONS, WEEKS, normalized_store, weekly_cases

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")
LAST_SUNDAY = "2024-04-07"  # the end of week 170 (FIRST_MONDAY + 170 weeks - 1 day)
assert str(FIRST_MONDAY.fromordinal(FIRST_MONDAY.toordinal() + 7 * WEEKS - 1)) == LAST_SUNDAY


@pytest.fixture(scope="module")
def store_and_graph(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("private")
    return normalized_store(root, dict(zip(REGIONS.values(), weekly_cases().T, strict=True)))


def run(argv: list[str], capsys) -> dict:
    parser = argparse.ArgumentParser(prog="healthai")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_trained_on_private_counts_the_card_says_patient_epsilon(store_and_graph, tmp_path: Path,
                                                                 capsys) -> None:
    store, graph = store_and_graph
    before = spent(ParquetStore(str(store)))
    repo = tmp_path / "models"
    repo.mkdir()
    out = run(["train", "forecast", "--from-store", str(store), "--graph", str(graph), "--count-epsilon", "2",
               "--count-start", FIRST_MONDAY.isoformat(), "--count-end", LAST_SUNDAY,
               "--epochs", "1", "--hidden", "8", "--variants", "custom", "--runs-dir", str(tmp_path / "runs"),
               "--export-to", str(repo), "--model-name", "forecast_private"], capsys)
    card = json.loads((repo / "forecast_private/1/model_card.json").read_text())
    privacy = card["privacy"]
    assert privacy["private"] and privacy["privacy_unit"] == "patient"
    assert privacy["epsilon"] == pytest.approx(2.0) and privacy["delta"] == 0.0
    assert privacy["training_counts"]["max_cases_per_patient"] == 4
    assert privacy["training_counts"]["nonnegative"] is False  # unbiased noise: negative counts kept
    assert privacy["training_counts"]["cells"] == WEEKS * len(REGIONS)
    assert "Forecast --stored" in privacy["guarantee"] and "dp_sgd" not in privacy
    assert card["data"]["periods"] == WEEKS
    assert card["data"]["store"]["privacy"]["epsilon"] == privacy["epsilon"]
    total, n = spent(ParquetStore(str(store)))
    assert n == before[1] + 1 and total == pytest.approx(before[0] + 2.0)
    assert out["published"]["version"] == 1
    assert card["stack"]["members"][0] == "healthai"  # the default (stack) trains on the negative counts too
    ledger = [json.loads(p.read_text()) for p in (store / "privacy").glob("release-*.json")]
    entry = next(e for e in ledger if e.get("use") == "healthai train forecast --from-store")
    assert entry["first_period"] == FIRST_MONDAY.isoformat() and entry["epsilon"] == pytest.approx(2.0)
    assert privacy["training_counts"]["noise_scale"] == pytest.approx(4 / 2.0)


@pytest.mark.parametrize(("extra", "field"), [
    (["--count-epsilon", "1"], "count_start"),
    (["--count-start", "2021-01-04"], "count_start"),
    (["--count-epsilon", "-1", "--count-start", "2021-01-04"], "count_epsilon"),
    (["--count-epsilon", "1", "--count-start", "2021-01-04", "--max-cases-per-patient", "0"],
     "max_cases_per_patient"),
])
def test_bad_privacy_flags_name_the_flag(store_and_graph, tmp_path: Path, extra: list[str],
                                        field: str) -> None:
    store, graph = store_and_graph
    parser = argparse.ArgumentParser(prog="healthai")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["train", "forecast", "--from-store", str(store), "--graph", str(graph),
                              "--runs-dir", str(tmp_path), *extra])
    from healthai_training.cli_forecast import user_data

    with pytest.raises(TrainingInputError) as e:
        user_data(args)
    assert e.value.field == field


def test_privacy_flags_need_the_store(store_and_graph, tmp_path: Path) -> None:
    _, graph = store_and_graph
    series = tmp_path / "s.csv"
    series.write_text("region,period,count\nUS-MA,2021-01-04,1\n")
    parser = argparse.ArgumentParser(prog="healthai")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["train", "forecast", "--series", str(series), "--graph", str(graph),
                              "--count-epsilon", "1"])
    from healthai_training.cli_forecast import user_data

    with pytest.raises(TrainingInputError, match="--count-epsilon needs --from-store"):
        user_data(args)
