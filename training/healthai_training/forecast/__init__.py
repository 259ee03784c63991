"""Spatio-temporal GNN forecaster: weekly counts on a region graph → multi-step quantile forecasts."""
