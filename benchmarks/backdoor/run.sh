#!/usr/bin/env bash
# Expose Before You Defend on MiniLM / SST-2: poisoned + clean models, clean unlearning, detection, removal.
# Usage: [SIZE=tiny|small|full] [DATASET=sst2|agnews] [TABLES=0] bash benchmarks/backdoor/run.sh [seeds...]
#        (default: SIZE=small, DATASET=sst2, seed 0; AG News runs go to backdoor_bench/<SIZE>-agnews, target label 0)
# CPU-sized by default (3,000 training sentences, max_length 48, 2 epochs, 400 test sentences, 60 CUL steps); it ends
# by rebuilding the four tables with `sstkit table` and the AUROC table (TABLES=0 skips that: parallel runs).
set -euo pipefail
cd "$(dirname "$0")/../.."
SEEDS=("${@:-0}")
source benchmarks/backdoor/settings.sh
for seed in "${SEEDS[@]}"; do
  for model in badnets clean addsent; do
    cfg=configs/bert/$DATASET/backdoor_$model.yaml
    run=(--config "$cfg" --run_root "$ROOT" --seed_everything "$seed" "${FIT[@]}")
    ckpt=$ROOT/bert-$DATASET-backdoor-$model/seed$seed/checkpoints/last.ckpt
    [[ -f $ckpt ]] || "$SSTKIT" fit "${run[@]}"
    "$SSTKIT" test "${run[@]}" --ckpt_path "$ckpt"
    attack=$model; [[ $model == clean ]] && attack=badnets   # a clean model's ASR is measured with BadNets words
    tag=backdoored; [[ $model == clean ]] && tag=clean
    out=$ROOT/ebyd/$model/seed$seed
    common=(--model "$ckpt" --dataset "$DATASET" --defense-samples 200 --max-length $LEN "${EVAL[@]}" --attack "$attack"
            --target-label $TARGET --seed "$seed" --tag "$tag")
    "$SSTKIT" backdoor expose "${common[@]}" --method cul --lr $CUL_LR --max-steps $STEPS --check-every ${CHECK:-4} --out "$out/expose"
    "$SSTKIT" backdoor detect "${common[@]}" --exposed "$out/expose" --rounds 2 "${SCAN[@]}" \
      --out "$out/detect/summary.json"
    if [[ $model != clean ]]; then
      for source in exposed original; do   # EBYD's exposed-scan triggers vs the same removal without exposure
        "$SSTKIT" backdoor remove "${common[@]}" --method unlearn --detect-report "$out/detect/summary.json" \
          --trigger-source $source --lr $RM_LR --epochs $EPOCHS --out "$out/unlearn-$source"
      done
      "$SSTKIT" backdoor remove "${common[@]}" --method prune --exposed "$out/expose" --epochs $EPOCHS --out "$out/prune"
    fi
  done
done
[[ ${TABLES:-1} == 0 ]] && exit 0
for spec in spec spec_expose spec_detect spec_remove; do "$SSTKIT" table "benchmarks/backdoor/$spec.yaml"; done
AUROC_OUT=benchmarks/backdoor/detect_auroc; [[ $DATASET == agnews ]] && AUROC_OUT=benchmarks/backdoor/agnews_detect_auroc
"$(dirname "$SSTKIT")/python" benchmarks/backdoor/auroc.py "$ROOT/ebyd" --out "$AUROC_OUT"
