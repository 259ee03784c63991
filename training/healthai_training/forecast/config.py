"""The ST-GNN forecaster's settings (``ForecastConfig``) and their checks against the data."""

from __future__ import annotations

from dataclasses import dataclass, field

from healthai_training.epi import data as epi_data
from healthai_training.errors import TrainingInputError
from healthai_training.forecast.model import (
    BASES,
    FLUSIGHT_QUANTILES,
    SEASONAL_INPUTS,
    max_seasonal_steps,
    seasonal_window,
)
from healthai_training.privacy import PrivacySettings

HORIZONS = (2, 3, 5, 10, 15)
REGION_WEIGHTINGS = ("equal", "scale")
PRIVACY_UNIT = "one training window (W input weeks x all regions + its S target weeks)"


@dataclass(frozen=True)
class ForecastConfig:
    seasonal: bool = False
    base: str = "last"  # "last", "seasonal_mix" or "lag52" (the last two: seasonal mode only)
    anomaly_lags: int = 0  # seasonal mode: also feed y[t-k] - y[t-k-52] for the last K weeks
    seasonal_inputs: str = "levels"  # "anomalies": networks see recent weeks + seasonal differences only
    # None: gaps between quantile levels start at softplus(0) = 0.69 of a region's range (trained down
    # fast without noise); DP runs start them small, since clipped noisy steps barely move them.
    quantile_init_gap: float | None = None
    region_weighting: str = "equal"  # "scale": weight each region's loss by its training range squared
    refit: bool = False
    loss_steps: tuple[int, ...] = ()  # steps (1-based) the loss and selection see; () = all
    window: int | None = None  # default: 20 (standard) or seasonal_window(steps) (seasonal)
    recent: int = 20
    steps: int = 15
    horizons: tuple[int, ...] = HORIZONS
    quantiles: tuple[float, ...] = FLUSIGHT_QUANTILES
    hidden: int = 32
    epochs: int = 300
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    point_weight: float = 1.0
    # the epoch kept: least validation RMSE of the median ("rmse": the stack uses only the median), or
    # least mean pinball loss over the levels ("wis": where the model's own quantiles are served)
    select_on: str = "rmse"
    season: int = 52  # periods per season (52 weeks; 364 days for daily series)
    scaling: str = "per-region"  # min-max on training rows: "per-region" or "global"
    seed: int = 0
    device: str = "auto"
    privacy: PrivacySettings = field(default_factory=lambda: PrivacySettings(epsilon=None))

    @property
    def effective_window(self) -> int:
        if self.window is not None:
            return self.window
        if self.seasonal:
            return seasonal_window(self.steps, self.anomaly_lags, self.season)
        return self.recent


def validate_config(cfg: ForecastConfig, data: epi_data.EpiData) -> None:
    """Every setting against the others and the data; TrainingInputError naming the field."""
    if cfg.steps < 1 or any(h < 1 or h > cfg.steps for h in cfg.horizons):
        raise TrainingInputError(
            f"horizons {cfg.horizons} must lie in 1..steps={cfg.steps}", field="horizons"
        )
    if cfg.season < 5:
        raise TrainingInputError(f"season length must be >= 5 periods, got {cfg.season}", field="season")
    if cfg.seasonal and cfg.steps > max_seasonal_steps(cfg.season):
        raise TrainingInputError(
            f"seasonal mode supports at most {max_seasonal_steps(cfg.season)} steps, got {cfg.steps}",
            field="steps",
        )
    if cfg.season != data.season:
        raise TrainingInputError(
            f"season length {cfg.season} differs from the data's {data.season}", field="season"
        )
    if cfg.select_on not in ("rmse", "wis"):
        raise TrainingInputError(
            f"select_on must be 'rmse' or 'wis', got {cfg.select_on!r}", field="select_on"
        )
    if cfg.scaling not in epi_data.SCALINGS:
        raise TrainingInputError(
            f"scaling must be one of {epi_data.SCALINGS}, got {cfg.scaling!r}", field="scaling"
        )
    if cfg.recent < 1 or cfg.effective_window < cfg.recent:
        raise TrainingInputError(
            f"window {cfg.effective_window} must be >= recent {cfg.recent} >= 1", field="window"
        )
    if cfg.anomaly_lags < 0 or (cfg.anomaly_lags and not cfg.seasonal):
        raise TrainingInputError(
            f"anomaly_lags {cfg.anomaly_lags} must be >= 0 and needs the seasonal mode", field="anomaly_lags"
        )
    if cfg.seasonal_inputs not in SEASONAL_INPUTS or (
        cfg.seasonal_inputs == "anomalies" and (not cfg.seasonal or cfg.anomaly_lags < 1)
    ):
        raise TrainingInputError(
            f"seasonal_inputs {cfg.seasonal_inputs!r} must be one of {SEASONAL_INPUTS}; 'anomalies' needs "
            "the seasonal mode and anomaly_lags >= 1",
            field="seasonal_inputs",
        )
    need = seasonal_window(cfg.steps, cfg.anomaly_lags, cfg.season) if cfg.seasonal else 0
    if cfg.seasonal and cfg.effective_window < need:
        raise TrainingInputError(
            f"seasonal mode needs window >= {need}, got {cfg.effective_window}",
            field="window",
        )
    if cfg.base not in BASES or (cfg.base != "last" and not cfg.seasonal):
        raise TrainingInputError(
            f"base {cfg.base!r} must be one of {BASES} (all but 'last' need the seasonal mode)",
            field="base",
        )
    if any(k < 1 or k > cfg.steps for k in cfg.loss_steps):
        raise TrainingInputError(
            f"loss_steps {cfg.loss_steps} must lie in 1..{cfg.steps}", field="loss_steps"
        )
    if cfg.region_weighting not in REGION_WEIGHTINGS:
        raise TrainingInputError(
            f"region_weighting must be one of {REGION_WEIGHTINGS}, got {cfg.region_weighting!r}",
            field="region_weighting",
        )
    if cfg.refit and cfg.privacy.private:
        raise TrainingInputError("refit is for non-private runs (it would spend budget twice)", field="refit")
    if cfg.quantile_init_gap is not None and not cfg.quantile_init_gap > 0:
        raise TrainingInputError(
            f"quantile_init_gap must be > 0, got {cfg.quantile_init_gap}", field="quantile_init_gap"
        )
    if cfg.batch_size < 1 or cfg.lr <= 0 or cfg.hidden < 1:
        raise TrainingInputError("batch_size, lr and hidden must be positive", field="config")
    epi_data.validate_series(
        data.series,
        window=cfg.effective_window,
        horizon=cfg.steps,
        split=data.split if data.cuts is None else ((data.cuts[0] + 0.5) / data.n_weeks, 0.0, 0.0),
        allow_negative=bool(data.report.get("negatives_kept")),
    )
