"""The coordinator refuses malformed site updates (wrong shape, NaN) with a reason, never averages them in;
site-side DP accounting composes over rounds. Fast: Flower's own strategy objects, no processes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.strategy import FedAdam, FedAvg

from healthai_training.errors import TrainingInputError
from healthai_training.federated import task
from healthai_training.federated.server_app import Report, checked, update_problem

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")
SPEC = Path(__file__).resolve().parents[2] / "training/examples/heart_cohort.toml"
SHAPES = [(1, 17), (1,)]


class Proxy:  # the strategy reads only the node id of the ClientProxy
    def __init__(self, node_id: int) -> None:
        self.node_id = node_id


def fit(arrays: list[np.ndarray], n: int, site: str) -> FitRes:
    return FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), n, {"site": site, "epsilon": 0.5})


@pytest.mark.parametrize("base", [FedAvg, FedAdam])
def test_wrong_shape_and_nan_updates_are_refused_with_a_reason(base) -> None:
    report = Report(SHAPES)
    good = [np.ones((1, 17), np.float32), np.zeros(1, np.float32)]
    init = ndarrays_to_parameters([np.zeros((1, 17), np.float32), np.zeros(1, np.float32)])
    strategy = checked(base, report)(min_fit_clients=1, min_available_clients=1, initial_parameters=init)
    results = [(Proxy(1), fit(good, 10, "a")),
               (Proxy(2), fit([np.ones((1, 16), np.float32), np.zeros(1, np.float32)], 10, "b")),
               (Proxy(3), fit([np.full((1, 17), np.nan, np.float32), np.zeros(1, np.float32)], 10, "c"))]
    params, _ = strategy.aggregate_fit(1, results, [])
    reasons = {r["node_id"]: r["reason"] for r in report.refused}
    assert reasons[2] == "2 arrays of shapes [(1, 16), (1,)], the model has [(1, 17), (1,)]"
    assert reasons[3] == "array 0 holds NaN or inf"
    assert set(report.rounds[0]["fit"]) == {"a"} and report.rounds[0]["failures"] == 2
    out = parameters_to_ndarrays(params)
    if base is FedAvg:  # only the good update was averaged
        np.testing.assert_array_equal(out[0], good[0])
    assert all(np.all(np.isfinite(a)) for a in out)


def test_update_problem_accepts_a_well_formed_update() -> None:
    assert update_problem([np.zeros((1, 17)), np.zeros(1)], SHAPES) is None
    assert "dtype" in update_problem([np.zeros((1, 17), dtype="<U1"), np.zeros(1)], SHAPES)


def test_site_epsilon_composes_over_rounds_and_meets_the_target(shared_data: Path, tmp_path: Path) -> None:
    import pandas as pd

    table = tmp_path / "hungarian.csv"
    df = pd.read_csv(shared_data / "risk/uci_heart_disease/heart_disease_4sites.csv")
    df[df["site"] == "hungarian"].to_csv(table, index=False)
    data, _ = task.load_site(table, SPEC, seed=0)
    rows = np.concatenate([data.split["train"], data.split["val"]])
    cfg = task.LocalConfig(rounds=3, local_epochs=1, batch_size=32, epsilon=1.2)
    history: list = []
    eps = []
    for rnd in range(3):
        net = task.new_model(data, hidden=0)
        eps.append(task.local_round(net, task.training_set(data, rows, seed=0), cfg, history=history,
                                    seed=rnd)["epsilon"])
    assert eps[0] < eps[1] < eps[2] <= 1.2 + 1e-6 and eps[2] > 1.0
    with pytest.raises(TrainingInputError, match="array 0 holds NaN"):
        task.set_weights(net, [np.full((1, 17), np.nan), np.zeros(1)])
