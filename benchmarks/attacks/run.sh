#!/usr/bin/env bash
# The attack benchmark end to end on one CPU core, one stage after another (never two heavy jobs at once):
#   SST-2: the victim (if missing), the masked LM (if an MLM recipe is asked for and it is missing), RECIPES on the
#          first N test sentences -> results.md;
#   speed: PWWS on the first SPEED_N sentences at several victim batch sizes, and scoring alone -> speed.md;
#   AG News: AGNEWS_RECIPES on the first AGNEWS_N test sentences against $AGNEWS_VICTIM -> agnews.md;
#   seeds: PWWS on the first SEED_N SST-2 test sentences against the SST-2 victims of SEEDS (each trained when
#          missing) -> seeds.md.
# An empty RECIPES / AGNEWS_RECIPES / SEEDS (the default for SEEDS), or SPEED_N=0, skips that stage (and its table).
# Usage: [N=60] [SPEED_N=10] [AGNEWS_N=20] [AGNEWS_VICTIM=ckpt] [SEEDS="0 1"] [SEED_N=60] bash benchmarks/attacks/run.sh
#        (outputs under $SSTKIT_RUNS, default benchmarks/attacks/runs)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=${SSTKIT_RUNS:-benchmarks/attacks/runs}
SSTKIT=${SSTKIT:-sstkit}
RECIPES=${RECIPES-pwws bae bert-attack fba}
AGNEWS_RECIPES=${AGNEWS_RECIPES-pwws bert-attack}
SPEED_N=${SPEED_N-10}
SEEDS=${SEEDS-}
victim=$ROOT/attack-victim-sst2/seed0/checkpoints/last.ckpt
AGNEWS_VICTIM=${AGNEWS_VICTIM:-$ROOT/attack-victim-agnews/seed0/checkpoints/last.ckpt}
mlm=$ROOT/minilm-mlm/seed0/checkpoints/last.ckpt
needs_mlm() { [[ " $* " =~ \ (bae|bert-attack|fba)\  ]]; }
[[ -f $victim ]] || bash benchmarks/attacks/train_victim.sh 0 sst2
if needs_mlm "$RECIPES $AGNEWS_RECIPES"; then [[ -f $mlm ]] || bash benchmarks/attacks/train_mlm.sh; fi
mlm_args() { if needs_mlm "$*"; then echo "--mlm $mlm"; fi; }
for recipe in $RECIPES; do
  python benchmarks/attacks/run.py --victim "$victim" $(mlm_args "$recipe") --recipes "$recipe" --n "${N:-60}" \
    --no-speed --root "$ROOT"
done
[[ -z $RECIPES ]] || "$SSTKIT" table benchmarks/attacks/spec.yaml
if (( SPEED_N > 0 )); then
  python benchmarks/attacks/run.py --victim "$victim" --recipes --speed-n "$SPEED_N" --root "$ROOT"
  "$SSTKIT" table benchmarks/attacks/spec_speed.yaml
fi
if [[ -n $AGNEWS_RECIPES ]]; then
  [[ -f $AGNEWS_VICTIM ]] || bash benchmarks/attacks/train_victim.sh 0 agnews
  for recipe in $AGNEWS_RECIPES; do
    python benchmarks/attacks/run.py --dataset agnews --victim "$AGNEWS_VICTIM" $(mlm_args "$recipe") \
      --recipes "$recipe" --n "${AGNEWS_N:-20}" --no-speed --root "$ROOT"
  done
  "$SSTKIT" table benchmarks/attacks/spec_agnews.yaml
fi
if [[ -n $SEEDS ]]; then
  victims=()
  for seed in $SEEDS; do
    v=$ROOT/attack-victim-sst2/seed$seed/checkpoints/last.ckpt
    [[ -f $v ]] || bash benchmarks/attacks/train_victim.sh "$seed" sst2
    victims+=("$v")
  done
  python benchmarks/attacks/run.py --victim "${victims[@]}" --seeds $SEEDS --recipes pwws --n "${SEED_N:-60}" \
    --no-speed --root "$ROOT"
  "$SSTKIT" table benchmarks/attacks/spec_seeds.yaml
fi
