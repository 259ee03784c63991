// healthai.Softplus for ONNX Runtime: see softplus_op.h. The ORT C++ API is initialised by
// RegisterCustomOps (csr_aggregate_op.cpp) before any of these kernels is created.
#define ORT_API_MANUAL_INIT
#include "ort/softplus_op.h"
#undef ORT_API_MANUAL_INIT

#include <vector>

#include "cpu/softplus_cpu.h"
#include "ort/op_status.h"
#include "ort/ort_ranges.h"
#include "ort/same_type_op.h"
#ifdef HEALTHAI_WITH_CUDA
#include "cuda/softplus_cuda.h"
#endif

namespace healthai::ort {

namespace {

constexpr int64_t kElementsPerTask = 1 << 15;  // below this, another ORT thread costs more than it saves

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
      for_ranges_on_ort_threads(ctx, n, n, kElementsPerTask, [&](int64_t begin, int64_t end) {
        cpu::softplus(x + begin, y + begin, end - begin);
      });
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
struct SoftplusOp : SameTypeOp<SoftplusOp<T>, SoftplusKernel<T>, T, 1> {
  using SameTypeOp<SoftplusOp<T>, SoftplusKernel<T>, T, 1>::SameTypeOp;

  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo*, void** kernel) const {
    *kernel = new SoftplusKernel<T>(api, this->where());
    return nullptr;
  }
  const char* GetName() const { return "Softplus"; }
};

}  // namespace

void add_softplus_ops(Ort::CustomOpDomain& domain) { add_float_and_double<SoftplusOp>(domain); }

}  // namespace healthai::ort
