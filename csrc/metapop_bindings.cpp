// pybind11 binding of the metapopulation engine (part of healthai._native; wrapped by
// healthai.ops.metapop). Host numpy arrays only: the CUDA path copies them to the device itself, so
// both devices share one host-side validation.
#include "metapop_bindings.h"

#include <pybind11/numpy.h>

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu/metapop_leaps.h"
#include "metapop.h"

namespace py = pybind11;

namespace healthai {
namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "(";
  for (size_t k = 0; k < s.size(); ++k) r += (k ? ", " : "") + std::to_string(s[k]);
  return r + (s.size() == 1 ? ",)" : ")");
}

// A C-contiguous numpy array of dtype T and exactly `shape`; `writable` for in/out arrays.
template <typename T>
T* need(py::handle obj, const char* name, const std::vector<int64_t>& shape, bool writable) {
  if (!py::isinstance<py::array>(obj)) {
    throw std::invalid_argument(std::string(name) + " must be a numpy array, got " +
                                py::str(py::type::of(obj)).cast<std::string>());
  }
  auto a = py::reinterpret_borrow<py::array>(obj);
  if (!a.dtype().is(py::dtype::of<T>())) {
    throw std::invalid_argument(std::string(name) + " must have dtype " + py::str(py::dtype::of<T>()).cast<std::string>() +
                                ", got " + py::str(a.dtype()).cast<std::string>());
  }
  std::vector<int64_t> got(a.shape(), a.shape() + a.ndim());
  if (got != shape) {
    throw std::invalid_argument(std::string(name) + " must have shape " + shape_str(shape) + ", got " + shape_str(got));
  }
  if (!(a.flags() & py::array::c_style)) throw std::invalid_argument(std::string(name) + " must be C-contiguous");
  if (writable && !a.writeable()) throw std::invalid_argument(std::string(name) + " must be writable");
  return static_cast<T*>(const_cast<void*>(a.data()));
}

int64_t len_of(py::handle obj, const char* name) {
  if (!py::isinstance<py::array>(obj) || py::reinterpret_borrow<py::array>(obj).ndim() != 1) {
    throw std::invalid_argument(std::string(name) + " must be a 1-d numpy array");
  }
  return py::reinterpret_borrow<py::array>(obj).shape(0);
}

template <typename T>
void run(MetapopProblem& p, py::handle s, py::handle e, py::handle i, py::handle r, py::handle h,
         py::handle incidence, py::handle peak_value, py::handle peak_step, int num_threads) {
  const std::vector<int64_t> cell{p.n_regions, p.runs};
  MetapopState<T> st;
  st.s = need<T>(s, "S", cell, true);
  st.e = need<T>(e, "E", cell, true);
  st.i = need<T>(i, "I", cell, true);
  st.r = need<T>(r, "R", cell, true);
  st.h = h.is_none() ? nullptr : need<T>(h, "H", cell, true);
  st.incidence = need<T>(incidence, "incidence", cell, true);
  st.peak_value = need<T>(peak_value, "peak_value", cell, true);
  st.peak_step = need<int32_t>(peak_step, "peak_step", cell, true);
  py::gil_scoped_release release;  // checks and work read raw memory only
  check_metapop(p);
  check_metapop_state(p, st);
  if constexpr (std::is_same_v<T, int32_t>) {
    metapop_stochastic(p, st, num_threads);
  } else {
    metapop_deterministic(p, st, num_threads);
  }
}

