"""Vega's tricks on SST-2: MiniLM baseline vs +FreeLB, +SMART, +self-calibration, +transductive, +SMART and
self-calibration stacked, and fine-tuning from an RTD + SimCSE continued-pretrained encoder.

Run from the repository root (defaults: 2,000 training sentences, 3 seeds; on a shared 2-core CPU one seed of all
arms takes a long time, so pass a smaller size, fewer seeds or fewer arms and say so):

    SSTKIT_DATA=../shared/data python benchmarks/vega/run.py
    SSTKIT_DATA=../shared/data python benchmarks/vega/run.py --train-samples 500 --seeds 0   # a small check

For each seed it fine-tunes every arm with ``sstkit fit`` (its config in ``configs/bert/sst2/``, the same seeded
training subset, one epoch) and tests the last checkpoint with ``sstkit test`` on test.tsv (GLUE's validation
set, 872 sentences). The ``rtd_simcse`` arm first continues pretraining MiniLM once (seed 0) with
``configs/bert/sst2/rtd_simcse.yaml`` on ``--rtd-pretrain-samples`` training sentences (labels unused; a seeded
subset that contains the fine-tuning subset), then fine-tunes ``finetune.yaml`` from the exported encoder with each
seed. The arms of one seed run back to back in this process's session, so the step-time ratio ``arm's train_time_s
per step / the baseline's`` compares runs under roughly the same load. Finished runs are skipped. The script then
writes one record per (arm, seed) to ``benchmarks/vega/records/<arm>_<n>/seed<seed>/summary.json`` (committed:
accuracy and ratio, copied from the runs' own summary.json) and renders ``results.md`` / ``results.csv`` with
``sstkit table benchmarks/vega/spec.yaml``, which reads only those records, so the table regenerates without the
runs. The transductive arm pseudo-labels test.tsv's inputs (never its labels): its accuracy is transductive.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RECORDS = HERE / "records"
# arm -> its config in configs/bert/sst2/ (rtd_simcse fine-tunes finetune.yaml from the continued-pretrained encoder)
ARMS = {"baseline": "finetune", "freelb": "freelb", "smart": "smart", "self_calibration": "self_calibration",
        "transductive": "transductive", "smart_self_calibration": "smart_self_calibration", "rtd_simcse": "finetune"}
PRETRAIN_SEED = 0  # one continued-pretrained encoder, fine-tuned with every seed


def sstkit(*args: str) -> None:
    """Runs the console script the way a user would, failing loudly."""
    cmd = [sys.executable, "-m", "sstkit", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def record_of(runs: Path, arm: str, seed: int, train_samples: int) -> dict:
    """The summary.json of one arm's run (empty if it has not run)."""
    path = runs / f"vega_{arm}_{train_samples}" / f"seed{seed}" / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def pretrain_dir(runs: Path, samples: int) -> Path:
    """The RTD + SimCSE continued-pretraining run on ``samples`` sentences; its encoder is exported to encoder/."""
    return runs / f"vega_rtd_pretrain_{samples}" / f"seed{PRETRAIN_SEED}"


def pretrain_rtd(runs: Path, samples: int) -> Path:
    """Continues pretraining MiniLM with RTD + SimCSE on ``samples`` unlabelled training sentences (once)."""
    encoder = pretrain_dir(runs, samples) / "encoder"
    if (encoder / "config.json").is_file():
        print(f"RTD pretraining on {samples} sentences: already done, skipping", flush=True)
        return encoder
    sstkit("fit", "--config", "configs/bert/sst2/rtd_simcse.yaml", "--name", f"vega_rtd_pretrain_{samples}",
           "--run_root", str(runs), "--seed_everything", str(PRETRAIN_SEED),
           "--data.init_args.limit_train_samples", str(samples),
           "--trainer.callbacks.init_args.export_dir", str(encoder))
    return encoder


def run_arm(runs: Path, arm: str, seed: int, train_samples: int, limit_test: int | None,
            extra: tuple[str, ...] = ()) -> None:
    name = f"vega_{arm}_{train_samples}"
    folder = runs / name / f"seed{seed}"
    done = folder / "summary.json"
    if done.is_file() and "test/acc" in json.loads(done.read_text()).get("metrics", {}):
        print(f"{name} seed {seed}: already done, skipping", flush=True)
        return
    common = ["--config", f"configs/bert/sst2/{ARMS[arm]}.yaml", "--name", name, "--run_root", str(runs),
              "--seed_everything", str(seed), "--data.init_args.limit_train_samples", str(train_samples),
              "--trainer.val_check_interval", "1.0", "--trainer.limit_val_batches", "4"]
    if limit_test:
        common += ["--data.init_args.limit_eval_samples", str(limit_test)]
    sstkit("fit", *common, *extra)
    sstkit("test", *common, *extra, "--ckpt_path", str(folder / "checkpoints" / "last.ckpt"))


