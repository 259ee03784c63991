"""Syndromic surveillance counts (region or US county × day/week) from the stored condition records.

See :mod:`healthai.surveillance.counts` for the query API and :mod:`healthai.surveillance.syndromes`
for the documented code lists.
"""

from healthai.surveillance.counts import SurveillanceCounts, place_level
from healthai.surveillance.syndromes import ILI, SYNDROMES, Syndrome

__all__ = ["ILI", "SYNDROMES", "SurveillanceCounts", "Syndrome", "place_level"]
