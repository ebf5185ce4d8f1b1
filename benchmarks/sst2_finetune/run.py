"""SST-2 fine-tuning benchmark: MiniLM accuracy over seeds, and sstkit's overhead against a plain PyTorch loop.

Run from the repository root (the 6,000-sentence subset: about 25 minutes on 2 CPU cores; the whole training
file: about 30 minutes per seed without other load, several hours on a shared 2-core machine):

    SSTKIT_DATA=../shared/data python benchmarks/sst2_finetune/run.py                      # both sizes
    SSTKIT_DATA=../shared/data python benchmarks/sst2_finetune/run.py --train-samples 0 --overhead-reps 0

Step 1 fine-tunes all-MiniLM-L6-v2 with ``sstkit fit`` for each seed, on a seeded subset of SST-2's training file
(run name ``sst2_finetune``) and on the whole file (``--train-samples 0``, run name ``sst2_finetune_full``), and
evaluates on the 872-sentence test.tsv with ``sstkit test``. Step 2 times training steps of ``sstkit fit`` and of
a hand-written loop over the same model, batches and optimizer, alternating, in this one process. Step 3 renders
the tables with ``sstkit table``: ``spec.yaml`` (subset), ``spec_full.yaml`` (whole file), ``overhead_spec.yaml``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CONFIG = REPO / "configs" / "bert" / "sst2" / "finetune.yaml"
SUBSET = 6000  # the committed results.md; 0 = the whole train.tsv (spec_full.yaml)


def sstkit(*args: str) -> None:
    """Runs the console script the way a user would, failing loudly."""
    cmd = [sys.executable, "-m", "sstkit", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def run_name(train_samples: int) -> str:
    """The run folder name: ``sst2_finetune`` for a subset, ``sst2_finetune_full`` for the whole file (0)."""
    return "sst2_finetune" if train_samples else "sst2_finetune_full"


def finetune_args(runs: Path, train_samples: int) -> list[str]:
    """The arguments ``sstkit fit`` and ``sstkit test`` share (0 training samples: no limit, the whole file)."""
    limit = ["--data.init_args.limit_train_samples", str(train_samples)] if train_samples else []
    return ["--config", str(CONFIG.relative_to(REPO)), "--name", run_name(train_samples), "--run_root", str(runs),
            *limit, "--trainer.val_check_interval", "1.0", "--trainer.limit_val_batches", "8"]


def finetune(runs: Path, seeds: list[int], train_samples: int) -> None:
    common = finetune_args(runs, train_samples)
    for seed in seeds:
        folder = runs / run_name(train_samples) / f"seed{seed}"
        record = folder / "summary.json"
        if record.is_file() and "test/acc" in json.loads(record.read_text()).get("metrics", {}):
            print(f"seed {seed}: already done, skipping", flush=True)
            continue
        sstkit("fit", *common, "--seed_everything", str(seed))
        sstkit("test", *common, "--seed_everything", str(seed), "--ckpt_path", str(folder / "checkpoints" / "last.ckpt"))


def plain_loop_steps_per_s(steps: int, batch_size: int) -> float:
    """The same model, data and optimizer as ``sstkit fit``, in a hand-written loop without Lightning."""
    from sstkit.datamodules import SST2DataModule

    from sstkit.models import TextClassifier

    torch.manual_seed(0)
    model = TextClassifier("minilm", lr=5e-5)
    data = SST2DataModule(batch_size=batch_size, max_length=66, limit_train_samples=steps * batch_size)
    data.setup("fit")
    optimizer = torch.optim.AdamW(model.parameter_groups(), lr=model.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, model.lr_lambda(steps))
    model.train()
    start = time.perf_counter()
    for batch in data.train_dataloader():
        loss = model.step(batch, "train").loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
    return steps / (time.perf_counter() - start)


def sstkit_steps_per_s(runs: Path, steps: int, batch_size: int, rep: int) -> float:
    from sstkit.cli import SstkitCLI

    name = f"overhead_sstkit_{rep}"
    SstkitCLI(args=["fit", "--config", str(CONFIG), "--name", name, "--run_root", str(runs / "scratch"),
                    "--data.init_args.limit_train_samples", str(steps * batch_size),
                    "--data.init_args.batch_size", str(batch_size), "--trainer.max_steps", str(steps),
                    "--trainer.limit_val_batches", "0", "--trainer.enable_checkpointing", "false",
                    "--trainer.num_sanity_val_steps", "0"])
    record = json.loads((runs / "scratch" / name / "seed0" / "summary.json").read_text())
    return float(record["train_steps_per_s"])


def overhead(runs: Path, reps: int, steps: int, batch_size: int) -> None:
    """Alternates the two arms so that machine load drifts hit both; one record per repetition."""
    for rep in range(reps):
        first_plain = rep % 2 == 0
        plain = plain_loop_steps_per_s(steps, batch_size) if first_plain else None
        framework = sstkit_steps_per_s(runs, steps, batch_size, rep)
        plain = plain if plain is not None else plain_loop_steps_per_s(steps, batch_size)
        folder = runs / "overhead" / f"seed{rep}"
        folder.mkdir(parents=True, exist_ok=True)
        record = {"name": "overhead", "seed": rep, "status": "finished",
                  "config": {"seed_everything": rep, "arm": "sstkit fit vs plain loop", "steps": steps,
                             "batch_size": batch_size, "threads": torch.get_num_threads()},
                  "metrics": {"plain_steps_per_s": plain, "sstkit_steps_per_s": framework,
                              "overhead_ratio": plain / framework}}
        (folder / "summary.json").write_text(json.dumps(record, indent=2))
        print(f"rep {rep}: plain {plain:.3f} steps/s, sstkit {framework:.3f} steps/s, ratio {plain / framework:.3f}")


def build_parser() -> argparse.ArgumentParser:
    """The script's options (defaults: what the committed tables hold)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=HERE / "runs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train-samples", type=int, nargs="+", default=[SUBSET, 0],
                        help="training sentences per run set; 0 = the whole train.tsv (default: both tables)")
    parser.add_argument("--overhead-reps", type=int, default=4)
    parser.add_argument("--overhead-steps", type=int, default=30)
    parser.add_argument("--skip-finetune", action="store_true")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if not args.skip_finetune:
        for train_samples in args.train_samples:
            finetune(args.runs, args.seeds, train_samples)
    if args.overhead_reps:
        overhead(args.runs, args.overhead_reps, args.overhead_steps, batch_size=32)
    for train_samples in args.train_samples:
        sstkit("table", str(HERE / ("spec.yaml" if train_samples else "spec_full.yaml")))
    if args.overhead_reps:
        sstkit("table", str(HERE / "overhead_spec.yaml"))


if __name__ == "__main__":
    main()
