"""healthai::FirstError (csrc/first_error.h), the error slot of the work split over threads (healthai's
pool and the ONNX Runtime op's row chunks): of many tasks that throw at once, exactly the first
exception is kept, with its type and message, and re-thrown by the caller.

The chunk kernels throw nothing on checked input, so the slot is exercised directly: a small C++
program is compiled against the header (skipped where no C++ compiler is installed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

CSRC = Path(__file__).resolve().parents[2] / "csrc"
CXX = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")

PROGRAM = r"""
#include <cstdio>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "first_error.h"

int main() {
  healthai::FirstError none;
  none.rethrow_if_failed();  // nothing kept: no throw
  if (none.failed()) return 2;
  for (int round = 0; round < 200; ++round) {
    healthai::FirstError error;
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&error, t] {
        try {
          if (t % 2) throw std::out_of_range("indices[" + std::to_string(t) + "]=-1 is out of range");
          throw std::invalid_argument("task " + std::to_string(t) + " failed");
        } catch (...) {
          error.capture();
        }
      });
    }
    for (auto& th : threads) th.join();
    if (!error.failed()) return 3;
    try {
      error.rethrow_if_failed();
      return 4;
    } catch (const std::invalid_argument& e) {
      if (std::string(e.what()).rfind("task ", 0) != 0) return 5;
    } catch (const std::out_of_range& e) {
      if (std::string(e.what()).rfind("indices[", 0) != 0) return 6;
    }
  }
  std::puts("ok");
  return 0;
}
"""


@pytest.mark.skipif(CXX is None, reason="needs a C++ compiler to build the test program")
def test_first_error_keeps_one_exception_with_its_type_and_message(tmp_path: Path) -> None:
    src = tmp_path / "first_error_test.cpp"
    src.write_text(PROGRAM)
    exe = tmp_path / "first_error_test"
    flags = ["-std=c++17", "-O1", "-pthread", "-Wall", "-Werror"]
    subprocess.run([CXX, *flags, f"-I{CSRC}", str(src), "-o", str(exe)], check=True, capture_output=True)
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert (run.returncode, run.stdout.strip()) == (0, "ok")
