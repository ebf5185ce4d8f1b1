# Settings of the backdoor benchmark, sourced by run.sh and sweep.sh (from the repository root) so that both build
# and defend the same models: reads SIZE (tiny|small|full), DATASET (sst2|agnews), SSTKIT_RUNS and SSTKIT; sets
# ROOT, TARGET, SSTKIT and the per-size argument lists FIT, EVAL, SCAN and values LEN, STEPS, EPOCHS, CUL_LR, RM_LR.
# shellcheck shell=bash
DATASET=${DATASET:-sst2}
ROOT=${SSTKIT_RUNS:-benchmarks/backdoor/runs}/backdoor_bench/${SIZE:-small}
TARGET=1
if [[ $DATASET == agnews ]]; then ROOT=$ROOT-agnews; TARGET=0; fi
SSTKIT=${SSTKIT:-.venv/bin/sstkit}
if [[ "${SIZE:-small}" == tiny ]]; then   # a 2-layer, 64-wide random BERT: the pipeline end to end in minutes
  FIT=(--data.init_args.base.init_args.limit_train_samples 2000 --data.init_args.base.init_args.max_length 48
       --data.init_args.base.init_args.limit_eval_samples 400 --trainer.max_epochs 3 --model.init_args.lr 1.0e-3
       --model.init_args.pretrained false --trainer.limit_val_batches 0
       --model.init_args.config_overrides '{num_hidden_layers: 2, hidden_size: 64, num_attention_heads: 2, intermediate_size: 128}')
  EVAL=(--eval-samples 400); LEN=48; STEPS=80; CHECK=8; SCAN=(--num-candidates 6 --scan-samples 64 --rounds 1); EPOCHS=2
  CUL_LR=${CUL_LR:-3e-4}; RM_LR=1e-3
elif [[ "${SIZE:-small}" == full ]]; then
  FIT=(); EVAL=(); LEN=64; STEPS=600; SCAN=(--num-candidates 20 --scan-samples 128); EPOCHS=3; CUL_LR=1e-5; RM_LR=2e-5
else
  FIT=(--data.init_args.base.init_args.limit_train_samples 3000 --data.init_args.base.init_args.max_length 48
       --data.init_args.base.init_args.limit_eval_samples 400 --trainer.max_epochs 2 --model.init_args.lr 1.0e-4
       --trainer.limit_val_batches 0)
  EVAL=(--eval-samples 400); LEN=48; STEPS=60; SCAN=(--num-candidates 8 --scan-samples 64); EPOCHS=1
  CUL_LR=1e-5; RM_LR=2e-5
fi
# News articles are longer than SST-2 sentences: 48 tokens would cut off many inserted triggers.
if [[ $DATASET == agnews && ${SIZE:-small} != full ]]; then LEN=64; FIT+=(--data.init_args.base.init_args.max_length 64); fi
