"""Triton Inference Server integration: prepare a model repository for Triton (``prepare``) and the
``healthai triton`` command (``cli``). The serving backend that sends execution to Triton lives in
``healthai.serving.runtime.triton``."""

from healthai.triton.prepare import PreparedModel, check_onnx_against_config, prepare_repository

__all__ = ["PreparedModel", "check_onnx_against_config", "prepare_repository"]
