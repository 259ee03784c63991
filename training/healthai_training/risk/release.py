"""What a DP risk model publishes about its training patients besides the DP-SGD weights: nothing
exact. A card (and the ONNX graph, which folds the standardisation in) releases per feature a centre and
a scale (standardisation, occlusion ``baseline``), the ``imputation`` values and the clipping bounds
behind the served domain.

Public first: a feature bounded on both sides by the spec's ``min``/``max`` or its clinical limits (and
every 0/1 flag) takes them from those bounds alone — centre the midpoint, scale a quarter of the range,
fill the midpoint (flags: centre and fill 0, scale 1/2; a one-hot group: filled as its first
category) — so it costs no privacy and adds no noise (a noisy mean of a few hundred patients is off
by a good share of its range, which costs more accuracy than a data-free centre does). The risk
bands' base rate is the validation split's, released exactly like the Platt parameters fitted on
those patients (``privacy.scope``).

Only numeric features open on a side are estimated from the training patients, each patient once (the
mean of their rows), by two Gaussian mechanisms, each a ``(noise_multiplier, sample_rate=1, steps=1)``
entry of the card's ``privacy.mechanisms`` (RDP composition with DP-SGD gives the card's epsilon):

1. ``bounds``: per such feature a histogram of patients over signed powers of two (73 bins, |v| from
   2^-6 to 2^30); each patient adds 1 to one bin per feature. The outermost bins whose noisy count
   passes ``THRESHOLD`` noise standard deviations give [lo, hi] (bin edges, never a patient's value),
   cut to the limit of the bounded side.
2. ``moments``: per patient, centred to [-1/2, 1/2] within [lo, hi]: each such feature's value, square
   and whether it was observed; plus 1 (the patient count).

Noise: each mechanism's multiplier is sqrt(2) times the one that alone is (``SHARE`` * epsilon,
delta)-DP; DP-SGD's multiplier is chosen so the composition is the target. With every feature bounded
no mechanism runs and DP-SGD has the whole budget. The noise is drawn from OS entropy, never from the
run's (published) seed.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from healthai_training.errors import PrivacyBudgetError, TrainingInputError
from healthai_training.risk.data import RiskData

SHARE = 0.25  # of the target epsilon, as a stand-alone (epsilon, delta) of both mechanisms together
THRESHOLD = 4.0  # bin counts must pass this many noise standard deviations
K_MIN, K_MAX = -6, 30  # |v| < 2^K_MIN is the zero bin; bins [2^k, 2^(k+1)) up to 2^K_MAX (last one open)
MIN_STD = 0.02  # floor of a standard deviation, as a share of the clipping range
RULE = ("features bounded on both sides (spec min/max or clinical limits) and flags: from the bounds "
        "alone, no data (centre the midpoint, scale a quarter of the range, fill the midpoint; flags "
        "centre and fill 0; "
        "one-hot groups their first category). Numeric features open on a side: DP (Gaussian, patient "
        "level, composed into privacy.epsilon): clipping bounds from a noisy histogram over signed "
        "powers of two, means and standard deviations from noisy clipped sums of each training "
        "patient's row mean. Base rate: the validation split's (healthai_training.risk.release)")


@dataclass(frozen=True)
class Release:
    mean: np.ndarray  # [F] standardisation mean and occlusion baseline
    std: np.ndarray  # [F] standardisation scale
    fill: np.ndarray  # [F] imputation value (flags: the mode; one-hot groups: the most frequent)
    bounds: np.ndarray  # [F, 2] clipping range (flags [0, 1])
    prevalence: float  # training base rate (risk bands)
    mechanisms: tuple[dict[str, Any], ...]

    estimated: tuple[str, ...] = ()  # features whose statistics are DP estimates (the rest: public)

    def card_block(self, names: list[str]) -> dict[str, Any]:
        """``privacy.released``: every released statistic by feature, and how it was computed."""
        return {"rule": RULE, "share_of_epsilon": SHARE if self.mechanisms else 0.0,
                "prevalence": self.prevalence, "prevalence_from": "validation split",
                "features": {n: {"mean": float(self.mean[j]), "std": float(self.std[j]),
                                 "fill": float(self.fill[j]), "bounds": [float(v) for v in self.bounds[j]],
                                 "from": "DP estimate" if n in self.estimated else "public bounds"}
                             for j, n in enumerate(names)}}


def noise_multiplier(epsilon: float, delta: float) -> float:
    """Each mechanism's multiplier: sqrt(2) x the Gaussian's that alone is (SHARE * epsilon, delta)-DP."""
    from opacus.accountants.utils import get_noise_multiplier

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sigma = get_noise_multiplier(target_epsilon=SHARE * epsilon, target_delta=delta, sample_rate=1.0,
                                         steps=1, accountant="rdp")
    except ValueError as exc:
        raise PrivacyBudgetError(f"epsilon={epsilon} at delta={delta} cannot be reached: its share for the "
                                 f"released statistics ({SHARE:g}) is too small ({exc})",
                                 field="epsilon") from exc
    return math.sqrt(2.0) * float(sigma)


def public(features: list[Any]) -> np.ndarray:
    """Per feature: True for a flag, or a numeric feature bounded on both sides (no data needed)."""
    return np.array([f.unit == "flag" or (f.limits is not None and None not in f.limits[:2])
                     for f in features], dtype=bool)


def accountant_entries(epsilon: float, delta: float, features: list[Any]
                       ) -> tuple[tuple[float, float, int], ...]:
    """The Gaussian mechanisms :func:`release` will run for ``features`` (none when all are public)."""
    if public(features).all():
        return ()
    sigma = noise_multiplier(epsilon, delta)
    return ((sigma, 1.0, 1), (sigma, 1.0, 1))


def _per_patient(values: np.ndarray, groups: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean over each patient's observed rows (NaN: none), observed 0/1) per column."""
    seen = ~np.isnan(values)
    sums, counts = np.zeros((n, values.shape[1])), np.zeros((n, values.shape[1]))
    np.add.at(sums, groups, np.where(seen, values, 0.0))
    np.add.at(counts, groups, seen.astype(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan), (counts > 0).astype(np.float64)


def _bins(v: np.ndarray) -> np.ndarray:
    """Bin index per value: 0 .. 2 * (K_MAX - K_MIN) + 2; the zero bin is K_MAX - K_MIN + 1."""
    zero = K_MAX - K_MIN + 1
    k = np.clip(np.floor(np.log2(np.maximum(np.abs(v), 2.0 ** K_MIN))), K_MIN, K_MAX - 1) - K_MIN + 1
    return np.where(np.abs(v) < 2.0 ** K_MIN, zero, np.where(v > 0, zero + k, zero - k)).astype(int)


def _edges(b: int) -> tuple[float, float]:
    zero = K_MAX - K_MIN + 1
    if b == zero:
        return -(2.0 ** K_MIN), 2.0 ** K_MIN
    k = abs(b - zero) + K_MIN - 1
    lo, hi = 2.0 ** k, 2.0 ** (k + 1)
    return (lo, hi) if b > zero else (-hi, -lo)


def _bounds(patient: np.ndarray, features: list[Any], sigma: float,
            rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """DP clipping bounds [F, 2] of ``features`` (numeric, open on a side; ``patient``'s columns)."""
    scale = sigma * math.sqrt(len(features))
    n_bins = 2 * (K_MAX - K_MIN) + 3
    out = np.zeros((len(features), 2))
    for j in range(len(features)):
        v = patient[:, j][~np.isnan(patient[:, j])]
        counts = np.bincount(_bins(v), minlength=n_bins) + rng.normal(0.0, scale, n_bins)
        passing = np.flatnonzero(counts > THRESHOLD * scale)
        c_lo, c_hi = features[j].limits or (None, None)
        lo, hi = (_edges(int(passing[0]))[0], _edges(int(passing[-1]))[1]) if len(passing) else (None, None)
        lo = c_lo if lo is None or (c_lo is not None and c_lo > lo) else lo
        hi = c_hi if hi is None or (c_hi is not None and c_hi < hi) else hi
        if lo is None or hi is None or not lo < hi:
            raise TrainingInputError(
                f"features.{features[j].name}: too few training patients to bound it under DP (a noisy "
                f"histogram bin needs about {THRESHOLD * scale:.0f}); give min and max in the spec",
                field=features[j].name)
        out[j] = (lo, hi)
    return out, {"name": "bounds", "noise_multiplier": sigma, "sample_rate": 1.0, "steps": 1,
                 "sensitivity": math.sqrt(len(features)), "noise_std": scale,
                 "threshold": THRESHOLD * scale,
                 "releases": "clipping bounds of numeric features open on a side"}


def _public_statistics(features: list[Any]) -> tuple[np.ndarray, ...]:
    """(bounds, centre, scale, fill) from the bounds alone (open features: placeholders)."""
    f = len(features)  # flags: centred on 0 (absent), so an explanation credits a flag only when set
    bounds, mean, std, fill = np.tile([0.0, 1.0], (f, 1)), np.zeros(f), np.full(f, 0.5), np.zeros(f)
    for j, ft in enumerate(features):
        if ft.unit != "flag" and ft.limits is not None and None not in ft.limits[:2]:
            lo, hi = float(ft.limits[0]), float(ft.limits[1])
            bounds[j], std[j] = (lo, hi), max((hi - lo) / 4, 1e-6)
            mean[j] = fill[j] = (lo + hi) / 2
    for group in dict.fromkeys(ft.group for ft in features if ft.group):
        members = [j for j, ft in enumerate(features) if ft.group == group]
        fill[members] = 0.0
        fill[members[0]] = 1.0
    return bounds, mean, std, fill


def release(data: RiskData, *, epsilon: float, delta: float,
            rng: np.random.Generator | None = None) -> Release:
    """What a DP card releases about ``data``'s training patients (cells in ``data.missing`` count as
    missing): public statistics where the bounds allow, DP estimates elsewhere."""
    rng = rng or np.random.default_rng()  # OS entropy: the run's seed is published in the card
    features = data.features
    bounds, mean, std, fill = _public_statistics(features)
    prevalence = float(np.clip(np.mean(data.y[data.split["val"]]), 1e-3, 1 - 1e-3))
    open_ = [j for j, ok in enumerate(public(features)) if not ok]
    if not open_:
        return Release(mean, std, fill, bounds, prevalence, ())
    sigma = noise_multiplier(epsilon, delta)
    tr = data.split["train"]
    x = np.asarray(data.x[tr], np.float64)[:, open_].copy()
    if data.missing is not None:
        x[data.missing[tr][:, open_]] = np.nan
    groups = pd_codes(data.groups[tr]) if data.groups is not None else np.arange(len(tr))
    n_pat = int(groups.max()) + 1
    patient, _ = _per_patient(x, groups, n_pat)
    found, first = _bounds(patient, [features[j] for j in open_], sigma, rng)
    lo, width = found[:, 0], found[:, 1] - found[:, 0]
    u = (np.clip(x, lo, lo + width) - lo) / width  # rows scaled to [0, 1]
    mean_u, observed = _per_patient(u, groups, n_pat)
    sq_u, _ = _per_patient(u * u, groups, n_pat)
    coords = np.column_stack([np.ones(n_pat), observed * (np.nan_to_num(mean_u) - 0.5),
                              observed * (np.nan_to_num(sq_u) - 0.5), observed - 0.5])
    sensitivity = math.sqrt(1.0 + (coords.shape[1] - 1) / 4.0)
    noisy = coords.sum(axis=0) + rng.normal(0.0, sigma * sensitivity, coords.shape[1])
    k = len(open_)
    count = max(noisy[0], 1.0)
    seen = np.clip(noisy[1 + 2 * k:1 + 3 * k] + count / 2, 1.0, count)
    mu = np.clip(noisy[1:1 + k] / seen + 0.5, 0.0, 1.0)
    second = np.clip(noisy[1 + k:1 + 2 * k] / seen + 0.5, 0.0, 1.0)
    var = np.maximum(second - mu ** 2, MIN_STD ** 2)
    for i, j in enumerate(open_):
        bounds[j] = (lo[i], lo[i] + width[i])
        mean[j] = fill[j] = lo[i] + width[i] * mu[i]
        std[j] = width[i] * math.sqrt(var[i])
    second_mech = {"name": "moments", "noise_multiplier": sigma, "sample_rate": 1.0, "steps": 1,
                   "sensitivity": sensitivity, "noise_std": sigma * sensitivity,
                   "releases": "means, standard deviations and imputation values of those features"}
    return Release(mean, std, fill, bounds, prevalence, (first, second_mech),
                   tuple(features[j].name for j in open_))


def pd_codes(groups: np.ndarray) -> np.ndarray:
    """Patient codes 0..P-1 of the given rows."""
    return np.unique(groups, return_inverse=True)[1].reshape(-1)


def impute(data: RiskData, rel: Release) -> np.ndarray:
    """``data.x`` with its missing cells (``data.missing``) filled with the released values, and every
    value winsorised to its clipping bounds (the model's :class:`~healthai_training.risk.model.Clip`
    does the same at Score time; one outlier would otherwise dwarf the DP standardisation)."""
    x = np.array(data.x, dtype=np.float32, copy=True)
    if data.missing is not None:
        rows, cols = np.nonzero(data.missing)
        x[rows, cols] = rel.fill[cols]
    return np.clip(x, rel.bounds[:, 0].astype(np.float32), rel.bounds[:, 1].astype(np.float32))


def clip_bounds(rel: Release) -> tuple[np.ndarray, np.ndarray] | None:
    """The model's clipping bounds (float32 [F] each), or None when every feature is bounded by its spec
    or clinical limits (Score refuses values outside those: nothing to clip)."""
    return None if not rel.estimated else (rel.bounds[:, 0].astype(np.float32),
                                           rel.bounds[:, 1].astype(np.float32))
