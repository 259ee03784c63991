"""Valid input domains of a risk model (the card's ``domains`` block) and their vectorized check.

Card schema (``domains.schema`` = 1; written by ``healthai_training.risk.domains``):

- every ``features[j].domain`` is ``{"kind": "binary"}`` (0 or 1) or ``{"kind": "range", "min", "max",
  "integer"}`` (closed interval; ``integer``: whole numbers only, for counts);
- ``domains.one_hot``: ``[{"name", "features", "rule": "exactly_one" | "at_most_one"}]``;
- ``domains.implies``: ``[{"if": a, "then": b}]`` (flag a set needs flag b set);
- ``domains.derived``: ``[{"feature", "function", "from", "tolerance"}]``: the feature must equal
  ``function(from)`` within ``tolerance`` — functions from ``healthai.normalize``, never re-implemented.

A card without ``domains`` still loads (values are then only checked to be finite; the loader logs a
warning); a newer schema is refused, since this server cannot enforce what it promises.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import gt, itemgetter, le
from typing import Any

import numpy as np

from healthai.errors import InvalidInput
from healthai.normalize import charlson
from healthai.normalize import features as shared
from healthai.serving.runtime.repository import RepositoryError

DOMAINS_SCHEMA = 1
RULES = ("exactly_one", "at_most_one")
MEMO_MAX = 4096


def _age_risk(x: np.ndarray) -> np.ndarray:
    return shared.age_risk(x[:, 0])


def _charlson_index(x: np.ndarray) -> np.ndarray:
    return charlson.index_from_matrix(x)


# function name in the card -> (the inputs it takes, in order (None: any one column), the function)
FUNCTIONS: dict[str, tuple[tuple[str, ...] | None, Callable[[np.ndarray], np.ndarray]]] = {
    "healthai.normalize.features.age_risk": (None, _age_risk),
    "healthai.normalize.charlson.index_from_matrix": (
        tuple(f"charlson_{g}" for g in charlson.GROUPS), _charlson_index),
}


def _num(v: float) -> str:
    return f"{float(v):g}"


def tuple_getter(indices: Sequence[int]) -> Callable[[Sequence[float]], tuple[float, ...]]:
    """``row -> tuple(row[i] for i in indices)`` in C (``itemgetter``; it returns a bare value for one
    index, so that case is wrapped)."""
    idx = [int(i) for i in indices]
    if not idx:
        return lambda row: ()
    if len(idx) == 1:
        only = idx[0]
        return lambda row: (row[only],)
    return itemgetter(*idx)  # type: ignore[return-value]


@dataclass(frozen=True)
class Derived:
    column: int
    sources: np.ndarray  # card columns, in the function's argument order
    function: str
    tolerance: float
    fn: Callable[[np.ndarray], np.ndarray]
    # source values -> expected value, for lone patients: few distinct ages / Charlson patterns
    memo: dict[tuple[float, ...], float] = field(default_factory=dict, compare=False)
    key_of: Callable[[Sequence[float]], tuple[float, ...]] = field(init=False, compare=False)

    def expected_one(self, row: list[float]) -> float:
        """The expected value for one patient's row (Python floats, card order)."""
        key = self.key_of(row)
        value = self.memo.get(key)
        if value is None:
            value = float(self.fn(np.array([key], np.float64))[0])
            if len(self.memo) < MEMO_MAX:
                self.memo[key] = value
        return value

    def __post_init__(self) -> None:
        object.__setattr__(self, "key_of", tuple_getter(self.sources.tolist()))


