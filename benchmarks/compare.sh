#!/usr/bin/env bash
# Issue 15's protocol on every data set: `gpuseg compare` (5 stratified folds by subscriber, the
# same folds for the model and every baseline, paired intervals over folds and bootstrap), then
# one table (benchmarks/compare_table.py).
#
#   bash benchmarks/compare.sh [OUT]                (default OUT: runs/compare15)
#   N=200000 TRIALS=4 bash benchmarks/compare.sh    the worlds as measured in RESULTS.md (hours)
#   TABLE_TRIALS=15 TABLE_REPEATS=5                 the tables' Optuna trials and 5-fold repeats
#   TELCO_CFG=... C2C_CFG=... bash benchmarks/compare.sh   other configs for the two real tables
#
# The reported model is head_blend (what the default configs score with, model.head: blend).
# Tables are cheap (minutes), so they run 5 x TABLE_REPEATS folds, whose t intervals are
# corrected for the repeats' shared rows.
# Sets: IBM Telco and Cell2Cell 6k through their `layout: table` configs
# (configs/examples/ibm_telco.yaml, configs/examples/cell2cell.yaml; they read
# ../shared/data/ibm_telco and ../shared/data/cell2cell_6k, and a table is skipped with a note when
# its config or its file is missing), the demo world and the hard world at N subscribers, and the
# burst world (benchmarks/burst_world.py: another churn mechanism, never tuned on).
# On 2 shared CPU cores each world takes 15-40 min, each table 5-15 min.
# MIGRATION=1 also runs the demo and hard worlds with --target migration (value-tier migration;
# the tables have no migration labels), candidates MCANDS (the first is reported: head_blend, what
# model.head: blend scores a run's migration with), in one more table.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/compare15}
GPUSEG=${GPUSEG:-.venv/bin/gpuseg}
PY=${PY:-.venv/bin/python}
N=${N:-20000}
TRIALS=${TRIALS:-4}
TABLE_TRIALS=${TABLE_TRIALS:-15}
TABLE_REPEATS=${TABLE_REPEATS:-5}
BOOT=${BOOT:-200}
CANDS=${CANDS:-head_blend,sequence,blend_baselines,logistic,hist_gb,xgboost,lightgbm}
HEAD=${HEAD:-${CANDS%%,*}}
mkdir -p "$OUT"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

compare() {  # NAME, then config and protocol arguments
  local name=$1; shift
  "$GPUSEG" compare "$@" --folds 5 --candidates "$CANDS" --head "$HEAD" --boot "$BOOT" \
    -o "$OUT/$name.json" | tee "$OUT/$name.md"
}

TELCO_CFG=${TELCO_CFG:-configs/examples/ibm_telco.yaml}
C2C_CFG=${C2C_CFG:-configs/examples/cell2cell.yaml}
table() {  # NAME CONFIG DATA-FILE: a real table, when its config and its file are there
  if [ -f "$2" ] && [ -f "$3" ]; then
    compare "$1" -c "$2" -s out_dir="$OUT/$1" --trials "$TABLE_TRIALS" --repeats "$TABLE_REPEATS"
  else
    echo "compare.sh: $1 skipped ($2 or $3 missing)" >&2
  fi
}
table telco "$TELCO_CFG" ../shared/data/ibm_telco/WA_Fn-UseC_-Telco-Customer-Churn.csv
table cell2cell "$C2C_CFG" ../shared/data/cell2cell_6k/cell2celltrain_Small_6k.csv
compare demo -c configs/demo.yaml -s out_dir="$OUT/demo" -s synth.n_subscribers="$N" --trials "$TRIALS"
compare hard -c configs/hard.yaml -s out_dir="$OUT/hard" -s synth.n_subscribers="$N" --trials "$TRIALS"
"$PY" benchmarks/burst_world.py "$OUT/burst_world" -n "$N" --seed 3
compare burst -c configs/demo.yaml -s out_dir="$OUT/burst" \
  -s data.usage="$OUT/burst_world/usage.parquet" -s data.static="$OUT/burst_world/static.parquet" \
  -s data.labels="$OUT/burst_world/labels.parquet" --trials "$TRIALS"
# the control: labels shuffled, every candidate at ROC-AUC 0.5 +- 0.02
"$GPUSEG" compare -c configs/demo.yaml -s out_dir="$OUT/demo" -s synth.n_subscribers="$N" \
  --folds 5 --candidates sequence,logistic,xgboost --trials 4 --shuffle-labels \
  -o "$OUT/shuffled.json" | tee "$OUT/shuffled.md"

results=()
for name in telco cell2cell demo hard burst; do
  if [ -f "$OUT/$name.json" ]; then results+=("$OUT/$name.json"); fi
done
"$PY" benchmarks/compare_table.py "${results[@]}"

if [ "${MIGRATION:-0}" = 1 ]; then
  MCANDS=${MCANDS:-head_blend,sequence,xgboost_seq,blend,blend_baselines,logistic,hist_gb,xgboost,lightgbm}
  for w in demo hard; do
    "$GPUSEG" compare -c "configs/$w.yaml" -s out_dir="$OUT/$w" -s synth.n_subscribers="$N" \
      --folds 5 --trials "$TRIALS" --target migration --candidates "$MCANDS" --boot "$BOOT" \
      --head "${MCANDS%%,*}" \
      -o "$OUT/${w}_migration.json" | tee "$OUT/${w}_migration.md"
  done
  "$PY" benchmarks/compare_table.py "$OUT/demo_migration.json" "$OUT/hard_migration.json"
fi
