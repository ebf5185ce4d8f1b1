#!/usr/bin/env bash
# The extra victim this benchmark trains: packaged MiniLM with LoRA (r = 8) on a 1,500-sentence SST-2 subset drawn
# with data seed 1 (the MiniLM victim was trained on a seed-0 subset of 3,000), one epoch, CPU-sized. It serves as
# the validity oracle's independent second classifier (different seed and data subset) and as a transfer victim.
# Also the bag-of-words transfer target (configs/bow/sst2/fit.yaml: mean of word vectors, linear head, trained from
# scratch on the whole SST-2 training file): a victim that is not a transformer.
# Usage: bash benchmarks/obstinate/train_victims.sh [lora] [bow]   (both when none is named)
#   -> $ROOT/obstinate-lora-sst2/seed1/checkpoints/last.ckpt, $ROOT/obstinate-bow-sst2/seed0/checkpoints/last.ckpt
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=${SSTKIT_RUNS:-benchmarks/obstinate/runs}
SSTKIT=${SSTKIT:-sstkit}
WHICH=${*:-lora bow}
[[ " $WHICH " == *" lora "* ]] && "$SSTKIT" fit --config configs/bert/sst2/lora.yaml --name obstinate-lora-sst2 --run_root "$ROOT" \
  --seed_everything 1 --data.init_args.seed 1 --data.init_args.limit_train_samples 1500 \
  --data.init_args.max_length 48 --data.init_args.limit_eval_samples 200 --trainer.max_epochs 1 \
  --trainer.val_check_interval 1.0 --trainer.logger false
[[ " $WHICH " == *" bow "* ]] && "$SSTKIT" fit --config configs/bow/sst2/fit.yaml --name obstinate-bow-sst2 \
  --run_root "$ROOT" --trainer.logger false
true
