"""Patient risk models (30-day readmission, heart disease): features, DP training, calibration."""
