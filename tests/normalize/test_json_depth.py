"""The nesting-depth check that runs before FHIR JSON is parsed, against a plain reference."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from healthai.normalize.json_depth import MAX_JSON_DEPTH, json_depth_exceeds

NASTY = ['[', ']', '{', '}', '"', '\\', '\\"', '\\\\', '\\\\"', 'é', '😀', '\u2028', ' ', 'x']


def reference_depth(doc: Any) -> int:
    """Depth by walking the parsed document (iteratively, so any depth works)."""
    deepest, stack = 0, [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def random_doc(rng: random.Random, depth: int) -> Any:
    """A document nested exactly ``depth`` levels deep: one deep chain with shallow siblings, and
    bracket-laden strings all over."""
    def text() -> str:
        return "".join(rng.choice(NASTY) for _ in range(rng.randint(0, 12)))

    def shallow(levels: int) -> Any:
        return [text()] * rng.randint(0, 2) if levels > 0 else rng.choice([text(), 1.5, None, True])

    doc: Any = rng.choice([text(), 1.5, None, True])
    for level in range(depth):
        siblings = [shallow(min(level, 1)) for _ in range(rng.randint(0, 2))]
        if rng.random() < 0.5:
            doc = [*siblings, doc]
        else:
            doc = {text() + str(i): s for i, s in enumerate(siblings)} | {text() + "!": doc}
    return doc


@pytest.mark.parametrize("seed", range(40))
def test_matches_the_reference_around_the_limit(seed: int) -> None:
    rng = random.Random(seed)
    limit = rng.choice([3, 8, MAX_JSON_DEPTH])
    depth = limit + rng.choice([-1, 0, 1, 2])
    doc = random_doc(rng, depth)
    text = json.dumps(doc, ensure_ascii=rng.random() < 0.5)
    assert reference_depth(doc) == depth
    assert json_depth_exceeds(text.encode(), limit) is (depth > limit)
    assert json_depth_exceeds(text, limit) is (depth > limit)


def test_scalars_and_flat_payloads() -> None:
    assert not json_depth_exceeds(b'"[[[[["', 1)
    assert not json_depth_exceeds(b"[" + b"1," * 1000 + b"2]", 1)
    assert json_depth_exceeds(b"[[]]", 1)
    assert json_depth_exceeds(b"[" * 5000 + b"]" * 5000)
    assert not json_depth_exceeds(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH)


def test_escapes_next_to_quotes_and_brackets() -> None:
    # a string ending in an escaped backslash closes at the next quote; an escaped quote does not
    assert json_depth_exceeds(b'["\\\\", [[[1]]]]', 3)
    assert not json_depth_exceeds(b'["\\\\\\"[[[", [1]]', 2)
    assert not json_depth_exceeds(b'{"a\\"{{{": ["\\\\\\\\", "\\u005b\\n["]}', 2)
