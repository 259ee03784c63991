// Host adapters of the CUDA aggregation: type dispatch, stream, scratch memory, checks and messages.
// Kernels and launches are in aggregate_cuda.cu.
#include "cuda/aggregate_cuda.h"

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "cpu/aggregate_cpu.h"
#include "cuda/aggregate_cuda.cuh"

namespace healthai::cuda {
namespace {

void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

// Copies `bytes` from the device to the host on the caller's stream `s` and waits for it (never the
// legacy default stream: that would order against unrelated work and not against the caller's).
void read_back(void* host, const void* device, size_t bytes, cudaStream_t s, const char* what) {
  check_cuda(cudaMemcpyAsync(host, device, bytes, cudaMemcpyDeviceToHost, s), what);
  check_cuda(cudaStreamSynchronize(s), what);
}

template <typename T, typename I>
void forward_t(const CsrProblem& p, const void* x, void* out, int64_t* argmax, cudaStream_t s) {
  launch_forward<T, I>(p, static_cast<const T*>(x), static_cast<T*>(out), argmax, s);
}

template <typename T, typename I>
void backward_t(const CsrProblem& p, const CsrTranspose& t, const void* grad_out, const void* x,
                const int64_t* argmax, void* grad_x, void* grad_w, cudaStream_t s) {
  const T* go = static_cast<const T*>(grad_out);
  if (grad_x != nullptr) launch_grad_x<T, I>(p, t, go, argmax, static_cast<T*>(grad_x), s);
  if (grad_w != nullptr && p.nnz > 0) {
    const bool no_output = p.batch * p.n_rows * p.feat == 0;
    if (p.reduce == Reduce::kMax || no_output) {
      check_cuda(cudaMemsetAsync(grad_w, 0, sizeof(T) * p.nnz, s), "zero grad_w");
    }
    launch_grad_w<T, I>(p, go, static_cast<const T*>(x), argmax, static_cast<T*>(grad_w), s);
  }
}

template <typename I>
void check_t(const CsrProblem& p, cudaStream_t s) {
  const I* ip = static_cast<const I*>(p.indptr);
  const I* ix = static_cast<const I*>(p.indices);
  I ends[2];
  unsigned long long host_bad[2];
  unsigned long long* bad = nullptr;
  check_cuda(cudaMemcpyAsync(&ends[0], ip, sizeof(I), cudaMemcpyDeviceToHost, s), "read indptr[0]");
  check_cuda(cudaMemcpyAsync(&ends[1], ip + p.n_rows, sizeof(I), cudaMemcpyDeviceToHost, s), "read indptr[-1]");
  check_cuda(cudaMallocAsync(reinterpret_cast<void**>(&bad), sizeof(host_bad), s), "allocate check flags");
  check_cuda(cudaMemsetAsync(bad, 0xff, sizeof(host_bad), s), "initialise check flags");
  launch_check<I>(p, bad, s);
  check_cuda(cudaMemcpyAsync(host_bad, bad, sizeof(host_bad), cudaMemcpyDeviceToHost, s), "read check flags");
  check_cuda(cudaFreeAsync(bad, s), "free check flags");
  check_cuda(cudaStreamSynchronize(s), "aggregate argument check");
  if (ends[0] != 0) throw std::invalid_argument("indptr[0] must be 0, got " + std::to_string(ends[0]));
  if (host_bad[0] != ~0ull) {
    const int64_t r = static_cast<int64_t>(host_bad[0]);
    I pair[2];
    read_back(pair, ip + r, sizeof(pair), s, "read indptr");
    throw std::invalid_argument("indptr must be non-decreasing: indptr[" + std::to_string(r) + "]=" +
                                std::to_string(pair[0]) + " > indptr[" + std::to_string(r + 1) + "]=" +
                                std::to_string(pair[1]));
  }
  if (static_cast<int64_t>(ends[1]) != p.nnz) {
    throw std::invalid_argument("indptr[-1]=" + std::to_string(ends[1]) + " must equal len(indices)=" +
                                std::to_string(p.nnz));
  }
  if (host_bad[1] != ~0ull) {
    const int64_t e = static_cast<int64_t>(host_bad[1]);
    I v;
    read_back(&v, ix + e, sizeof(I), s, "read indices");
    throw std::out_of_range("indices[" + std::to_string(e) + "]=" + std::to_string(v) + " is out of range for " +
                            std::to_string(p.n_cols) + " nodes (x.shape[-2])");
  }
}

template <typename I>
ArgmaxFault check_argmax_t(const CsrProblem& p, const int64_t* argmax, cudaStream_t s) {
  ArgmaxFault fault;
  if (p.batch * p.n_rows * p.feat == 0) return fault;
  unsigned long long host_bad = 0;
  unsigned long long* bad = nullptr;
  check_cuda(cudaMallocAsync(reinterpret_cast<void**>(&bad), sizeof(host_bad), s), "allocate check flag");
  check_cuda(cudaMemsetAsync(bad, 0xff, sizeof(host_bad), s), "initialise check flag");
  launch_check_argmax<I>(p, argmax, bad, s);
  check_cuda(cudaMemcpyAsync(&host_bad, bad, sizeof(host_bad), cudaMemcpyDeviceToHost, s), "read check flag");
  check_cuda(cudaFreeAsync(bad, s), "free check flag");
  check_cuda(cudaStreamSynchronize(s), "argmax check");
  if (host_bad == ~0ull) return fault;
  fault.at = static_cast<int64_t>(host_bad);
  const int64_t r = (fault.at / p.feat) % p.n_rows;
  I row[2];
  read_back(&fault.value, argmax + fault.at, sizeof(int64_t), s, "read argmax");
  read_back(row, static_cast<const I*>(p.indptr) + r, sizeof(row), s, "read indptr");
  fault.row_begin = row[0];
  fault.row_end = row[1];
  return fault;
}

// The transpose is built once per graph: copy to the host, reuse the CPU code, copy back.
template <typename I>
void transpose_t(const CsrProblem& p, void* t_indptr, void* t_indices, void* t_edge_ids, cudaStream_t s) {
  std::vector<I> ip(p.n_rows + 1), ix(p.nnz), tp(p.n_cols + 1), tr(p.nnz), te(p.nnz);
  check_cuda(cudaMemcpyAsync(ip.data(), p.indptr, sizeof(I) * ip.size(), cudaMemcpyDeviceToHost, s), "copy indptr");
  check_cuda(cudaMemcpyAsync(ix.data(), p.indices, sizeof(I) * ix.size(), cudaMemcpyDeviceToHost, s), "copy indices");
  check_cuda(cudaStreamSynchronize(s), "csr_transpose");
  CsrProblem hp = p;
  hp.indptr = ip.data();
  hp.indices = ix.data();
  hp.device = Device::kCPU;
  cpu::csr_transpose_cpu(hp, tp.data(), tr.data(), te.data());
  check_cuda(cudaMemcpyAsync(t_indptr, tp.data(), sizeof(I) * tp.size(), cudaMemcpyHostToDevice, s), "copy back");
  check_cuda(cudaMemcpyAsync(t_indices, tr.data(), sizeof(I) * tr.size(), cudaMemcpyHostToDevice, s), "copy back");
  check_cuda(cudaMemcpyAsync(t_edge_ids, te.data(), sizeof(I) * te.size(), cudaMemcpyHostToDevice, s), "copy back");
  check_cuda(cudaStreamSynchronize(s), "csr_transpose");  // the host vectors die at return
}

}  // namespace


void aggregate_forward_cuda(const CsrProblem& p, const void* x, void* out, int64_t* argmax, void* stream) {
  HEALTHAI_DISPATCH_TYPES(p, forward_t, p, x, out, argmax, static_cast<cudaStream_t>(stream));
}

void aggregate_backward_cuda(const CsrProblem& p, const CsrTranspose& t, const void* grad_out, const void* x,
                             const int64_t* argmax, void* grad_x, void* grad_w, void* stream) {
  HEALTHAI_DISPATCH_TYPES(p, backward_t, p, t, grad_out, x, argmax, grad_x, grad_w, static_cast<cudaStream_t>(stream));
}

void check_values_cuda(const CsrProblem& p, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  if (p.index_type == DType::kInt32) check_t<int32_t>(p, s);
  else check_t<int64_t>(p, s);
}

ArgmaxFault check_argmax_cuda(const CsrProblem& p, const int64_t* argmax, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  return p.index_type == DType::kInt32 ? check_argmax_t<int32_t>(p, argmax, s) : check_argmax_t<int64_t>(p, argmax, s);
}

void csr_transpose_cuda(const CsrProblem& p, void* t_indptr, void* t_indices, void* t_edge_ids, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  if (p.index_type == DType::kInt32) transpose_t<int32_t>(p, t_indptr, t_indices, t_edge_ids, s);
  else transpose_t<int64_t>(p, t_indptr, t_indices, t_edge_ids, s);
}

}  // namespace healthai::cuda
