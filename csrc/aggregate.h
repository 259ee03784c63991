// CSR aggregation: shared types, argument checks and the device-dispatching entry points.
// Both bindings (pybind11: csrc/bindings.cpp, ONNX Runtime: csrc/ort/) call only what is declared here.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace healthai {

enum class DType { kInt32, kInt64, kFloat32, kFloat64, kOther };
enum class Device { kCPU, kCUDA };
enum class Reduce { kSum, kMean, kMax };

const char* dtype_name(DType t);
Reduce parse_reduce(const std::string& reduce);  // throws std::invalid_argument

// A borrowed n-d array (numpy, DLPack or ONNX Runtime tensor). Not owning.
struct ArrayView {
  void* data = nullptr;
  DType dtype = DType::kOther;
  std::string dtype_label;  // for messages when dtype == kOther, e.g. "uint8"
  Device device = Device::kCPU;
  int ndim = 0;
  int64_t shape[4] = {0, 0, 0, 0};
  bool contiguous = true;
  bool present = true;  // false for an omitted optional argument
  int64_t numel() const;
  int64_t dim(int i) const { return shape[i < 0 ? ndim + i : i]; }
};

// A checked problem: raw pointers plus sizes. x is [batch, n_cols, feat], out is [batch, n_rows, feat].
struct CsrProblem {
  const void* indptr = nullptr;
  const void* indices = nullptr;
  const void* weights = nullptr;  // nullptr: every edge weighs 1
  int64_t n_rows = 0, n_cols = 0, nnz = 0, batch = 1, feat = 0;
  DType index_type = DType::kInt64;
  DType scalar_type = DType::kFloat32;
  Device device = Device::kCPU;
  Reduce reduce = Reduce::kSum;
};

// The transposed structure used by the backward pass: CSR of A^T with, per entry, the edge id in A.
struct CsrTranspose {
  const void* indptr = nullptr;   // [n_cols + 1]
  const void* indices = nullptr;  // [nnz] row ids of A
  const void* edge_ids = nullptr; // [nnz] position of the entry in A's indices/weights
};

// Checks shapes, dtypes, contiguity and devices of the graph arguments; x gives n_cols/batch/feat.
// Throws std::invalid_argument (-> ValueError) naming the argument and the value received.
CsrProblem check_structure(const ArrayView& indptr, const ArrayView& indices, const ArrayView& weights,
                           const ArrayView& x, Reduce reduce);
// Checks the values of indptr and indices (monotone, in range); CPU or CUDA by p.device. CUDA checks
// run on `stream` (the caller's stream; there is deliberately no default) and synchronise it.
// Throws std::invalid_argument, or std::out_of_range (-> IndexError) for a bad node index.
void check_values(const CsrProblem& p, int num_threads, void* stream);
// Checks a CPU graph whose x is not known yet (a constant graph, checked once): indptr as check_values
// does, indices >= 0. Returns the largest node index (-1 without edges): check_values then passes for
// every x with more nodes than that. Throws like check_values.
int64_t check_graph(const CsrProblem& p, int num_threads);
// Checks an argmax from the forward pass (int64, shape of out) before the backward uses it as an
// edge id: every entry must be -1 or an edge of its own row. Same checks and message on every
// device (CUDA on `stream`). Throws std::out_of_range (-> IndexError) naming the first bad entry.
void check_argmax(const CsrProblem& p, const int64_t* argmax, int num_threads, void* stream);

// The first argmax entry that fails check_argmax, as found by the CPU or CUDA scan (at < 0: none).
struct ArgmaxFault {
  int64_t at = -1;            // flat position in argmax
  int64_t value = 0;          // argmax[at]
  int64_t row_begin = 0;      // edges of the entry's row: [row_begin, row_end)
  int64_t row_end = 0;
};
// Checks that `arr` is a contiguous array of `dtype` on p.device with the given shape.
void check_output(const ArrayView& arr, const char* name, DType dtype, const CsrProblem& p,
                  const int64_t* shape, int ndim);

// Forward: out[b, i, :] = reduce_e w[e] * x[b, indices[e], :] over e in row i. Empty rows give 0.
// argmax (int64, shape of out, only for max) receives the edge id e chosen, or -1 for an empty row.
void aggregate_forward(const CsrProblem& p, const void* x, void* out, int64_t* argmax, int num_threads,
                       void* stream);
// Backward. grad_x (optional, [batch, n_cols, feat]) needs the transpose; grad_w (optional, [nnz]).
void aggregate_backward(const CsrProblem& p, const CsrTranspose& t, const void* grad_out, const void* x,
                        const int64_t* argmax, void* grad_x, void* grad_w, int num_threads, void* stream);
// Builds the transpose of a checked CPU or CUDA graph into caller-allocated arrays of p.index_type.
void csr_transpose(const CsrProblem& p, void* t_indptr, void* t_indices, void* t_edge_ids, int num_threads,
                   void* stream);

// CPU, no threading: rows [r0, r1) of every batch item on the calling thread (for callers that split
// rows over their own thread pool, e.g. ONNX Runtime's; chunk them with row_chunks).
void aggregate_forward_rows(const CsrProblem& p, const void* x, void* out, int64_t* argmax, int64_t r0,
                            int64_t r1);
// Row boundaries of n_chunks chunks of about equal work (edges + rows) of a checked CPU graph.
std::vector<int64_t> row_chunks(const CsrProblem& p, int n_chunks);

// CPU: out[b, perm[i], :] = x[b, i, :] for x viewed as [batch, n_cols, feat] (perm checked by the caller).
void permute_rows(const CsrProblem& p, const void* x, const int64_t* perm, void* out, int num_threads);

// Thread count used when a call passes num_threads <= 0. Default: all hardware threads.
void set_num_threads(int n);
int get_num_threads();

bool built_with_cuda();
std::string cuda_version();  // "" without CUDA

}  // namespace healthai

// Calls FN<scalar, index>(args...) for the problem's dtypes: the one dispatch shared by CPU and CUDA.
#define HEALTHAI_DISPATCH_TYPES(p, FN, ...)                                                   \
  do {                                                                                        \
    const bool f32 = (p).scalar_type == ::healthai::DType::kFloat32;                          \
    const bool i32 = (p).index_type == ::healthai::DType::kInt32;                             \
    if (f32 && i32) FN<float, int32_t>(__VA_ARGS__);                                          \
    else if (f32) FN<float, int64_t>(__VA_ARGS__);                                            \
    else if (i32) FN<double, int32_t>(__VA_ARGS__);                                           \
    else FN<double, int64_t>(__VA_ARGS__);                                                    \
  } while (0)

