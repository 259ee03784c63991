// Host adapter of the CUDA metapopulation engine: copies the checked host problem to the device, runs
// the sub-steps on one stream, copies the state back. Kernels are in metapop_cuda.cu.
#include "cuda/metapop_cuda.h"

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/metapop_cuda.cuh"
#include "metapop_cell.h"

namespace healthai::cuda {
namespace {

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string("metapop CUDA ") + what + ": " + cudaGetErrorString(err));
}

// Device buffers freed on scope exit (also when a later copy or launch throws).
class Buffers {
 public:
  ~Buffers() {
    for (void* d : owned_) cudaFree(d);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }
  cudaStream_t stream() {
    if (stream_ == nullptr) check(cudaStreamCreate(&stream_), "stream");
    return stream_;
  }
  template <typename T>
  T* alloc(int64_t n) {
    void* d = nullptr;
    check(cudaMalloc(&d, sizeof(T) * static_cast<size_t>(n > 0 ? n : 1)), "alloc");
    owned_.push_back(d);
    return static_cast<T*>(d);
  }
  template <typename T>
  T* upload(const T* host, int64_t n) {
    T* d = alloc<T>(n);
    if (n > 0) check(cudaMemcpyAsync(d, host, sizeof(T) * n, cudaMemcpyHostToDevice, stream()), "upload");
    return d;
  }
  template <typename T>
  void download(T* host, const T* dev, int64_t n) {
    if (n > 0) check(cudaMemcpyAsync(host, dev, sizeof(T) * n, cudaMemcpyDeviceToHost, stream()), "download");
  }

 private:
  std::vector<void*> owned_;
  cudaStream_t stream_ = nullptr;
};

MetapopProblem to_device(const MetapopProblem& p, Buffers& b) {
  MetapopProblem d = p;
  const int64_t sched = p.steps * p.n_regions;
  d.indptr = b.upload(p.indptr, p.n_regions + 1);
  d.indices = b.upload(p.indices, p.nnz);
  d.weights = b.upload(p.weights, p.nnz);
  d.population = b.upload(p.population, p.n_regions);
  d.beta = b.upload(p.beta, p.runs);
  d.contact = b.upload(p.contact, sched);
  d.travel = b.upload(p.travel, sched);
  d.vacc = b.upload(p.vacc, sched);
  return d;
}

}  // namespace

void metapop_stochastic_cuda(const MetapopProblem& p, const MetapopState<int32_t>& st) {
  Buffers b;
  const MetapopProblem d = to_device(p, b);
  const int64_t cells = p.n_regions * p.runs;
  MetapopState<int32_t> ds;
  ds.s = b.upload(st.s, cells);
  ds.e = b.upload(st.e, cells);
  ds.i = b.upload(st.i, cells);
  ds.r = b.upload(st.r, cells);
  ds.h = st.h != nullptr ? b.upload(st.h, cells) : nullptr;
  ds.incidence = b.alloc<int32_t>(cells);
  ds.peak_value = b.upload(st.peak_value, cells);
  ds.peak_step = b.upload(st.peak_step, cells);
  int32_t* snapshot = b.alloc<int32_t>(cells);
  cudaStream_t s = b.stream();
  check(cudaMemsetAsync(ds.incidence, 0, sizeof(int32_t) * cells, s), "memset");
  const double dt = 1.0 / p.substeps;
  for (int64_t t = 0; t < p.steps; ++t) {
    for (int sub = 0; sub < p.substeps; ++sub) {
      check(cudaMemcpyAsync(snapshot, ds.i, sizeof(int32_t) * cells, cudaMemcpyDeviceToDevice, s), "snapshot");
      launch_leap(d, ds, snapshot, t, static_cast<uint32_t>((p.step0 + t) * p.substeps + sub), dt,
                  sub == p.substeps - 1, s);
      check(cudaGetLastError(), "leap launch");
    }
  }
  int32_t* host[7] = {st.s, st.e, st.i, st.r, st.incidence, st.peak_value, st.peak_step};
  int32_t* dev[7] = {ds.s, ds.e, ds.i, ds.r, ds.incidence, ds.peak_value, ds.peak_step};
  for (int q = 0; q < 7; ++q) b.download(host[q], dev[q], cells);
  if (st.h != nullptr) b.download(st.h, ds.h, cells);
  check(cudaStreamSynchronize(s), "synchronize");
}

void metapop_deterministic_cuda(const MetapopProblem& p, const MetapopState<double>& st) {
  Buffers b;
  const MetapopProblem d = to_device(p, b);
  const int64_t cells = p.n_regions * p.runs;
  constexpr int kC = metapop::kOdeComponents;  // S, E, I, R, C, H
  std::vector<double> y0(kC * cells, 0.0);
  const double* comp[4] = {st.s, st.e, st.i, st.r};
  for (int q = 0; q < 4; ++q) std::copy(comp[q], comp[q] + cells, y0.begin() + q * cells);
  if (st.h != nullptr) std::copy(st.h, st.h + cells, y0.begin() + 5 * cells);
  const double hosp_frac = st.h != nullptr ? p.hosp_frac : 0.0;
  cudaStream_t s = b.stream();
  double* y = b.upload(y0.data(), kC * cells);
  double* k_prev = b.alloc<double>(kC * cells);
  double* k_cur = b.alloc<double>(kC * cells);
  double* sum = b.alloc<double>(kC * cells);
  double* peak_value = b.upload(st.peak_value, cells);
  int32_t* peak_step = b.upload(st.peak_step, cells);
  check(cudaMemsetAsync(k_prev, 0, sizeof(double) * kC * cells, s), "memset");
  const double h = 1.0 / p.substeps;
  for (int64_t t = 0; t < p.steps; ++t) {
    for (int sub = 0; sub < p.substeps; ++sub) {
      for (int q = 0; q < 4; ++q) {
        launch_rk4_stage(d, y, k_prev, k_cur, sum, q, h, t, hosp_frac, s);
        std::swap(k_prev, k_cur);
      }
      launch_rk4_update(kC * cells, y, sum, h, s);
    }
    launch_peaks(d, y, peak_value, peak_step, t, s);
    check(cudaGetLastError(), "rk4 launch");
  }
  b.download(y0.data(), y, kC * cells);
  b.download(st.peak_value, peak_value, cells);
  b.download(st.peak_step, peak_step, cells);
  check(cudaStreamSynchronize(s), "synchronize");
  double* out[5] = {st.s, st.e, st.i, st.r, st.incidence};
  for (int q = 0; q < 5; ++q) std::copy(y0.begin() + q * cells, y0.begin() + (q + 1) * cells, out[q]);
  if (st.h != nullptr) std::copy(y0.begin() + 5 * cells, y0.begin() + 6 * cells, st.h);
}

}  // namespace healthai::cuda
