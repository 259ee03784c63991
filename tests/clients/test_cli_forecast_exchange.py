"""`healthai-client regions` and `forecast --hubverse/--plot` against a real server (tiny model)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from healthai_client.cli import main

from .model_repo import FORECAST_MODEL, REGIONS, expected_forecast


def test_regions_lists_the_model_graph(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["regions", "-m", FORECAST_MODEL, "--address", server, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in info["regions"]] == REGIONS
    assert info["model_name"] == FORECAST_MODEL and info["model_version"] >= 1 and info["horizons"]
    assert info["window"] > 0 and info["step"] and len(info["quantile_levels"]) > 1
    assert main(["regions", "-m", FORECAST_MODEL, "--address", server]) == 0
    head, first = capsys.readouterr().out.splitlines()[:2]
    assert head.startswith(f"# {FORECAST_MODEL} v") and "horizons" in head and first.startswith(REGIONS[0])
    assert main(["regions", "-m", "forecast_nope", "--address", server]) == 4


def test_hubverse_rows_and_plot(server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    history = np.arange(12, dtype=np.float32).reshape(4, 3) + 5
    path = tmp_path / "history.csv"
    path.write_text(",".join(REGIONS) + "\n" + "\n".join(",".join(f"{v:g}" for v in row) for row in history))
    base = ["forecast", "-m", FORECAST_MODEL, "--history", str(path), "--address", server]
    assert main([*base, "--hubverse", str(tmp_path / "hub.csv")]) == 2  # no dates: needs a reference date
    assert "give the reference date" in capsys.readouterr().err and not (tmp_path / "hub.csv").exists()
    argv = [*base, "--hubverse", str(tmp_path / "hub.csv"), "--reference-date", "2026-01-05",
            "--plot", str(tmp_path / "fan.png")]
    assert main(argv) == 0
    with (tmp_path / "hub.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    expected = expected_forecast(history)  # [horizons, regions, levels]
    h, n, q = expected.shape
    assert len(rows) == h * n * q
    first = rows[0]
    assert (first["reference_date"], first["location"], first["horizon"], first["output_type"]) == (
        "2026-01-05", REGIONS[0], "1", "quantile")
    assert first["target_end_date"] == "2026-01-12"  # one weekly step after the reference date
    assert float(first["value"]) == pytest.approx(float(expected[0, 0, 0]), rel=1e-5)
    assert (tmp_path / "fan.png").read_bytes()[:4] == b"\x89PNG"


def _epiweek_long_csv(path: Path, history: np.ndarray) -> None:
    """The trainer's long layout with MMWR epiweeks over a year end (2025 has a week 53), shuffled."""
    weeks = ["202551", "202552", "202553", "202601"][-len(history):]
    rows = [f"{r},{w},{history[t, j]:g}" for t, w in enumerate(weeks) for j, r in enumerate(REGIONS)]
    rng = np.random.default_rng(0)
    path.write_text("region,period,count\n" + "\n".join(rng.permutation(rows)) + "\n")


