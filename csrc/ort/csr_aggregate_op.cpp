// ONNX Runtime custom-op library: domain "healthai" (opset 1), op "CsrAggregate" on the CPU and (when
// built with CUDA) the CUDA execution provider. Same checks and kernels as the pybind11 module.
//   inputs : indptr int64[R+1], indices int64[E], weights T[E] (optional; empty = unweighted),
//            x T[N, F] or T[B, N, F]        (T = float or double)
//   attr   : reduce = "sum" | "mean" | "max"  (default "sum")
//   output : out T[R, F] or T[B, R, F]
// Bad input returns an ORT_INVALID_ARGUMENT status whose message names the argument and the value.
// On the CPU the op runs on ONNX Runtime's intra-op thread pool (KernelContext::ParallelFor), so
// SessionOptions.intra_op_num_threads governs it like every other node; healthai's own pool (a
// separate copy in this library, all hardware threads) is never used here.
// RegisterCustomOps adds one library-wide domain to each session's options (no per-session state).
#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>
#undef ORT_API_MANUAL_INIT

#include <algorithm>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "aggregate.h"

namespace {

using healthai::ArrayView;
using healthai::Device;
using healthai::DType;

DType dtype_of(ONNXTensorElementDataType t) {
  switch (t) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: return DType::kInt32;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: return DType::kInt64;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return DType::kFloat32;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE: return DType::kFloat64;
    default: return DType::kOther;
  }
}

ArrayView view_of(const OrtValue* value, Device device) {
  ArrayView v;
  if (value == nullptr) {
    v.present = false;
    return v;
  }
  Ort::ConstValue cv{value};
  const auto info = cv.GetTensorTypeAndShapeInfo();
  const std::vector<int64_t> shape = info.GetShape();
  if (shape.size() > 4) throw std::invalid_argument("input has more than 4 dimensions");
  v.ndim = static_cast<int>(shape.size());
  for (int i = 0; i < v.ndim; ++i) v.shape[i] = shape[i];
  v.dtype = dtype_of(info.GetElementType());
  if (v.dtype == DType::kOther) v.dtype_label = "ONNX element type " + std::to_string(info.GetElementType());
  v.device = device;
  v.data = const_cast<void*>(cv.GetTensorRawData());
  return v;
}

constexpr int64_t kWorkPerTask = 1 << 16;  // multiply-adds below which another task is not worth it
constexpr int64_t kMaxTasks = 256;

// One ParallelFor task: rows [r0, r1) of one batch item, run as a batch-1 sub-problem whose indptr
// starts at r0 (edge offsets stay absolute, so indices/weights are shared) on the calling thread.
struct RowChunks {
  const healthai::CsrProblem* p = nullptr;
  const char* x = nullptr;
  char* out = nullptr;
  int64_t elem = 0;  // bytes per scalar
  std::vector<int64_t> bounds;  // row boundaries, size n_chunks + 1
  bool failed = false;

  static void run(void* self, size_t task) {
    auto* c = static_cast<RowChunks*>(self);
    const healthai::CsrProblem& p = *c->p;
    const int64_t n_chunks = static_cast<int64_t>(c->bounds.size()) - 1;
    const int64_t b = static_cast<int64_t>(task) / n_chunks, k = static_cast<int64_t>(task) % n_chunks;
    const int64_t r0 = c->bounds[k], r1 = c->bounds[k + 1];
    if (r0 == r1) return;
    healthai::CsrProblem sub = p;
    sub.indptr = static_cast<const int64_t*>(p.indptr) + r0;
    sub.n_rows = r1 - r0;
    sub.batch = 1;
    try {
      healthai::aggregate_forward(sub, c->x + b * p.n_cols * p.feat * c->elem,
                                  c->out + (b * p.n_rows + r0) * p.feat * c->elem, nullptr, 1, nullptr);
    } catch (...) {
      c->failed = true;  // not reachable after check_structure/check_values; reported by the caller
    }
  }
};

// Edge-balanced row boundaries: rows [0, r) cost indptr[r] + r units.
std::vector<int64_t> balanced_rows(const healthai::CsrProblem& p, int64_t n_chunks) {
  const auto* indptr = static_cast<const int64_t*>(p.indptr);
  const int64_t total = p.nnz + p.n_rows;
  std::vector<int64_t> bounds(n_chunks + 1, p.n_rows);
  bounds[0] = 0;
  for (int64_t k = 1; k < n_chunks; ++k) {
    const int64_t target = total * k / n_chunks;
    int64_t lo = bounds[k - 1], hi = p.n_rows;  // first r with indptr[r] + r >= target
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo) / 2;
      if (indptr[mid] + mid < target) lo = mid + 1; else hi = mid;
    }
    bounds[k] = lo;
  }
  return bounds;
}

void forward_on_ort_threads(Ort::KernelContext& ctx, const healthai::CsrProblem& p, const void* x, void* out,
                            int64_t elem) {
  if (p.n_rows == 0 || p.feat == 0 || p.batch == 0) return;
  const int64_t work = (p.nnz + p.n_rows) * p.feat * p.batch;
  const int64_t tasks = std::clamp<int64_t>(work / kWorkPerTask, 1, kMaxTasks);
  if (tasks == 1 || p.index_type != DType::kInt64) {  // the op declares int64 indices; be safe anyway
    healthai::aggregate_forward(p, x, out, nullptr, 1, nullptr);
    return;
  }
  RowChunks chunks;
  chunks.p = &p;
  chunks.x = static_cast<const char*>(x);
  chunks.out = static_cast<char*>(out);
  chunks.elem = elem;
  chunks.bounds = balanced_rows(p, std::clamp<int64_t>(tasks / p.batch, 1, p.n_rows));
  const size_t n = static_cast<size_t>(p.batch) * (chunks.bounds.size() - 1);
  ctx.ParallelFor(&RowChunks::run, n, 0, &chunks);
  if (chunks.failed) throw std::runtime_error("a row chunk failed");
}

