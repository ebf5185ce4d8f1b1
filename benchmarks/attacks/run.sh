#!/usr/bin/env bash
# The attack benchmark end to end on one CPU core: victim (if missing), masked LM (if missing), the four recipes on
# the first N SST-2 test sentences, batched-vs-unbatched PWWS on the first SPEED_N, then the tables.
# Usage: [N=50] [SPEED_N=10] bash benchmarks/attacks/run.sh        (outputs under benchmarks/attacks/runs)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=${SSTKIT_RUNS:-benchmarks/attacks/runs}
SSTKIT=${SSTKIT:-sstkit}
victim=$ROOT/attack-victim-sst2/seed0/checkpoints/last.ckpt
mlm=$ROOT/minilm-mlm/seed0/checkpoints/last.ckpt
[[ -f $victim ]] || bash benchmarks/attacks/train_victim.sh 0
[[ -f $mlm ]] || bash benchmarks/attacks/train_mlm.sh
# One process per recipe, side by side (same load for all; s/example includes that contention), and the
# batched-vs-unbatched comparison.
python benchmarks/attacks/run.py --victim "$victim" --recipes --speed-n "${SPEED_N:-10}" --root "$ROOT" &
for recipe in ${RECIPES:-pwws bae bert-attack fba}; do
  python benchmarks/attacks/run.py --victim "$victim" --mlm "$mlm" --recipes "$recipe" --n "${N:-50}" --no-speed \
    --root "$ROOT" &
done
wait
SSTKIT_RUNS=$ROOT "$SSTKIT" table benchmarks/attacks/spec.yaml
SSTKIT_RUNS=$ROOT "$SSTKIT" table benchmarks/attacks/spec_speed.yaml
