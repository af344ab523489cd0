#!/usr/bin/env bash
# Issue 15's protocol on every data set: `gpuseg compare` (5 stratified folds by subscriber, the
# same folds for the model and every baseline, paired intervals over folds and bootstrap), then
# one table (benchmarks/compare_table.py).
#
#   bash benchmarks/compare.sh [OUT]                (default OUT: runs/compare15)
#   N=20000 TRIALS=8 bash benchmarks/compare.sh     world size, Optuna trials per booster
#   TELCO_CFG=... C2C_CFG=... bash benchmarks/compare.sh   also the two real tables
#
# Worlds: the demo world and the hard world at N subscribers, and the burst world
# (benchmarks/burst_world.py: another churn mechanism, never tuned on). The real tables
# (../shared/data/ibm_telco, ../shared/data/cell2cell_6k) need a config whose data section reads
# them (until `layout: table` lands, a one-period long file + static + labels converted by hand;
# see benchmarks/RESULTS.md, issue 15); they run when TELCO_CFG / C2C_CFG name such configs.
# On 2 shared CPU cores each world takes 15-40 min, each table 5-15 min.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/compare15}
GPUSEG=${GPUSEG:-.venv/bin/gpuseg}
PY=${PY:-.venv/bin/python}
N=${N:-20000}
TRIALS=${TRIALS:-8}
BOOT=${BOOT:-200}
CANDS=${CANDS:-sequence,stack,xgboost_seq,blend,blend_baselines,logistic,xgboost,lightgbm}
mkdir -p "$OUT"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

compare() {  # NAME, then config arguments
  local name=$1; shift
  "$GPUSEG" compare "$@" --folds 5 --trials "$TRIALS" --candidates "$CANDS" --boot "$BOOT" \
    -o "$OUT/$name.json" | tee "$OUT/$name.md"
}

[ -n "${TELCO_CFG:-}" ] && compare telco -c "$TELCO_CFG" -s out_dir="$OUT/telco"
[ -n "${C2C_CFG:-}" ] && compare cell2cell -c "$C2C_CFG" -s out_dir="$OUT/cell2cell"
compare demo -c configs/demo.yaml -s out_dir="$OUT/demo" -s synth.n_subscribers="$N"
compare hard -c configs/hard.yaml -s out_dir="$OUT/hard" -s synth.n_subscribers="$N"
"$PY" benchmarks/burst_world.py "$OUT/burst_world" -n "$N" --seed 3
compare burst -c configs/demo.yaml -s out_dir="$OUT/burst" \
  -s data.usage="$OUT/burst_world/usage.parquet" -s data.static="$OUT/burst_world/static.parquet" \
  -s data.labels="$OUT/burst_world/labels.parquet"
# the control: labels shuffled, every candidate at ROC-AUC 0.5 +- 0.02
"$GPUSEG" compare -c configs/demo.yaml -s out_dir="$OUT/demo" -s synth.n_subscribers="$N" \
  --folds 5 --candidates sequence,logistic,xgboost --trials 4 --shuffle-labels \
  -o "$OUT/shuffled.json" | tee "$OUT/shuffled.md"

"$PY" benchmarks/compare_table.py "$OUT"/{telco,cell2cell,demo,hard,burst}.json 2>/dev/null \
  || "$PY" benchmarks/compare_table.py "$OUT"/{demo,hard,burst}.json
