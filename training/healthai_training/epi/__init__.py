"""Weekly surveillance series on a region graph: loading, the benchmark protocol, metrics, baselines."""
