#include "array_view.h"

#include <stdexcept>
#include <string>

namespace py = pybind11;

namespace healthai {
namespace {

// The DLPack ABI (dlpack.h v0.8, stable since 2021), declared here to avoid another header dependency.
struct DLDevice { int32_t device_type; int32_t device_id; };
struct DLDataType { uint8_t code; uint8_t bits; uint16_t lanes; };
struct DLTensor {
  void* data; DLDevice device; int32_t ndim; DLDataType dtype; int64_t* shape; int64_t* strides;
  uint64_t byte_offset;
};
struct DLManagedTensor { DLTensor dl_tensor; void* manager_ctx; void (*deleter)(DLManagedTensor*); };
constexpr int32_t kDLCPU = 1, kDLCUDA = 2;
constexpr uint8_t kDLInt = 0, kDLFloat = 2;

DType dtype_of(char kind, int64_t bytes, bool native_order) {
  if (!native_order) return DType::kOther;
  if (kind == 'i' && bytes == 4) return DType::kInt32;
  if (kind == 'i' && bytes == 8) return DType::kInt64;
  if (kind == 'f' && bytes == 4) return DType::kFloat32;
  if (kind == 'f' && bytes == 8) return DType::kFloat64;
  return DType::kOther;
}

ArrayView from_numpy(const py::array& a, const char* name) {
  ArrayView v;
  if (a.ndim() > 4) {
    throw std::invalid_argument(std::string(name) + " has " + std::to_string(a.ndim()) + " dimensions; at most 3 are used");
  }
  v.ndim = static_cast<int>(a.ndim());
  for (int i = 0; i < v.ndim; ++i) v.shape[i] = a.shape(i);
  const py::dtype dt = a.dtype();
  v.dtype = dtype_of(dt.kind(), dt.itemsize(), dt.byteorder() != '>');
  if (v.dtype == DType::kOther) v.dtype_label = py::str(dt).cast<std::string>();
  v.contiguous = (a.flags() & py::array::c_style) != 0;
  v.data = const_cast<void*>(a.data());
  return v;
}

ArrayView from_dlpack(py::handle obj, const char* name, std::vector<py::object>& keep_alive) {
  py::object capsule = obj.attr("__dlpack__")();
  auto* m = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(capsule.ptr(), "dltensor"));
  if (m == nullptr) throw py::error_already_set();
  keep_alive.push_back(capsule);  // the capsule's destructor releases the producer's tensor
  const DLTensor& t = m->dl_tensor;
  ArrayView v;
  if (t.ndim > 4) {
    throw std::invalid_argument(std::string(name) + " has " + std::to_string(t.ndim) + " dimensions; at most 3 are used");
  }
  if (t.device.device_type != kDLCPU && t.device.device_type != kDLCUDA) {
    throw std::invalid_argument(std::string(name) + " is on an unsupported device (DLPack device type " +
                                std::to_string(t.device.device_type) + "); use CPU or CUDA");
  }
  v.device = t.device.device_type == kDLCUDA ? Device::kCUDA : Device::kCPU;
  v.ndim = t.ndim;
  int64_t expect = 1;
  for (int i = t.ndim - 1; i >= 0; --i) {
    v.shape[i] = t.shape[i];
    if (t.strides != nullptr && t.shape[i] != 1 && t.strides[i] != expect) v.contiguous = false;
    expect *= t.shape[i];
  }
  if (expect == 0) v.contiguous = true;
  const char kind = t.dtype.code == kDLInt ? 'i' : t.dtype.code == kDLFloat ? 'f' : '?';
  v.dtype = t.dtype.lanes == 1 ? dtype_of(kind, t.dtype.bits / 8, true) : DType::kOther;
  if (v.dtype == DType::kOther) {
    v.dtype_label = std::string(t.dtype.code == kDLInt ? "int" : t.dtype.code == kDLFloat ? "float" : "dtype") +
                    std::to_string(t.dtype.bits);
  }
  v.data = static_cast<char*>(t.data) + t.byte_offset;
  return v;
}

}  // namespace

ArrayView view_of(py::handle obj, const char* name, std::vector<py::object>& keep_alive) {
  if (obj.is_none()) {
    ArrayView v;
    v.present = false;
    return v;
  }
  if (py::isinstance<py::array>(obj)) return from_numpy(py::reinterpret_borrow<py::array>(obj), name);
  if (py::hasattr(obj, "__dlpack__")) return from_dlpack(obj, name, keep_alive);
  throw std::invalid_argument(std::string(name) + " must be a numpy array or a torch tensor, got " +
                              py::str(py::type::of(obj).attr("__name__")).cast<std::string>());
}

py::array new_array(DType dtype, const int64_t* shape, int ndim) {
  std::vector<py::ssize_t> dims(shape, shape + ndim);
  switch (dtype) {
    case DType::kFloat32: return py::array_t<float>(dims);
    case DType::kFloat64: return py::array_t<double>(dims);
    case DType::kInt32: return py::array_t<int32_t>(dims);
    default: return py::array_t<int64_t>(dims);
  }
}

}  // namespace healthai
