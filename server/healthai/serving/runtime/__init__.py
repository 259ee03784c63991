"""The model runtime: the repository (Triton layout), backends that run one model version (ONNX
Runtime in-process, or a Triton server), the one batch executor they share, the per-version
scheduler (queue + dynamic batching) and the manager (load, hot reload, version resolution)."""
