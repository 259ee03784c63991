// Adds the risk occlusion helpers to the _native module (called from bindings.cpp).
#pragma once

#include <pybind11/pybind11.h>

namespace healthai {
void bind_occlusion(pybind11::module_& m);
}
