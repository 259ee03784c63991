"""SNOMED CT ↔ ICD-10-CM maps, loaded from the operator's licensed release files at start-up.

Two formats:

- **NLM SNOMED CT to ICD-10-CM map** (RF2 ``der2_iisssccRefset_ExtendedMapSnapshot_*.txt``, tab
  separated with a header: id, effectiveTime, active, moduleId, refsetId, referencedComponentId,
  mapGroup, mapPriority, mapRule, mapAdvice, mapTarget, correlationId, mapCategoryId). Only active
  rows of the ICD-10-CM refset (6011000124106) are read. Per concept and map group the rules are
  read in priority order and the first that holds gives the target, as NLM specifies: ``TRUE`` /
  ``OTHERWISE TRUE`` always hold; ``IFA 248152002 | Female |`` / ``IFA 248153007 | Male |`` and
  ``IFA 445518008 | Age at onset ... | < 18.0 years`` (``<``, ``<=``, ``>``, ``>=``; years, months or
  days) are evaluated when the patient's sex / age at onset are given (:meth:`SnomedIcd10Map.lookup`);
  a rule that cannot be evaluated (unknown sex or age, any other IFA concept) leaves the concept
  unmapped with its reason (context dependent) — unless every rule it could reach gives the same
  target. Group 1 gives the primary code: when it gives none the concept is unmapped (a further group
  is never promoted); further groups that give no target are left out. An empty target (``MAP SOURCE
  CONCEPT CANNOT BE CLASSIFIED``, ``... IS CONTEXT DEPENDENT``) leaves the concept unmapped and the
  reason says so.
- **OMOP vocabulary** (Athena ``CONCEPT.csv`` + ``CONCEPT_RELATIONSHIP.csv``, tab separated): an
  ICD10CM concept ``Maps to`` a standard SNOMED concept; valid rows only (empty invalid_reason).

Both give both directions: ``snomed_to_icd10`` and ``icd10_to_snomed``. Codes are compared in
canonical form (ICD-10-CM dotted upper case, SNOMED as digits). Map targets are checked against the
ICD-10-CM code set at load: a target that is not an ICD-10-CM code (``J01.99X``, advice text in the
target column) is not used (its rule gives no code, the concept's reason says so) and the load log
counts them; a file where most targets are not ICD-10-CM codes is refused (a wrong column, file or
release), as a terminology server refuses a map that does not match its code system.
"""

from __future__ import annotations

import csv
import logging
import re
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from healthai.errors import InvalidInput

log = logging.getLogger(__name__)

NLM_ICD10CM_REFSET = "6011000124106"
_NLM_COLUMNS = (
    "id", "effectiveTime", "active", "moduleId", "refsetId", "referencedComponentId", "mapGroup",
    "mapPriority", "mapRule", "mapAdvice", "mapTarget", "correlationId", "mapCategoryId",
)  # fmt: skip
_UNCONDITIONAL = {"TRUE", "OTHERWISE TRUE"}
_SEXES = {"248152002": "female", "248153007": "male"}  # IFA Female (finding) / Male (finding)
_AGE_AT_ONSET = "445518008"  # IFA Age at onset of clinical finding (observable entity)
_IFA = re.compile(r"IFA\s+(\d+)\s*\|[^|]*\|\s*(.*)")
_AGE_TEST = re.compile(r"(<=|>=|<|>)\s*(\d+(?:\.\d+)?)\s*(YEARS?|MONTHS?|DAYS?)?")
_PER_YEAR = {"Y": 1.0, "M": 12.0, "D": 365.25}
_BAD_TARGET = "its map target is not an ICD-10-CM code (not used)"

# A rule's condition: ("T",) always; ("SEX", "female"); ("AGE", op, years); ("?", concept) unknown.
Cond = tuple
Rule = tuple[int, Cond, str, str]  # priority, condition, target ("" for none), reason when none


class Mapped(NamedTuple):
    """A concept's ICD-10-CM codes: group 1's first, then those of the further groups; when group 1
    gives none, ``targets`` is empty and ``reason`` says why."""

    targets: tuple[str, ...]
    reason: str | None = None


