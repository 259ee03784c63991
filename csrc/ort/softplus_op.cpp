// healthai.Softplus for ONNX Runtime: see softplus_op.h. The ORT C++ API is initialised by
// RegisterCustomOps (csr_aggregate_op.cpp) before any of these kernels is created.
#define ORT_API_MANUAL_INIT
#include "ort/softplus_op.h"
#undef ORT_API_MANUAL_INIT

#include <algorithm>
#include <type_traits>
#include <vector>

#include "cpu/softplus_cpu.h"
#include "ort/op_status.h"
#ifdef HEALTHAI_WITH_CUDA
#include "cuda/softplus_cuda.h"
#endif

namespace healthai::ort {

namespace {

constexpr int64_t kElementsPerTask = 1 << 15;  // below this, another ORT thread costs more than it saves
constexpr int64_t kMaxTasks = 256;

enum class Where { kCPU, kCUDA };

template <typename T>
void softplus_cpu(const T* x, T* y, int64_t n) {
  if constexpr (std::is_same_v<T, float>) {
    cpu::softplus_f32(x, y, n);
  } else {
    cpu::softplus_f64(x, y, n);
  }
}

template <typename T>
struct Chunks {
  const T* x;
  T* y;
  int64_t n, per_task;
  static void run(void* self, size_t task) {
    const auto* c = static_cast<const Chunks*>(self);
    const int64_t begin = static_cast<int64_t>(task) * c->per_task;
    softplus_cpu(c->x + begin, c->y + begin, std::min(c->per_task, c->n - begin));
  }
};

template <typename T>
struct SoftplusKernel {
  SoftplusKernel(const OrtApi& api, Where where) : api_(api), where_(where) {}

  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    try {
      Ort::KernelContext ctx(context);
      const Ort::ConstValue input = ctx.GetInput(0);
      const std::vector<int64_t> shape = input.GetTensorTypeAndShapeInfo().GetShape();
      const int64_t n = input.GetTensorTypeAndShapeInfo().GetElementCount();
      Ort::UnownedValue output = ctx.GetOutput(0, shape);
      const T* x = input.GetTensorData<T>();
      T* y = output.GetTensorMutableData<T>();
      if (n == 0) return nullptr;
#ifdef HEALTHAI_WITH_CUDA
      if (where_ == Where::kCUDA) {
        cuda::softplus(x, y, n, ctx.GetGPUComputeStream());
        return nullptr;
      }
#endif
      const int64_t tasks = std::clamp<int64_t>(n / kElementsPerTask, 1, kMaxTasks);
      if (tasks == 1) {
        softplus_cpu(x, y, n);
        return nullptr;
      }
      Chunks<T> chunks{x, y, n, (n + tasks - 1) / tasks};
      const size_t used = static_cast<size_t>((n + chunks.per_task - 1) / chunks.per_task);
      ctx.ParallelFor(&Chunks<T>::run, used, 0, &chunks);
      return nullptr;
    } catch (...) {
      return status_of_current_exception(api_, "Softplus");
    }
  }

 private:
  const OrtApi& api_;
  Where where_;
};

template <typename T>
struct SoftplusOp : Ort::CustomOpBase<SoftplusOp<T>, SoftplusKernel<T>, true> {
  explicit SoftplusOp(Where where) : where_(where) {}

  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo*, void** kernel) const {
    *kernel = new SoftplusKernel<T>(api, where_);
    return nullptr;
  }
  const char* GetName() const { return "Softplus"; }
  const char* GetExecutionProviderType() const {
    return where_ == Where::kCUDA ? "CUDAExecutionProvider" : "CPUExecutionProvider";
  }
  size_t GetInputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetInputType(size_t) const { return Ort::TypeToTensorType<T>::type; }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return Ort::TypeToTensorType<T>::type; }

 private:
  Where where_;
};

}  // namespace

void add_softplus_ops(Ort::CustomOpDomain& domain) {
  static SoftplusOp<float> cpu_f32(Where::kCPU);
  static SoftplusOp<double> cpu_f64(Where::kCPU);
  domain.Add(&cpu_f32);
  domain.Add(&cpu_f64);
#ifdef HEALTHAI_WITH_CUDA
  static SoftplusOp<float> cuda_f32(Where::kCUDA);
  static SoftplusOp<double> cuda_f64(Where::kCUDA);
  domain.Add(&cuda_f32);
  domain.Add(&cuda_f64);
#endif
}

}  // namespace healthai::ort
