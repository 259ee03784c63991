"""The ONNX Runtime custom op against the reference, and export of a model with GraphAggregation in
both variants (custom node served by our library; standard opset-18 ops only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import scipy.sparse as sp
import torch
from onnx import TensorProto, helper

from healthai.ops import GraphAggregation, build_info, ort_library_path
from healthai.ops.onnx_export import export_onnx
from healthai.ops.onnx_passes import rewrite_softplus

from .reference import random_graph, reference_forward

pytestmark = [
    pytest.mark.skipif(
        not build_info()["ort_ops"], reason="ONNX Runtime op library not built (no ORT headers)"
    ),
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning"),  # torch.onnx internals (pytree)
]


def _session(model: onnx.ModelProto | str | Path, custom: bool = True) -> ort.InferenceSession:
    so = ort.SessionOptions()
    if custom:
        so.register_custom_ops_library(str(ort_library_path()))
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def _custom_model(reduce: str, elem: int, weighted: bool) -> onnx.ModelProto:
    node = helper.make_node(
        "CsrAggregate",
        ["indptr", "indices", "weights" if weighted else "", "x"],
        ["out"],
        domain="healthai",
        reduce=reduce,
    )
    inputs = [
        helper.make_tensor_value_info("indptr", TensorProto.INT64, ["r1"]),
        helper.make_tensor_value_info("indices", TensorProto.INT64, ["e"]),
        helper.make_tensor_value_info("x", elem, None),
    ]
    if weighted:
        inputs.insert(2, helper.make_tensor_value_info("weights", elem, ["e"]))
    graph = helper.make_graph([node], "csr", inputs, [helper.make_tensor_value_info("out", elem, None)])
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("healthai", 1)]
    )


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("batched", [False, True])
def test_custom_op_matches_reference(reduce, dtype, weighted, batched) -> None:
    rng = np.random.default_rng(1)
    indptr, indices = random_graph(rng, 60, 50, 400, power_law=True, empty_rows=5)
    w = rng.standard_normal(len(indices)).astype(dtype)
    x = rng.standard_normal((*((3,) if batched else ()), 50, 20)).astype(dtype)
    elem = TensorProto.FLOAT if dtype == np.float32 else TensorProto.DOUBLE
    feeds = {"indptr": indptr, "indices": indices, "x": x}
    if weighted:
        feeds["weights"] = w
    (out,) = _session(_custom_model(reduce, elem, weighted)).run(None, feeds)
    ref, _ = reference_forward(indptr, indices, w if weighted else None, x, reduce)
    assert out.dtype == dtype
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_custom_op_empty_weights_mean_unweighted() -> None:
    indptr, indices = np.array([0, 2, 3], np.int64), np.array([0, 1, 1], np.int64)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    sess = _session(_custom_model("sum", TensorProto.FLOAT, True))
    (out,) = sess.run(
        None, {"indptr": indptr, "indices": indices, "weights": np.zeros(0, np.float32), "x": x}
    )
    np.testing.assert_array_equal(out, [[3, 5, 7], [3, 4, 5]])


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
def test_custom_op_on_ort_threads_matches_reference(reduce) -> None:
    # big enough to be split into many row chunks on ORT's pool; empty and heavy rows included
    rng = np.random.default_rng(7)
    indptr, indices = random_graph(rng, 3000, 2500, 30000, power_law=True, empty_rows=50)
    w = rng.standard_normal(len(indices)).astype(np.float32)
    x = rng.standard_normal((3, 2500, 16)).astype(np.float32)
    ref, _ = reference_forward(indptr, indices, w, x, reduce)
    outs = []
    for threads in (1, 3):
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.register_custom_ops_library(str(ort_library_path()))
        model = _custom_model(reduce, TensorProto.FLOAT, True).SerializeToString()
        sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        (out,) = sess.run(None, {"indptr": indptr, "indices": indices, "weights": w, "x": x})
        # float32 sums over power-law rows of ~1,000 edges: compare on the output's scale
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
        outs.append(out)
    np.testing.assert_array_equal(outs[0], outs[1])  # every row is computed the same way on any thread


class _Softplus(torch.nn.Module):
    def __init__(self, threshold: float = 20.0) -> None:
        super().__init__()
        self.threshold = threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.softplus(x, threshold=self.threshold) * 2.0


def _export_plain(module: torch.nn.Module, x: torch.Tensor, path: Path, fast: bool) -> onnx.ModelProto:
    export_onnx(
        module.eval(),
        (x,),
        path,
        variant="standard",
        input_names=["x"],
        output_names=["y"],
        fast_softplus=fast,
    )
    return onnx.load(str(path))


def test_rewrite_softplus_is_the_same_function(tmp_path: Path) -> None:
    grid = np.concatenate(
        [
            np.linspace(-120, 120, 4001),
            [0.0, -0.0, 16.6, 17.0, 19.99, 20.0, 20.01, 1e30, -1e30, np.inf, -np.inf],
        ]
    )
    x = torch.tensor(grid, dtype=torch.float32)
    fast = _export_plain(_Softplus(), x, tmp_path / "fast.onnx", fast=True)
    slow = _export_plain(_Softplus(), x, tmp_path / "slow.onnx", fast=False)
    assert [n.op_type for n in slow.graph.node].count("Softplus") == 1
    ops = [n.op_type for n in fast.graph.node]
    assert "Softplus" not in ops and "Where" not in ops and "Greater" not in ops  # guard folded in
    onnx.checker.check_model(fast, full_check=True)
    (got,) = _session(fast, custom=False).run(None, {"x": x.numpy()})
    (old,) = _session(slow, custom=False).run(None, {"x": x.numpy()})
    exact = 2.0 * np.logaddexp(0.0, x.numpy().astype(np.float64))
    assert not np.isnan(got).any()
    assert np.array_equal(np.isinf(got), np.isinf(exact))
    finite = np.isfinite(exact)
    # a few ulp of the exact value; below 6e-8 (e^x under half an ulp of 1) the value may flush to 0
    np.testing.assert_allclose(got[finite], exact[finite], rtol=3e-7, atol=1.2e-7)
    # as close to the exact function as ONNX Runtime's own Softplus kernel (up to one float32 ulp of 2)
    ours, ort_own = (np.abs(v[finite] - exact[finite]).max() for v in (got, old))
    assert ours <= max(ort_own, 2.4e-7), (ours, ort_own)


def test_rewrite_softplus_keeps_a_low_threshold_guard(tmp_path: Path) -> None:
    x = torch.linspace(-30, 30, 601)
    proto = _export_plain(_Softplus(threshold=5.0), x, tmp_path / "t5.onnx", fast=False)
    assert rewrite_softplus(proto) == 1
    ops = [n.op_type for n in proto.graph.node]
    assert "Softplus" not in ops and ops.count("Where") == 1  # x > 5 still returns x itself
    (got,) = _session(proto, custom=False).run(None, {"x": x.numpy()})
    # values under 6e-8 may flush to 0 (as in ONNX Runtime's Softplus kernel); here doubled
    np.testing.assert_allclose(got, _Softplus(threshold=5.0)(x).numpy(), rtol=1e-6, atol=1.2e-7)
    assert rewrite_softplus(proto) == 0  # idempotent


class _Forecaster(torch.nn.Module):
    """A small model with one GraphAggregation per reduction."""

    def __init__(self, a: sp.csr_matrix) -> None:
        super().__init__()
        self.aggs = torch.nn.ModuleList(
            [
                GraphAggregation.from_adjacency(a, reduce="sum", normalize=True),
                GraphAggregation(a.indptr, a.indices, reduce="mean"),  # unweighted: no weights input
                GraphAggregation.from_adjacency(a, reduce="max"),
            ]
        )
        self.lin = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(torch.relu(sum(agg(x) for agg in self.aggs)))


@pytest.mark.parametrize("variant", ["custom", "standard"])
def test_export_model_with_graph_aggregation(variant, tmp_path: Path) -> None:
    a = sp.random(40, 40, density=0.1, format="lil", random_state=0)
    a[3, :] = 0  # an empty row
    model = _Forecaster(a.tocsr()).eval()
    x = torch.randn(2, 40, 4)
    path = export_onnx(
        model,
        (x,),
        tmp_path / "m.onnx",
        variant=variant,
        input_names=["x"],
        output_names=["y"],
        dynamic_shapes=({0: torch.export.Dim("batch", max=64)},),
    )
    proto = onnx.load(str(path))
    ops = [(n.domain, n.op_type) for n in proto.graph.node]
    if variant == "custom":
        assert ops.count(("healthai", "CsrAggregate")) == 3
    else:
        assert all(domain in ("", "ai.onnx") for domain, _ in ops)
        assert ops.count(("", "ScatterND")) == 3
        # sparse: no N x N tensor anywhere in the initializers
        assert not [i.name for i in proto.graph.initializer if list(i.dims).count(40) >= 2]
    sess = _session(path, custom=variant == "custom")
    for batch in (2, 5):
        xb = torch.randn(batch, 40, 4)
        (got,) = sess.run(None, {"x": xb.numpy()})
        ref = model(xb).detach().numpy()
        assert np.max(np.abs(got - ref)) / np.max(np.abs(ref)) < 1e-4


def test_export_rejects_unknown_variant(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="variant must be 'custom' or 'standard', got 'dense'"):
        export_onnx(torch.nn.Identity(), (torch.ones(1),), tmp_path / "m.onnx", variant="dense")  # type: ignore[arg-type]
