#!/usr/bin/env bash
# Issue 4's comparison: the sequence model against logistic regression, gradient boosting and the
# oracle, on the default world, the hard world and out of time (a later, drifted window).
#
#   bash benchmarks/models.sh [OUT]      (default OUT: runs/compare; ~10 min on 2 CPU cores)
#   SEEDS="1 2" bash benchmarks/models.sh [OUT]   also other splits: ~5 min more per seed
#
# Writes OUT/{default,hard,out_of_time}.md (and each run's evaluation.json) and prints them;
# with SEEDS also OUT/{default,hard}_seed{S}.md (train.seed=S: another split and initialisation).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/compare}
GPUSEG=${GPUSEG:-.venv/bin/gpuseg}
BOOT=${BOOT:-200}
mkdir -p "$OUT"

"$GPUSEG" run -c configs/demo.yaml --set out_dir="$OUT/default" --overwrite
"$GPUSEG" evaluate "$OUT/default" --boot "$BOOT" | tee "$OUT/default.md"

"$GPUSEG" run -c configs/hard.yaml --set out_dir="$OUT/hard" --overwrite
"$GPUSEG" evaluate "$OUT/hard" --boot "$BOOT" | tee "$OUT/hard.md"

# Out of time: new subscribers (seed 1) in a window 8 weeks later with market drift, scored by
# the default run's model; baselines train on the default run's training rows.
"$GPUSEG" synth --out "$OUT/later/world" -n 50000 -t 26 --seed 1 --set shift=8
"$GPUSEG" prepare -c configs/demo.yaml --set out_dir="$OUT/later" \
  --set data.usage="$OUT/later/world/usage.parquet" \
  --set data.static="$OUT/later/world/static.parquet" \
  --set data.labels="$OUT/later/world/labels.parquet"
"$GPUSEG" evaluate "$OUT/default" --boot "$BOOT" --test-panel "$OUT/later/panel" \
  --truth "$OUT/later/world/truth.parquet" -o "$OUT/out_of_time.json" | tee "$OUT/out_of_time.md"

# Other splits of the same worlds (train.seed draws the split and the initialisation).
for S in ${SEEDS:-}; do
  for W in default:demo hard:hard; do
    NAME=${W%%:*} CFG=${W##*:}
    "$GPUSEG" run -c "configs/$CFG.yaml" --set out_dir="$OUT/${NAME}_seed$S" \
      --set train.seed="$S" --overwrite
    "$GPUSEG" evaluate "$OUT/${NAME}_seed$S" --boot "$BOOT" | tee "$OUT/${NAME}_seed$S.md"
  done
done