def test_the_training_series_file_is_a_dated_history(server: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """`--history` takes what `train forecast --series` takes: rows in any order, the periods date the
    forecast (no --reference-date), and the result is the one the plain region-column CSV gives."""
    history = np.arange(12, dtype=np.float32).reshape(4, 3) + 5
    long = tmp_path / "series.csv"
    _epiweek_long_csv(long, history)
    hub = tmp_path / "hub.csv"
    argv = ["forecast", "-m", FORECAST_MODEL, "--history", str(long), "--address", server]
    assert main([*argv, "--hubverse", str(hub)]) == 0
    out = capsys.readouterr().out
    assert "horizon 1 = 2026-01-11" in out  # MMWR 2026-W01 starts Sun 4 Jan; one week on
    with hub.open(newline="") as f:
        first = next(csv.DictReader(f))
    # hubs date weeks by their last day: MMWR 2026-W01 ends Sat 10 Jan, horizon 1 (W02) Sat 17 Jan
    assert (first["reference_date"], first["target_end_date"]) == ("2026-01-10", "2026-01-17")
    assert float(first["value"]) == pytest.approx(float(expected_forecast(history)[0, 0, 0]), rel=1e-5)
    assert main([*argv, "--hubverse", str(hub), "--reference-date", "2020-01-01"]) == 2  # not relabelled
    assert "this forecast is dated (horizon 1 starts on 2026-01-11" in capsys.readouterr().err

    wide = tmp_path / "series.parquet"  # wide layout, ISO dates, Parquet: the same answer
    import pandas as pd

    frame = pd.DataFrame(history, columns=REGIONS)
    frame.insert(0, "period", ["2025-12-15", "2025-12-22", "2025-12-29", "2026-01-05"])
    frame.to_parquet(wide, index=False)
    assert main([*argv[:4], str(wide), "--address", server, "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose(got["quantiles"], expected_forecast(history), rtol=1e-5)
    assert got["first_forecast_period"] == "2026-01-12"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("period,US-MA,US-NY,US-CA\n" + "".join(f"2026-01-0{d},1,2,3\n" for d in range(1, 5)),
         "forecasts step 'W'"),  # a daily file for a weekly model
        ("region,period,count\nUS-MA,2026-01-05,1\nUS-MA,2026-01-12,1\nUS-MA,2026-01-26,2\n",
         "missing periods"),
        ("date,US-MA,US-NY\n2026-01-05,1,2\n", "a 'period' column"),
        ("US-MA,US-NY,US-CA\n1,2,3\n4,x,6\n", "row 3, region 'US-NY': count 'x' is not a number"),
        ("US-MA,US-NY,US-CA\n1,2\n", "row 2 has 2 values for 3 regions"),
        ("US-MA,US-NY,US-CA\n1,2,3\n4,-1,6\n", "negative counts, first -1 for region 'US-NY' at step 2"),
    ],
)
def test_bad_history_files_exit_2_naming_the_cell(server: str, tmp_path: Path, text: str, message: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "history.csv"
    path.write_text(text)
    assert main(["forecast", "-m", FORECAST_MODEL, "--history", str(path), "--address", server]) == 2
    assert message in capsys.readouterr().err


def test_negative_counts_are_clipped_only_when_asked(server: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    history = np.arange(12, dtype=np.float32).reshape(4, 3) + 5
    history[2, 1] = -4  # a reporting correction
    path = tmp_path / "series.csv"
    _epiweek_long_csv(path, history)
    argv = ["forecast", "-m", FORECAST_MODEL, "--history", str(path), "--address", server, "--json"]
    assert main(argv) == 2
    assert "negative counts, first -4 for region 'US-NY' at 2025-12-28" in capsys.readouterr().err
    assert main([*argv, "--negatives", "clip"]) == 0
    got = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose(got["quantiles"], expected_forecast(np.maximum(history, 0)), rtol=1e-5)


def test_a_headerless_matrix_history_takes_the_trainers_region_ids(
    server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The published benchmarks' layout (``train forecast --series-start``): no header, no dates; the
    columns are named by ``--region-ids`` (or by position, r01 ..., which this model does not know)."""
    history = np.arange(12, dtype=np.float32).reshape(4, 3) + 5
    path = tmp_path / "series.txt"
    np.savetxt(path, history, fmt="%g", delimiter=",")
    (tmp_path / "ids.txt").write_text("".join(f"{r},name {r}\n" for r in REGIONS))
    argv = ["forecast", "-m", FORECAST_MODEL, "--history", str(path), "--address", server, "--json"]
    assert main([*argv, "--region-ids", str(tmp_path / "ids.txt")]) == 0
    got = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose(got["quantiles"], expected_forecast(history), rtol=1e-5)
    assert main(argv) != 0  # by position: r01, r02, r03
    assert "r01" in capsys.readouterr().err
    (tmp_path / "two.txt").write_text("US-MA\nUS-NY\n")
    assert main([*argv, "--region-ids", str(tmp_path / "two.txt")]) == 2
    assert "3 columns but the region-ids file names 2 regions" in capsys.readouterr().err
    named = tmp_path / "named.csv"
    named.write_text(",".join(REGIONS) + "\n" + "\n".join(",".join(f"{v:g}" for v in r) for r in history))
    assert main([*argv[:4], str(named), *argv[5:], "--region-ids", str(tmp_path / "ids.txt")]) == 2
    assert "but this history names its regions" in capsys.readouterr().err


def test_plots_without_matplotlib_say_so_before_calling(server, tmp_path: Path, capsys, monkeypatch) -> None:
    """A serving-only install has no matplotlib: --plot is refused up front (exit 2, one line), and
    load --out writes its JSON without the PNG instead of a traceback after the run."""
    import importlib.util

    from healthai_client import plotting

    real = importlib.util.find_spec
    monkeypatch.setattr(plotting.importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real(name, *a))
    path = tmp_path / "weeks.csv"
    path.write_text(",".join(REGIONS) + "\n" + "\n".join(",".join("1" for _ in REGIONS) for _ in range(30)))
    argv = ["forecast", "-m", FORECAST_MODEL, "--history", str(path), "--address", server,
            "--plot", str(tmp_path / "fan.png")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--plot needs matplotlib" in err and "Traceback" not in err and not (tmp_path / "fan.png").exists()
    out = tmp_path / "echo"
    assert main(["load", "--address", server, "--rpc", "echo", "-c", "1", "-n", "5", "--out", str(out)]) == 0
    assert "--out writes JSON only" in capsys.readouterr().err
    assert out.with_suffix(".json").exists() and not out.with_suffix(".png").exists()


def test_plot_regions_are_chosen_or_the_busiest(server, tmp_path: Path, capsys) -> None:
    from healthai_client.exchange import plot_regions

    history = np.array([[1, 50, 3]] * 6, dtype=np.float32)
    path = tmp_path / "weeks.csv"
    path.write_text(",".join(REGIONS) + "\n" + "\n".join(",".join(f"{v:g}" for v in row) for row in history))
    base = ["forecast", "-m", FORECAST_MODEL, "--history", str(path), "--address", server]
    chosen = f"{REGIONS[2]},{REGIONS[0]}"
    assert main([*base, "--plot", str(tmp_path / "two.png"), "--plot-regions", chosen]) == 0
    assert f"--plot draws 2 of {len(REGIONS)} regions" in capsys.readouterr().err
    assert (tmp_path / "two.png").read_bytes()[:4] == b"\x89PNG"
    assert main([*base, "--plot", str(tmp_path / "x.png"), "--plot-regions", "nowhere"]) == 2
    from healthai_client import Client

    with Client(server) as client:
        from healthai_client.history_file import read_history

        result = client.forecast(model=FORECAST_MODEL, history=read_history(path))
    assert plot_regions(result, max_regions=1) == [REGIONS[1]]  # the busiest
    assert plot_regions(result) == list(REGIONS)


def test_a_history_of_other_weeks_than_the_models_is_said(server, tmp_path: Path, capsys) -> None:
    """The tiny model's weeks start on Mondays (its card's default): MMWR weeks (Sundays) are dated by
    the history, with a warning; Monday weeks are not."""
    import datetime as dt

    def dated(first: dt.date) -> Path:
        path = tmp_path / f"{first}.csv"
        rows = [f"{first + dt.timedelta(weeks=k)}," + ",".join(["3"] * len(REGIONS)) for k in range(6)]
        path.write_text("period," + ",".join(REGIONS) + "\n" + "\n".join(rows) + "\n")
        return path

    base = ["forecast", "-m", FORECAST_MODEL, "--address", server, "--history"]
    assert main([*base, str(dated(dt.date(2025, 11, 2)))]) == 0  # Sundays
    err = capsys.readouterr().err
    assert "weeks start on sundays" in err and "on mondays" in err and "UserWarning" not in err
    assert main([*base, str(dated(dt.date(2025, 11, 3)))]) == 0  # Mondays
    assert "weeks start on" not in capsys.readouterr().err


def test_hubverse_locations_as_us_fips(server, tmp_path: Path) -> None:
    from healthai_client.exchange import fips_locations

    regions = [{"id": "Alabama", "aliases": ["US-AL"]}, {"id": "US-MA", "aliases": []},
               {"id": "25017", "aliases": []}]
    assert fips_locations(regions) == {"Alabama": "01", "US-MA": "25", "25017": "25017"}
    with pytest.raises(ValueError, match="no US FIPS code for \\['JP-13'\\]"):
        fips_locations([{"id": "JP-13", "aliases": []}])
    history = np.arange(12, dtype=np.float32).reshape(4, 3) + 5
    path = tmp_path / "weeks.csv"
    path.write_text(",".join(REGIONS) + "\n" + "\n".join(",".join(f"{v:g}" for v in row) for row in history))
    out = tmp_path / "hub.csv"
    assert main(["forecast", "-m", FORECAST_MODEL, "--history", str(path), "--address", server, "--hubverse",
                 str(out), "--reference-date", "2026-01-03", "--hubverse-location", "fips"]) == 0
    with out.open(newline="") as f:
        locations = {row["location"] for row in csv.DictReader(f)}
    assert locations == set(fips_locations([{"id": r, "aliases": []} for r in REGIONS]).values())


def test_the_hubverse_target_names_the_stored_syndrome() -> None:
    from healthai_client.cli_commands import hubverse_target

    assert hubverse_target(None, "covid", None) == "inc covid"  # --stored covid: not labelled ILI
    assert hubverse_target(None, None, object()) == "inc ili"  # a history file: the documented default
    assert hubverse_target("inc flu hosp", "covid", None) == "inc flu hosp"  # --target wins
