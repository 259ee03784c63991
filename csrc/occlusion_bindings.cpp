// healthai._native.occlusion_feed / occlusion_top_k (see occlusion.h); sizes checked before any access.
#include "occlusion_bindings.h"

#include <pybind11/numpy.h>

#include <stdexcept>
#include <string>

#include "occlusion.h"

namespace py = pybind11;

namespace {

using Floats = py::array_t<float, py::array::c_style | py::array::forcecast>;

// F from the baseline [F]; x must hold F values ([F] or [1, F]).
int64_t features_of(const Floats& x, const Floats& baseline) {
  if (baseline.ndim() != 1 || baseline.size() == 0) {
    throw std::invalid_argument("baseline must be a non-empty 1-D array");
  }
  const int64_t f = baseline.size();
  if (x.size() != f || x.ndim() > 2) {
    throw std::invalid_argument("x must hold one patient's " + std::to_string(f) + " features, got " +
                                std::to_string(x.size()) + " values");
  }
  return f;
}

py::array_t<float> feed(const Floats& x, const Floats& baseline) {
  const int64_t f = features_of(x, baseline);
  py::array_t<float> out({f + 1, f});
  healthai::occlusion_feed(x.data(), baseline.data(), f, out.mutable_data());
  return out;
}

py::tuple top_k(const Floats& out, const Floats& x, const Floats& baseline, int64_t k) {
  const int64_t f = features_of(x, baseline);
  if (out.size() != f + 1) {
    throw std::invalid_argument("out must hold " + std::to_string(f + 1) + " outputs (patient, then each feature "
                                "occluded), got " + std::to_string(out.size()));
  }
  if (k < 0 || k > f) throw std::invalid_argument("k must be in [0, " + std::to_string(f) + "], got " + std::to_string(k));
  py::array_t<int64_t> index({int64_t{1}, k});
  py::array_t<float> top({int64_t{1}, k});
  healthai::occlusion_top_k(out.data(), x.data(), baseline.data(), f, k, index.mutable_data(), top.mutable_data());
  return py::make_tuple(index, top);
}

}  // namespace

void healthai::bind_occlusion(py::module_& m) {
  m.def("occlusion_feed", &feed, py::arg("x"), py::arg("baseline"));
  m.def("occlusion_top_k", &top_k, py::arg("out"), py::arg("x"), py::arg("baseline"), py::arg("k"));
}
