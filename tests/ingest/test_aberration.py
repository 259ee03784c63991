"""EARS aberration flags (``healthai.surveillance.aberration``, ``healthai counts --alerts``): the
statistics by hand on small series, then real FHIR through the normalizer into a real store and the
CLI flagging the day of an injected outbreak."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from healthai.cli import main
from healthai.errors import InvalidInput
from healthai.normalize.fhir import normalize_fhir
from healthai.store import ParquetStore
from healthai.surveillance.aberration import alerts

from .conftest import context
from .test_nowcast import _bundle

SPIKE = 20  # the first of three outbreak days


def frame(*columns: list[float], start: str = "2026-10-01") -> pd.DataFrame:
    days = pd.date_range(start, periods=len(columns[0]), freq="D")
    return pd.DataFrame({f"R{j}": c for j, c in enumerate(columns)}, index=days)


def flat_with_outbreak() -> list[float]:
    counts = [10.0] * 30
    counts[SPIKE:SPIKE + 3] = [25.0] * 3
    return counts


def test_c1_sees_the_first_day_and_c2s_guard_band_keeps_seeing_the_next() -> None:
    data = frame(flat_with_outbreak())
    c1 = alerts(data, "C1").set_index("period")
    c2 = alerts(data, "C2").set_index("period")
    day = [str(d.date()) for d in data.index]
    assert c1.index[0] == day[7] and c2.index[0] == day[9]  # a full 7-period baseline (+ 2 for C2)
    assert c1.loc[day[SPIKE], "statistic"] == 15.0  # (25 - 10) / 1: a constant baseline's sd is floored
    assert c1["alarm"][c1["alarm"]].index.tolist() == [day[SPIKE]]  # the outbreak lifts C1's baseline
    assert c2["alarm"][c2["alarm"]].index.tolist() == day[SPIKE:SPIKE + 3]  # ...not C2's, two days behind
    quiet = c2.loc[day[10]]
    assert (quiet["expected"], quiet["sd"], quiet["upper_bound"], quiet["alarm"]) == (10.0, 1.0, 13.0, False)


def test_c3_sums_c2s_excess_over_three_periods_and_the_bound_is_the_count_that_alarms() -> None:
    rng = np.random.default_rng(0)
    noisy = list(rng.poisson(20, 60).astype(float))
    noisy[40:43] = [v + 18 for v in noisy[40:43]]
    data = frame(flat_with_outbreak() * 2, noisy)
    for method in ("C1", "C2", "C3"):
        got = alerts(data, method)
        clear = (got["count"] - got["upper_bound"]).abs() > 0.01
        assert (got.loc[clear, "alarm"] == (got.loc[clear, "count"] > got.loc[clear, "upper_bound"])).all()
    c2 = alerts(data, "C2").set_index(["region", "period"])["statistic"]
    c3 = alerts(data, "C3").set_index(["region", "period"])
    day = [str(d.date()) for d in data.index]
    excess = [max(c2[("R1", day[t])] - 1, 0) for t in (40, 41, 42)]
    assert c3.loc[("R1", day[42]), "statistic"] == pytest.approx(sum(excess), abs=2e-3)
    assert c3.loc[("R1", day[42]), "alarm"]
    noise = {m: alerts(data, m).set_index(["region", "period"]).xs("R1", level="region")
             .drop(index=day[38:48]) for m in ("C2", "C3")}
    assert noise["C2"]["alarm"].mean() < 0.05  # Poisson(20) noise alone rarely alarms C2...
    assert noise["C3"]["alarm"].mean() < 0.2  # ...and C3, the most sensitive, more often


def test_bad_input_and_short_series() -> None:
    with pytest.raises(InvalidInput, match="method 'C4' is not one of C1, C2, C3") as e:
        alerts(frame([1.0] * 10), "C4")
    assert e.value.field == "method"
    with pytest.raises(InvalidInput, match="threshold must be a positive number") as e:
        alerts(frame([1.0] * 10), "C1", threshold=0)
    assert e.value.field == "threshold"
    with pytest.raises(InvalidInput, match="not every count is a finite number"):
        alerts(frame([1.0] * 9 + [np.nan]), "C1")
    short = alerts(frame([1.0] * 9), "C2")  # C2 needs 10 periods
    assert short.empty and list(short.columns) == ["region", "period", "count", "expected", "sd", "statistic",
                                                   "upper_bound", "alarm"]


@pytest.fixture(scope="module")
def outbreak_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dt.date]:
    """About 6 influenza cases a day in Massachusetts for 30 days, 20 more on one day; each day's
    records stored that day."""
    root = tmp_path_factory.mktemp("ears") / "store"
    first = dt.date(2026, 3, 2)  # before the normalizer's reference date
    rng = np.random.default_rng(1)
    store = ParquetStore(str(root)).open()
    ctx, i = context(), 0
    for d in range(30):
        day = first + dt.timedelta(days=d)
        tables: dict[str, list] = {}
        for _ in range(int(rng.poisson(6)) + (20 if d == SPIKE else 0)):
            for kind, table in normalize_fhir(_bundle(i, day, "MA"), ctx=ctx, source="s").tables.items():
                if table.num_rows:
                    tables.setdefault(kind, []).append(table)
            i += 1
        store.commit({k: pa.concat_tables(v) for k, v in tables.items()},
                     now=dt.datetime.combine(day, dt.time(18), dt.UTC))
    store.close()
    return root, first + dt.timedelta(days=SPIKE)


def test_cli_flags_the_outbreak_day_in_the_stored_counts(outbreak_store, tmp_path: Path, capsys) -> None:
    root, spike = outbreak_store
    out = tmp_path / "alerts.csv"
    assert main(["counts", "--store", str(root), "--step", "D", "--alerts", "C2", "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert table.loc[table["alarm"], "period"].tolist() == [spike.isoformat()]
    summary = "C2 on stored counts: 1 alarms over 21 periods judged; in the latest (2026-03-31): none"
    assert summary in capsys.readouterr().err
    as_of = (spike + dt.timedelta(days=20)).isoformat()  # the first 12 days are mature: F learnt there
    assert main(["counts", "--store", str(root), "--step", "D", "--alerts", "C2", "--nowcast", "--as-of",
                 as_of, "--out", str(out)]) == 0
    nowcast = pd.read_csv(out)  # every record stored the day it happened: the nowcast is the count
    assert nowcast.loc[nowcast["alarm"], "period"].tolist() == [spike.isoformat()]
    assert "C2 on nowcasts" in capsys.readouterr().err
    assert main(["counts", "--store", str(root), "--alerts", "C1", "--wide"]) == 2
    assert "not with --wide" in capsys.readouterr().err
    assert main(["counts", "--store", str(root), "--alert-threshold", "2"]) == 2
    assert "--alert-threshold goes with --alerts" in capsys.readouterr().err
    assert main(["counts", "--store", str(root), "--alerts", "C1", "--as-of", as_of]) == 2
    assert "--as-of and --max-delay go with --nowcast" in capsys.readouterr().err
