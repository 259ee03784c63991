"""FHIR R4 value sets of the coded elements stored as codes (flat columns and FHIR elements alike).

A code outside its value set is not a code: it may be a name or an identifier typed into the wrong
field, so it is never stored (null, with a warning that withholds the text).
"""

from __future__ import annotations

from collections.abc import Iterable

# required bindings: condition-clinical, condition-ver-status
CLINICAL_STATUS = ("active", "recurrence", "relapse", "inactive", "remission", "resolved")
VERIFICATION_STATUS = ("unconfirmed", "provisional", "differential", "confirmed", "refuted",
                       "entered-in-error")
# observation-category (preferred), v3 ActEncounterCode (extensible): the flat columns take only these
OBSERVATION_CATEGORY = ("social-history", "vital-signs", "imaging", "laboratory", "procedure", "survey",
                        "exam", "therapy", "activity")
ACT_ENCOUNTER_CODES = ("AMB", "EMER", "FLD", "HH", "IMP", "ACUTE", "NONAC", "OBSENC", "PRENC", "SS", "VR")
# flat class_code: v3 ActEncounterCode, with HL7 v2 table 0004's E, I, O
ENCOUNTER_CLASS = {**{c.lower(): c for c in ACT_ENCOUNTER_CODES}, "e": "EMER", "i": "IMP", "o": "AMB"}


def same(codes: Iterable[str]) -> dict[str, str]:
    """Lower-cased spelling → code (codes are matched in any case, stored as the value set spells them)."""
    return {c.lower(): c for c in codes}


__all__ = ["ACT_ENCOUNTER_CODES", "CLINICAL_STATUS", "ENCOUNTER_CLASS", "OBSERVATION_CATEGORY",
           "VERIFICATION_STATUS", "same"]
