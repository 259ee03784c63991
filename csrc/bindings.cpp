// pybind11 module healthai._native: private; the typed public wrapper is healthai.ops.
// std::invalid_argument -> ValueError, std::out_of_range -> IndexError, std::runtime_error -> RuntimeError.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "aggregate.h"
#include "array_view.h"
#include "metapop_bindings.h"
#include "occlusion_bindings.h"

namespace py = pybind11;
using healthai::ArrayView;
using healthai::CsrProblem;
using healthai::DType;

namespace {

struct Graph {
  CsrProblem p;
  ArrayView x;
  std::vector<py::object> keep;
};

// Views the graph arguments and checks their structure against x. Their values are checked by the
// caller with the GIL released, on the caller's stream: healthai::check_values(g.p, threads, stream).
Graph checked_graph(py::handle indptr, py::handle indices, py::handle weights, py::handle x,
                    const std::string& reduce) {
  Graph g;
  const healthai::Reduce r = healthai::parse_reduce(reduce);
  ArrayView vx = healthai::view_of(x, "x", g.keep);
  if (!vx.present) throw std::invalid_argument("x must be a numpy array or a torch tensor, got None");
  const ArrayView vp = healthai::view_of(indptr, "indptr", g.keep);
  const ArrayView vi = healthai::view_of(indices, "indices", g.keep);
  const ArrayView vw = healthai::view_of(weights, "weights", g.keep);
  if (!vp.present) throw std::invalid_argument("indptr must be an array, got None");
  if (!vi.present) throw std::invalid_argument("indices must be an array, got None");
  g.p = healthai::check_structure(vp, vi, vw, vx, r);
  g.x = vx;
  return g;
}

// The output `out` of `shape`: a given array (checked) or, on CPU, a new numpy array.
py::object output(py::handle given, const char* name, DType dtype, const Graph& g, const int64_t* shape, int ndim,
                  void** data) {
  if (given.is_none()) {
    if (g.p.device == healthai::Device::kCUDA) {
      throw std::invalid_argument(std::string(name) + " must be given (preallocated) for CUDA inputs");
    }
    py::array a = healthai::new_array(dtype, shape, ndim);
    *data = a.mutable_data();
    return a;
  }
  std::vector<py::object> keep;
  const ArrayView v = healthai::view_of(given, name, keep);
  healthai::check_output(v, name, dtype, g.p, shape, ndim);
  *data = v.data;
  return py::reinterpret_borrow<py::object>(given);
}

void out_shape(const Graph& g, int64_t* shape, int* ndim) {
  *ndim = g.x.ndim;
  int k = 0;
  if (g.x.ndim == 3) shape[k++] = g.p.batch;
  shape[k++] = g.p.n_rows;
  shape[k] = g.p.feat;
}

py::tuple aggregate(py::handle indptr, py::handle indices, py::handle weights, py::handle x,
                    const std::string& reduce, int num_threads, py::handle out, py::handle argmax,
                    uintptr_t stream) {
  Graph g = checked_graph(indptr, indices, weights, x, reduce);
  int64_t shape[3];
  int ndim;
  out_shape(g, shape, &ndim);
  void* out_data = nullptr;
  void* arg_data = nullptr;
  py::object out_obj = output(out, "out", g.p.scalar_type, g, shape, ndim, &out_data);
  py::object arg_obj = py::none();
  if (g.p.reduce == healthai::Reduce::kMax) arg_obj = output(argmax, "argmax", DType::kInt64, g, shape, ndim, &arg_data);
  {
    py::gil_scoped_release release;  // the checks read only raw memory: no GIL needed
    healthai::check_values(g.p, num_threads, reinterpret_cast<void*>(stream));
    healthai::aggregate_forward(g.p, g.x.data, out_data, static_cast<int64_t*>(arg_data), num_threads,
                                reinterpret_cast<void*>(stream));
  }
  return py::make_tuple(out_obj, arg_obj);
}

// The transpose arrays as two graphs to check: A^T itself, and A^T with edge ids for indices.
struct TransposeViews {
  healthai::CsrTranspose t{};
  CsrProblem graph, edge_ids;
};

// Checks shapes, dtypes and devices of the transpose arrays against the graph (values: check_transpose).
TransposeViews transpose_views(const Graph& g, py::handle t_indptr, py::handle t_indices, py::handle t_edge_ids,
                               std::vector<py::object>& keep) {
  const int64_t ptr_shape[1] = {g.p.n_cols + 1};
  const int64_t nnz_shape[1] = {g.p.nnz};
  const ArrayView vp = healthai::view_of(t_indptr, "t_indptr", keep);
  const ArrayView vi = healthai::view_of(t_indices, "t_indices", keep);
  const ArrayView ve = healthai::view_of(t_edge_ids, "t_edge_ids", keep);
  healthai::check_output(vp, "t_indptr", g.p.index_type, g.p, ptr_shape, 1);
  healthai::check_output(vi, "t_indices", g.p.index_type, g.p, nnz_shape, 1);
  healthai::check_output(ve, "t_edge_ids", g.p.index_type, g.p, nnz_shape, 1);
  TransposeViews v;
  v.t = {vp.data, vi.data, ve.data};
  v.graph = g.p;  // the transpose as a graph: rows are A's columns, entries point at A's rows
  v.graph.indptr = vp.data;
  v.graph.indices = vi.data;
  v.graph.n_rows = g.p.n_cols;
  v.graph.n_cols = g.p.n_rows;
  v.edge_ids = v.graph;  // edge ids must be valid positions in A
  v.edge_ids.indices = ve.data;
  v.edge_ids.n_cols = g.p.nnz;
  return v;
}

// Checks the values of the transpose arrays (no GIL needed; CUDA on the caller's stream).
void check_transpose(const TransposeViews& v, int num_threads, void* stream) {
  try {
    healthai::check_values(v.graph, num_threads, stream);
    healthai::check_values(v.edge_ids, num_threads, stream);
  } catch (const std::out_of_range& e) {
    throw std::out_of_range(std::string("transpose (t_indptr, t_indices, t_edge_ids) is invalid: ") + e.what());
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(std::string("transpose (t_indptr, t_indices, t_edge_ids) is invalid: ") + e.what());
  }
}

py::tuple aggregate_backward(py::handle indptr, py::handle indices, py::handle weights, py::handle x,
                             const std::string& reduce, py::handle grad_out, py::handle t_indptr,
                             py::handle t_indices, py::handle t_edge_ids, py::handle argmax, bool need_grad_x,
                             bool need_grad_w, int num_threads, py::handle grad_x, py::handle grad_w,
                             uintptr_t stream) {
  Graph g = checked_graph(indptr, indices, weights, x, reduce);
  int64_t shape[3];
  int ndim;
  out_shape(g, shape, &ndim);
  const ArrayView go = healthai::view_of(grad_out, "grad_out", g.keep);
  healthai::check_output(go, "grad_out", g.p.scalar_type, g.p, shape, ndim);
  const int64_t* arg_data = nullptr;
  if (g.p.reduce == healthai::Reduce::kMax) {
    const ArrayView va = healthai::view_of(argmax, "argmax", g.keep);
    if (!va.present) throw std::invalid_argument("argmax (from the forward pass) is required for reduce='max'");
    healthai::check_output(va, "argmax", DType::kInt64, g.p, shape, ndim);
    arg_data = static_cast<const int64_t*>(va.data);
  }
  TransposeViews tv;
  py::object gx_obj = py::none(), gw_obj = py::none();
  void* gx_data = nullptr;
  void* gw_data = nullptr;
  if (need_grad_x) {
    tv = transpose_views(g, t_indptr, t_indices, t_edge_ids, g.keep);
    int64_t xshape[3] = {g.x.shape[0], g.x.shape[1], g.x.shape[2]};
    gx_obj = output(grad_x, "grad_x", g.p.scalar_type, g, xshape, g.x.ndim, &gx_data);
  }
  if (need_grad_w) {
    if (g.p.weights == nullptr) throw std::invalid_argument("need_grad_w=True but weights is None");
    const int64_t wshape[1] = {g.p.nnz};
    gw_obj = output(grad_w, "grad_w", g.p.scalar_type, g, wshape, 1, &gw_data);
  }
  {
    py::gil_scoped_release release;  // every value check runs on the caller's stream, before any kernel
    void* s = reinterpret_cast<void*>(stream);
    healthai::check_values(g.p, num_threads, s);
    if (need_grad_x) check_transpose(tv, num_threads, s);
    if (arg_data != nullptr) healthai::check_argmax(g.p, arg_data, num_threads, s);
    healthai::aggregate_backward(g.p, tv.t, go.data, g.x.data, arg_data, gx_data, gw_data, num_threads, s);
  }
  return py::make_tuple(gx_obj, gw_obj);
}

py::tuple csr_transpose(py::handle indptr, py::handle indices, int64_t n_cols, int num_threads, py::handle out,
                        uintptr_t stream) {
  if (n_cols < 0) throw std::invalid_argument("n_cols must be >= 0, got " + std::to_string(n_cols));
  std::vector<py::object> keep;
  const ArrayView vp = healthai::view_of(indptr, "indptr", keep);
  if (!vp.present) throw std::invalid_argument("indptr must be an array, got None");
  ArrayView fake_x;  // [n_cols, 0] float32 on indptr's device: gives n_cols to the checks
  fake_x.ndim = 2;
  fake_x.shape[0] = n_cols;
  fake_x.dtype = DType::kFloat32;
  fake_x.device = vp.device;
  const py::object none = py::none();
  Graph g;
  g.keep = std::move(keep);
  const ArrayView vi = healthai::view_of(indices, "indices", g.keep);
  if (!vi.present) throw std::invalid_argument("indices must be an array, got None");
  ArrayView no_w;
  no_w.present = false;
  g.p = healthai::check_structure(vp, vi, no_w, fake_x, healthai::Reduce::kSum);
  g.x = fake_x;
  const int64_t ptr_shape[1] = {n_cols + 1};
  const int64_t nnz_shape[1] = {g.p.nnz};
  void *tp = nullptr, *ti = nullptr, *te = nullptr;
  py::object o_p = none, o_i = none, o_e = none;
  if (!out.is_none()) {
    const py::tuple t = py::reinterpret_borrow<py::tuple>(out);
    if (t.size() != 3) throw std::invalid_argument("out must be a tuple of 3 arrays (t_indptr, t_indices, t_edge_ids)");
    o_p = t[0], o_i = t[1], o_e = t[2];
  }
  py::object rp = output(o_p, "t_indptr", g.p.index_type, g, ptr_shape, 1, &tp);
  py::object ri = output(o_i, "t_indices", g.p.index_type, g, nnz_shape, 1, &ti);
  py::object re = output(o_e, "t_edge_ids", g.p.index_type, g, nnz_shape, 1, &te);
  {
    py::gil_scoped_release release;
    healthai::check_values(g.p, num_threads, reinterpret_cast<void*>(stream));
    healthai::csr_transpose(g.p, tp, ti, te, num_threads, reinterpret_cast<void*>(stream));
  }
  return py::make_tuple(rp, ri, re);
}

// out[..., perm[i], :] = x[..., i, :]: moves node rows into a new order (e.g. healthai.ops.locality_order).
py::object permute_rows(py::handle x, py::handle perm, int num_threads, py::handle out) {
  std::vector<py::object> keep;
  const ArrayView vx = healthai::view_of(x, "x", keep);
  const ArrayView vp = healthai::view_of(perm, "perm", keep);
  if (!vx.present || !vp.present) throw std::invalid_argument("x and perm must be arrays, got None");
  ArrayView fake_ptr;  // a 0-row graph: reuses the shape/dtype checks of x
  fake_ptr.ndim = 1;
  fake_ptr.shape[0] = 1;
  fake_ptr.dtype = DType::kInt64;
  fake_ptr.device = vx.device;
  ArrayView fake_idx = fake_ptr;
  fake_idx.shape[0] = 0;
  ArrayView no_w;
  no_w.present = false;
  Graph g;
  g.p = healthai::check_structure(fake_ptr, fake_idx, no_w, vx, healthai::Reduce::kSum);
  g.x = vx;
  if (vx.device != healthai::Device::kCPU) throw std::invalid_argument("permute_rows runs on CPU arrays only");
  const int64_t n = g.p.n_cols;
  const int64_t perm_shape[1] = {n};
  healthai::check_output(vp, "perm", DType::kInt64, g.p, perm_shape, 1);
  const auto* pd = static_cast<const int64_t*>(vp.data);
  std::vector<char> seen(n, 0);
  for (int64_t i = 0; i < n; ++i) {
    if (pd[i] < 0 || pd[i] >= n || seen[pd[i]]) {
      throw std::invalid_argument("perm is not a permutation of 0.." + std::to_string(n - 1) + ": perm[" +
                                  std::to_string(i) + "]=" + std::to_string(pd[i]));
    }
    seen[pd[i]] = 1;
  }
  int64_t shape[3] = {vx.shape[0], vx.shape[1], vx.shape[2]};
  void* out_data = nullptr;
  py::object res = output(out, "out", g.p.scalar_type, g, shape, vx.ndim, &out_data);
  {
    py::gil_scoped_release release;
    healthai::permute_rows(g.p, vx.data, pd, out_data, num_threads);
  }
  return res;
}

py::dict build_info() {
  py::dict d;
  d["version"] = HEALTHAI_VERSION;
  d["cpu"] = true;
  d["cuda"] = healthai::built_with_cuda();
  d["cuda_version"] = healthai::built_with_cuda() ? py::object(py::str(healthai::cuda_version())) : py::none();
  d["ort_ops"] = static_cast<bool>(HEALTHAI_ORT_OPS);
  d["ort_ops_library"] = std::string(HEALTHAI_ORT_OPS_LIBRARY);
  d["ort_headers_version"] = std::string(HEALTHAI_ORT_HEADERS_VERSION);
  d["num_threads"] = healthai::get_num_threads();
  d["compiler"] = std::string(HEALTHAI_COMPILER);
  return d;
}

}  // namespace

