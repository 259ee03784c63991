"""The KServe v2 / Triton gRPC inference protocol (``inference.GRPCInferenceService``) over the same
model runtime, so tritonclient and perf_analyzer work unchanged."""
