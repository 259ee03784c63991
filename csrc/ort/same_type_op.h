// What the library's elementwise-typed ops (Softplus, QuantileHead) share: every input and the one
// output have the op's element type T, the kernel runs on the CPU or the CUDA execution provider, and
// each op is registered for float and double on the CPU (and CUDA when built with it).
#pragma once

#include <onnxruntime_cxx_api.h>

#include <cstddef>

namespace healthai::ort {

enum class Where { kCPU, kCUDA };

template <typename Op, typename Kernel, typename T, size_t Inputs>
struct SameTypeOp : Ort::CustomOpBase<Op, Kernel, true> {
  explicit SameTypeOp(Where where) : where_(where) {}

  const char* GetExecutionProviderType() const {
    return where_ == Where::kCUDA ? "CUDAExecutionProvider" : "CPUExecutionProvider";
  }
  size_t GetInputTypeCount() const { return Inputs; }
  ONNXTensorElementDataType GetInputType(size_t) const { return Ort::TypeToTensorType<T>::type; }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return Ort::TypeToTensorType<T>::type; }
  Where where() const { return where_; }

 private:
  Where where_;
};

// Adds Op<float> and Op<double> for the CPU (and the CUDA EP when built with CUDA) to `domain`. The
// ops are static: they outlive every session, as ORT requires.
template <template <typename> class Op>
void add_float_and_double(Ort::CustomOpDomain& domain) {
  static Op<float> cpu_f32(Where::kCPU);
  static Op<double> cpu_f64(Where::kCPU);
  domain.Add(&cpu_f32);
  domain.Add(&cpu_f64);
#ifdef HEALTHAI_WITH_CUDA
  static Op<float> cuda_f32(Where::kCUDA);
  static Op<double> cuda_f64(Where::kCUDA);
  domain.Add(&cuda_f32);
  domain.Add(&cuda_f64);
#endif
}

}  // namespace healthai::ort
