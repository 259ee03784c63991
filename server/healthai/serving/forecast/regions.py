"""Region-code aliases: stored surveillance counts are keyed by ISO 3166-2 codes (``US-MA``), while a
model's graph may name regions otherwise (US states by name). Maps such names to ISO codes."""

from __future__ import annotations

US_STATE_ISO = {
    "Alabama": "US-AL", "Alaska": "US-AK", "Arizona": "US-AZ", "Arkansas": "US-AR", "California": "US-CA",
    "Colorado": "US-CO", "Connecticut": "US-CT", "Delaware": "US-DE", "District of Columbia": "US-DC",
    "Florida": "US-FL", "Georgia": "US-GA", "Hawaii": "US-HI", "Idaho": "US-ID", "Illinois": "US-IL",
    "Indiana": "US-IN", "Iowa": "US-IA", "Kansas": "US-KS", "Kentucky": "US-KY", "Louisiana": "US-LA",
    "Maine": "US-ME", "Maryland": "US-MD", "Massachusetts": "US-MA", "Michigan": "US-MI",
    "Minnesota": "US-MN", "Mississippi": "US-MS", "Missouri": "US-MO", "Montana": "US-MT",
    "Nebraska": "US-NE", "Nevada": "US-NV", "New Hampshire": "US-NH", "New Jersey": "US-NJ",
    "New Mexico": "US-NM", "New York": "US-NY", "North Carolina": "US-NC", "North Dakota": "US-ND",
    "Ohio": "US-OH", "Oklahoma": "US-OK", "Oregon": "US-OR", "Pennsylvania": "US-PA",
    "Rhode Island": "US-RI", "South Carolina": "US-SC", "South Dakota": "US-SD", "Tennessee": "US-TN",
    "Texas": "US-TX", "Utah": "US-UT", "Vermont": "US-VT", "Virginia": "US-VA", "Washington": "US-WA",
    "West Virginia": "US-WV", "Wisconsin": "US-WI", "Wyoming": "US-WY",
}  # fmt: skip


def iso_alias(region_id: str) -> str | None:
    """The ISO 3166-2 code a graph region id stands for, when known."""
    return US_STATE_ISO.get(region_id) or US_STATE_ISO.get(region_id.replace("_", " "))
