"""Graph-level passes applied to exported ONNX models (both variants); outputs stay the same.

``rewrite_softplus``: ONNX Runtime's CPU ``Softplus`` kernel is scalar (≈13 ns/element) and the
exporter wraps it in ``Where(Greater(x, threshold), x, Softplus(x))`` (torch's ``threshold=20``), which
made the forecaster's quantile head more than half of its run time. Both are replaced by the
vectorised, overflow-free identity ``softplus(x) = Relu(x) + log1p(Exp(-Abs(x)))`` (log1p by Goldberg's
trick, as accurate as a libm log1p); for x > ~17 the log term is below half an ulp of x, so the
threshold branch is implied (beta = 1 only). With ``custom_domain`` (the custom-op variant) each is one
``healthai.Softplus`` node of our op library instead: one vectorised pass instead of eleven nodes.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
from onnx import helper, numpy_helper

__all__ = ["rewrite_softplus"]

_FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE)


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def _graph_outputs(graph: onnx.GraphProto) -> set[str]:
    return {o.name for o in graph.output}


def _threshold_of(graph: onnx.GraphProto, name: str) -> float | None:
    """The scalar value of initializer/Constant ``name`` (None when it is not a constant)."""
    for init in graph.initializer:
        if init.name == name:
            arr = numpy_helper.to_array(init)
            return float(arr) if arr.size == 1 else None
    for node in graph.node:
        if node.op_type == "Constant" and name in node.output:
            for attr in node.attribute:
                if attr.name == "value":
                    arr = numpy_helper.to_array(attr.t)
                    return float(arr) if arr.size == 1 else None
                if attr.name == "value_float":
                    return float(attr.f)
    return None


def _decomposition(x: str, out: str, tag: str) -> list[onnx.NodeProto]:
    """``Relu(x) + log1p(e)``, ``e = Exp(-|x|)``; log1p by Goldberg's ``Log(w) · e / (w - 1)``, ``w = 1 + e``
    (exact to a few ulp where plain ``Log(1 + e)`` loses up to 6e-8 absolute; ``w == 1`` gives 0)."""

    def t(name: str) -> str:
        return f"{tag}_{name}"

    def const(name: str, value: float) -> list[onnx.NodeProto]:
        return [
            helper.make_node(
                "Constant",
                [],
                [t(name + "_f")],
                name=t(name + "_Const"),
                value=helper.make_tensor(t(name + "_v"), onnx.TensorProto.FLOAT, [], [value]),
            ),
            helper.make_node("CastLike", [t(name + "_f"), x], [t(name)], name=t(name + "_CastLike")),
        ]

    node = helper.make_node
    return [
        *const("one", 1.0),
        *const("tiny", 1e-30),
        node("Relu", [x], [t("relu")], name=t("Relu")),
        node("Abs", [x], [t("abs")], name=t("Abs")),
        node("Neg", [t("abs")], [t("neg")], name=t("Neg")),
        node("Exp", [t("neg")], [t("e")], name=t("Exp")),
        node("Add", [t("e"), t("one")], [t("w")], name=t("OnePlus")),
        node("Sub", [t("w"), t("one")], [t("d")], name=t("MinusOne")),
        node("Max", [t("d"), t("tiny")], [t("d_safe")], name=t("Max")),
        node("Div", [t("e"), t("d_safe")], [t("ratio")], name=t("Div")),
        node("Log", [t("w")], [t("log")], name=t("Log")),
        node("Mul", [t("log"), t("ratio")], [t("log1p")], name=t("Mul")),
        node("Add", [t("relu"), t("log1p")], [out], name=t("Sum")),
    ]


def rewrite_softplus(model: onnx.ModelProto, *, custom_domain: str | None = None) -> int:
    """Replace every main-graph float/double ``Softplus`` (with its exporter ``Where``/``Greater``
    threshold guard, when the threshold is ≥ 15) by ``Relu(x) + log1p(Exp(-|x|))`` in place — or, with
    ``custom_domain``, by one ``Softplus`` node of that domain (opset 1, imported if it is not) — and
    return how many. A Softplus whose input type the graph does not record is left alone."""
    graph = model.graph
    consumers = _consumers(graph)
    outputs = _graph_outputs(graph)
    drop: set[int] = set()
    replace: dict[int, list[onnx.NodeProto]] = {}
    count = 0
    names = {name for node in graph.node for name in (*node.input, *node.output, node.name)}
    types = {v.name: v.type.tensor_type.elem_type for v in (*graph.input, *graph.value_info, *graph.output)}
    for node in graph.node:
        if node.op_type != "Softplus" or node.domain not in ("", "ai.onnx"):
            continue
        x, sp_out = node.input[0], node.output[0]
        if types.get(x) not in _FLOAT_TYPES:
            continue  # unknown or float16/bfloat16 type: the 1e-30 floor below is not representable
        k = count
        while f"softplus_rw{k}_relu" in names:
            k += 1
        tag = f"softplus_rw{k}"
        names.add(f"{tag}_relu")
        target = sp_out
        guard = _threshold_guard(graph, consumers, outputs, x, sp_out)
        if guard is not None:
            greater, where = guard
            drop.update(id(n) for n in (greater, where))
            target = where.output[0]
        if custom_domain is None:
            replace[id(node)] = _decomposition(x, target, tag)
        else:
            replace[id(node)] = [helper.make_node("Softplus", [x], [target], name=tag, domain=custom_domain)]
        count += 1
    if count == 0:
        return 0
    if custom_domain is not None and all(o.domain != custom_domain for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(custom_domain, 1))
    new_nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if id(node) in drop:
            continue
        new_nodes.extend(replace.get(id(node), [node]))
    _retopo(graph, new_nodes)
    produced = {name for node in graph.node for name in node.output}
    stale = [vi for vi in graph.value_info if vi.name not in produced]
    for vi in stale:
        graph.value_info.remove(vi)
    used = {name for node in graph.node for name in node.input}
    for init in [i for i in graph.initializer if i.name not in used and i.name not in outputs]:
        graph.initializer.remove(init)
    return count


def _threshold_guard(
    graph: onnx.GraphProto,
    consumers: dict[str, list[onnx.NodeProto]],
    outputs: set[str],
    x: str,
    sp_out: str,
) -> tuple[onnx.NodeProto, onnx.NodeProto] | None:
    """The exporter's ``Where(Greater(x, t), x, Softplus(x))`` around this Softplus, if exactly that."""
    users = consumers.get(sp_out, [])
    if len(users) != 1 or users[0].op_type != "Where" or sp_out in outputs:
        return None
    where = users[0]
    if list(where.input[1:]) != [x, sp_out]:
        return None
    greater = next((n for n in graph.node if where.input[0] in n.output), None)
    if greater is None or greater.op_type != "Greater" or greater.input[0] != x:
        return None
    if len(consumers.get(greater.output[0], [])) != 1 or greater.output[0] in outputs:
        return None
    threshold = _threshold_of(graph, greater.input[1])
    if threshold is None or not np.isfinite(threshold) or threshold < 15.0:
        return None  # below ~15 the log term is still visible in float32: not the same function
    return greater, where


def _retopo(graph: onnx.GraphProto, nodes: Iterable[onnx.NodeProto]) -> None:
    """Write ``nodes`` back in a topological order (the decomposition may precede its guard's inputs)."""
    pending = list(nodes)
    known = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    ordered: list[onnx.NodeProto] = []
    while pending:
        rest = []
        for node in pending:
            if all(name in known for name in node.input):
                ordered.append(node)
                known.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ValueError(f"graph is not a DAG after rewrite (stuck at {rest[0].op_type} {rest[0].name})")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)
