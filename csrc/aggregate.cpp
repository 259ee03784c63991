// Checks the arguments of the CSR aggregation and dispatches to the CPU or CUDA implementation.
#include "aggregate.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <sstream>
#include <stdexcept>

#include "cpu/aggregate_cpu.h"
#include "cpu/thread_pool.h"
#ifdef HEALTHAI_WITH_CUDA
#include "cuda/aggregate_cuda.h"
#endif

namespace healthai {
namespace {

std::atomic<int> g_num_threads{0};  // 0: all hardware threads

const char* device_name(Device d) { return d == Device::kCPU ? "cpu" : "cuda"; }

std::string shape_str(const ArrayView& a) {
  std::ostringstream s;
  s << "(";
  for (int i = 0; i < a.ndim; ++i) s << (i ? ", " : "") << a.shape[i];
  s << (a.ndim == 1 ? ",)" : ")");
  return s.str();
}

std::string type_of(const ArrayView& a) {
  return a.dtype == DType::kOther ? a.dtype_label : std::string(dtype_name(a.dtype));
}

void require_contiguous(const ArrayView& a, const char* name) {
  if (!a.contiguous) {
    throw std::invalid_argument(std::string(name) + " must be C-contiguous, got a strided view of shape " +
                                shape_str(a) + " (copy it with np.ascontiguousarray / .contiguous())");
  }
}

void require_device(const ArrayView& a, const char* name, Device device) {
  if (a.device != device) {
    throw std::invalid_argument(std::string(name) + " is on " + device_name(a.device) + " but x is on " +
                                device_name(device));
  }
}

[[noreturn, maybe_unused]] void no_cuda(const char* what) {
  throw std::runtime_error(std::string(what) +
                           ": got CUDA arrays, but healthai was built without CUDA "
                           "(rebuild with HEALTHAI_WITH_CUDA=ON on a machine with the CUDA toolkit)");
}

}  // namespace

const char* dtype_name(DType t) {
  switch (t) {
    case DType::kInt32: return "int32";
    case DType::kInt64: return "int64";
    case DType::kFloat32: return "float32";
    case DType::kFloat64: return "float64";
    default: return "unsupported";
  }
}

int64_t ArrayView::numel() const {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= shape[i];
  return n;
}

Reduce parse_reduce(const std::string& reduce) {
  if (reduce == "sum") return Reduce::kSum;
  if (reduce == "mean") return Reduce::kMean;
  if (reduce == "max") return Reduce::kMax;
  throw std::invalid_argument("reduce must be one of 'sum', 'mean', 'max', got '" + reduce + "'");
}

CsrProblem check_structure(const ArrayView& indptr, const ArrayView& indices, const ArrayView& weights,
                           const ArrayView& x, Reduce reduce) {
  CsrProblem p;
  p.reduce = reduce;
  if (x.ndim != 2 && x.ndim != 3) {
    throw std::invalid_argument("x must have shape [N, F] or [B, N, F], got " + std::to_string(x.ndim) +
                                " dimensions with shape " + shape_str(x));
  }
  if (x.dtype != DType::kFloat32 && x.dtype != DType::kFloat64) {
    throw std::invalid_argument("x must be float32 or float64, got " + type_of(x));
  }
  p.device = x.device;
  p.scalar_type = x.dtype;
  p.batch = x.ndim == 3 ? x.shape[0] : 1;
  p.n_cols = x.dim(-2);
  p.feat = x.dim(-1);
  require_contiguous(x, "x");

  if (indptr.ndim != 1) {
    throw std::invalid_argument("indptr must be 1-D, got shape " + shape_str(indptr));
  }
  if (indptr.dtype != DType::kInt32 && indptr.dtype != DType::kInt64) {
    throw std::invalid_argument("indptr must be int32 or int64, got " + type_of(indptr));
  }
  if (indptr.shape[0] < 1) {
    throw std::invalid_argument("indptr must have n_rows + 1 >= 1 elements, got 0");
  }
  require_device(indptr, "indptr", p.device);
  require_contiguous(indptr, "indptr");
  p.index_type = indptr.dtype;
  p.n_rows = indptr.shape[0] - 1;

  if (indices.ndim != 1) {
    throw std::invalid_argument("indices must be 1-D, got shape " + shape_str(indices));
  }
  if (indices.dtype != indptr.dtype) {
    throw std::invalid_argument("indices must have the dtype of indptr (" + type_of(indptr) + "), got " +
                                type_of(indices));
  }
  require_device(indices, "indices", p.device);
  require_contiguous(indices, "indices");
  p.nnz = indices.shape[0];

  if (weights.present) {
    if (weights.ndim != 1) {
      throw std::invalid_argument("weights must be 1-D, got shape " + shape_str(weights));
    }
    if (weights.dtype != x.dtype) {
      throw std::invalid_argument("weights must have the dtype of x (" + type_of(x) + "), got " +
                                  type_of(weights));
    }
    if (weights.shape[0] != p.nnz) {
      throw std::invalid_argument("weights has " + std::to_string(weights.shape[0]) +
                                  " elements but indices has " + std::to_string(p.nnz));
    }
    require_device(weights, "weights", p.device);
    require_contiguous(weights, "weights");
    p.weights = weights.data;
  }
  p.indptr = indptr.data;
  p.indices = indices.data;
  return p;
}

void check_output(const ArrayView& arr, const char* name, DType dtype, const CsrProblem& p,
                  const int64_t* shape, int ndim) {
  bool same = arr.ndim == ndim;
  for (int i = 0; same && i < ndim; ++i) same = arr.shape[i] == shape[i];
  if (!same) {
    ArrayView want;
    want.ndim = ndim;
    for (int i = 0; i < ndim; ++i) want.shape[i] = shape[i];
    throw std::invalid_argument(std::string(name) + " must have shape " + shape_str(want) + ", got " +
                                shape_str(arr));
  }
  if (arr.dtype != dtype) {
    throw std::invalid_argument(std::string(name) + " must be " + dtype_name(dtype) + ", got " + type_of(arr));
  }
  require_device(arr, name, p.device);
  require_contiguous(arr, name);
}

void check_values(const CsrProblem& p, int num_threads, void* stream) {
  if (p.device == Device::kCUDA) {
#ifdef HEALTHAI_WITH_CUDA
    cuda::check_values_cuda(p, stream);
    return;
#else
    (void)stream;
    no_cuda("aggregate");
#endif
  }
  cpu::check_values_cpu(p, num_threads > 0 ? num_threads : get_num_threads());
}

int64_t check_graph(const CsrProblem& p, int num_threads) {
  if (p.device != Device::kCPU) throw std::invalid_argument("check_graph runs on CPU arrays only");
  return cpu::check_graph_cpu(p, num_threads > 0 ? num_threads : get_num_threads());
}

void check_argmax(const CsrProblem& p, const int64_t* argmax, int num_threads, void* stream) {
  ArgmaxFault bad;
  if (p.device == Device::kCUDA) {
#ifdef HEALTHAI_WITH_CUDA
    bad = cuda::check_argmax_cuda(p, argmax, stream);
#else
    (void)stream;
    no_cuda("aggregate_backward");
#endif
  } else {
    bad = cpu::check_argmax_cpu(p, argmax, num_threads > 0 ? num_threads : get_num_threads());
  }
  if (bad.at < 0) return;
  const std::string entry = "argmax[" + std::to_string(bad.at) + "]=" + std::to_string(bad.value);
  if (bad.value < -1 || bad.value >= p.nnz) {
    throw std::out_of_range(entry + " is not an edge id in [-1, " + std::to_string(p.nnz) + ")");
  }
  const int64_t row = (bad.at / std::max<int64_t>(p.feat, 1)) % std::max<int64_t>(p.n_rows, 1);
  throw std::out_of_range(entry + " is not an edge of its row " + std::to_string(row) + ": expected -1 or an edge id in [" +
                          std::to_string(bad.row_begin) + ", " + std::to_string(bad.row_end) + ")");
}

void aggregate_forward(const CsrProblem& p, const void* x, void* out, int64_t* argmax, int num_threads,
                       void* stream) {
  if (p.device == Device::kCUDA) {
#ifdef HEALTHAI_WITH_CUDA
    cuda::aggregate_forward_cuda(p, x, out, argmax, stream);
    return;
#else
    (void)stream;
    no_cuda("aggregate");
#endif
  }
  cpu::aggregate_forward_cpu(p, x, out, argmax, num_threads > 0 ? num_threads : get_num_threads());
}

void aggregate_backward(const CsrProblem& p, const CsrTranspose& t, const void* grad_out, const void* x,
                        const int64_t* argmax, void* grad_x, void* grad_w, int num_threads, void* stream) {
  if (p.device == Device::kCUDA) {
#ifdef HEALTHAI_WITH_CUDA
    cuda::aggregate_backward_cuda(p, t, grad_out, x, argmax, grad_x, grad_w, stream);
    return;
#else
    (void)stream;
    no_cuda("aggregate_backward");
#endif
  }
  cpu::aggregate_backward_cpu(p, t, grad_out, x, argmax, grad_x, grad_w,
                              num_threads > 0 ? num_threads : get_num_threads());
}

void csr_transpose(const CsrProblem& p, void* t_indptr, void* t_indices, void* t_edge_ids, int num_threads,
                   void* stream) {
  (void)num_threads;
  if (p.device == Device::kCUDA) {
#ifdef HEALTHAI_WITH_CUDA
    cuda::csr_transpose_cuda(p, t_indptr, t_indices, t_edge_ids, stream);
    return;
#else
    (void)stream;
    no_cuda("csr_transpose");
#endif
  }
  cpu::csr_transpose_cpu(p, t_indptr, t_indices, t_edge_ids);
}

void aggregate_forward_rows(const CsrProblem& p, const void* x, void* out, int64_t* argmax, int64_t r0,
                            int64_t r1) {
  if (p.device != Device::kCPU) throw std::invalid_argument("aggregate_forward_rows runs on CPU arrays only");
  if (r0 < 0 || r0 > r1 || r1 > p.n_rows) {
    throw std::invalid_argument("row range [" + std::to_string(r0) + ", " + std::to_string(r1) +
                                ") is not inside [0, " + std::to_string(p.n_rows) + ")");
  }
  if (r0 == r1 || p.feat == 0 || p.batch == 0) return;
  cpu::forward_rows_cpu(p, x, out, argmax, r0, r1);
}

std::vector<int64_t> row_chunks(const CsrProblem& p, int n_chunks) {
  if (n_chunks < 1) throw std::invalid_argument("n_chunks must be >= 1, got " + std::to_string(n_chunks));
  return cpu::balanced_row_chunks(p, n_chunks);
}

void permute_rows(const CsrProblem& p, const void* x, const int64_t* perm, void* out, int num_threads) {
  const int64_t row_bytes = p.feat * (p.scalar_type == DType::kFloat32 ? 4 : 8);
  const int64_t n = p.n_cols;
  const int threads = cpu::useful_threads(p.batch * n * p.feat, num_threads > 0 ? num_threads : get_num_threads());
  const int64_t tasks = int64_t{threads} * 16;
  cpu::parallel_for(tasks, threads, [&](int64_t k) {
    for (int64_t b = 0; b < p.batch; ++b) {
      const char* src = static_cast<const char*>(x) + b * n * row_bytes;
      char* dst = static_cast<char*>(out) + b * n * row_bytes;
      for (int64_t i = n * k / tasks; i < n * (k + 1) / tasks; ++i) {
        std::memcpy(dst + perm[i] * row_bytes, src + i * row_bytes, row_bytes);
      }
    }
  });
}

void set_num_threads(int n) {
  if (n < 1) throw std::invalid_argument("num_threads must be >= 1, got " + std::to_string(n));
  g_num_threads = n;
}

int get_num_threads() {
  const int n = g_num_threads.load();
  return n > 0 ? n : cpu::hardware_threads();
}

bool built_with_cuda() {
#ifdef HEALTHAI_WITH_CUDA
  return true;
#else
  return false;
#endif
}

std::string cuda_version() {
#ifdef HEALTHAI_WITH_CUDA
  return HEALTHAI_CUDA_VERSION;
#else
  return "";
#endif
}

}  // namespace healthai
