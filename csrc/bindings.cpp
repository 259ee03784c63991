#include <pybind11/pybind11.h>
namespace py = pybind11;
PYBIND11_MODULE(_native, m) {
  m.def("build_info", [] { py::dict d; d["version"] = HEALTHAI_VERSION; return d; });
}
