"""Units: UCUM canonical unit per LOINC code, conversions, non-UCUM spellings, plausible ranges.

``convert(loinc, value, unit)`` returns the value in the code's canonical UCUM unit. Units are
first mapped from the spellings seen in real exports (``mmHg``, ``C``, ``F``, ``beats/minute``,
``lbs``, ...) to UCUM; then converted with a linear factor/offset within a dimension (any mass
concentration to any other: g/L, mg/L, mg/dL, g/dL), with the analyte's molar mass from molar to mass
concentrations (glucose, creatinine, cholesterol, ...), with the ion's charge from equivalents to moles
(1 meq/L calcium = 0.5 mmol/L; sodium 1:1), and with a code's own units (HbA1c IFCC mmol/mol → NGSP %).
A value outside the code's physiologically possible range (after conversion) is impossible: the
ranges are deliberately wide (they catch unit mix-ups and typos, not abnormal results).

Units are matched case-sensitively first, then with case ignored (``MG/DL`` is mg/dL), unless ignoring
case makes the unit ambiguous (``MM``: mm or mM = mmol/L; ``G/L``: g/L, or giga per litre = 10*9/L as
French labs write cell counts). An ambiguous unit is read as the one reading of the code's dimension
(``MM`` on a height is mm, ``G/L`` on glucose is g/L); when none or both fit, or the code has no
canonical unit (a WBC count), nothing is guessed: UNIT_UNKNOWN, the value is withheld as for an unknown
unit. Valid UCUM units of another dimension (``mg`` on a glucose concentration) are UNIT_INCOMPATIBLE.
The Quantity's unit system is UCUM when it is ``http://unitsofmeasure.org``, UCUM's OID
(``urn:oid:2.16.840.1.113883.6.8``) or a near miss of the URI (:func:`is_ucum_system`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from healthai.normalize.codes import UCUM_SYSTEM, canonical_uri
from healthai.normalize.redact import number, withheld

UCUM_SYSTEMS = frozenset({UCUM_SYSTEM, "urn:oid:2.16.840.1.113883.6.8"})  # the URI and UCUM's OID


def is_ucum_system(system: object) -> bool:
    """Whether a Quantity's ``system`` names UCUM: its URI, its OID, or a near miss of them
    (``https://``, a trailing ``/``, spaces: :func:`.codes.canonical_uri`)."""
    return isinstance(system, str) and canonical_uri(system) in UCUM_SYSTEMS


# Non-UCUM spellings → UCUM. Keys are compared case-sensitively first, then with case ignored (_FOLDED).
UNIT_ALIASES: dict[str, str] = {
    "mm[Hg]": "mm[Hg]", "mmHg": "mm[Hg]", "mm Hg": "mm[Hg]", "mmhg": "mm[Hg]",
    "millimeter of mercury": "mm[Hg]", "kPa": "kPa", "kpa": "kPa",
    "Cel": "Cel", "C": "Cel", "°C": "Cel", "degC": "Cel", "deg C": "Cel", "celsius": "Cel", "℃": "Cel",
    "[degF]": "[degF]", "F": "[degF]", "°F": "[degF]", "degF": "[degF]", "deg F": "[degF]",
    "fahrenheit": "[degF]",
    "/min": "/min", "1/min": "/min", "{beats}/min": "/min", "beats/minute": "/min", "beats/min": "/min",
    "bpm": "/min", "{breaths}/min": "/min", "breaths/minute": "/min", "breaths/min": "/min",
    "per minute": "/min",
    "kg": "kg", "g": "g", "[lb_av]": "[lb_av]", "lb": "[lb_av]", "lbs": "[lb_av]", "pound": "[lb_av]",
    "pounds": "[lb_av]", "[oz_av]": "[oz_av]", "oz": "[oz_av]",
    "cm": "cm", "m": "m", "mm": "mm", "[in_i]": "[in_i]", "in": "[in_i]", "inch": "[in_i]",
    "inches": "[in_i]",
    "[ft_i]": "[ft_i]", "ft": "[ft_i]",
    "kg/m2": "kg/m2", "kg/m^2": "kg/m2", "kg/m²": "kg/m2",
    "mg/dL": "mg/dL", "mg/dl": "mg/dL", "mmol/L": "mmol/L", "mmol/l": "mmol/L", "mM": "mmol/L",
    "umol/L": "umol/L", "µmol/L": "umol/L", "μmol/L": "umol/L", "umol/l": "umol/L", "µmol/l": "umol/L",
    "g/dL": "g/dL", "g/dl": "g/dL", "g/L": "g/L", "g/l": "g/L", "mg/L": "mg/L", "mg/l": "mg/L",
    "ug/mL": "ug/mL", "ug/ml": "ug/mL", "µg/mL": "ug/mL", "μg/mL": "ug/mL", "µg/ml": "ug/mL",
    "ug/dL": "ug/dL", "ug/dl": "ug/dL", "µg/dL": "ug/dL", "μg/dL": "ug/dL", "µg/dl": "ug/dL",
    "mol/L": "mol/L", "mol/l": "mol/L",
    "%": "%", "percent": "%", "mmol/mol": "mmol/mol",
    "mL/min/{1.73_m2}": "mL/min/{1.73_m2}", "mL/min/1.73m2": "mL/min/{1.73_m2}",
    "ml/min/1.73m2": "mL/min/{1.73_m2}",
    "mL/min/1.73 m2": "mL/min/{1.73_m2}",
    "{score}": "{score}", "score": "{score}",
    # equivalents: mmol/L only through the analyte's ion charge (CodeUnit.valence, see conversion)
    "meq/L": "meq/L", "mEq/L": "meq/L", "meq/l": "meq/L",
    # other valid UCUM units: read (a wrong dimension is UNIT_INCOMPATIBLE, not an unknown unit)
    "K": "K", "mg": "mg", "ug": "ug", "µg": "ug", "ng": "ng", "Pa": "Pa",
    "L": "L", "l": "L", "dL": "dL", "mL": "mL", "uL": "uL", "µL": "uL",
    "mol": "mol", "mmol": "mmol", "umol": "umol",
    "nmol/L": "nmol/L", "pmol/L": "pmol/L", "mg/mL": "mg/mL", "ng/mL": "ng/mL", "ng/dL": "ng/dL",
    "pg/mL": "pg/mL",
    "10*9/L": "10*9/L", "10*12/L": "10*12/L", "10*3/uL": "10*3/uL", "10*6/uL": "10*6/uL", "/uL": "/uL",
    "U/L": "U/L", "[IU]/L": "[IU]/L",
}  # fmt: skip
# Readings of a unit once its case is ignored: usually one; several make the unit ambiguous (see module
# docstring). "G/L" is also giga per litre (10*9/L) as French labs write cell counts.
_FOLDED: dict[str, tuple[str, ...]] = {}
for _sent, _read in [*UNIT_ALIASES.items(), ("g/l", "10*9/L")]:
    _FOLDED[_sent.lower()] = tuple(dict.fromkeys([*_FOLDED.get(_sent.lower(), ()), _read]))

# Linear conversions to a dimension's base unit: unit -> (base, factor, offset);
# base_value = value * factor + offset. Any two units of one base convert to each other (conversion).
_LINEAR: dict[str, tuple[str, float, float]] = {
    "mm[Hg]": ("mm[Hg]", 1.0, 0.0),
    "kPa": ("mm[Hg]", 7.500615758, 0.0),  # 1 kPa = 1000 / 133.322387415 mm[Hg]
    "Pa": ("mm[Hg]", 7.500615758e-3, 0.0),
    "Cel": ("Cel", 1.0, 0.0),
    "[degF]": ("Cel", 5.0 / 9.0, -32.0 * 5.0 / 9.0),
    "K": ("Cel", 1.0, -273.15),
    "/min": ("/min", 1.0, 0.0),
    "kg": ("kg", 1.0, 0.0),
    "g": ("kg", 1e-3, 0.0),
    "[lb_av]": ("kg", 0.45359237, 0.0),
    "[oz_av]": ("kg", 0.028349523125, 0.0),
    "mg": ("kg", 1e-6, 0.0),
    "ug": ("kg", 1e-9, 0.0),
    "ng": ("kg", 1e-12, 0.0),
    "cm": ("cm", 1.0, 0.0),
    "m": ("cm", 100.0, 0.0),
    "mm": ("cm", 0.1, 0.0),
    "[in_i]": ("cm", 2.54, 0.0),
    "[ft_i]": ("cm", 30.48, 0.0),
    "kg/m2": ("kg/m2", 1.0, 0.0),
    # mass concentrations (base g/L): France and Belgium report glucose and lipids in g/L
    "g/L": ("g/L", 1.0, 0.0),
    "g/dL": ("g/L", 10.0, 0.0),
    "mg/dL": ("g/L", 0.01, 0.0),
    "mg/L": ("g/L", 1e-3, 0.0),
    "ug/mL": ("g/L", 1e-3, 0.0),
    "ug/dL": ("g/L", 1e-5, 0.0),
    "mg/mL": ("g/L", 1.0, 0.0),
    "ng/mL": ("g/L", 1e-6, 0.0),
    "ng/dL": ("g/L", 1e-8, 0.0),
    "pg/mL": ("g/L", 1e-9, 0.0),
    "mol/L": ("mmol/L", 1e3, 0.0),
    "mmol/L": ("mmol/L", 1.0, 0.0),
    "umol/L": ("mmol/L", 1e-3, 0.0),
    "nmol/L": ("mmol/L", 1e-6, 0.0),
    "pmol/L": ("mmol/L", 1e-9, 0.0),
    "L": ("L", 1.0, 0.0),
    "dL": ("L", 0.1, 0.0),
    "mL": ("L", 1e-3, 0.0),
    "uL": ("L", 1e-6, 0.0),
    "mol": ("mmol", 1e3, 0.0),
    "mmol": ("mmol", 1.0, 0.0),
    "umol": ("mmol", 1e-3, 0.0),
    "10*9/L": ("10*9/L", 1.0, 0.0),
    "10*3/uL": ("10*9/L", 1.0, 0.0),
    "10*12/L": ("10*9/L", 1e3, 0.0),
    "10*6/uL": ("10*9/L", 1e3, 0.0),
    "/uL": ("10*9/L", 1e-3, 0.0),
    "%": ("%", 1.0, 0.0),
    "mL/min/{1.73_m2}": ("mL/min/{1.73_m2}", 1.0, 0.0),
    "{score}": ("{score}", 1.0, 0.0),
}
MEQ = "meq/L"
# IFCC HbA1c (mmol/mol) → NGSP/DCCT % by the master equation; only HbA1c codes carry it (code_units).
IFCC_TO_NGSP: tuple[tuple[str, float, float], ...] = (("mmol/mol", 0.09148, 2.152),)


@dataclass(frozen=True, slots=True)
class CodeUnit:
    """Canonical unit and possible range of one LOINC code. ``per_mmol_l``: the canonical unit's value
    of 1 mmol/L (molar → mass concentration: glucose 18.016 mg/dL, hemoglobin 1.6114 g/dL)."""

    name: str
    unit: str
    low: float
    high: float
    per_mmol_l: float | None = None
    lax_units: tuple[str, ...] = ()  # units exports use for this code that mean the canonical one
    valence: int | None = None  # ion charge: 1 meq/L = 1/valence mmol/L; None: meq/L is incompatible
    code_units: tuple[tuple[str, float, float], ...] = ()  # (UCUM unit, factor, offset) for this code only


SBP, DBP = "8480-6", "8462-4"
BP_PANELS = frozenset({"55284-4", "85354-9"})  # Synthea/older panel, US Core/newer panel

CANONICAL: dict[str, CodeUnit] = {
    SBP: CodeUnit("systolic_bp", "mm[Hg]", 30.0, 350.0),
    DBP: CodeUnit("diastolic_bp", "mm[Hg]", 10.0, 250.0),
    "8867-4": CodeUnit("heart_rate", "/min", 10.0, 350.0),
    "9279-1": CodeUnit("respiratory_rate", "/min", 2.0, 120.0),
    "8310-5": CodeUnit("body_temperature", "Cel", 24.0, 46.0),
    "8331-1": CodeUnit("oral_temperature", "Cel", 24.0, 46.0),
    "29463-7": CodeUnit("body_weight", "kg", 0.2, 700.0),
    "3141-9": CodeUnit("body_weight_measured", "kg", 0.2, 700.0),
    "8302-2": CodeUnit("body_height", "cm", 20.0, 280.0),
    "8306-3": CodeUnit("body_height_lying", "cm", 20.0, 280.0),
    "39156-5": CodeUnit("bmi", "kg/m2", 5.0, 250.0),
    "2708-6": CodeUnit("oxygen_saturation_arterial", "%", 10.0, 100.0),
    "59408-5": CodeUnit("oxygen_saturation_pulse_ox", "%", 10.0, 100.0),
    "72514-3": CodeUnit("pain_severity", "{score}", 0.0, 10.0),
    "2339-0": CodeUnit("glucose_blood", "mg/dL", 5.0, 3000.0, 18.016),
    "2345-7": CodeUnit("glucose_serum", "mg/dL", 5.0, 3000.0, 18.016),
    "4548-4": CodeUnit("hba1c", "%", 2.0, 25.0, code_units=IFCC_TO_NGSP),
    "38483-4": CodeUnit("creatinine_blood", "mg/dL", 0.05, 40.0, 11.312),
    "2160-0": CodeUnit("creatinine_serum", "mg/dL", 0.05, 40.0, 11.312),
    "6299-2": CodeUnit("urea_nitrogen", "mg/dL", 0.5, 300.0, 2.8014),
    "3094-0": CodeUnit("urea_nitrogen_serum", "mg/dL", 0.5, 300.0, 2.8014),
    "49765-1": CodeUnit("calcium", "mg/dL", 1.0, 25.0, 4.008, valence=2),
    "17861-6": CodeUnit("calcium_serum", "mg/dL", 1.0, 25.0, 4.008, valence=2),
    "2947-0": CodeUnit("sodium", "mmol/L", 80.0, 220.0, valence=1),
    "2951-2": CodeUnit("sodium_serum", "mmol/L", 80.0, 220.0, valence=1),
    "6298-4": CodeUnit("potassium", "mmol/L", 0.5, 15.0, valence=1),
    "2823-3": CodeUnit("potassium_serum", "mmol/L", 0.5, 15.0, valence=1),
    "2069-3": CodeUnit("chloride", "mmol/L", 40.0, 180.0, valence=1),
    "20565-8": CodeUnit("carbon_dioxide", "mmol/L", 1.0, 80.0, valence=1),
    "2093-3": CodeUnit("cholesterol_total", "mg/dL", 20.0, 2000.0, 38.67),
    "2571-8": CodeUnit("triglycerides", "mg/dL", 5.0, 20000.0, 88.57),
    "2085-9": CodeUnit("cholesterol_hdl", "mg/dL", 2.0, 300.0, 38.67),
    "18262-6": CodeUnit("cholesterol_ldl", "mg/dL", 2.0, 1500.0, 38.67),
    # eGFR is "per 1.73 m2" by definition; Synthea (and many labs) send plain mL/min.
    "33914-3": CodeUnit("egfr", "mL/min/{1.73_m2}", 0.0, 300.0, lax_units=("mL/min", "ml/min")),
    # hemoglobin in mmol/L (per iron-binding monomer, 16.114 g/mol; Dutch labs report it so)
    "718-7": CodeUnit("hemoglobin", "g/dL", 1.0, 30.0, 1.6114),
    # Other LOINC codes of the same analytes (other specimens, methods, or molar units as European labs
    # report them); the features read them all (``features.LAB_CODES``), each in the canonical unit.
    "14749-6": CodeUnit("glucose_serum_molar", "mg/dL", 5.0, 3000.0, 18.016),
    "15074-8": CodeUnit("glucose_blood_molar", "mg/dL", 5.0, 3000.0, 18.016),
    "41653-7": CodeUnit("glucose_capillary_glucometer", "mg/dL", 5.0, 3000.0, 18.016),
    "17856-6": CodeUnit("hba1c_hplc", "%", 2.0, 25.0, code_units=IFCC_TO_NGSP),
    "4549-2": CodeUnit("hba1c_electrophoresis", "%", 2.0, 25.0, code_units=IFCC_TO_NGSP),
    "17855-8": CodeUnit("hba1c_calculated", "%", 2.0, 25.0, code_units=IFCC_TO_NGSP),
    # the IFCC-protocol code is reported in mmol/mol; stored in NGSP % like the other HbA1c codes
    "59261-8": CodeUnit("hba1c_ifcc", "%", 2.0, 25.0, code_units=IFCC_TO_NGSP),
    "14682-9": CodeUnit("creatinine_serum_molar", "mg/dL", 0.05, 40.0, 11.312),
    "59826-8": CodeUnit("creatinine_blood_molar", "mg/dL", 0.05, 40.0, 11.312),
    "77140-2": CodeUnit("creatinine_molar", "mg/dL", 0.05, 40.0, 11.312),
    **{code: CodeUnit(f"egfr_{code}", "mL/min/{1.73_m2}", 0.0, 300.0, lax_units=("mL/min", "ml/min"))
       for code in ("48642-3", "48643-1", "50044-7", "62238-1", "69405-9", "77147-7", "88293-6",
                    "88294-4", "98979-8")},  # MDRD and CKD-EPI (2009, 2021) variants
    "14647-2": CodeUnit("cholesterol_total_molar", "mg/dL", 20.0, 2000.0, 38.67),
    "13457-7": CodeUnit("cholesterol_ldl_calculated", "mg/dL", 2.0, 1500.0, 38.67),
    "2089-1": CodeUnit("cholesterol_ldl_mass", "mg/dL", 2.0, 1500.0, 38.67),
    "22748-8": CodeUnit("cholesterol_ldl_molar", "mg/dL", 2.0, 1500.0, 38.67),
    "39469-2": CodeUnit("cholesterol_ldl_molar_calculated", "mg/dL", 2.0, 1500.0, 38.67),
    "69419-0": CodeUnit("cholesterol_ldl_molar_direct", "mg/dL", 2.0, 1500.0, 38.67),
    "14646-4": CodeUnit("cholesterol_hdl_molar", "mg/dL", 2.0, 300.0, 38.67),
}


class UnitError(ValueError):
    """``code`` is an IssueCode value: UNIT_UNKNOWN, UNIT_INCOMPATIBLE or VALUE_IMPOSSIBLE."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def readings(unit: str | None) -> tuple[str, ...]:
    """UCUM units a unit as sent may be: its exact spelling's, else those with case ignored (several when
    ignoring case is ambiguous: ``MM`` → mm, mmol/L); none when not recognised."""
    if unit is None:
        return ()
    u = unit.strip()
    exact = UNIT_ALIASES.get(u)
    return (exact,) if exact else _FOLDED.get(u.lower(), ())


def ucum(unit: str | None, loinc: str | None = None) -> str | None:
    """UCUM spelling of a unit as sent (``mmHg`` → ``mm[Hg]``); None when not recognised, or when ignoring
    its case is ambiguous and the code's dimension (``loinc``) does not pick one reading."""
    found = readings(unit)
    if len(found) > 1:
        spec = CANONICAL.get(loinc) if loinc else None
        found = tuple(u for u in found if spec is not None and _to_canonical(spec, u) is not None)
    return found[0] if len(found) == 1 else None


