"""Offline training (differential privacy, graph forecasting) and export to ONNX."""
