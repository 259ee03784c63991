"""Tabular risk cohorts: the TOML spec (``spec``) and a table checked against it and turned into model
features (``features``). Torch-free: training, the server and the client SDK share it."""