template <typename T>
struct CsrAggregateKernel {
  CsrAggregateKernel(const OrtApi& api, const OrtKernelInfo* info, Device device) : api_(api), device_(device) {
    char buf[16] = {0};
    size_t size = sizeof(buf);
    OrtStatus* status = api.KernelInfoGetAttribute_string(info, "reduce", buf, &size);
    if (status != nullptr) {  // absent (default "sum") or longer than any valid value
      const bool absent = api.GetErrorCode(status) == ORT_FAIL && size <= sizeof(buf);
      api.ReleaseStatus(status);
      reduce_ = absent ? "sum" : "<too long>";
    } else {
      reduce_ = std::string(buf);
    }
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    try {
      Ort::KernelContext ctx(context);
      void* stream = device_ == Device::kCUDA ? ctx.GetGPUComputeStream() : nullptr;
      const ArrayView indptr = view_of(ctx.GetInput(0), device_);
      const ArrayView indices = view_of(ctx.GetInput(1), device_);
      ArrayView weights = view_of(ctx.GetInput(2), device_);
      const ArrayView x = view_of(ctx.GetInput(3), device_);
      if (weights.present && weights.ndim == 1 && weights.shape[0] == 0 && indices.ndim == 1 &&
          indices.shape[0] != 0) {
        weights.present = false;  // an empty weights tensor means "unweighted"
      }
      const healthai::CsrProblem p =
          healthai::check_structure(indptr, indices, weights, x, healthai::parse_reduce(reduce_));
      healthai::check_values(p, 1, stream);
      std::vector<int64_t> out_shape(x.shape, x.shape + x.ndim);
      out_shape[x.ndim - 2] = p.n_rows;
      Ort::UnownedValue out = ctx.GetOutput(0, out_shape);
      if (device_ == Device::kCPU) {
        forward_on_ort_threads(ctx, p, x.data, out.GetTensorMutableData<T>(), sizeof(T));
      } else {
        healthai::aggregate_forward(p, x.data, out.GetTensorMutableData<T>(), nullptr, 0, stream);
      }
      return nullptr;
    } catch (const std::invalid_argument& e) {
      return api_.CreateStatus(ORT_INVALID_ARGUMENT, (std::string("CsrAggregate: ") + e.what()).c_str());
    } catch (const std::out_of_range& e) {
      return api_.CreateStatus(ORT_INVALID_ARGUMENT, (std::string("CsrAggregate: ") + e.what()).c_str());
    } catch (const std::exception& e) {
      return api_.CreateStatus(ORT_FAIL, (std::string("CsrAggregate: ") + e.what()).c_str());
    }
  }

 private:
  const OrtApi& api_;
  Device device_;
  std::string reduce_;
};

template <typename T>
struct CsrAggregateOp : Ort::CustomOpBase<CsrAggregateOp<T>, CsrAggregateKernel<T>, true> {
  explicit CsrAggregateOp(Device device) : device_(device) {}

  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const {
    *kernel = new CsrAggregateKernel<T>(api, info, device_);
    return nullptr;
  }
  const char* GetName() const { return "CsrAggregate"; }
  const char* GetExecutionProviderType() const {
    return device_ == Device::kCUDA ? "CUDAExecutionProvider" : "CPUExecutionProvider";
  }
  size_t GetInputTypeCount() const { return 4; }
  ONNXTensorElementDataType GetInputType(size_t index) const {
    return index < 2 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64 : Ort::TypeToTensorType<T>::type;
  }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const {
    return index == 2 ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return Ort::TypeToTensorType<T>::type; }

 private:
  Device device_;
};

// One domain for the library, made on the first registration and shared by every session that
// registers the library afterwards (ORT keeps a pointer: it must outlive them all, so it is never
// freed). A domain per registration would grow without bound when sessions are re-created.
const Ort::CustomOpDomain& library_domain() {
  static CsrAggregateOp<float> cpu_f32(Device::kCPU);
  static CsrAggregateOp<double> cpu_f64(Device::kCPU);
#ifdef HEALTHAI_WITH_CUDA
  static CsrAggregateOp<float> cuda_f32(Device::kCUDA);
  static CsrAggregateOp<double> cuda_f64(Device::kCUDA);
#endif
  static const Ort::CustomOpDomain* domain = [] {
    auto* d = new Ort::CustomOpDomain("healthai");
    d->Add(&cpu_f32);
    d->Add(&cpu_f64);
#ifdef HEALTHAI_WITH_CUDA
    d->Add(&cuda_f32);
    d->Add(&cuda_f64);
#endif
    return d;
  }();
  return *domain;
}

}  // namespace

extern "C" OrtStatus* ORT_API_CALL RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  const OrtApi* api = api_base->GetApi(ORT_API_VERSION);
  if (api == nullptr) return nullptr;  // cannot even build a status; ORT reports the failed load
  static std::once_flag init_once;
  try {
    std::call_once(init_once, [api] { Ort::InitApi(api); });
    Ort::UnownedSessionOptions session_options(options);
    session_options.Add(library_domain());
  } catch (const std::exception& e) {
    return api->CreateStatus(ORT_FAIL, e.what());
  }
  return nullptr;
}