_UNIT_SHAPE = re.compile(r"^[A-Za-z0-9%\[\]{}()/.*^_'+\-µμ°²³]{1,24}$")
_UNIT_SYNTAX = frozenset("[]{}/.*^%0123456789²³")


def looks_like_unit(text: str) -> bool:
    """Whether unit text we cannot read may still be stored (``unit`` of an unknown code, ``original_unit``):
    a unit we know, or UCUM-shaped text: no spaces, at most 24 characters, and unit syntax (``/``, ``.``,
    ``^``, digits, brackets, ``%``), at most 5 characters (``U``, ``IU``, ``kat``) or lower case
    (``furlongs``). A capitalised word in the unit column (a name) is none of these: free text is never
    stored."""
    u = text.strip()
    if ucum(u) is not None:
        return True
    return bool(_UNIT_SHAPE.match(u)) and (len(u) <= 5 or any(c in _UNIT_SYNTAX for c in u) or u.islower())


UCUM_UNITS = frozenset(UNIT_ALIASES.values())
# Valid (case-sensitive) UCUM spellings other than our canonical one: an annotation ({beats}) means 1,
# ``1/min`` is ``/min``, ``M`` is molar. The liter's second symbol ``l`` is handled in non_ucum.
_UCUM_SYNONYMS = frozenset({"1/min", "{beats}/min", "{breaths}/min", "mM"})


