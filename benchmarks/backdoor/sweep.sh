#!/usr/bin/env bash
# Removal budget sweep on BadNets models (SIZE=small of run.sh): unlearning the recovered tokens for 1, 3 and 5
# epochs, with the exposed or the original model's scan; then random-label exposure and its scan.
# Usage: [DATASET=sst2|agnews] [TABLES=0] bash benchmarks/backdoor/sweep.sh [seeds...]
# Runs go to benchmarks/backdoor/runs/sweep/backdoor_bench/small[-agnews] (its own models, so that each row's
# before/after compares the same model); spec_sweep.yaml renders sweep/results.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
SEEDS=("${@:-0}")
SIZE=small SSTKIT_RUNS=${SSTKIT_RUNS:-benchmarks/backdoor/runs/sweep} source benchmarks/backdoor/settings.sh
for seed in "${SEEDS[@]}"; do
  ckpt=$ROOT/bert-$DATASET-backdoor-badnets/seed$seed/checkpoints/last.ckpt
  [[ -f $ckpt ]] || "$SSTKIT" fit --config "configs/bert/$DATASET/backdoor_badnets.yaml" --run_root "$ROOT" \
    --seed_everything "$seed" "${FIT[@]}"
  out=$ROOT/ebyd/badnets/seed$seed
  common=(--model "$ckpt" --dataset "$DATASET" --defense-samples 200 --max-length $LEN "${EVAL[@]}"
          --attack badnets --target-label $TARGET --seed "$seed" --tag backdoored)
  [[ -f $out/expose/summary.json ]] || "$SSTKIT" backdoor expose "${common[@]}" --method cul --lr $CUL_LR \
    --max-steps $STEPS --check-every 4 --out "$out/expose"
  [[ -f $out/detect/summary.json ]] || "$SSTKIT" backdoor detect "${common[@]}" --exposed "$out/expose" \
    --rounds 2 "${SCAN[@]}" --out "$out/detect/summary.json"
  for epochs in 1 3 5; do
    for source in exposed original; do
      [[ -f $out/unlearn-$source-e$epochs/summary.json ]] || "$SSTKIT" backdoor remove "${common[@]}" \
        --method unlearn --detect-report "$out/detect/summary.json" --trigger-source $source --lr $RM_LR \
        --epochs $epochs --out "$out/unlearn-$source-e$epochs"
    done
  done
  # The paper's second exposure: fine-tuning on the defense set with random labels.
  [[ -f $out/expose-random/summary.json ]] || "$SSTKIT" backdoor expose "${common[@]}" --method random-label \
    --lr 2e-5 --max-steps $STEPS --check-every 4 --out "$out/expose-random"
  [[ -f $out/detect-random/summary.json ]] || "$SSTKIT" backdoor detect "${common[@]}" --exposed "$out/expose-random" \
    --rounds 2 "${SCAN[@]}" --out "$out/detect-random/summary.json"
done
[[ ${TABLES:-1} == 0 ]] || "$SSTKIT" table benchmarks/backdoor/spec_sweep.yaml
