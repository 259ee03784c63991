// The exception being handled as an ONNX Runtime status, for every op of the library: bad input
// (ValueError/IndexError in the pybind11 module) is ORT_INVALID_ARGUMENT, anything else ORT_FAIL; the
// message names the op. Call in a catch block.
#pragma once

#include <onnxruntime_c_api.h>

#include <exception>
#include <stdexcept>
#include <string>

namespace healthai::ort {

inline OrtStatusPtr status_of_current_exception(const OrtApi& api, const char* op) {
  const auto status = [&api, op](OrtErrorCode code, const char* what) {
    return api.CreateStatus(code, (std::string(op) + ": " + what).c_str());
  };
  try {
    throw;
  } catch (const std::invalid_argument& e) {
    return status(ORT_INVALID_ARGUMENT, e.what());
  } catch (const std::out_of_range& e) {
    return status(ORT_INVALID_ARGUMENT, e.what());
  } catch (const std::exception& e) {
    return status(ORT_FAIL, e.what());
  } catch (...) {
    return status(ORT_FAIL, "unknown error");
  }
}

}  // namespace healthai::ort
