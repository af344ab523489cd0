#!/usr/bin/env bash
# The GPU check: on a CUDA machine with RAPIDS (pip install "gpuseg[cuda12]" or "[cuda13]"), runs
#   1. gpuseg info
#   2. the GPU tests (pytest -m gpu)
#   3. the demo world with --device cuda, and the same config with --device cpu
#   4. CPU-vs-GPU parity of those two runs: panel identical, churn test AUC within 0.01,
#      segment ARI >= 0.9
#   5. gpuseg bench --profile full on the GPU (--kinds cuda; the CPU side of that profile alone
#      takes longer than this check may)
# and writes what it measured into one folder (default runs/gpu-check): info.txt, gpu-tests.txt,
# demo-cuda/ demo-cpu/ (run directories and logs), parity.json, bench/ (bench.json, bench.md),
# steps.tsv (step, exit code, seconds) and summary.md.
#
# Usage: bash benchmarks/gpu-check.sh [OUT]      (GPUSEG_CHECK_BUDGET=480 seconds in all)
# Every step runs under a timeout taken from what is left of the budget, so the whole check ends
# within it; a step that runs out is recorded as "timeout" in steps.tsv, never as passed.
# Without CUDA (or without cuDF/cuML) it says so in one line and exits 0 without measuring.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
GPUSEG=("$PY" -m gpuseg)
OUT=${1:-runs/gpu-check}
BUDGET=${GPUSEG_CHECK_BUDGET:-480}
START=$(date +%s)

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu-check: skipped: torch sees no CUDA GPU here; run it on a CUDA machine with RAPIDS" >&2
  exit 0
fi
if ! why=$("$PY" -c "import cudf, cuml" 2>&1); then
  echo "gpu-check: skipped: cuDF/cuML do not import ($(echo "$why" | tail -1)); install" \
    "gpuseg[cuda12] or gpuseg[cuda13]" >&2
  exit 0
fi

mkdir -p "$OUT"
printf 'step\texit\tseconds\n' > "$OUT/steps.tsv"
failed=0

# step NAME LOGFILE CMD...: run CMD under the budget left, log its output, record the outcome
step() {
  local name=$1 log=$2
  shift 2
  local left=$((BUDGET - ($(date +%s) - START)))
  if [ "$left" -lt 10 ]; then
    printf '%s\tnot run (budget spent)\t0\n' "$name" >> "$OUT/steps.tsv"
    failed=1
    return
  fi
  echo "gpu-check: $name (at most ${left}s)" >&2
  local t0=$(date +%s) rc=0
  timeout "$left" "$@" > "$log" 2>&1 || rc=$?
  local dt=$(($(date +%s) - t0))
  [ "$rc" = 124 ] && rc=timeout
  printf '%s\t%s\t%s\n' "$name" "$rc" "$dt" >> "$OUT/steps.tsv"
  [ "$rc" = 0 ] || failed=1
}

step info "$OUT/info.txt" "${GPUSEG[@]}" info
step gpu-tests "$OUT/gpu-tests.txt" "$PY" -m pytest -q -m gpu tests/test_gpu.py -rs
mkdir -p "$OUT/demo-cuda" "$OUT/demo-cpu"
step demo-cuda "$OUT/demo-cuda.log" "${GPUSEG[@]}" run -c configs/demo.yaml --device cuda \
  --overwrite -s "out_dir=$OUT/demo-cuda" -s "synth.out_dir=$OUT/world"
step demo-cpu "$OUT/demo-cpu.log" "${GPUSEG[@]}" run -c configs/demo.yaml --device cpu \
  --overwrite -s "out_dir=$OUT/demo-cpu" -s "synth.out_dir=$OUT/world"
step parity "$OUT/parity.log" "$PY" - "$OUT" <<'EOF'
"""CPU-vs-GPU parity of the two demo runs -> parity.json; exit 1 when a bound does not hold."""
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score

out = Path(sys.argv[1])
gpu, cpu = out / "demo-cuda", out / "demo-cpu"
panel = {}
for name in ("usage", "mask", "static", "churn", "migration"):
    a, b = np.load(gpu / "panel" / f"{name}.npy"), np.load(cpu / "panel" / f"{name}.npy")
    panel[name] = bool(a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))
ids = pd.read_parquet(gpu / "panel" / "index.parquet").equals(
    pd.read_parquet(cpu / "panel" / "index.parquet")
)
meta_g = json.loads((gpu / "panel" / "meta.json").read_text())
meta_c = json.loads((cpu / "panel" / "meta.json").read_text())
auc_g = json.loads((gpu / "metrics.json").read_text())["churn"]["roc_auc"]
auc_c = json.loads((cpu / "metrics.json").read_text())["churn"]["roc_auc"]
sg, sc = pd.read_parquet(gpu / "segments.parquet"), pd.read_parquet(cpu / "segments.parquet")
key = sg.columns[0]
both = sg.merge(sc, on=key, suffixes=("_gpu", "_cpu"))
ari = float(adjusted_rand_score(both["segment_cpu"], both["segment_gpu"]))
result = dict(
    panel_arrays_identical=panel,
    panel_ids_identical=bool(ids),
    panel_counts_identical=meta_g["counts"] == meta_c["counts"],
    churn_auc_gpu=auc_g,
    churn_auc_cpu=auc_c,
    churn_auc_gap=abs(auc_g - auc_c),
    segment_ari=ari,
    segments_compared=len(both),
)
result["holds"] = bool(
    all(panel.values())
    and ids
    and result["panel_counts_identical"]
    and result["churn_auc_gap"] <= 0.01
    and ari >= 0.9
    and len(both) == len(sg) == len(sc)
)
(out / "parity.json").write_text(json.dumps(result, indent=2) + "\n")
print(json.dumps(result, indent=2))
sys.exit(0 if result["holds"] else 1)
EOF
step bench "$OUT/bench.log" "${GPUSEG[@]}" bench --profile full --kinds cuda --out "$OUT/bench"

{
  echo "# gpuseg GPU check"
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ); commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "- GPU: $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -1)"
  echo "- total: $(($(date +%s) - START)) s of a ${BUDGET} s budget"
  echo
  echo "| step | exit | seconds |"
  echo "| --- | --- | --- |"
  tail -n +2 "$OUT/steps.tsv" | awk -F'\t' '{printf "| %s | %s | %s |\n", $1, $2, $3}'
  echo
  [ -f "$OUT/parity.json" ] && { echo '```json'; cat "$OUT/parity.json"; echo '```'; }
  [ -f "$OUT/bench/bench.md" ] && { echo; cat "$OUT/bench/bench.md"; }
} > "$OUT/summary.md"
echo "gpu-check: wrote $OUT/summary.md ($( [ "$failed" = 0 ] && echo "every step passed" || echo "some step failed: see steps.tsv"))" >&2
exit "$failed"