void metapop_run(const std::string& mode, py::handle indptr, py::handle indices, py::handle weights,
                 py::handle population, py::handle beta, double sigma, double gamma, py::handle contact,
                 py::handle travel, py::handle vacc, py::handle s, py::handle e, py::handle i, py::handle r,
                 py::handle incidence, py::handle peak_value, py::handle peak_step, uint64_t seed, int64_t step0,
                 int substeps, int num_threads, const std::string& device, py::handle h, double hosp_frac,
                 double hosp_rate, bool lookup_tables, bool simd) {
  if (mode != "stochastic" && mode != "deterministic") {
    throw std::invalid_argument("mode must be 'stochastic' or 'deterministic', got '" + mode + "'");
  }
  if (device != "cpu" && device != "cuda") throw std::invalid_argument("device must be 'cpu' or 'cuda', got '" + device + "'");
  MetapopProblem p;
  p.device = device == "cuda" ? Device::kCUDA : Device::kCPU;
  p.n_regions = len_of(population, "population");
  p.nnz = len_of(indices, "indices");
  p.runs = len_of(beta, "beta");
  if (!py::isinstance<py::array>(contact) || py::reinterpret_borrow<py::array>(contact).ndim() != 2) {
    throw std::invalid_argument("contact must be a 2-d numpy array [steps, n_regions]");
  }
  p.steps = py::reinterpret_borrow<py::array>(contact).shape(0);
  p.indptr = need<int64_t>(indptr, "indptr", {p.n_regions + 1}, false);
  p.indices = need<int64_t>(indices, "indices", {p.nnz}, false);
  p.weights = need<double>(weights, "weights", {p.nnz}, false);
  p.population = need<int64_t>(population, "population", {p.n_regions}, false);
  p.beta = need<double>(beta, "beta", {p.runs}, false);
  p.contact = need<double>(contact, "contact", {p.steps, p.n_regions}, false);
  p.travel = need<double>(travel, "travel", {p.steps, p.n_regions}, false);
  p.vacc = need<double>(vacc, "vacc", {p.steps, p.n_regions}, false);
  p.sigma = sigma;
  p.gamma = gamma;
  p.hosp_frac = hosp_frac;
  p.hosp_rate = hosp_rate;
  p.lookup_tables = lookup_tables;
  p.simd = simd;
  p.seed = seed;
  p.step0 = step0;
  p.substeps = substeps;
  if (mode == "stochastic") {
    run<int32_t>(p, s, e, i, r, h, incidence, peak_value, peak_step, num_threads);
  } else {
    run<double>(p, s, e, i, r, h, incidence, peak_value, peak_step, num_threads);
  }
}

}  // namespace

void bind_metapop(py::module_& m) {
  m.def("metapop_simd_available", &cpu::avx512_usable);
  m.def(
      "metapop_simd_math",
      [](const py::array_t<double, py::array::c_style | py::array::forcecast>& x) {
        if (!cpu::avx512_usable()) throw std::runtime_error("metapop_simd_math needs a CPU with AVX-512 F and DQ");
        if (x.ndim() != 1) throw std::invalid_argument("x must be 1-d");
        const auto n = static_cast<int64_t>(x.shape(0));
        py::array_t<double> out({int64_t{2}, int64_t{4}, n});  // [scalar, vector][function][x]
        double* o = out.mutable_data();
        std::vector<double> table(1000);
        for (size_t k = 0; k < table.size(); ++k) table[k] = rng::log_factorial(static_cast<double>(k));
        rng::DrawTables tab;
        tab.log_fact = table.data();
        tab.log_fact_size = static_cast<int64_t>(table.size());
        for (int64_t j = 0; j < n; ++j) {
          const double a = std::fabs(x.data()[j]);
          o[j] = rng::det_exp(x.data()[j]);
          o[n + j] = rng::det_expm1(x.data()[j]);
          o[2 * n + j] = rng::det_log(a);
          o[3 * n + j] = tab.lf(std::floor(a));
        }
        cpu::simd_math_check(x.data(), n, o + 4 * n);
        return out;
      },
      py::arg("x"));
  m.def("metapop_run", &metapop_run, py::arg("mode"), py::arg("indptr"), py::arg("indices"), py::arg("weights"),
        py::arg("population"), py::arg("beta"), py::arg("sigma"), py::arg("gamma"), py::arg("contact"),
        py::arg("travel"), py::arg("vacc"), py::arg("S"), py::arg("E"), py::arg("I"), py::arg("R"),
        py::arg("incidence"), py::arg("peak_value"), py::arg("peak_step"), py::arg("seed"), py::arg("step0") = 0,
        py::arg("substeps") = 1, py::arg("num_threads") = 0, py::arg("device") = "cpu", py::arg("H") = py::none(),
        py::arg("hosp_frac") = 0.0, py::arg("hosp_rate") = 0.0, py::arg("lookup_tables") = true,
        py::arg("simd") = true);
}

}  // namespace healthai
