// ONNX Runtime custom-op library: domain "healthai" (opset 1), op "CsrAggregate" on the CPU and (when
// built with CUDA) the CUDA execution provider. Same checks and kernels as the pybind11 module.
//   inputs : indptr int64[R+1], indices int64[E], weights T[E] (optional; empty = unweighted),
//            x T[N, F] or T[B, N, F]        (T = float or double)
//   attr   : reduce = "sum" | "mean" | "max"  (default "sum")
//   output : out T[R, F] or T[B, R, F]
// Bad input returns an ORT_INVALID_ARGUMENT status whose message names the argument and the value.
#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>
#undef ORT_API_MANUAL_INIT

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
      healthai::check_values(p, 0, stream);
      std::vector<int64_t> out_shape(x.shape, x.shape + x.ndim);
      out_shape[x.ndim - 2] = p.n_rows;
      Ort::UnownedValue out = ctx.GetOutput(0, out_shape);
      healthai::aggregate_forward(p, x.data, out.GetTensorMutableData<T>(), nullptr, 0, stream);
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

std::mutex g_mutex;
std::vector<Ort::CustomOpDomain> g_domains;  // must outlive every session using them

}  // namespace

extern "C" OrtStatus* ORT_API_CALL RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  const OrtApi* api = api_base->GetApi(ORT_API_VERSION);
  if (api == nullptr) return nullptr;  // cannot even build a status; ORT reports the failed load
  Ort::InitApi(api);
  static CsrAggregateOp<float> cpu_f32(Device::kCPU);
  static CsrAggregateOp<double> cpu_f64(Device::kCPU);
#ifdef HEALTHAI_WITH_CUDA
  static CsrAggregateOp<float> cuda_f32(Device::kCUDA);
  static CsrAggregateOp<double> cuda_f64(Device::kCUDA);
#endif
  try {
    Ort::CustomOpDomain domain("healthai");
    domain.Add(&cpu_f32);
    domain.Add(&cpu_f64);
#ifdef HEALTHAI_WITH_CUDA
    domain.Add(&cuda_f32);
    domain.Add(&cuda_f64);
#endif
    Ort::UnownedSessionOptions session_options(options);
    session_options.Add(domain);
    std::lock_guard<std::mutex> lock(g_mutex);
    g_domains.push_back(std::move(domain));
  } catch (const std::exception& e) {
    return api->CreateStatus(ORT_FAIL, e.what());
  }
  return nullptr;
}
