#!/usr/bin/env bash
# The checks that need a GPU, as one command on a lent GPU machine (the `device` tool's `run`), where
# only the repo travels and nothing can be installed: builds the native module with CUDA for that
# machine's Python (its image has cmake, ninja, nvcc, pybind11, numpy, scipy, torch, onnxruntime,
# grpcio, pytest), runs the CUDA tests (aggregation kernel, metapopulation engine: the same bits as
# the CPU), then benchmarks/scenario.py's GPU row (the 1,000-run county job, issue 15: <= 1 s).
#
#   run(command="bash benchmarks/gpu_check.sh", timeout_s=540,
#       carry=["build/onnxruntime-dev/root/usr/include/onnxruntime"])   # the ORT headers (make setup)
#
# Logs go to $OUT (the device tool brings them back) or ./gpu_check. Here (no GPU) the same script
# checks the CUDA build and that the tests and the benchmark say why they skip the GPU:
#   PYTHON=.venv/bin/python CUDA_ARCHS=90 bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
LOGS=${OUT:-$PWD/gpu_check}
PKG=/tmp/healthai_gpu_check/pkg
BUILD=/tmp/healthai_gpu_check/build
ORT_INC=$PWD/build/onnxruntime-dev/root/usr/include/onnxruntime
mkdir -p "$LOGS" "$PKG"
rm -rf "$PKG/healthai" && cp -r server/healthai "$PKG/"
rm -f "$PKG"/healthai/*.so

(nvidia-smi -L || echo "nvidia-smi: no GPU here") 2>&1 | tee "$LOGS/gpu.txt"
echo "building with CUDA (archs ${CUDA_ARCHS:-90}) for $($PY --version 2>&1)"
start=$SECONDS
if ! { cmake -S . -B "$BUILD" -G Ninja -DWITH_CUDA=ON -DCMAKE_BUILD_TYPE=Release \
         -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-90}" \
         -DPython_EXECUTABLE="$(command -v "$PY")" -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)" \
         -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$PKG/healthai" -DHEALTHAI_ORT_INCLUDE_DIR="$ORT_INC" \
         -DHEALTHAI_VERSION="$(PYTHONPATH=server "$PY" -c 'import healthai; print(healthai.__version__)')" \
       && cmake --build "$BUILD" -j "$(nproc)"; } > "$LOGS/build.log" 2>&1; then
  tail -40 "$LOGS/build.log"
  echo "gpu_check: the CUDA build failed (log: build.log)"
  exit 1
fi
echo "built in $((SECONDS - start)) s"

export PYTHONPATH="$PKG:$PWD" PYTHONUNBUFFERED=1
"$PY" -c "from healthai import _native; print(_native.build_info())" | tee "$LOGS/build_info.txt"
# -W default: that machine's library versions may warn where ours do not (the suite turns warnings
# into errors); -p no:cacheprovider: nothing written into the tree
"$PY" -m pytest -q -p no:cacheprovider -W default -o addopts="-ra" \
  tests/native/test_cuda.py tests/native/test_device_dispatch.py tests/native/test_build_info.py \
  tests/scenario/test_engine.py 2>&1 | tee "$LOGS/tests.txt"
tests=${PIPESTATUS[0]}
"$PY" benchmarks/scenario.py --threads "$(nproc)" --numpy-runs 20 --no-memilio 2>&1 | tee "$LOGS/scenario.txt"
bench=${PIPESTATUS[0]}
echo "gpu_check: tests exit $tests, scenario benchmark exit $bench"
exit $((tests || bench))
