"""Federated risk training on Flower's deployment engine (SuperLink + SuperNodes), DP-SGD at each site."""
