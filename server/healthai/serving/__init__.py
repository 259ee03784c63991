"""Model serving: a Triton-layout model repository on ONNX Runtime (or a Triton server), dynamic
batching, and the Risk, Forecast, KServe v2 and Diagnostics gRPC services.
``healthai.serving.plugin.plugin(settings=..., surveillance=...)`` is what the server process loads."""
