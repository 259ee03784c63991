#!/usr/bin/env bash
# Peer models (epilearn's Cola-GNN and EpiGNN) side by side with `healthai train backtest`, on the
# same splits. Creates the separate peer environment on first use. See benchmarks/peers/README.md.
#   DATASETS="us_states japan" PROTOCOLS="rolling fixed" SEED=0 EPOCHS=150 PATIENCE=20 \
#     bash benchmarks/peers/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PEER=benchmarks/peers/.venv
MAIN=.venv/bin
OUT=${OUT:-benchmarks/results/peers}
DATASETS=${DATASETS:-"us_states japan"}
PROTOCOLS=${PROTOCOLS:-"rolling fixed"}
SEED=${SEED:-0}
EPOCHS=${EPOCHS:-150}
PATIENCE=${PATIENCE:-20}
mkdir -p "$OUT"

if [ ! -x "$PEER/bin/python" ]; then
  python3 -m venv "$PEER"
  "$PEER/bin/pip" install -r benchmarks/peers/requirements.txt  # torch==2.13.0: exactly this pin
  "$PEER/bin/pip" install --no-deps epilearn==0.0.19
fi

for ds in $DATASETS; do
  for p in $PROTOCOLS; do
    flag=$([ "$p" = fixed ] && echo --fixed-split || true)
    tag="$ds-$p-seed$SEED"
    "$MAIN/python" benchmarks/peers/compare.py export --dataset "$ds" $flag --out "$OUT/splits-$ds-$p.json"
    if [ -z "${SKIP_OURS:-}" ]; then
      /usr/bin/time -f "%e s wall: healthai $tag" "$MAIN/healthai" train backtest --dataset "$ds" $flag \
        --seeds "$SEED" --json "$OUT/healthai-$tag.json" --runs-dir "$OUT/runs"
    fi
    /usr/bin/time -f "%e s wall: peers $tag" "$PEER/bin/python" benchmarks/peers/run_peers.py \
      "$OUT/splits-$ds-$p.json" --out "$OUT/peers-pred-$tag.json" --seed "$SEED" \
      --epochs "$EPOCHS" --patience "$PATIENCE"
    "$MAIN/python" benchmarks/peers/compare.py score --dataset "$ds" --splits "$OUT/splits-$ds-$p.json" \
      --predictions "$OUT/peers-pred-$tag.json" --out "$OUT/peers-$tag.json"
    "$MAIN/python" benchmarks/peers/compare.py table --ours "$OUT/healthai-$tag.json" \
      --peers "$OUT/peers-$tag.json" | tee "$OUT/table-$tag.md"
  done
done