def non_ucum(unit: str | None, loinc: str | None = None) -> str | None:
    """The UCUM unit a non-UCUM spelling (``C``, ``mmHg``, ``lbs``, ``mEq/L``, ``MM`` on a height) was read
    as for ``loinc``; None when the unit is already valid UCUM (``mg/dl``, ``{beats}/min``, ``meq/L``),
    unknown or ambiguous (:func:`ucum`)."""
    if unit is None:
        return None
    u = unit.strip()
    read_as = ucum(u, loinc)
    if read_as is None or u in UCUM_UNITS or u in _UCUM_SYNONYMS:
        return None
    # every "L" of a canonical spelling is the liter, whose symbol may also be "l" (mg/dl, mmol/l)
    return None if u == read_as.replace("L", "l") else read_as


def conversion(loinc: str, unit: str | None) -> tuple[str, float, float]:
    """(canonical unit, factor, offset) converting ``unit`` to the code's canonical unit.

    Raises UnitError(UNIT_UNKNOWN) for a unit we cannot read and UnitError(UNIT_INCOMPATIBLE) for a
    unit of another dimension. For LOINC codes without a canonical entry the unit is only respelled.
    """
    spec = CANONICAL.get(loinc)
    if spec is not None and unit is not None and unit.strip() in spec.lax_units:
        return spec.unit, 1.0, 0.0
    u = ucum(unit, loinc)
    if u is None:
        found = readings(unit)
        if len(found) > 1:  # e.g. MM (mm or mmol/L): never guessed
            which = " or ".join(repr(r) for r in found)
            why = (f"LOINC {loinc} has no canonical unit to choose by" if spec is None else
                   f"not exactly one converts to {spec.unit!r} for LOINC {loinc}")
            raise UnitError("UNIT_UNKNOWN", f"unit is ambiguous when its case is ignored ({which}) and {why}")
        if spec is None and unit and looks_like_unit(unit):
            return unit.strip(), 1.0, 0.0  # unknown code and unit: kept as sent
        if unit is None:
            raise UnitError("UNIT_UNKNOWN", "unit is missing (not a UCUM unit or spelling)")
        if not looks_like_unit(unit):
            raise UnitError("UNIT_UNKNOWN", f"unit is free text, not a unit {withheld(unit)}: not stored")
        raise UnitError("UNIT_UNKNOWN", "unit is not a UCUM unit or spelling this server converts "
                        f"(value withheld: {len(unit.strip())} characters)")
    if spec is None:
        return u, 1.0, 0.0  # an unknown analyte's meq/L stays meq/L: its ion charge is unknown
    found_conv = _to_canonical(spec, u)
    if found_conv is not None:
        return found_conv
    # u is a UCUM unit of our table and loinc a key of CANONICAL: neither is free text
    raise UnitError("UNIT_INCOMPATIBLE", f"unit {u!r} cannot be converted to {spec.unit!r} for LOINC {loinc}")


