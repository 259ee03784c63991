"""Where a forecaster trains: a GPU only where the native graph op passes its self-check against the
CPU kernel; ``auto`` falls back to the CPU and says why, an explicit ``cuda`` stops with the reason."""

from __future__ import annotations

import logging

import pytest
import torch

import healthai.ops
from healthai_training.errors import TrainingInputError
from healthai_training.forecast import device as device_mod
from healthai_training.forecast.device import forecast_device, native_problem


@pytest.fixture(autouse=True)
def fresh_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_mod, "_CHECKED", {})


def _a_gpu_is_present(monkeypatch: pytest.MonkeyPatch, problem: str | None) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(device_mod, "_self_check", lambda device: problem)


def test_cpu_needs_no_check() -> None:
    assert forecast_device("cpu") == torch.device("cpu")
    assert device_mod._CHECKED == {}


def test_auto_falls_back_to_the_cpu_and_says_why(monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    _a_gpu_is_present(monkeypatch, "the native graph op was built without CUDA")
    with caplog.at_level(logging.WARNING, logger="healthai_training.forecast.device"):
        assert forecast_device("auto") == torch.device("cpu")
    assert "training on the CPU although a GPU is present: the native graph op was built without CUDA" \
        in caplog.text
    with pytest.raises(TrainingInputError, match="device='cuda': the native graph op was built") as err:
        forecast_device("cuda")
    assert err.value.field == "device"


def test_a_passing_check_keeps_the_gpu_and_runs_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(device_mod, "_self_check", lambda device: calls.append(device))
    assert forecast_device("auto") == torch.device("cuda")
    assert forecast_device("auto") == torch.device("cuda") and len(calls) == 1


def test_the_self_check_compares_both_kernels_and_catches_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run on the CPU twice (no GPU here), the comparison itself passes; a second device whose kernel
    raises, or answers differently, is reported with the reduction and what differed."""
    monkeypatch.setattr(healthai.ops, "build_info", lambda: {"cuda": True})
    cpu = torch.device("cpu")
    assert device_mod._self_check(cpu) is None
    real = healthai.ops.GraphAggregation
    built = []

    class Broken(real):  # the second module of each pair stands for the CUDA one
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            built.append(self)
            out = super().forward(x)
            return out * 1.01 if len(built) % 2 == 0 else out

    monkeypatch.setattr(healthai.ops, "GraphAggregation", Broken)
    assert "CUDA sum output differs from its CPU result" in device_mod._self_check(cpu)

    class Raising(real):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("an illegal memory access was encountered")

    monkeypatch.setattr(healthai.ops, "GraphAggregation", Raising)
    assert device_mod._self_check(cpu) == ("the native graph op failed its CUDA self-check (RuntimeError: "
                                           "an illegal memory access was encountered)")
    monkeypatch.setattr(healthai.ops, "build_info", lambda: {"cuda": False})
    assert "built without CUDA" in device_mod._self_check(cpu)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_cuda_kernel_passes_its_self_check_on_a_gpu() -> None:
    assert native_problem(torch.device("cuda")) is None
