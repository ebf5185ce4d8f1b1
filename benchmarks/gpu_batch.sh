#!/usr/bin/env bash
# The Q-BERT and backdoor (EBYD) benchmarks on one GPU machine, side by side, in one command.
#
# Usage (repository root, sstkit installed, SSTKIT_DATA set): bash benchmarks/gpu_batch.sh OUTDIR [full|smoke] [SECONDS]
#   full:  Q-BERT, 3 seeds, 150 QAT steps, every arm (benchmarks/qbert/run.py, 3 workers) and backdoor SIZE=small,
#          seeds 0-2, SST-2 and AG News (benchmarks/backdoor/run.sh, one process per dataset and seed);
#   smoke: the same pipelines cut to a few steps, into a scratch folder;
#   sweep: the backdoor removal sweep only (benchmarks/backdoor/sweep.sh, both data sets, seeds 0-2).
# Everything runs at most SECONDS (default 480); then the JSON reports of every run (summary.json: runs, expose,
# detect and remove reports; omega.json) and the logs are packed into OUTDIR/results.tgz, relative to the repository root, so that
# `tar xzf results.tgz` in a checkout puts them where the tables (`sstkit table`) read them. Model files stay behind.
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR=$(mkdir -p "$1" && cd "$1" && pwd); MODE=${2:-full}; BUDGET=${3:-480}
PY=${PYTHON:-python3}
SSTKIT=${SSTKIT:-$(dirname "$(command -v "$PY")")/sstkit}
export OMP_NUM_THREADS=2 PYTHONUNBUFFERED=1 SSTKIT
WORK=$(mktemp -d); LOGS=$WORK/logs; mkdir -p "$LOGS"  # only the two archives land in OUTDIR
if [[ $MODE == smoke ]]; then
  QROOT=/tmp/smoke/qbert; export SSTKIT_RUNS=/tmp/smoke/backdoor
  QARGS=(--runs "$QROOT" --train-samples 256 --qat-steps 5 --no-report); QSEEDS=(0); QARMS=(--arms mixed-omega directq-3)
  BSIZE=tiny; BSEEDS=(0); DATASETS=(sst2)
else
  QROOT=benchmarks/qbert/runs; export SSTKIT_RUNS=benchmarks/backdoor/runs
  QARGS=(--runs "$QROOT" --qat-steps 150 --no-report); QSEEDS=(0 1 2); QARMS=()
  BSIZE=small; BSEEDS=(0 1 2); DATASETS=(sst2 agnews)
fi
nvidia-smi --query-gpu=name,memory.total --format=csv > "$LOGS/gpu.txt" 2>&1
if [[ $MODE == sweep ]]; then
  QROOT=/nonexistent; export SSTKIT_RUNS=benchmarks/backdoor/runs/sweep
  for dataset in sst2 agnews; do
    for seed in 0 1 2; do
      DATASET=$dataset TABLES=0 timeout "$BUDGET" bash benchmarks/backdoor/sweep.sh "$seed" \
        > "$LOGS/sweep-$dataset-seed$seed.log" 2>&1 &
    done
  done
  DATASETS=(); QARGS=()
fi

qbert() {  # fine-tune + Ω once, then every arm over 3 workers sharing the GPU
  "$PY" benchmarks/qbert/run.py "${QARGS[@]}" --seeds 0 --arms fp32 || return
  for k in 0 1 2; do
    "$PY" benchmarks/qbert/run.py "${QARGS[@]}" --seeds "${QSEEDS[@]}" "${QARMS[@]}" --worker "$k/3" \
      > "$LOGS/qbert-worker$k.log" 2>&1 &
  done
  wait
}
[[ $MODE == sweep ]] || timeout "$BUDGET" bash -c "$(declare -f qbert); $(declare -p PY QARGS QSEEDS QARMS LOGS); qbert" > "$LOGS/qbert.log" 2>&1 &
for dataset in "${DATASETS[@]+"${DATASETS[@]}"}"; do
  for seed in "${BSEEDS[@]}"; do
    SIZE=$BSIZE DATASET=$dataset TABLES=0 timeout "$BUDGET" bash benchmarks/backdoor/run.sh "$seed" \
      > "$LOGS/backdoor-$dataset-seed$seed.log" 2>&1 &
  done
done
wait
nvidia-smi >> "$LOGS/gpu.txt" 2>&1
find "$QROOT" "$SSTKIT_RUNS" \( -name summary.json -o -name omega.json \) 2>/dev/null > "$WORK/files.txt"
tar czf "$OUTDIR/results.tgz" -T "$WORK/files.txt" 2>/dev/null
tar czf "$OUTDIR/logs.tgz" -C "$WORK" logs
echo "packed $(wc -l < "$WORK/files.txt") reports"; tail -n 3 "$LOGS"/*.log
