#!/usr/bin/env bash
# Issue 4's comparison: the sequence model against logistic regression, gradient boosting and the
# oracle, on the default world, the hard world and out of time (a later, drifted window).
#
#   bash benchmarks/models.sh [OUT]      (default OUT: runs/compare; ~25 min on 2 CPU cores)
#   SEEDS="1 2" bash benchmarks/models.sh [OUT]   also other splits: ~10 min more per seed
#   N=50000 bash benchmarks/models.sh [OUT]       the demo's size (~10 min, wider intervals)
#
# Worlds have N subscribers (default 200,000: a 30,000-subscriber test split, whose intervals on
# the model-minus-baseline difference are about half as wide as at 50,000).
# Writes OUT/{default,hard,out_of_time}.md (and each run's evaluation.json) and prints them;
# with SEEDS also OUT/{default,hard}_seed{S}.md (train.seed=S: another split and initialisation
# of the same world).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/compare}
GPUSEG=${GPUSEG:-.venv/bin/gpuseg}
BOOT=${BOOT:-200}
N=${N:-200000}
mkdir -p "$OUT"

for W in default:demo hard:hard; do
  NAME=${W%%:*} CFG=${W##*:}
  "$GPUSEG" run -c "configs/$CFG.yaml" --set out_dir="$OUT/$NAME" \
    --set synth.n_subscribers="$N" --overwrite
  "$GPUSEG" evaluate "$OUT/$NAME" --boot "$BOOT" | tee "$OUT/$NAME.md"
done

# Out of time: new subscribers (seed 1) in a window 8 weeks later with market drift, scored by
# the default run's model; baselines train on the default run's training rows.
"$GPUSEG" synth --out "$OUT/later/world" -n "$N" -t 26 --seed 1 --set shift=8
"$GPUSEG" prepare -c configs/demo.yaml --set out_dir="$OUT/later" \
  --set data.usage="$OUT/later/world/usage.parquet" \
  --set data.static="$OUT/later/world/static.parquet" \
  --set data.labels="$OUT/later/world/labels.parquet"
"$GPUSEG" evaluate "$OUT/default" --boot "$BOOT" --test-panel "$OUT/later/panel" \
  --truth "$OUT/later/world/truth.parquet" -o "$OUT/out_of_time.json" | tee "$OUT/out_of_time.md"

# Other splits of the same worlds (train.seed draws the split and the initialisation): train
# only, on the world and panel of the split-0 run.
for S in ${SEEDS:-}; do
  for W in default:demo hard:hard; do
    NAME=${W%%:*} CFG=${W##*:} RUN="$OUT/${W%%:*}_seed$S"
    rm -rf "$RUN" && mkdir -p "$RUN"  # no checkpoint of an earlier run to resume from
    ln -sfn "../$NAME/panel" "$RUN/panel"
    ln -sfn "../$NAME/world" "$RUN/world"
    "$GPUSEG" train -c "configs/$CFG.yaml" --set out_dir="$RUN" \
      --set synth.n_subscribers="$N" --set train.seed="$S"
    "$GPUSEG" evaluate "$RUN" --boot "$BOOT" | tee "$RUN.md"
  done
done
