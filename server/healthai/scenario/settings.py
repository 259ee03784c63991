"""Scenario settings, nested as ``Settings.scenario`` (env ``HEALTHAI_SCENARIO__<FIELD>``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_GRAPHS_DIR = Path(__file__).resolve().parent.parent / "data" / "graphs"


class ScenarioSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    # Folder of named graphs: <graphs_dir>/us_counties holds the Census county files. The default is
    # the package's copy (healthai/data/graphs, public-domain Census files; see its README).
    graphs_dir: Path = DEFAULT_GRAPHS_DIR
    # Work = runs x regions x days (sub-steps per day not counted). Run (unary) takes up to unary_max_work,
    # RunStream up to max_work; more is RESOURCE_EXHAUSTED. The default admits the county graph x 1,000 runs
    # x 365 days.
    unary_max_work: int = Field(50_000_000, ge=1)
    max_work: int = Field(1_500_000_000, ge=1)
    # Jobs computing at once (each uses every engine thread) and jobs waiting; beyond: RESOURCE_EXHAUSTED.
    max_concurrent_jobs: int = Field(1, ge=1)
    max_queued_jobs: int = Field(4, ge=0)
    max_runs: int = Field(10_000, ge=1)
    max_sample_trajectories: int = Field(1_000, ge=0)
    num_threads: int | None = Field(None, ge=1)  # engine threads; None = all cores
