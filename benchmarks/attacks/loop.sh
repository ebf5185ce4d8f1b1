#!/usr/bin/env bash
# Attack -> augment -> retrain -> attack again, with configs and commands only (no code):
#   1. the SST-2 victim (configs/bert/sst2/attack_victim.yaml, train_victim.sh) when missing;
#   2. PWWS on the first TRAIN_N rows it trained on; the successes go into an augmented data folder (--write-tsv:
#      the victim's 2,000 training rows followed by the adversarial texts with their gold labels);
#   3. PWWS on the first TEST_N SST-2 test sentences against the victim ("before");
#   4. a retrain from the packaged MiniLM on that folder (the victim's config + adversarial_retrain.yaml);
#   5. PWWS on the same TEST_N sentences against the retrained model ("after"); then loop.md.
# Usage: [TRAIN_N=40] [TEST_N=40] [SEED=0] bash benchmarks/attacks/loop.sh   (runs under $SSTKIT_RUNS,
#        default benchmarks/attacks/runs; delete $ROOT/attack-victim-sst2-adv/seed<SEED> to retrain again)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=${SSTKIT_RUNS:-benchmarks/attacks/runs}
SSTKIT=${SSTKIT:-sstkit}
SEED=${SEED:-0}
CFG=configs/bert/sst2/attack_victim.yaml
victim=$ROOT/attack-victim-sst2/seed$SEED/checkpoints/last.ckpt
retrained=$ROOT/attack-victim-sst2-adv/seed$SEED/checkpoints/last.ckpt
adv=$ROOT/adversarial-sst2-seed$SEED
out=$ROOT/attacks-loop
[[ -f $victim ]] || bash benchmarks/attacks/train_victim.sh "$SEED" sst2
attack() { "$SSTKIT" attack --data-config $CFG --recipe pwws --seed "$SEED" "$@"; }
attack --model "$victim" --split train --limit "${TRAIN_N:-40}" --tag augment --out "$out/augment/seed$SEED" \
  --write-tsv "$adv"
attack --model "$victim" --split test --limit "${TEST_N:-40}" --tag before --out "$out/before/seed$SEED"
[[ -f $retrained ]] || "$SSTKIT" fit --config $CFG --config configs/bert/sst2/adversarial_retrain.yaml \
  --run_root "$ROOT" --seed_everything "$SEED" --data.init_args.data_dir "$adv"
attack --model "$retrained" --split test --limit "${TEST_N:-40}" --tag after --out "$out/after/seed$SEED"
"$SSTKIT" table benchmarks/attacks/spec_loop.yaml