def _cond(rule: str) -> Cond:
    if rule in _UNCONDITIONAL:
        return ("T",)
    m = _IFA.fullmatch(rule)
    if m is None:
        return ("?", rule[:40])
    concept, test = m.group(1), m.group(2).strip()
    if concept in _SEXES and not test:
        return ("SEX", _SEXES[concept])
    age = _AGE_TEST.fullmatch(test) if concept == _AGE_AT_ONSET else None
    if age is None:
        return ("?", concept)
    return ("AGE", age.group(1), float(age.group(2)) / _PER_YEAR[(age.group(3) or "Y")[0]])


def _holds(cond: Cond, sex: str | None, age: float | None) -> bool | None:
    """Whether a condition holds for a patient; None when it cannot be told."""
    if cond[0] == "T":
        return True
    if cond[0] == "SEX":
        return None if sex is None else sex == cond[1]
    if cond[0] == "AGE" and age is not None:
        op, bound = cond[1], cond[2]
        return {"<": age < bound, "<=": age <= bound, ">": age > bound, ">=": age >= bound}[op]
    return None


def _needs(cond: Cond) -> str:
    if cond[0] == "SEX":
        return "the patient's sex"
    if cond[0] == "AGE":
        return "the patient's age at onset (birth date and onset date)"
    return f"a condition of the patient it cannot check (IFA {cond[1]})"


def _empty_reason(advice: str) -> str:
    a = advice.upper()
    if "CONTEXT DEPENDENT" in a:
        return "the map leaves it unmapped: its ICD-10-CM code is context dependent"
    if "CANNOT BE CLASSIFIED" in a:
        return "the map leaves it unmapped: it cannot be classified with the available data"
    return "the map leaves it unmapped (empty target)"


def _resolve_group(rules: list[Rule], sex: str | None, age: float | None) -> tuple[str, str | None]:
    """(target, None) or ("", why none) of one map group: its rules in priority order, first that holds."""
    for i, (_p, cond, target, why) in enumerate(rules):
        held = _holds(cond, sex, age)
        if held is None:
            reach = []
            for _q, c, t, _w in rules[i:]:
                reach.append(t)
                if c[0] == "T":
                    break
            else:
                reach.append("")  # no rule may hold
            if len(set(reach)) == 1 and reach[0]:
                return reach[0], None  # every rule it could reach gives this code
            return "", f"its map rule depends on {_needs(cond)}, which is not known here (context dependent)"
        if held:
            return (target, None) if target else ("", why)
    return "", "no rule of the map holds for this patient"


def _resolve(groups: dict[int, list[Rule]], sex: str | None, age: float | None) -> Mapped:
    out: list[str] = []
    for n, g in enumerate(sorted(groups)):
        target, why = _resolve_group(groups[g], sex, age)
        if n == 0 and not target:
            return Mapped((), why)
        if target and target not in out:
            out.append(target)
    return Mapped(tuple(out))


def _checked_targets(name: str, targets: list[tuple[int, str]]) -> dict[str, str | None]:
    """Canonical ICD-10-CM code (None: not one) of each distinct map target; refuses a file where most
    targets are not ICD-10-CM codes, logs how many were left out otherwise."""
    from healthai.normalize.codes import canonical_icd10, icd10_codes  # codes re-exports this module

    cm = icd10_codes()
    canon = {t: canonical_icd10(t, cm) for t in {t for _, t in targets}}
    bad = [(line, t) for line, t in targets if canon[t] is None]
    if bad and len(bad) * 2 > len(targets):
        raise InvalidInput(f"{name}: {len(bad)} of {len(targets)} map targets are not ICD-10-CM "
                           f"({cm.release}) codes (first: line {bad[0][0]}); is it a SNOMED CT to "
                           "ICD-10-CM map, with its targets in mapTarget?", field=name)
    if bad:
        log.warning("%s: %d of %d map target(s) are not ICD-10-CM (%s) codes and are not used (first: "
                    "line %d)", name, len(bad), len(targets), cm.release, bad[0][0])
    return canon


def _dot(code: str) -> str:
    c = code.strip().replace(".", "").upper()
    return c if len(c) <= 3 else f"{c[:3]}.{c[3:]}"