class FeatureDomains:
    """Per-feature bounds and whole numbers, one-hot groups and implications (bounds on signed sums of
    flags), and derived features; ``check`` refuses the first violation."""

    def __init__(self, names: Sequence[str], lo: np.ndarray, hi: np.ndarray, binary: np.ndarray,
                 integer: np.ndarray, groups: Sequence[tuple[str, np.ndarray, str]],
                 implies: Sequence[tuple[int, int]], derived: Sequence[Derived]) -> None:
        self.names = tuple(names)
        self.lo = lo.astype(np.float32)
        self.hi = hi.astype(np.float32)
        self.binary = binary
        self.integer = integer
        self.whole = np.flatnonzero(binary | integer)
        self.groups = tuple(groups)
        self.implies = tuple(implies)
        self.derived = tuple(derived)
        # Flags and counts are whole: x * whole_scale is x for them and 0 for the others.
        self.whole_scale = (binary | integer).astype(np.float32)
        # One-hot groups and implications as signed sums over gathered columns (no BLAS call, whose
        # threads would contend with ONNX Runtime's): flags set per group, a - b per implication.
        cols, signs, starts = [], [], []
        for _, members, _ in groups:
            starts.append(len(cols))
            cols += members.tolist()
            signs += [1.0] * len(members)
        for a, b in implies:
            starts.append(len(cols))
            cols += [a, b]
            signs += [1.0, -1.0]
        self.k_cols = np.array(cols, np.intp)
        self.k_sign = np.array(signs, np.float32)
        self.k_starts = np.array(starts, np.intp)
        self.k_lo = np.array([1.0 if rule == "exactly_one" else 0.0 for *_, rule in groups]
                             + [-1.0] * len(implies), np.float32)
        self.k_hi = np.array([1.0] * len(groups) + [0.0] * len(implies), np.float32)
        # The same rules as Python lists, for one patient (the latency floor): a dozen NumPy calls on
        # a one-row array cost more than comparing a few dozen Python floats.
        self._lo1, self._hi1 = self.lo.tolist(), self.hi.tolist()
        self._whole_of = tuple_getter(self.whole.tolist())
        self._groups1 = [(tuple_getter(cols.tolist()), rule == "exactly_one") for _, cols, rule in groups]
        self._implies_if = tuple_getter([a for a, _ in implies])
        self._implies_then = tuple_getter([b for _, b in implies])

    def check(self, x: np.ndarray, what: str = "features") -> None:
        """Raises InvalidInput naming ``what[patient].feature`` for the first violation in ``x`` [n, F]
        (card order; finite: both servicers check that first). The common all-valid case costs about
        ten NumPy calls; only a failing batch is searched for the violation to report."""
        if len(x) == 1:
            self._check_one(x, what)
            return
        whole = x * self.whole_scale
        if not (((x >= self.lo) & (x <= self.hi)).all() and (np.rint(whole) == whole).all()):
            self._raise_value(x, what)
        if len(self.k_starts):
            s = np.add.reduceat(np.take(x, self.k_cols, axis=1) * self.k_sign, self.k_starts, axis=1)
            if not ((s >= self.k_lo) & (s <= self.k_hi)).all():
                self._raise_combination(x, s, what)
        for d in self.derived:
            self._check_derived(x, d, what)

    def _check_one(self, x: np.ndarray, what: str) -> None:
        """``check`` of one patient in Python floats (float32 values, exactly; same rules, same
        messages: a violation is reported by the vectorized searches)."""
        row = x[0].tolist()
        if not (all(map(le, self._lo1, row)) and all(map(le, row, self._hi1))
                and all(map(float.is_integer, self._whole_of(row)))):
            self._raise_value(x, what)
        # flags are now 0 or 1: group sums and implications are exact in any precision
        if any(not (exactly_one <= sum(flags(row)) <= 1) for flags, exactly_one in self._groups1) \
                or any(map(gt, self._implies_if(row), self._implies_then(row))):
            sums = np.add.reduceat(np.take(x, self.k_cols, axis=1) * self.k_sign, self.k_starts, axis=1)
            self._raise_combination(x, sums, what)
        for d in self.derived:
            self._check_derived(x, d, what, row)

    def typical_patient(self, baseline: np.ndarray) -> np.ndarray:
        """A valid patient [1, F] near ``baseline`` (the card's training means): see ``project``."""
        return self.project(np.asarray(baseline)[None])

    def project(self, x: np.ndarray) -> np.ndarray:
        """Rows [n, F] made valid, for examples, load tests and benchmarks: values clipped into range,
        whole-number features and flags rounded, in each one-hot group the largest value's flag set
        (none when "none set" is legal and larger than the rest), implications and derived features
        made to hold (a derived value from extreme sources may still be out of range)."""
        raw = np.asarray(x, np.float64)
        out = np.clip(raw, self.lo, self.hi)
        out[:, self.whole] = np.round(out[:, self.whole])
        rows = np.arange(len(out))
        for _, cols, rule in self.groups:
            share = raw[:, cols]
            top = cols[np.argmax(share, axis=1)]
            keep = (share.max(axis=1) > 1.0 - share.sum(axis=1)) | (rule == "exactly_one")
            out[:, cols] = 0.0
            out[rows[keep], top[keep]] = 1.0
        for a, b in self.implies:
            out[:, b] = np.maximum(out[:, b], out[:, a])
        for d in self.derived:
            out[:, d.column] = d.fn(out[:, d.sources])
        return out.astype(np.float32)

    def _raise_value(self, x: np.ndarray, what: str) -> None:
        bad = ~((x >= self.lo) & (x <= self.hi))
        w = x[:, self.whole]
        bad[:, self.whole] |= w != np.floor(w)
        i, j = (int(v) for v in np.argwhere(bad)[0])
        field = f"{what}[{i}].{self.names[j]}"
        value = f"{field}={_num(x[i, j])}"
        if self.binary[j]:
            raise InvalidInput(f"{value} is not 0 or 1", field=field)
        if self.lo[j] <= x[i, j] <= self.hi[j]:
            raise InvalidInput(f"{value} is not a whole number (a count)", field=field)
        raise InvalidInput(f"{value} is outside [{_num(self.lo[j])}, {_num(self.hi[j])}]", field=field)

    def _raise_combination(self, x: np.ndarray, s: np.ndarray, what: str) -> None:
        bad = ~((s >= self.k_lo) & (s <= self.k_hi))
        i, k = (int(v) for v in np.argwhere(bad)[0])
        if k < len(self.groups):
            name, cols, rule = self.groups[k]
            on = [self.names[c] for c in cols if x[i, c] == 1]
            field = f"{what}[{i}].{name}"
            need = "exactly one" if rule == "exactly_one" else "at most one"
            got = f"{len(on)} set ({', '.join(on)})" if on else "none set"
            raise InvalidInput(f"{field}: one-hot group {name!r} has {got}; {need} of "
                               f"{[self.names[c] for c in cols]} must be 1", field=field)
        a, b = self.implies[k - len(self.groups)]
        field = f"{what}[{i}].{self.names[a]}"
        raise InvalidInput(f"{field}=1 needs {self.names[b]}=1 (it is 0)", field=field)

    def _check_derived(self, x: np.ndarray, d: Derived, what: str, row1: list[float] | None = None) -> None:
        if len(x) == 1:  # the latency floor: Python floats, the expected value memoized
            row = x[0].tolist() if row1 is None else row1
            value = d.expected_one(row)
            if abs(row[d.column] - value) <= d.tolerance:
                return
            expected = np.array([value])
        else:
            expected = d.fn(x[:, d.sources].astype(np.float64))
        off = np.abs(x[:, d.column] - expected) > d.tolerance
        if off.any():
            i = int(np.argmax(off))
            field = f"{what}[{i}].{self.names[d.column]}"
            args = ", ".join(self.names[c] for c in d.sources)
            if len(d.sources) > 3:
                args = f"{self.names[d.sources[0]]}, ..., {self.names[d.sources[-1]]}"
            function = d.function.rsplit(".", 1)[-1]
            raise InvalidInput(f"{field}={_num(x[i, d.column])} does not match {function}({args}) = "
                               f"{_num(expected[i])} (tolerance {_num(d.tolerance)})", field=field)


