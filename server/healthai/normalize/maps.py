"""SNOMED CT ↔ ICD-10-CM maps, loaded from the operator's licensed release files at start-up.

Two formats:

- **NLM SNOMED CT to ICD-10-CM map** (RF2 ``der2_iisssccRefset_ExtendedMapSnapshot_*.txt``, tab
  separated with a header: id, effectiveTime, active, moduleId, refsetId, referencedComponentId,
  mapGroup, mapPriority, mapRule, mapAdvice, mapTarget, correlationId, mapCategoryId). Only active
  rows of the ICD-10-CM refset (6011000124106) are read. Per concept and map group, the target
  used is that of the unconditional rule (``TRUE`` / ``OTHERWISE TRUE``) with the lowest priority
  number; age/sex-conditional rules (``IFA ...``) need patient context, so their targets are only
  used for concepts without an unconditional one (or with ``all_rules=True``). Empty targets
  ("cannot be classified") are skipped.
- **OMOP vocabulary** (Athena ``CONCEPT.csv`` + ``CONCEPT_RELATIONSHIP.csv``, tab separated): an
  ICD10CM concept ``Maps to`` a standard SNOMED concept; valid rows only (empty invalid_reason).

Both give both directions: ``snomed_to_icd10`` and ``icd10_to_snomed``. Codes are compared in
canonical form (ICD-10-CM dotted upper case, SNOMED as digits).
"""

from __future__ import annotations

import csv
import logging
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from healthai.errors import InvalidInput

log = logging.getLogger(__name__)

NLM_ICD10CM_REFSET = "6011000124106"
_NLM_COLUMNS = (
    "id", "effectiveTime", "active", "moduleId", "refsetId", "referencedComponentId", "mapGroup",
    "mapPriority", "mapRule", "mapAdvice", "mapTarget", "correlationId", "mapCategoryId",
)  # fmt: skip
_UNCONDITIONAL = {"TRUE", "OTHERWISE TRUE"}


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
    """Many-to-many SNOMED CT ↔ ICD-10-CM map with a primary target per SNOMED concept."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self._primary: dict[str, list[str]] = {}  # snomed -> unconditional targets, one per map group
        self._conditional: dict[str, list[str]] = defaultdict(list)
        self._reverse: dict[str, set[str]] = defaultdict(set)

    def __len__(self) -> int:
        return len(self._primary.keys() | self._conditional.keys())

    def __repr__(self) -> str:
        return f"SnomedIcd10Map({self.name!r}, {len(self)} SNOMED concepts)"

    def _add(self, snomed: str, icd10: str, *, conditional: bool = False) -> None:
        code = _dot(icd10)
        if conditional:
            if code not in self._conditional[snomed]:
                self._conditional[snomed].append(code)
        else:
            targets = self._primary.setdefault(snomed, [])
            if code not in targets:
                targets.append(code)
        self._reverse[code].add(snomed)

    # ------------------------------------------------------------ loaders
    @classmethod
    def load_nlm(cls, path: str | Path) -> SnomedIcd10Map:
        path = Path(path)
        best: dict[tuple[str, int], tuple[int, str]] = {}
        out = cls(f"NLM {path.name}")
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
                target = (row["mapTarget"] or "").strip()
                if not target:
                    continue
                snomed = row["referencedComponentId"].strip()
                rule = (row["mapRule"] or "").strip().upper()
                try:
                    group, priority = int(row["mapGroup"]), int(row["mapPriority"])
                except ValueError:
                    raise InvalidInput(
                        f"{path.name} line {reader.line_num}: mapGroup/mapPriority not integers"
                    ) from None
                if rule in _UNCONDITIONAL:
                    key = (snomed, group)
                    if key not in best or priority < best[key][0]:
                        best[key] = (priority, target)
                else:
                    out._add(snomed, target, conditional=True)
        for (snomed, _group), (_p, target) in sorted(best.items()):
            out._add(snomed, target)
        if short and len(short) * 100 > reader.line_num:  # more than 1 % of the lines: not this format
            raise InvalidInput(f"{path.name}: {len(short)} line(s) have fewer fields than the header "
                               f"(first: line {short[0]}); is it the tab-separated RF2 file?",
                               field=str(path))
        if short:
            log.warning("%s: %d line(s) with fewer fields than the header skipped (first: line %d)",
                        path.name, len(short), short[0])
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
        cols = ("concept_id_1", "concept_id_2", "relationship_id", "invalid_reason")
        with _read_tsv(relationship_path, cols) as rd:
            for row in rd:
                if row["relationship_id"] != "Maps to" or (row["invalid_reason"] or "").strip():
                    continue
                a, b = concepts.get(row["concept_id_1"]), concepts.get(row["concept_id_2"])
                if a and b and a[0] == "ICD10CM" and b[0] == "SNOMED":
                    out._add(b[1], a[1])
        if not len(out):
            raise InvalidInput(f"{relationship_path.name}: no valid ICD10CM 'Maps to' SNOMED relationship "
                               f"between the concepts of {concept_path.name}", field=str(relationship_path))
        return out

    # ------------------------------------------------------------ lookups
    def snomed_to_icd10(self, snomed: str, *, all_rules: bool = False) -> list[str]:
        """ICD-10-CM targets (dotted) of a SNOMED concept; [] when unmapped.

        Unconditional targets first; the conditional (age/sex rule) targets are added when
        ``all_rules`` or when the concept has no unconditional target.
        """
        out = list(self._primary.get(snomed, ()))
        if all_rules or not out:
            out += [c for c in self._conditional.get(snomed, ()) if c not in out]
        return out

    def map_groups(self, snomed: str) -> list[str]:
        """The unconditional target of each map group of a concept, in group order. Every group applies
        (127013003 diabetic renal disease: E11.21 and N18.9); [] without unconditional targets."""
        return list(self._primary.get(snomed, ()))

    def icd10_to_snomed(self, icd10: str) -> list[str]:
        """SNOMED concepts mapping to an ICD-10-CM code (dotted or not), sorted; [] when none."""
        return sorted(self._reverse.get(_dot(icd10), ()))

    def unique_snomed(self, icd10: str) -> str | None:
        """The SNOMED concept of an ICD-10-CM code when exactly one maps to it, else None."""
        found = self._reverse.get(_dot(icd10), ())
        return next(iter(found)) if len(found) == 1 else None

    def has_snomed(self, snomed: str) -> bool:
        return snomed in self._primary or snomed in self._conditional