@contextmanager
def _read_tsv(path: Path, required: tuple[str, ...]) -> Iterator[csv.DictReader]:
    try:
        fh = path.open(encoding="utf-8-sig", newline="")  # a byte-order mark is not part of the header
    except OSError as e:
        raise InvalidInput(f"cannot read map file {path}: {e.strerror}", field=str(path)) from None
    with fh:
        reader = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise InvalidInput(f"{path.name}: missing column(s) {', '.join(missing)}", field=str(path))
        yield reader


class SnomedIcd10Map:
    """Many-to-many SNOMED CT ↔ ICD-10-CM map: per concept, its map groups' rules."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self._static: dict[str, Mapped] = {}  # each concept resolved without patient context
        self._rules: dict[str, dict[int, list[Rule]]] = {}  # concepts with IFA rules only
        self._all: dict[str, list[str]] = defaultdict(list)  # every target of every rule
        self._reverse: dict[str, set[str]] = defaultdict(set)

    def __len__(self) -> int:
        return len(self._static)

    def __repr__(self) -> str:
        return f"SnomedIcd10Map({self.name!r}, {len(self)} SNOMED concepts)"

    def _set(self, snomed: str, groups: dict[int, list[Rule]]) -> None:
        for g in groups.values():
            g.sort(key=lambda r: r[0])
        self._static[snomed] = _resolve(groups, None, None)
        if any(r[1][0] != "T" for g in groups.values() for r in g):
            self._rules[snomed] = groups
        for g in groups.values():
            for _p, _c, target, _w in g:
                if target and target not in self._all[snomed]:
                    self._all[snomed].append(target)
                    self._reverse[target].add(snomed)

    # ------------------------------------------------------------ loaders
    @classmethod
    def load_nlm(cls, path: str | Path) -> SnomedIcd10Map:
        path = Path(path)
        out = cls(f"NLM {path.name}")
        rows: list[tuple[str, int, int, str, str, str, int]] = []
        short: list[int] = []
        refsets: set[str] = set()
        with _read_tsv(path, _NLM_COLUMNS) as reader:
            for row in reader:
                if None in row.values():  # fewer fields than the header: a cut or mangled line
                    short.append(reader.line_num)
                    continue
                refsets.add(row["refsetId"])
                if row["active"] != "1" or row["refsetId"] != NLM_ICD10CM_REFSET:
                    continue
                try:
                    group, priority = int(row["mapGroup"]), int(row["mapPriority"])
                except ValueError:
                    raise InvalidInput(
                        f"{path.name} line {reader.line_num}: mapGroup/mapPriority not integers"
                    ) from None
                rows.append((row["referencedComponentId"].strip(), group, priority,
                             (row["mapRule"] or "").strip().upper(), (row["mapAdvice"] or "").strip(),
                             (row["mapTarget"] or "").strip(), reader.line_num))
        if short and len(short) * 100 > reader.line_num:  # more than 1 % of the lines: not this format
            raise InvalidInput(f"{path.name}: {len(short)} line(s) have fewer fields than the header "
                               f"(first: line {short[0]}); is it the tab-separated RF2 file?",
                               field=str(path))
        if short:
            log.warning("%s: %d line(s) with fewer fields than the header skipped (first: line %d)",
                        path.name, len(short), short[0])
        canon = _checked_targets(path.name, [(r[6], r[5]) for r in rows if r[5]])
        concepts: dict[str, dict[int, list[Rule]]] = defaultdict(lambda: defaultdict(list))
        for snomed, group, priority, rule, advice, target, _line in rows:
            code = canon.get(target) or ""
            why = None if code else (_BAD_TARGET if target else _empty_reason(advice))
            concepts[snomed][group].append((priority, _cond(rule), code, why))
        for snomed, groups in concepts.items():
            out._set(snomed, dict(groups))
        if not len(out):
            others = ", ".join(sorted(refsets - {NLM_ICD10CM_REFSET})[:3]) or "none"
            raise InvalidInput(f"{path.name}: no active row of the ICD-10-CM map refset {NLM_ICD10CM_REFSET} "
                               f"(refsets found: {others}); the NLM SNOMED CT to ICD-10-CM map is the file "
                               "der2_iisssccRefset_ExtendedMapSnapshot_US1000124_*.txt", field=str(path))
        return out

    @classmethod
    def load_omop(cls, concept_path: str | Path, relationship_path: str | Path) -> SnomedIcd10Map:
        concept_path, relationship_path = Path(concept_path), Path(relationship_path)
        concepts: dict[str, tuple[str, str]] = {}
        with _read_tsv(concept_path, ("concept_id", "vocabulary_id", "concept_code", "invalid_reason")) as rd:
            for row in rd:
                vocab = row["vocabulary_id"]
                if vocab in ("ICD10CM", "SNOMED") and not (row["invalid_reason"] or "").strip():
                    concepts[row["concept_id"]] = (vocab, row["concept_code"].strip())
        out = cls(f"OMOP {concept_path.name}")
        pairs: list[tuple[str, str, int]] = []
        cols = ("concept_id_1", "concept_id_2", "relationship_id", "invalid_reason")
        with _read_tsv(relationship_path, cols) as rd:
            for row in rd:
                if row["relationship_id"] != "Maps to" or (row["invalid_reason"] or "").strip():
                    continue
                a, b = concepts.get(row["concept_id_1"]), concepts.get(row["concept_id_2"])
                if a and b and a[0] == "ICD10CM" and b[0] == "SNOMED":
                    pairs.append((b[1], a[1], rd.line_num))
        canon = _checked_targets(relationship_path.name, [(line, t) for _, t, line in pairs])
        targets: dict[str, list[Rule]] = defaultdict(list)
        for snomed, icd10, _line in pairs:  # every OMOP pair is one unconditional group
            if canon[icd10] and all(r[2] != canon[icd10] for r in targets[snomed]):
                targets[snomed].append((0, ("T",), canon[icd10], None))
        for snomed, rules in targets.items():
            out._set(snomed, {g: [r] for g, r in enumerate(rules, start=1)})
        if not len(out):
            raise InvalidInput(f"{relationship_path.name}: no valid ICD10CM 'Maps to' SNOMED relationship "
                               f"between the concepts of {concept_path.name}", field=str(relationship_path))
        return out

    # ------------------------------------------------------------ lookups
    def lookup(self, snomed: str, *, sex: str | None = None, age: float | None = None) -> Mapped | None:
        """A concept's codes for a patient of ``sex`` ("female" / "male") and ``age`` at onset (years),
        either unknown (None); None when the concept is not in the map. Concepts without IFA rules are
        resolved once, at load."""
        rules = self._rules.get(snomed)
        if rules is None or (sex is None and age is None):
            return self._static.get(snomed)
        return _resolve(rules, sex, age)

    def snomed_to_icd10(self, snomed: str, *, all_rules: bool = False) -> list[str]:
        """ICD-10-CM targets (dotted) of a SNOMED concept, group 1's first, for a patient of unknown sex
        and age; [] when unmapped. ``all_rules``: every target of every rule, conditional ones too."""
        if all_rules:
            return list(self._all.get(snomed, ()))
        found = self._static.get(snomed)
        return list(found.targets) if found else []

    def map_groups(self, snomed: str) -> list[str]:
        """The target of each map group of a concept (patient context unknown), in group order. Every
        group applies (127013003 diabetic renal disease: E11.21 and N18.9); [] when group 1 gives none."""
        return self.snomed_to_icd10(snomed)

    def icd10_to_snomed(self, icd10: str) -> list[str]:
        """SNOMED concepts mapping to an ICD-10-CM code (dotted or not), sorted; [] when none."""
        return sorted(self._reverse.get(_dot(icd10), ()))

    def unique_snomed(self, icd10: str) -> str | None:
        """The SNOMED concept of an ICD-10-CM code when exactly one maps to it, else None."""
        found = self._reverse.get(_dot(icd10), ())
        return next(iter(found)) if len(found) == 1 else None

    def has_snomed(self, snomed: str) -> bool:
        """Whether some rule of the map gives the concept an ICD-10-CM code."""
        return bool(self._all.get(snomed))