def seconds_per_step(record: dict) -> float:
    return float(record["train_time_s"]) / max(1, int(record["global_step"]))


def write_table_records(runs: Path, seeds: list[int], train_samples: int, limit_test: int | None,
                        pretrain_samples: int, records: Path = RECORDS) -> None:
    """One record per finished (arm, seed): test accuracy and the step-time ratio to the same seed's baseline.

    Records of runs that are not in ``runs`` (any more) are left as they are, so the committed table keeps them.
    """
    pretrain = {}
    pretrain_path = pretrain_dir(runs, pretrain_samples) / "summary.json"
    if pretrain_path.is_file():
        pretrain = json.loads(pretrain_path.read_text())
    for seed in seeds:
        base = record_of(runs, "baseline", seed, train_samples)
        if "train_time_s" not in base:
            continue
        for arm in ARMS:
            rec = record_of(runs, arm, seed, train_samples)
            if "test/acc" not in rec.get("metrics", {}) or "train_time_s" not in rec:
                continue
            steps = int(pretrain.get("global_step", 0)) if arm == "rtd_simcse" else 0
            out = records / f"{arm}_{train_samples}" / f"seed{seed}"
            out.mkdir(parents=True, exist_ok=True)
            summary = {"name": f"vega_{arm}", "seed": seed, "status": "finished",
                       "config": {"seed_everything": seed, "arm": arm, "train_samples": train_samples,
                                  "test_sentences": limit_test or 872, "transductive": arm == "transductive"},
                       "metrics": {"test/acc": rec["metrics"]["test/acc"], "test/f1": rec["metrics"]["test/f1"],
                                   "step_time_ratio": seconds_per_step(rec) / seconds_per_step(base),
                                   # test inputs the arm trained on with pseudo-labels (none outside transductive;
                                   # 0 there too when no prediction reached the threshold)
                                   "pseudo_labels": rec["metrics"].get("method/transductive/pseudo_labels", 0.0),
                                   # RTD + SimCSE steps before fine-tuning, and their time over the baseline's
                                   # fine-tuning time (the continued pretraining's cost, paid once)
                                   "pretrain_steps": steps,
                                   "pretrain_time_ratio": (float(pretrain["train_time_s"]) / float(base["train_time_s"])
                                                           if steps else 0.0),
                                   "train_steps": rec["global_step"]}}
            (out / "summary.json").write_text(json.dumps(summary, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=HERE / "runs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train-samples", type=int, default=2000)
    parser.add_argument("--limit-test", type=int, default=None, help="test on the first N test sentences only")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--transductive-threshold", type=float, default=None,
                        help="confidence a pseudo-label needs (default: the config's 0.9; a short run's model may "
                             "reach it on no test input, the table's pseudo-label column shows how many it kept)")
    parser.add_argument("--rtd-pretrain-samples", type=int, default=2560,
                        help="unlabelled training sentences of the RTD + SimCSE continued pretraining (one epoch, "
                             "batch 32; a seeded subset containing the fine-tuning one)")
    parser.add_argument("--records", type=Path, default=RECORDS, help="where the table's per-run records go")
    args = parser.parse_args()
    threshold = args.transductive_threshold
    extras = {"transductive": ("--trainer.callbacks.init_args.threshold", str(threshold))} if threshold else {}
    if "rtd_simcse" in args.arms:  # pretrain first: the arm's fine-tuning needs the encoder
        encoder = pretrain_rtd(args.runs, args.rtd_pretrain_samples)
        extras["rtd_simcse"] = ("--model.init_args.backbone", str(encoder))
    for seed in args.seeds:
        for arm in ["baseline", *[a for a in args.arms if a != "baseline"]]:
            run_arm(args.runs, arm, seed, args.train_samples, args.limit_test, extras.get(arm, ()))
    write_table_records(args.runs, args.seeds, args.train_samples, args.limit_test, args.rtd_pretrain_samples,
                        args.records)
    sstkit("table", str(HERE / "spec.yaml"))


if __name__ == "__main__":
    main()
