"""SST-2 fine-tuning benchmark: MiniLM accuracy over seeds, and sstkit's overhead against a plain PyTorch loop.

Run from the repository root (about 25 minutes on 2 CPU cores):

    SSTKIT_DATA=../shared/data python benchmarks/sst2_finetune/run.py

Step 1 fine-tunes all-MiniLM-L6-v2 with ``sstkit fit`` for each seed on a seeded subset of SST-2's training file
and evaluates on the 872-sentence test.tsv with ``sstkit test``. Step 2 times training steps of ``sstkit fit``
and of a hand-written loop over the same model, batches and optimizer, alternating, in this one process.
Step 3 renders both tables with ``sstkit table``.
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


def sstkit(*args: str) -> None:
    """Runs the console script the way a user would, failing loudly."""
    cmd = [sys.executable, "-m", "sstkit", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def finetune(runs: Path, seeds: list[int], train_samples: int) -> None:
    common = ["--config", str(CONFIG), "--name", "sst2_finetune", "--run_root", str(runs),
              "--data.init_args.limit_train_samples", str(train_samples),
              "--trainer.val_check_interval", "1.0", "--trainer.limit_val_batches", "8"]
    for seed in seeds:
        folder = runs / "sst2_finetune" / f"seed{seed}"
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=HERE / "runs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train-samples", type=int, default=8000)
    parser.add_argument("--overhead-reps", type=int, default=4)
    parser.add_argument("--overhead-steps", type=int, default=30)
    parser.add_argument("--skip-finetune", action="store_true")
    args = parser.parse_args()
    if not args.skip_finetune:
        finetune(args.runs, args.seeds, args.train_samples)
    if args.overhead_reps:
        overhead(args.runs, args.overhead_reps, args.overhead_steps, batch_size=32)
    sstkit("table", str(HERE / "spec.yaml"))
    sstkit("table", str(HERE / "overhead_spec.yaml"))


if __name__ == "__main__":
    main()