def _columns(names: Any, index: dict[str, int], where: str) -> np.ndarray:
    if not isinstance(names, list) or not names or any(n not in index for n in names):
        raise RepositoryError(f"{where}: lists unknown features or none ({names!r})")
    return np.array([index[n] for n in names], dtype=np.intp)


def _bounds(features: list[dict[str, Any]], names: Sequence[str], where: str) -> tuple[np.ndarray, ...]:
    """(lo, hi, binary, integer) per feature from ``features[j].domain``."""
    f = len(names)
    lo, hi = np.zeros(f), np.ones(f)
    binary, integer = np.zeros(f, bool), np.zeros(f, bool)
    for j, feature in enumerate(features):
        dom = feature.get("domain")
        kind = dom.get("kind") if isinstance(dom, dict) else None
        at = f"{where}: features[{j}] ({names[j]})"
        if kind == "binary":
            binary[j] = True
        elif kind == "range":
            try:
                lo[j], hi[j] = float(dom["min"]), float(dom["max"])
            except (KeyError, TypeError, ValueError) as exc:
                raise RepositoryError(f"{at}: a range domain needs numeric min and max") from exc
            if not (np.isfinite([lo[j], hi[j]]).all() and lo[j] <= hi[j]):
                raise RepositoryError(f"{at}: range [{lo[j]}, {hi[j]}] is not a finite interval")
            integer[j] = bool(dom.get("integer", False))
        else:
            raise RepositoryError(f"{at}: no domain of kind 'binary' or 'range'")
    return lo, hi, binary, integer