PYBIND11_MODULE(_native, m) {
  m.doc() = "healthai native kernels (private; use healthai.ops)";
  m.def("aggregate", &aggregate, py::arg("indptr"), py::arg("indices"), py::arg("weights"), py::arg("x"),
        py::arg("reduce"), py::arg("num_threads") = 0, py::arg("out") = py::none(), py::arg("argmax") = py::none(),
        py::arg("stream") = 0);
  m.def("aggregate_backward", &aggregate_backward, py::arg("indptr"), py::arg("indices"), py::arg("weights"),
        py::arg("x"), py::arg("reduce"), py::arg("grad_out"), py::arg("t_indptr"), py::arg("t_indices"),
        py::arg("t_edge_ids"), py::arg("argmax") = py::none(), py::arg("need_grad_x") = true,
        py::arg("need_grad_w") = false, py::arg("num_threads") = 0, py::arg("grad_x") = py::none(),
        py::arg("grad_w") = py::none(), py::arg("stream") = 0);
  m.def("csr_transpose", &csr_transpose, py::arg("indptr"), py::arg("indices"), py::arg("n_cols"),
        py::arg("num_threads") = 0, py::arg("out") = py::none(), py::arg("stream") = 0);
  m.def("permute_rows", &permute_rows, py::arg("x"), py::arg("perm"), py::arg("num_threads") = 0,
        py::arg("out") = py::none());
  m.def("set_num_threads", &healthai::set_num_threads, py::arg("n"));
  m.def("get_num_threads", &healthai::get_num_threads);
  m.def("build_info", &build_info);
  healthai::bind_metapop(m);
  healthai::bind_occlusion(m);
}