def _to_canonical(spec: CodeUnit, u: str) -> tuple[str, float, float] | None:
    """(canonical unit, factor, offset) from the UCUM unit ``u`` of our table; None: another dimension."""
    scale = 1.0  # unit -> u
    if u == MEQ and spec.valence:  # divalent calcium: 1 meq/L = 0.5 mmol/L; sodium 1:1
        u, scale = "mmol/L", 1.0 / spec.valence
    for code_unit, factor, offset in spec.code_units:  # e.g. HbA1c mmol/mol → %: never another analyte's
        if u == code_unit:
            return spec.unit, factor, offset
    lin, target = _LINEAR.get(u), _LINEAR.get(spec.unit, (spec.unit, 1.0, 0.0))
    if lin is not None and lin[0] == target[0]:  # same base: value → base → canonical unit
        return spec.unit, scale * lin[1] / target[1], (lin[2] - target[2]) / target[1]
    if lin is not None and spec.per_mmol_l and lin[0] == "mmol/L":
        return spec.unit, scale * lin[1] * spec.per_mmol_l, 0.0
    return None


def convert(loinc: str, value: float, unit: str | None) -> tuple[float, str]:
    """Value in canonical unit, checked against the possible range. Raises UnitError."""
    target, factor, offset = conversion(loinc, unit)
    out = value * factor + offset
    check_range(loinc, out)
    return out, target


def check_range(loinc: str, value: float) -> None:
    if not math.isfinite(value):
        raise UnitError("VALUE_IMPOSSIBLE", "value is not a finite number")
    spec = CANONICAL.get(loinc)
    if spec is not None and not spec.low <= value <= spec.high:
        raise UnitError("VALUE_IMPOSSIBLE", out_of_range(spec, value))


def out_of_range(spec: CodeUnit, value: float) -> str:
    """Message for a value outside the code's possible range (the value at 4 significant digits)."""
    bounds = f"[{spec.low:g}, {spec.high:g}]"
    return f"{spec.name} {number(value)} {spec.unit} is outside the possible range {bounds}"