def _derived(d: dict[str, Any], index: dict[str, int], names: Sequence[str], where: str) -> Derived:
    function, feature = d.get("function"), d.get("feature")
    if function not in FUNCTIONS or feature not in index:
        raise RepositoryError(f"{where}: derived {d!r}: unknown feature or function "
                              f"(known: {sorted(FUNCTIONS)})")
    takes, fn = FUNCTIONS[function]
    sources = _columns(d.get("from"), index, f"{where}: derived {feature!r}")
    given = [names[c] for c in sources]
    if (len(given) != 1) if takes is None else (given != list(takes)):
        raise RepositoryError(f"{where}: derived {feature!r}: {function} takes {takes or 'one feature'}")
    return Derived(index[feature], sources, function, float(d.get("tolerance", 0.0)), fn)


def parse_domains(card: dict[str, Any], names: Sequence[str], where: str) -> FeatureDomains | None:
    """The card's domains, or None when it has none (older cards). RepositoryError when malformed."""
    block = card.get("domains")
    if block is None:
        return None
    schema = block.get("schema") if isinstance(block, dict) else block
    if schema != DOMAINS_SCHEMA:
        raise RepositoryError(f"{where}: model card domains schema {schema!r} is not {DOMAINS_SCHEMA} "
                              "(this server cannot enforce it)")
    index = {n: j for j, n in enumerate(names)}
    lo, hi, binary, integer = _bounds(card["features"], names, where)
    groups = []
    for g in block.get("one_hot", []):
        cols = _columns(g.get("features"), index, f"{where}: one_hot {g.get('name')!r}")
        if g.get("rule") not in RULES or not binary[cols].all():
            raise RepositoryError(f"{where}: one_hot {g.get('name')!r} needs binary features and a "
                                  f"rule in {RULES}")
        groups.append((str(g["name"]), cols, str(g["rule"])))
    implies = []
    for rule in block.get("implies", []):
        a, b = _columns([rule.get("if"), rule.get("then")], index, f"{where}: implies {rule!r}")
        if not (binary[a] and binary[b]):
            raise RepositoryError(f"{where}: implies {rule!r} needs binary features")
        implies.append((int(a), int(b)))
    derived = [_derived(d, index, names, where) for d in block.get("derived", [])]
    return FeatureDomains(names, lo, hi, binary, integer, groups, implies, derived)
