"""Engineered risk-model inputs derived on the server with the functions training used.

A risk card may list features that training computed from raw inputs with ``healthai.normalize``:
``age_risk`` (``features.age_risk`` of the ``age`` column), ``primary_dx_<group>`` (Strack 2014
group of the first diagnosis code, ``diag_groups.diag_groups``), ``charlson_<group>`` and
``charlson_index`` (``charlson.groups_matrix`` over all codes, ``charlson.index_from_matrix``).
Callers may send those columns themselves or leave them out and send what they are derived from;
the server never re-implements them and never imputes a clinical value:

- a patient whose features need diagnoses but who has no codes is an error (training's all-zero
  "no diagnosis" row is not assumed for a request that merely omitted them);
- an invalid code is an error naming it (every Diabetes 130 code used in training is valid);
- Strack groups are defined on ICD-9-CM only, so ``primary_dx_*`` from ICD-10 codes is an error.

Encoding, as in ``healthai_training.risk.diabetes``: ``primary_dx_<g>`` is 1.0 when the first code
falls in group g (a code outside all groups is ``other``); Charlson group flags are 1.0/0.0 over
all the patient's codes in their system; the index uses the original Charlson weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain
from typing import Any

import numpy as np

from healthai.errors import InvalidInput
from healthai.normalize import charlson, codes, diag_groups
from healthai.normalize import features as shared
from healthai.serving.risk.charlson import SYSTEMS

AGE_INPUT = "age"  # raw input in years; the source of age_risk
DIAGNOSES = "diagnoses"
PRIMARY_PREFIX = "primary_dx_"
CHARLSON_PREFIX = "charlson_"
CHARLSON_INDEX = "charlson_index"
_PRIMARY = {f"{PRIMARY_PREFIX}{g}": g for g in diag_groups.STRACK_GROUPS}
_CHARLSON = {f"{CHARLSON_PREFIX}{g}": j for j, g in enumerate(charlson.GROUPS)}

Diagnosis = Any  # (codes, system) tuple or an object with .codes/.system (risk_pb2.DiagnosisCodes)


def derivable_features(card_names: Sequence[str]) -> dict[str, str]:
    """Card feature → the request input it can be derived from (``"age"`` or ``"diagnoses"``)."""
    out: dict[str, str] = {}
    for name in card_names:
        if name == "age_risk":
            out[name] = AGE_INPUT
        elif name in _PRIMARY or name in _CHARLSON or name == CHARLSON_INDEX:
            out[name] = DIAGNOSES
    return out


@dataclass(frozen=True)
class _Plan:
    """How to fill each card column from one request layout (cached per layout)."""

    n_card: int
    take_dst: np.ndarray  # card columns copied from given columns ...
    take_src: np.ndarray  # ... at these given positions
    identity: bool  # given == card: no copy, no derivation
    age_risk: tuple[int, int] | None  # (card column, given column of age)
    primary: tuple[tuple[int, str], ...]  # (card column, Strack group)
    charlson_groups: tuple[tuple[int, int], ...]  # (card column, index in charlson.GROUPS)
    charlson_index: int | None  # card column of charlson_index
    diagnosis_features: tuple[str, ...]  # the card features above, by name (for messages)
    flags_zero: np.ndarray  # card columns of missing flags left out, whose feature is given or derived

    @property
    def needs_diagnoses(self) -> bool:
        return bool(self.diagnosis_features)


@lru_cache(maxsize=256)
def _plan(card: tuple[str, ...], given: tuple[str, ...], flags: tuple[tuple[str, str], ...] = ()) -> _Plan:
    card_pos = {n: j for j, n in enumerate(card)}
    given_pos: dict[str, int] = {}
    for i, name in enumerate(given):
        if name in given_pos:
            raise InvalidInput(f"feature_names: {name!r} given twice", field="feature_names")
        if name not in card_pos and not (name == AGE_INPUT and "age_risk" in card_pos):
            raise InvalidInput(f"feature_names[{i}]: unknown feature {name!r}; the model takes {list(card)}",
                               field=f"feature_names[{i}]")
        given_pos[name] = i
    take = [(card_pos[n], i) for n, i in given_pos.items() if n in card_pos]
    missing = [n for n in card if n not in given_pos]
    age_risk = None
    primary: list[tuple[int, str]] = []
    groups: list[tuple[int, int]] = []
    index = None
    not_derivable: list[str] = []
    zeros: list[int] = []
    marks = dict(flags)  # missing flag -> the feature it marks
    for name in missing:
        if name in marks and marks[name] not in not_derivable and (
                marks[name] in given_pos or marks[name] in derivable_features((marks[name],))):
            zeros.append(card_pos[name])  # 0: the value is there; imputation sets 1 where it is NaN
        elif name == "age_risk" and AGE_INPUT in given_pos:
            age_risk = (card_pos[name], given_pos[AGE_INPUT])
        elif name in _PRIMARY:
            primary.append((card_pos[name], _PRIMARY[name]))
        elif name in _CHARLSON:
            groups.append((card_pos[name], _CHARLSON[name]))
        elif name == CHARLSON_INDEX:
            index = card_pos[name]
        else:
            not_derivable.append(name)
    diag_names = tuple(card[j] for j, _ in primary) + tuple(card[j] for j, _ in groups) + (
        (card[index],) if index is not None else ())
    if not_derivable:
        named = [n for n in not_derivable if marks.get(n) not in not_derivable]  # a flag goes with its value
        hints = [f"{n}: give it, or give an '{AGE_INPUT}' column" if n == "age_risk" else f"{n}: give it"
                 for n in named]
        if diag_names:
            hints.append(f"{', '.join(diag_names)}: give them, or give {DIAGNOSES}")
        raise InvalidInput(f"feature_names: missing model features ({'; '.join(hints)})",
                           field="feature_names")
    return _Plan(
        n_card=len(card),
        take_dst=np.array([d for d, _ in take], dtype=np.intp),
        take_src=np.array([s for _, s in take], dtype=np.intp),
        identity=card == given,
        age_risk=age_risk,
        primary=tuple(primary),
        charlson_groups=tuple(groups),
        charlson_index=index,
        diagnosis_features=diag_names,
        flags_zero=np.array(zeros, dtype=np.intp),
    )


def derive_features(
    card_names: Sequence[str],
    given_names: Sequence[str],
    x_given: np.ndarray,
    *,
    diagnoses: Sequence[Diagnosis] | None = None,
    flags: tuple[tuple[str, str], ...] = (),
) -> np.ndarray:
    """[n, len(card_names)] float32 in the card's order from the given columns plus derived ones.

    ``x_given``: [n, len(given_names)]. Given columns are taken as they are; ``age_risk`` is derived
    from an ``age`` column (years), ``primary_dx_*``/``charlson_*``/``charlson_index`` from
    ``diagnoses`` (one ``(codes, system)`` per patient, system "icd9" or "icd10"/""); a missing flag of
    ``flags`` (flag, feature) left out is 0 when its feature is given or derived (the card's imputation
    sets it to 1 where the value is NaN). Raises
    ``InvalidInput`` naming what is missing and what would let the server derive it.
    """
    plan = _plan(tuple(card_names), tuple(given_names), flags)
    x_given = np.asarray(x_given, dtype=np.float32)
    if x_given.ndim != 2 or x_given.shape[1] != len(given_names):
        raise InvalidInput(f"features: shape {x_given.shape} does not match {len(given_names)} feature_names",
                           field="features")
    if plan.identity:
        return x_given
    n = x_given.shape[0]
    out = np.empty((n, plan.n_card), dtype=np.float32)
    out[:, plan.take_dst] = x_given[:, plan.take_src]
    out[:, plan.flags_zero] = 0.0
    if plan.age_risk is not None:
        dst, src = plan.age_risk
        age = x_given[:, src].astype(np.float64)
        bad = ~np.isfinite(age) | (age < 0)
        if bad.any():
            i = int(np.argmax(bad))
            raise InvalidInput(f"features[{i}].{AGE_INPUT}: age {float(age[i])} is not a finite age in years "
                               "(needed to derive age_risk)", field=f"features[{i}].{AGE_INPUT}")
        out[:, dst] = shared.age_risk(age)
    if plan.needs_diagnoses:
        _fill_diagnosis_features(out, plan, diagnoses, n)
    return out


def _fill_diagnosis_features(out: np.ndarray, plan: _Plan, diagnoses: Sequence[Diagnosis] | None,
                             n: int) -> None:
    if not diagnoses:
        missing = ", ".join(plan.diagnosis_features)
        raise InvalidInput(f"feature_names: missing {missing}: give them, or give {DIAGNOSES} (one entry "
                           "of codes per patient, primary first) to derive them", field="feature_names")
    if len(diagnoses) != n:
        raise InvalidInput(f"{DIAGNOSES}: {len(diagnoses)} entries for {n} patients", field=DIAGNOSES)
    flat, owner, systems = _flatten(diagnoses, need_primary=bool(plan.primary))
    if plan.primary:
        group = diag_groups.diag_groups(flat[np.searchsorted(owner, np.arange(n))])  # first codes
        for dst, name in plan.primary:
            out[:, dst] = group == name
    if plan.charlson_groups or plan.charlson_index is not None:
        hits = np.zeros((len(flat), len(charlson.GROUPS)), dtype=bool)
        code_icd9 = systems[owner]
        for system, rows in (("icd9", code_icd9), ("icd10", ~code_icd9)):
            if rows.any():
                hits[rows] = charlson.groups_matrix(flat[rows], system)
        starts = np.searchsorted(owner, np.arange(n))  # codes of a patient are contiguous, >= 1 each
        present = np.logical_or.reduceat(hits, starts, axis=0)
        for dst, j in plan.charlson_groups:
            out[:, dst] = present[:, j]
        if plan.charlson_index is not None:
            out[:, plan.charlson_index] = charlson.index_from_matrix(present)


@lru_cache(maxsize=65536)
def _valid_code(code: str, system: str) -> bool:
    if system == "icd9":
        return codes.canonical_icd9(code) is not None
    return codes.canonical_icd10(code, codes.icd10_codes()) is not None


def _system(raw: str, field: str) -> str:
    system = SYSTEMS.get(raw.strip().lower())
    if system is None:
        short = codes.SYSTEM_NAMES.get(raw)
        system = {codes.ICD10CM: "icd10", codes.ICD9CM: "icd9"}.get(short or "")
    if system is None:
        raise InvalidInput(f"{field}.system: {raw!r} is not icd10 or icd9", field=f"{field}.system")
    return system


def _flatten(
    diagnoses: Sequence[Diagnosis], *, need_primary: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codes, owning patient per code, is-ICD-9 per patient); each distinct code validated once."""
    entries = [(e.codes, e.system) if hasattr(e, "codes") else e for e in diagnoses]
    raw_systems = [system or "" for _, system in entries]
    resolved: dict[str, str] = {}
    for i, raw in enumerate(raw_systems):
        if raw not in resolved:
            resolved[raw] = _system(raw, f"{DIAGNOSES}[{i}]")
    is_icd9 = np.fromiter((resolved[raw] == "icd9" for raw in raw_systems), dtype=bool, count=len(entries))
    lengths = np.fromiter((len(c) for c, _ in entries), dtype=np.intp, count=len(entries))
    if not lengths.all():
        i = int(np.argmin(lengths))
        raise InvalidInput(f"{DIAGNOSES}[{i}].codes: empty; the model's diagnosis features need the "
                           "patient's codes (primary first), or send those features",
                           field=f"{DIAGNOSES}[{i}].codes")
    if need_primary and not is_icd9.all():
        i = int(np.argmin(is_icd9))
        raise InvalidInput(f"{DIAGNOSES}[{i}].system: primary_dx_* (Strack 2014 groups) are defined on "
                           "ICD-9-CM only; give primary_dx_*, or the codes as ICD-9-CM (system ICD9CM: "
                           "in the SDK {'codes': [...], 'system': 'ICD9CM'}; a plain list is ICD-10-CM)",
                           field=f"{DIAGNOSES}[{i}].system")
    flat = np.array(list(chain.from_iterable(c for c, _ in entries)), dtype=object)
    owner = np.repeat(np.arange(len(entries), dtype=np.intp), lengths)
    code_icd9 = is_icd9[owner]
    for system, mask in (("icd9", code_icd9), ("icd10", ~code_icd9)):
        if any(not _valid_code(c, system) for c in set(flat[mask].tolist())):
            k = next(k for k in np.flatnonzero(mask) if not _valid_code(flat[k], system))
            i, j = int(owner[k]), int(k - np.searchsorted(owner, owner[k]))
            kind = "ICD-9-CM" if system == "icd9" else "ICD-10-CM"
            raise InvalidInput(f"{DIAGNOSES}[{i}].codes[{j}]: not a valid {kind} code",
                               field=f"{DIAGNOSES}[{i}].codes[{j}]")
    return flat, owner, is_icd9
