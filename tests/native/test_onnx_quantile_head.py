"""healthai.QuantileHead, the forecaster's quantile head in one op: against the torch reference (every
median position, NaN, overflow, float64, empty), the same bits on any number of threads, clear errors
for bad shapes, and the custom export of an ST-GNN using it (standard variant unchanged)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from healthai.ops import GraphAggregation, build_info, ort_library_path
from healthai.ops.onnx_export import export_onnx
from healthai.ops.quantile_head import quantile_head_reference

pytestmark = [
    pytest.mark.skipif(
        not build_info()["ort_ops"], reason="ONNX Runtime op library not built (no ORT headers)"
    ),
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning"),  # torch.onnx internals (pytree)
]
NAMES = ("raw", "base", "scale", "shift")


def head_model(elem: int, median_index: int | None) -> bytes:
    attrs = {} if median_index is None else {"median_index": median_index}
    node = helper.make_node("QuantileHead", list(NAMES), ["out"], domain="healthai", **attrs)
    graph = helper.make_graph(
        [node], "head", [helper.make_tensor_value_info(n, elem, None) for n in NAMES],
        [helper.make_tensor_value_info("out", elem, None)],
    )
    ops = [helper.make_opsetid("", 18), helper.make_opsetid("healthai", 1)]
    return helper.make_model(graph, opset_imports=ops).SerializeToString()


def run_head(inputs: dict[str, np.ndarray], median_index: int | None, threads: int = 1) -> np.ndarray:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.register_custom_ops_library(str(ort_library_path()))
    elem = TensorProto.FLOAT if inputs["raw"].dtype == np.float32 else TensorProto.DOUBLE
    sess = ort.InferenceSession(head_model(elem, median_index), so, providers=["CPUExecutionProvider"])
    return sess.run(None, inputs)[0]


def random_inputs(b: int, n: int, s: int, q: int, dtype: type, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "raw": rng.normal(0.0, 3.0, (b, n, s, q)).astype(dtype),
        "base": rng.normal(0.2, 0.5, (b, n, s)).astype(dtype),
        "scale": rng.uniform(1.0, 900.0, n).astype(dtype),
        "shift": rng.uniform(-5.0, 50.0, n).astype(dtype),
    }


def reference(inputs: dict[str, np.ndarray], median_index: int) -> np.ndarray:
    t = {k: torch.from_numpy(v.astype(np.float64)) for k, v in inputs.items()}
    return quantile_head_reference(t["raw"], t["base"], t["scale"], t["shift"], median_index).numpy()


@pytest.mark.parametrize("median_index", [0, 5, 11, 22])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_the_torch_reference(median_index: int, dtype: type) -> None:
    inputs = random_inputs(2, 7, 5, 23, dtype)
    got = run_head(inputs, median_index)
    want = reference(inputs, median_index)
    assert got.shape == (2, 5, 7, 23) and got.dtype == dtype
    assert (got >= 0).all() and (want == 0).any()  # some levels clamp at zero
    np.testing.assert_allclose(got, want, rtol=2e-6 if dtype == np.float32 else 1e-13, atol=1e-3 if dtype ==
                               np.float32 else 1e-10)
    # the levels are ordered: every offset is a softplus, so never negative
    assert (np.diff(got, axis=-1) >= -1e-4).all()


def test_nan_overflow_and_empty_inputs() -> None:
    inputs = random_inputs(1, 3, 2, 5, np.float32)
    inputs["raw"][0, 0, 0, 3] = np.nan  # an upper increment: that level and the ones above it
    inputs["raw"][0, 1, 1, 4] = 1e30  # softplus(1e30) = 1e30, no overflow to NaN
    got = run_head(inputs, 2)
    assert np.isnan(got[0, 0, 0, 3:]).all() and np.isfinite(got[0, 0, 0, :3]).all()
    assert np.isfinite(got[0, 1, 1]).all() and got[0, 1, 1, 4] > 1e30
    for shape in ((0, 3, 2, 5), (1, 0, 2, 5), (1, 3, 0, 5)):
        empty = random_inputs(*shape, np.float32)
        assert run_head(empty, 2).shape == (shape[0], shape[2], shape[1], shape[3])


def test_same_bits_on_one_and_three_threads() -> None:
    inputs = random_inputs(3, 500, 15, 23, np.float32, seed=3)  # 517k values: several ORT tasks
    np.testing.assert_array_equal(run_head(inputs, 11, threads=1), run_head(inputs, 11, threads=3))


@pytest.mark.parametrize(
    ("change", "median_index", "message"),
    [
        (lambda i: i.update(base=i["base"][:, :2]), 2,
         "base must be [batch, regions, steps] = [1, 3, 2], got [1, 2, 2]"),
        (lambda i: i.update(raw=i["raw"][0]), 2,
         "raw must be [batch, regions, steps, levels], got [3, 2, 5]"),
        (lambda i: i.update(scale=i["scale"][:2]), 2, "scale and shift must hold one value per region (3)"),
        (lambda i: None, 5, "median_index 5 is not a level of 5"),
        (lambda i: None, None, "the int attribute median_index is required"),
    ],
)
def test_bad_inputs_are_refused_with_a_clear_error(change, median_index: int | None, message: str) -> None:
    inputs = random_inputs(1, 3, 2, 5, np.float32)
    change(inputs)
    with pytest.raises(Exception, match=r"QuantileHead") as err:
        run_head(inputs, median_index)
    assert message in str(err.value)


def _forecaster(n: int = 40, seed: int = 0) -> torch.nn.Module:
    # imported here: test_cuda (on a GPU machine without healthai_training) uses this module's helpers
    from healthai_training.forecast.model import STGNNForecaster

    rng = np.random.default_rng(seed)
    adj = (rng.random((n, n)) < 0.1).astype(np.float64)
    adj = np.maximum(adj, adj.T)
    np.fill_diagonal(adj, 0.0)
    import scipy.sparse as sp

    model = STGNNForecaster(spatial=GraphAggregation.from_adjacency(sp.csr_matrix(adj)), n_nodes=n, window=20,
                            steps=5)
    torch.manual_seed(seed)
    with torch.no_grad():  # the head starts at zero: give every parameter a value
        for p in model.parameters():
            p.normal_(0.0, 0.3)
        model.scale_min.copy_(torch.from_numpy(rng.uniform(0, 20, n).astype(np.float32)))
        model.scale_range.copy_(torch.from_numpy(rng.uniform(10, 900, n).astype(np.float32)))
    return model.eval()


def test_custom_export_is_one_quantile_head_node_and_matches_torch(tmp_path: Path) -> None:
    from healthai_training.forecast.export import export_variant, parity

    model = _forecaster()
    path = tmp_path / "custom.onnx"
    export_variant(model, path, variant="custom")
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("QuantileHead") == 1 and "Softplus" not in ops and "Clip" not in ops
    assert not model.fused_head  # restored after the export
    assert parity(model, path, variant="custom") < 1e-5
    standard = tmp_path / "standard.onnx"
    export_variant(model, standard, variant="standard")  # unchanged: no custom node at all
    assert all(n.domain in ("", "ai.onnx") for n in onnx.load(str(standard)).graph.node)
    assert parity(model, standard, variant="standard") < 1e-5


def test_the_fused_op_also_exports_to_standard_ops(tmp_path: Path) -> None:
    from healthai_training.forecast.export import fused_heads, parity

    model = _forecaster(seed=1)
    path = tmp_path / "fused-standard.onnx"
    with fused_heads(model, True):
        export_onnx(model, (torch.zeros(2, 20, 40),), path, variant="standard", input_names=["history"],
                    output_names=["forecast"],
                    dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},))
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert "CumSum" in ops and "QuantileHead" not in ops
    assert parity(model, path, variant="standard") < 1e-5
