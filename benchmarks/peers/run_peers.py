"""Train epilearn's Cola-GNN and EpiGNN on exported backtest splits; write their test forecasts.

Runs in the peer environment (benchmarks/peers/.venv: torch + epilearn --no-deps), never in the
runtime: it reads only the splits JSON that ``compare.py export`` writes (series, adjacency, per
origin the cuts, the min-max scaling and the target periods) and writes a predictions JSON that
``compare.py score`` scores with our own code.

Protocol per origin: one model forecasting steps 1..S at once (S = the largest horizon), as
epilearn's ``Forecast`` task trains them (``num_timesteps_output = horizon``) and as our forecaster
does; the papers instead train one single-output model per h (5× the fits: too slow on a shared
2-core CPU). Input = the 20 periods before the forecast, min-max scaled with the origin's
training-rows scaling. Train on windows whose step-1 target lies in the exported train periods and
keep the epoch with the lowest validation loss over the validation periods (targets outside a split
are masked, as in ``healthai_training.forecast.train``), with early stopping; horizon h's test forecast
for target t is step h from the window ending at t − h. Loss: each paper's (L1 for Cola-GNN, MSE for
EpiGNN), on the scaled values. Hyperparameters: the papers' training scripts' defaults
(amy-deng/colagnn src/train.py, Xiefeng69/EpiGNN src/train.py) where epilearn's constructors take
them; epochs capped (``--epochs``, ``--patience``) for a shared CPU.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
from torch import nn

# Paper defaults (see the module docstring). epilearn's ColaGNN fixes the spatial width at 10
# (paper: hidsp 15) and its EpiGNN derives hidR from k and hidP, as EpiGNN's own code does.
PEERS = {
    "colagnn": {
        "model": {"nhid": 20, "n_channels": 10, "rnn_model": "RNN", "n_layer": 1, "dropout": 0.2},
        "train": {"lr": 1e-3, "weight_decay": 5e-4, "batch": 32, "loss": "l1", "patience": 200},
        "adjacency": "sym",  # Cola-GNN's loader: D^-1/2 A D^-1/2 (diagonal included)
    },
    "epignn": {
        "model": {"k": 8, "hidA": 64, "hidP": 1, "n_layer": 2, "dropout": 0.2},
        "train": {"lr": 1e-3, "weight_decay": 5e-4, "batch": 128, "loss": "mse", "patience": 100},
        "adjacency": "raw",  # EpiGNN uses the 0/1 matrix and degrees
    },
}


def load_epilearn() -> dict[str, type]:
    """Import epilearn's two model files without its package ``__init__`` (which pulls streamlit,
    torch_geometric, ... that we do not install)."""
    spec = importlib.util.find_spec("epilearn")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("epilearn is not installed in this environment (see benchmarks/peers/README.md)")
    root = Path(spec.submodule_search_locations[0])
    for name, sub in (
        ("epilearn", ""),
        ("epilearn.utils", "utils"),
        ("epilearn.models", "models"),
        ("epilearn.models.SpatialTemporal", "models/SpatialTemporal"),
    ):
        mod = types.ModuleType(name)
        mod.__path__ = [str(root / sub)]
        sys.modules[name] = mod
    os.environ.setdefault("MPLBACKEND", "Agg")
    from epilearn.models.SpatialTemporal.ColaGNN import ColaGNN
    from epilearn.models.SpatialTemporal.EpiGNN import EpiGNN

    return {"colagnn": ColaGNN, "epignn": EpiGNN}


def step_windows(
    scaled: np.ndarray, targets: list[int], steps: int, window: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Windows whose step-1 target lies in ``targets`` (a contiguous range): X [B, window, N, 1],
    y [B, steps, N], mask [B, steps, N] (1 where the step's target lies in the range)."""
    t = np.asarray(targets, dtype=int)
    first, last = t.min(), t.max()
    idx = t[:, None] + np.arange(-window, 0)[None, :]
    tgt = t[:, None] + np.arange(steps)[None, :]
    mask = (tgt <= last) & (tgt >= first)
    y = scaled[np.minimum(tgt, len(scaled) - 1)]
    as_t = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return as_t(scaled[idx][..., None]), as_t(y), as_t(np.broadcast_to(mask[..., None], y.shape).copy())


def test_windows(scaled: np.ndarray, targets: list[int], h: int, window: int) -> torch.Tensor:
    """X [B, window, N, 1] for forecasting each target at lead h (window ends at t − h, inclusive)."""
    t = np.asarray(targets, dtype=int)
    idx = (t - h + 1)[:, None] + np.arange(-window, 0)[None, :]
    if idx.min() < 0:
        raise ValueError(f"a target lacks a {window}-period window at h={h}")
    return torch.tensor(scaled[idx][..., None], dtype=torch.float32)


def adjacency(adj: np.ndarray, kind: str) -> torch.Tensor:
    a = torch.tensor(adj, dtype=torch.float32)
    if kind == "sym":
        d = 1.0 / torch.sqrt(a.sum(dim=0))
        a = d[:, None] * a * d[None, :]
    return a


