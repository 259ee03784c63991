// healthai.QuantileHead for ONNX Runtime: see quantile_head_op.h. The ORT C++ API is initialised by
// RegisterCustomOps (csr_aggregate_op.cpp) before any of these kernels is created.
#define ORT_API_MANUAL_INIT
#include "ort/quantile_head_op.h"
#undef ORT_API_MANUAL_INIT

#include <vector>

#include "cpu/quantile_head_cpu.h"
#include "ort/op_status.h"
#include "ort/ort_ranges.h"
#include "ort/same_type_op.h"
#ifdef HEALTHAI_WITH_CUDA
#include "cuda/quantile_head_cuda.h"
#endif

namespace healthai::ort {

namespace {

constexpr int64_t kValuesPerTask = 1 << 15;  // below this, another ORT thread costs more than it saves

template <typename T>
struct Problem {
  cpu::QuantileHeadShape shape;
  const T *raw, *base, *scale, *shift;
  T* out;

  void rows(int64_t begin, int64_t end) const {
    std::vector<T> scratch(static_cast<size_t>(shape.steps * shape.levels));
    cpu::quantile_head_rows(shape, raw, base, scale, shift, out, scratch.data(), begin, end);
  }
};

template <typename T>
struct QuantileHeadKernel {
  QuantileHeadKernel(const OrtApi& api, int64_t median_index, Where where)
      : api_(api), median_index_(median_index), where_(where) {}

  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    try {
      Ort::KernelContext ctx(context);
      const Ort::ConstValue raw = ctx.GetInput(0), base = ctx.GetInput(1);
      const Ort::ConstValue scale = ctx.GetInput(2), shift = ctx.GetInput(3);
      const std::vector<int64_t> raw_shape = raw.GetTensorTypeAndShapeInfo().GetShape();
      const std::vector<int64_t> base_shape = base.GetTensorTypeAndShapeInfo().GetShape();
      const cpu::QuantileHeadShape shape = cpu::check_quantile_head(
          raw_shape.data(), static_cast<int64_t>(raw_shape.size()), base_shape.data(),
          static_cast<int64_t>(base_shape.size()), scale.GetTensorTypeAndShapeInfo().GetElementCount(),
          shift.GetTensorTypeAndShapeInfo().GetElementCount(), median_index_);
      Ort::UnownedValue output = ctx.GetOutput(0, {shape.batch, shape.steps, shape.regions, shape.levels});
      Problem<T> p{shape, raw.GetTensorData<T>(), base.GetTensorData<T>(), scale.GetTensorData<T>(),
                   shift.GetTensorData<T>(), output.GetTensorMutableData<T>()};
      if (shape.rows() == 0 || shape.steps == 0) return nullptr;
#ifdef HEALTHAI_WITH_CUDA
      if (where_ == Where::kCUDA) {
        cuda::quantile_head(shape, p.raw, p.base, p.scale, p.shift, p.out, ctx.GetGPUComputeStream());
        return nullptr;
      }
#endif
      const int64_t values = shape.rows() * shape.steps * shape.levels;
      for_ranges_on_ort_threads(ctx, shape.rows(), values, kValuesPerTask,
                                [&p](int64_t begin, int64_t end) { p.rows(begin, end); });
      return nullptr;
    } catch (...) {
      return status_of_current_exception(api_, "QuantileHead");
    }
  }

 private:
  const OrtApi& api_;
  int64_t median_index_;
  Where where_;
};

template <typename T>
struct QuantileHeadOp : SameTypeOp<QuantileHeadOp<T>, QuantileHeadKernel<T>, T, 4> {
  using SameTypeOp<QuantileHeadOp<T>, QuantileHeadKernel<T>, T, 4>::SameTypeOp;

  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const {
    int64_t median_index = 0;
    if (OrtStatus* status = api.KernelInfoGetAttribute_int64(info, "median_index", &median_index)) {
      api.ReleaseStatus(status);
      return api.CreateStatus(ORT_INVALID_ARGUMENT, "QuantileHead: the int attribute median_index is required");
    }
    *kernel = new QuantileHeadKernel<T>(api, median_index, this->where());
    return nullptr;
  }
  const char* GetName() const { return "QuantileHead"; }
};

}  // namespace

void add_quantile_head_ops(Ort::CustomOpDomain& domain) { add_float_and_double<QuantileHeadOp>(domain); }

}  // namespace healthai::ort
