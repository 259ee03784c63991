// healthai._native.occlusion_feed / occlusion_top_k (one patient) and occlusion_feed_rows / top_k_rows (a
// batch), see occlusion.h; sizes checked before any access, the batch loops run without the GIL.
#include "occlusion_bindings.h"

#include <pybind11/numpy.h>

#include <stdexcept>
#include <string>

#include "occlusion.h"

namespace py = pybind11;

namespace {

using Floats = py::array_t<float, py::array::c_style | py::array::forcecast>;

// F from the baseline [F].
int64_t baseline_features(const Floats& baseline) {
  if (baseline.ndim() != 1 || baseline.size() == 0) {
    throw std::invalid_argument("baseline must be a non-empty 1-D array");
  }
  return baseline.size();
}

void check_k(int64_t k, int64_t f) {
  if (k < 0 || k > f) throw std::invalid_argument("k must be in [0, " + std::to_string(f) + "], got " + std::to_string(k));
}

// F from the baseline [F]; x must hold F values ([F] or [1, F]).
int64_t features_of(const Floats& x, const Floats& baseline) {
  const int64_t f = baseline_features(baseline);
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
  check_k(k, f);
  py::array_t<int64_t> index({int64_t{1}, k});
  py::array_t<float> top({int64_t{1}, k});
  healthai::occlusion_top_k(out.data(), x.data(), baseline.data(), f, k, index.mutable_data(), top.mutable_data());
  return py::make_tuple(index, top);
}

py::tuple feed_rows(const Floats& x, const Floats& baseline) {
  const int64_t f = baseline_features(baseline);
  if (x.ndim() != 2 || x.shape(1) != f) {
    throw std::invalid_argument("x must be [n, " + std::to_string(f) + "] (patients x features)");
  }
  const int64_t n = x.shape(0);
  const float* xs = x.data();
  const float* base = baseline.data();
  int64_t m = 0;
  {
    py::gil_scoped_release unlocked;
    m = healthai::occlusion_moved(xs, base, n, f);
  }
  py::array_t<float> feed({n + m, f});
  py::array_t<int64_t> patient(m), feature(m);
  float* feed_out = feed.mutable_data();
  int64_t* patient_out = patient.mutable_data();
  int64_t* feature_out = feature.mutable_data();
  {
    py::gil_scoped_release unlocked;
    healthai::occlusion_feed_rows(xs, base, n, f, feed_out, patient_out, feature_out);
  }
  return py::make_tuple(feed, patient, feature);
}

py::tuple top_k_batch(const Floats& contribution, int64_t k) {
  if (contribution.ndim() != 2) throw std::invalid_argument("contribution must be [n, F]");
  const int64_t n = contribution.shape(0), f = contribution.shape(1);
  check_k(k, f);
  py::array_t<int64_t> index({n, k});
  py::array_t<float> top({n, k});
  const float* c = contribution.data();
  int64_t* index_out = index.mutable_data();
  float* top_out = top.mutable_data();
  {
    py::gil_scoped_release unlocked;
    healthai::top_k_rows(c, n, f, k, index_out, top_out);
  }
  return py::make_tuple(index, top);
}

}  // namespace

void healthai::bind_occlusion(py::module_& m) {
  m.def("occlusion_feed", &feed, py::arg("x"), py::arg("baseline"));
  m.def("occlusion_top_k", &top_k, py::arg("out"), py::arg("x"), py::arg("baseline"), py::arg("k"));
  m.def("occlusion_feed_rows", &feed_rows, py::arg("x"), py::arg("baseline"));
  m.def("top_k_rows", &top_k_batch, py::arg("contribution"), py::arg("k"));
}