def forward(name: str, model: nn.Module, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
    out = model(x, adj)
    if name == "colagnn":
        # epilearn's ColaGNN computes [B, N, S] and returns ``out.view(-1, S, N)``, a reinterpretation of
        # memory, not a transpose: for S > 1 step s of node n would read another node's output. Undo the
        # view (same memory) and transpose; with S = 1 (the paper's setting) both agree.
        return out.reshape(len(x), adj.shape[0], -1).transpose(1, 2)
    return out.transpose(1, 2)  # EpiGNN returns [B, N, S]


def masked_loss(kind: str, pred: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    err = (pred - y).abs() if kind == "l1" else (pred - y) ** 2
    return (err * mask).sum() / mask.sum().clamp(min=1.0)


def fit(
    name: str,
    cls: type,
    scaled: np.ndarray,
    targets: dict[str, list[int]],
    adj: torch.Tensor,
    *,
    steps: int,
    window: int,
    seed: int,
    max_epochs: int,
    patience: int | None,
) -> tuple[nn.Module, dict]:
    spec = PEERS[name]
    train = spec["train"]
    patience = train["patience"] if patience is None else patience
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = cls(
        num_nodes=adj.shape[0],
        num_features=1,
        num_timesteps_input=window,
        num_timesteps_output=steps,
        **spec["model"],
    )
    opt = torch.optim.Adam(model.parameters(), lr=train["lr"], weight_decay=train["weight_decay"])
    x_tr, y_tr, m_tr = step_windows(scaled, targets["train"], steps, window)
    x_va, y_va, m_va = step_windows(scaled, targets["val"], steps, window)
    best, best_state, best_epoch, bad, epoch = float("inf"), None, -1, 0, -1
    for epoch in range(max_epochs):
        model.train()
        perm = torch.randperm(len(x_tr), generator=gen)
        for i in range(0, len(x_tr), train["batch"]):
            b = perm[i : i + train["batch"]]
            opt.zero_grad()
            loss = masked_loss(train["loss"], forward(name, model, x_tr[b], adj), y_tr[b], m_tr[b])
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            val = float(masked_loss(train["loss"], forward(name, model, x_va, adj), y_va, m_va))
        if val < best:
            best, best_state, best_epoch, bad = val, copy.deepcopy(model.state_dict()), epoch, 0
        else:
            bad += 1
            if bad >= patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    return model, {"best_epoch": best_epoch, "epochs_run": epoch + 1, "val_loss": best, "n_train": len(x_tr)}


def run(splits: dict, models: list[str], *, seed: int, max_epochs: int, patience: int | None) -> dict:
    classes = load_epilearn()
    series = np.asarray(splits["series"], dtype=np.float64)
    window, hs = int(splits["window"]), [str(h) for h in splits["horizons"]]
    steps = max(map(int, hs))
    out: dict = {
        "models": {m: {h: [] for h in hs} for m in models},
        "fits": {m: [] for m in models},
        "wall_s": {},
    }
    for m in models:
        start = time.perf_counter()
        adj = adjacency(np.asarray(splits["adjacency"]), PEERS[m]["adjacency"])
        for o in splits["origins"]:
            lo, hi = np.asarray(o["scale_min"]), np.asarray(o["scale_max"])
            scaled = (series[: o["end"]] - lo) / (hi - lo)
            # Step-1 targets of the training / validation windows, as our trainer cuts them: every
            # period of the split with a full window before it (later steps are masked to the split).
            cuts = {"train": (0, o["val_start"]), "val": (o["val_start"], o["origin"])}
            tg = {k: [t for t in range(a, b) if t >= window] for k, (a, b) in cuts.items()}
            model, info = fit(
                m, classes[m], scaled, tg, adj, steps=steps, window=window, seed=seed,
                max_epochs=max_epochs, patience=patience,
            )  # fmt: skip
            with torch.no_grad():
                for h in hs:
                    x = test_windows(scaled, o["targets"]["test"][h], int(h), window)
                    pred = forward(m, model, x, adj)[:, int(h) - 1].numpy()
                    out["models"][m][h].append((pred * (hi - lo) + lo).tolist())
            out["fits"][m].append({"origin": o["origin"], **info})
            print(f"{splits['dataset']} {splits['protocol']} {m} origin={o['origin']}: {info}", flush=True)
        out["wall_s"][m] = round(time.perf_counter() - start, 1)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("splits", type=Path, help="splits JSON from compare.py export")
    p.add_argument("--out", type=Path, required=True, help="predictions JSON to write")
    p.add_argument("--models", default="colagnn,epignn")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=1500, help="maximum epochs (papers: 1500)")
    p.add_argument(
        "--patience", type=int, default=None, help="early stopping; default: each paper's (200 / 100)"
    )
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    splits = json.loads(args.splits.read_text())
    models = [m for m in args.models.split(",") if m]
    unknown = set(models) - set(PEERS)
    if unknown:
        p.error(f"unknown models {sorted(unknown)}; choose from {sorted(PEERS)}")
    result = run(splits, models, seed=args.seed, max_epochs=args.epochs, patience=args.patience)
    result.update(
        dataset=splits["dataset"],
        protocol=splits["protocol"],
        series_sha256=splits["series_sha256"],
        seed=args.seed,
        max_epochs=args.epochs,
        patience={m: args.patience or PEERS[m]["train"]["patience"] for m in models},
        hyperparameters={m: PEERS[m] for m in models},
        versions={"torch": torch.__version__, "numpy": np.__version__, "epilearn": _version("epilearn")},
    )
    args.out.write_text(json.dumps(result) + "\n")
    return 0


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


if __name__ == "__main__":
    raise SystemExit(main())
