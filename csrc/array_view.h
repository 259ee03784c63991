// Borrowing views of Python arrays: numpy arrays directly, anything else through DLPack
// (torch CPU and CUDA tensors). Zero-copy; the returned keep-alive objects must outlive the view.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <vector>

#include "aggregate.h"

namespace healthai {

// `name` is the argument name used in error messages. None gives a view with present == false.
ArrayView view_of(pybind11::handle obj, const char* name, std::vector<pybind11::object>& keep_alive);

// A new C-contiguous numpy array of `dtype` with the given shape.
pybind11::array new_array(DType dtype, const int64_t* shape, int ndim);

}  // namespace healthai
