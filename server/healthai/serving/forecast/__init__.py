"""Forecast.Predict: forecaster cards, region graphs and ids, history windows from callers or the
store's surveillance counts."""
