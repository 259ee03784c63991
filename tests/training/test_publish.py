"""Publishing into a served repository: a model's versions share one config.pbtxt."""

from __future__ import annotations

from pathlib import Path

import pytest

from healthai_training.errors import TrainingInputError
from healthai_training.publish import publish


def _export(root: Path, window: int) -> Path:
    model = root / "forecast_x"
    (model / "1").mkdir(parents=True)
    (model / "1" / "model.onnx").write_bytes(b"onnx")
    (model / "1" / "model_card.json").write_text("{}")
    config = f'name: "forecast_x"\ninput [ {{ name: "history" dims: [{window}, 8] }} ]\n'
    (model / "config.pbtxt").write_text(config)
    return model


def test_a_new_version_with_other_shapes_is_refused_and_the_served_ones_stay(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    assert publish(_export(tmp_path / "run1", 365), repo) == 1
    assert publish(_export(tmp_path / "run2", 365), repo, new_version=True) == 2  # same shapes: fine
    config = (repo / "forecast_x" / "config.pbtxt").read_text()
    with pytest.raises(TrainingInputError, match=r"dims: \[20, 8\].*version\(s\) 1, 2.*another --model-name"):
        publish(_export(tmp_path / "run3", 20), repo, new_version=True)
    assert (repo / "forecast_x" / "config.pbtxt").read_text() == config
    assert sorted(p.name for p in (repo / "forecast_x").iterdir()) == ["1", "2", "config.pbtxt"]
    with pytest.raises(TrainingInputError):  # replacing version 1 would still break version 2
        publish(_export(tmp_path / "run4", 20), repo)
    assert publish(_export(tmp_path / "run5", 20), tmp_path / "fresh") == 1  # nothing to break
