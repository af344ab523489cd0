#!/usr/bin/env bash
# Issue 15: `gpuseg compare` out of time. The demo world's K folds train and validate on its
# panel; the test rows are the subscribers of a later world (new subscribers, seed 1, a window 8
# weeks later with market drift), prepared with the same config and cut into the same number of
# stratified folds. Every candidate is scored on exactly those rows.
#
#   bash benchmarks/compare_oot.sh [OUT]     (default OUT: runs/compare_oot; ~30 min on one core)
#   N=20000 bash benchmarks/compare_oot.sh [OUT]   a quick end-to-end check (~3 min)
#
# Writes OUT/oot.json and OUT/oot.md (the table) and prints the table. The options are those of
# the in-time runs of benchmarks/RESULTS.md (issue 15, session 9: the three worlds at 200,000).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/compare_oot}
GPUSEG=${GPUSEG:-.venv/bin/gpuseg}
N=${N:-200000}
BOOT=${BOOT:-200}
TRIALS=${TRIALS:-4}
FOLDS=${FOLDS:-5}
CANDIDATES=${CANDIDATES:-head_blend,sequence,blend_baselines,logistic,hist_gb,xgboost,lightgbm}
mkdir -p "$OUT"

"$GPUSEG" synth --out "$OUT/later/world" -n "$N" -t 26 --seed 1 --set shift=8
"$GPUSEG" prepare -c configs/demo.yaml --set out_dir="$OUT/later" \
  --set data.usage="$OUT/later/world/usage.parquet" \
  --set data.static="$OUT/later/world/static.parquet" \
  --set data.labels="$OUT/later/world/labels.parquet"
"$GPUSEG" compare -c configs/demo.yaml -s synth.n_subscribers="$N" -s out_dir="$OUT/demo" \
  --folds "$FOLDS" --trials "$TRIALS" --candidates "$CANDIDATES" --head head_blend \
  --boot "$BOOT" --test-panel "$OUT/later/panel" -o "$OUT/oot.json" | tee "$OUT/oot.md"
