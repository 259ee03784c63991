// ONNX Runtime custom-op library: domain "healthai" (opset 1), op "CsrAggregate" on the CPU and (when
// built with CUDA) the CUDA execution provider. Same checks and kernels as the pybind11 module. The
// library's other ops, "Softplus" and "QuantileHead", are in softplus_op.cpp and quantile_head_op.cpp;
// RegisterCustomOps below registers all three.
//   inputs : indptr int64[R+1], indices int64[E], weights T[E] (optional; empty = unweighted),
//            x T[N, F] or T[B, N, F]        (T = float or double)
//   attr   : reduce = "sum" | "mean" | "max"  (default "sum")
//   output : out T[R, F] or T[B, R, F]
// Bad input returns an ORT_INVALID_ARGUMENT status whose message names the argument and the value.
// A graph stored in the model (constant initializers) is checked once per kernel (see GraphCheck); a
// bad one fails the session's creation. A graph fed at run time is checked on every call.
// On the CPU the op runs on ONNX Runtime's intra-op thread pool (KernelContext::ParallelFor, see
// row_chunks.h), so SessionOptions.intra_op_num_threads governs it like every other node; healthai's
// own pool (a separate copy in this library, all hardware threads) is never used here.
// RegisterCustomOps adds one library-wide domain to each session's options (no per-session state).
#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>
#undef ORT_API_MANUAL_INIT

#include <atomic>
#include <climits>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "aggregate.h"
#include "ort/op_status.h"
#include "ort/quantile_head_op.h"
#include "ort/row_chunks.h"
#include "ort/softplus_op.h"

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

// Validation of the graph (indptr, indices) per kernel instance. A graph that is a constant initializer
// cannot change between calls: its values are checked once, when the kernel is created (CPU memory)
// or on the first call (device memory, on that call's stream); after that a call only compares
// x.shape[-2] with the largest node index seen. A graph fed as a runtime input is checked in full on
// every call.
class GraphCheck {
 public:
  GraphCheck(const OrtKernelInfo* info, Device device) {
    Ort::ConstKernelInfo ki(info);
    int c_ptr = 0, c_idx = 0;
    const Ort::ConstValue vp = ki.GetTensorConstantInput(0, &c_ptr);
    const Ort::ConstValue vi = ki.GetTensorConstantInput(1, &c_idx);
    if (!c_ptr || !c_idx) return;  // runtime inputs: full checks on every call
    const ArrayView p = view_of(vp, device), i = view_of(vi, device);
    if (p.ndim != 1 || i.ndim != 1 || p.shape[0] < 1 || p.dtype != DType::kInt64 || i.dtype != DType::kInt64) {
      return;  // check_structure reports it on every call
    }
    constant_ = true;
    graph_.indptr = p.data;
    graph_.indices = i.data;
    graph_.n_rows = p.shape[0] - 1;
    graph_.nnz = i.shape[0];
    graph_.index_type = DType::kInt64;
    graph_.device = device;
    const bool on_cpu = vp.GetTensorMemoryInfo().GetDeviceType() == OrtMemoryInfoDeviceType_CPU &&
                        vi.GetTensorMemoryInfo().GetDeviceType() == OrtMemoryInfoDeviceType_CPU;
    if (on_cpu && device == Device::kCPU) {
      ok_from_n_cols_ = healthai::check_graph(graph_, 1) + 1;  // throws: the session is not created
    }
  }

  // Checks p's values unless they were checked for this graph and this many nodes (or more) already.
  void check(const healthai::CsrProblem& p, void* stream) {
    const bool same_graph = constant_ && p.indptr == graph_.indptr && p.indices == graph_.indices &&
                            p.n_rows == graph_.n_rows && p.nnz == graph_.nnz;
    if (same_graph && p.n_cols >= ok_from_n_cols_.load(std::memory_order_acquire)) return;
    healthai::check_values(p, 1, stream);
    if (!same_graph) return;
    // every index < n_cols: fine for any x with at least n_cols nodes (keep the smallest such n_cols)
    int64_t seen = ok_from_n_cols_.load(std::memory_order_relaxed);
    while (p.n_cols < seen && !ok_from_n_cols_.compare_exchange_weak(seen, p.n_cols, std::memory_order_acq_rel)) {
    }
  }

 private:
  bool constant_ = false;
  healthai::CsrProblem graph_;
  std::atomic<int64_t> ok_from_n_cols_{INT64_MAX};  // values hold for every x.shape[-2] >= this
};

template <typename T>
struct CsrAggregateKernel {
  CsrAggregateKernel(const OrtApi& api, const OrtKernelInfo* info, Device device)
      : api_(api), device_(device), graph_check_(info, device) {
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
      graph_check_.check(p, stream);
      std::vector<int64_t> out_shape(x.shape, x.shape + x.ndim);
      out_shape[x.ndim - 2] = p.n_rows;
      Ort::UnownedValue out = ctx.GetOutput(0, out_shape);
      if (device_ == Device::kCPU) {
        healthai::ort::forward_on_ort_threads(ctx, p, x.data, out.GetTensorMutableData<T>(), sizeof(T));
      } else {
        healthai::aggregate_forward(p, x.data, out.GetTensorMutableData<T>(), nullptr, 0, stream);
      }
      return nullptr;
    } catch (...) {
      return healthai::ort::status_of_current_exception(api_, "CsrAggregate");
    }
  }

 private:
  const OrtApi& api_;
  Device device_;
  std::string reduce_;
  GraphCheck graph_check_;
};

template <typename T>
struct CsrAggregateOp : Ort::CustomOpBase<CsrAggregateOp<T>, CsrAggregateKernel<T>, true> {
  explicit CsrAggregateOp(Device device) : device_(device) {}

  // A constant graph is checked here: a bad one fails the session's creation with the message.
  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const {
    *kernel = nullptr;
    try {
      *kernel = new CsrAggregateKernel<T>(api, info, device_);
      return nullptr;
    } catch (...) {
      return healthai::ort::status_of_current_exception(api, "CsrAggregate");
    }
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
    healthai::ort::add_softplus_ops(*d);
    healthai::ort::add_quantile_head_ops(*d);
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
