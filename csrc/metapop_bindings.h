// Adds the metapopulation engine's functions to the _native module (called from bindings.cpp).
#pragma once

#include <pybind11/pybind11.h>

namespace healthai {
void bind_metapop(pybind11::module_& m);
}
