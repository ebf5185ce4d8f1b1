"""The first version of the sst_opt benchmark (tables ``v1/`` and ``long/``), kept so they stay reproducible.

A 128-wide 2-layer OPT with a 4096-token BPE (the tied embedding is half the parameters), one shared AdamW lr of
1e-3 for every arm, test.txt as the validation split, 600 steps. Run from the repository root:

    SSTKIT_DATA=../shared/data python benchmarks/sst_opt/run.py --scale v1
    SSTKIT_DATA=../shared/data python benchmarks/sst_opt/run.py --scale long --seeds 0 --arms full lora relora sst

--scale long is the CPU model trained 4× longer (2400 steps: 48 SST iterations, 6 rounds, so every slot is
revisited several times); its runs are named ``sst_opt_long-<arm>`` and its table is ``long/results.md``.

Every arm uses the same model, tokens, schedule and seeds; only the method callback differs:

    full          configs/opt/wikitext2/full.yaml
    lora          configs/opt/wikitext2/lora.yaml        (r = 32)
    relora        configs/opt/wikitext2/relora.yaml      (ReLoRA*: r = 32, merge every 200 steps)
    sst           configs/opt/wikitext2/sst.yaml         (r = 32 = d/8)
    sst_top       sst.yaml, sampling: top                (ablation: always the largest singular values)
    sst_no_resvd  sst.yaml, resvd: false                 (ablation: no re-decomposition after a round)

Runs go to ``<runs>/sst_opt-<arm>/seed<s>/`` (finished ones are skipped, so the script resumes). Then the script
adds per-seed derived metrics to each run's summary.json (``bench/step_time_vs_full``: step time over the same
seed's full-rank run; ``bench/gap_closed_pct``: share of the LoRA→full perplexity gap the arm closes), renders
``results.md`` / ``results.csv`` with ``sstkit table`` and plots validation perplexity against steps.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CONFIGS = REPO / "configs" / "opt" / "wikitext2"
CALLBACK_ARG = "--trainer.callbacks.init_args."  # applies to the config's (last) method callback
ARMS: dict[str, tuple[str, list[str]]] = {
    "full": ("full.yaml", []),
    "lora": ("lora.yaml", []),
    "relora": ("relora.yaml", []),
    "sst": ("sst.yaml", []),
    "sst_top": ("sst.yaml", [f"{CALLBACK_ARG}sampling=top"]),
    "sst_no_resvd": ("sst.yaml", [f"{CALLBACK_ARG}resvd=false"]),
    # Diagnostic, not an arm of the paper: every triplet active (r = k) — a full-rank reparameterisation, so it
    # separates the cost of the factorisation itself from the cost of training only r slots at a time.
    "sst_all_slots": ("sst.yaml", [f"{CALLBACK_ARG}rank=1.0"]),
}
# --smoke: a tiny OPT for 8 steps of 8 × 64 tokens, with method intervals shrunk so resampling and merging run.
SMOKE_COMMON = ["--model.init_args.size=tiny", "--model.init_args.warmup_steps=2", "--trainer.max_steps=8",
                "--trainer.val_check_interval=4", "--data.init_args.block_size=64", "--data.init_args.batch_size=8",
                "--data.init_args.limit_eval_blocks=16", "--trainer.log_every_n_steps=1"]
SMOKE_ARM = {
    "lora": [f"{CALLBACK_ARG}rank=8"],
    "relora": [f"{CALLBACK_ARG}rank=8", f"{CALLBACK_ARG}merge_every=3", f"{CALLBACK_ARG}restart_warmup_steps=2"],
    "sst": [f"{CALLBACK_ARG}rank=8", f"{CALLBACK_ARG}steps_per_iteration=3", f"{CALLBACK_ARG}warmup_steps=2"],
}
# --scale cpu (the default, what the committed table ran): a 128-wide, 2-layer OPT (d = 128, so r = d/8 = 16),
# BPE of 4096, blocks of 64 tokens, 600 steps, method intervals scaled to the shorter run. A few minutes per run
# on 2 CPU cores. --scale paper: the configs as they are (hidden 256, 4 layers, 2000 steps; meant for a GPU).
CPU_COMMON = ["--model.init_args.config_overrides={hidden_size: 128, num_hidden_layers: 2, ffn_dim: 512, "
              "num_attention_heads: 4, dropout: 0.1}",
              "--data.init_args.bpe_vocab_size=4096", "--data.init_args.block_size=64",
              "--data.init_args.limit_eval_blocks=256", "--model.init_args.warmup_steps=30",
              "--trainer.max_steps=600", "--trainer.val_check_interval=100", "--trainer.log_every_n_steps=20"]
CPU_ARM = {
    "lora": [f"{CALLBACK_ARG}rank=16", f"{CALLBACK_ARG}alpha=32"],
    "relora": [f"{CALLBACK_ARG}rank=16", f"{CALLBACK_ARG}alpha=32", f"{CALLBACK_ARG}merge_every=150",
               f"{CALLBACK_ARG}restart_warmup_steps=10"],
    "sst": [f"{CALLBACK_ARG}rank=16", f"{CALLBACK_ARG}steps_per_iteration=50", f"{CALLBACK_ARG}warmup_steps=10"],
}
# --scale long: the CPU model 4× longer; SST keeps T3 = 50 (48 iterations, 6 rounds), ReLoRA* merges every 200.
LONG_COMMON = ["--trainer.max_steps=2400", "--trainer.val_check_interval=300"]
LONG_ARM = {"relora": [f"{CALLBACK_ARG}merge_every=200"]}
METRIC = "val/ppl"


def sstkit(*args: str) -> None:
    """Runs the console script the way a user would, failing loudly."""
    cmd = [sys.executable, "-m", "sstkit", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


PREFIX = "sst_opt-"  # --smoke runs are named smoke-sst_opt-<arm>, so the real spec's name filter skips them


def record_path(runs: Path, arm: str, seed: int) -> Path:
    return runs / f"{PREFIX}{arm}" / f"seed{seed}" / "summary.json"


def train(runs: Path, arms: list[str], seeds: list[int], scale: str) -> None:
    for arm in arms:
        config, overrides = ARMS[arm]
        # The arm's own overrides go last, so an ablation can change what the scale's method settings set.
        if scale == "smoke":
            overrides = SMOKE_COMMON + SMOKE_ARM.get(arm.split("_")[0], []) + overrides
        elif scale in ("cpu", "long"):
            overrides = CPU_COMMON + CPU_ARM.get(arm.split("_")[0], []) + overrides
            if scale == "long":
                overrides = overrides + LONG_COMMON + LONG_ARM.get(arm.split("_")[0], [])
        for seed in seeds:
            record = record_path(runs, arm, seed)
            if record.is_file() and json.loads(record.read_text()).get("status") == "finished":
                print(f"{arm} seed {seed}: already done, skipping", flush=True)
                continue
            last = record.parent / "checkpoints" / "last.ckpt"
            resume = ["--ckpt_path", str(last)] if last.is_file() else []
            # Callback overrides first: they address the config's method callback, the last one in the list so far.
            sstkit("fit", "--config", str(CONFIGS / config), "--name", f"{PREFIX}{arm}", "--run_root", str(runs),
                   "--seed_everything", str(seed), *overrides,
                   "--trainer.callbacks+=sstkit.bench.resources.ResourceStats", *resume)


def add_derived_metrics(runs: Path, arms: list[str], seeds: list[int]) -> None:
    """Per seed: step time relative to full-rank and the share of the LoRA→full perplexity gap closed."""
    for seed in seeds:
        records = {arm: json.loads(record_path(runs, arm, seed).read_text()) for arm in arms
                   if record_path(runs, arm, seed).is_file()}
        full, lora = records.get("full"), records.get("lora")
        for arm, record in records.items():
            metrics = record["metrics"]
            if full and record.get("train_steps_per_s"):
                metrics["bench/step_time_vs_full"] = full["train_steps_per_s"] / record["train_steps_per_s"]
            if full and lora and METRIC in metrics:
                gap = lora["metrics"][METRIC] - full["metrics"][METRIC]
                if gap:
                    metrics["bench/gap_closed_pct"] = 100 * (lora["metrics"][METRIC] - metrics[METRIC]) / gap
            record_path(runs, arm, seed).write_text(json.dumps(record, indent=2))


def perplexity_curves(runs: Path, arms: list[str], seeds: list[int]) -> dict[str, dict[int, float]]:
    """Mean validation perplexity over seeds at every evaluated step, per arm (from the runs' CSV logs)."""
    curves: dict[str, dict[int, float]] = {}
    for arm in arms:
        points: dict[int, list[float]] = {}
        for seed in seeds:
            for path in sorted(record_path(runs, arm, seed).parent.glob("csv/version_*/metrics.csv")):
                with path.open() as handle:
                    for row in csv.DictReader(handle):
                        if row.get(METRIC):
                            # Lightning logs a validation after step n under the index n - 1 of its last batch.
                            points.setdefault(int(row["step"]) + 1, []).append(float(row[METRIC]))
        curves[arm] = {step: sum(v) / len(v) for step, v in sorted(points.items())}
    return curves


def plot(curves: dict[str, dict[int, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for arm, curve in curves.items():
        if curve:
            ax.plot(list(curve), list(curve.values()), marker="o", markersize=3, label=arm)
    ax.set(xlabel="training step", ylabel="validation perplexity (test.txt)", yscale="log",
           title="Small OPT on WikiText-2: mean over seeds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def main(runs: Path, arms: list[str], seeds: list[int], scale: str, smoke: bool = False) -> None:
    """Trains the v1 arms that are missing and regenerates ``v1/`` (scale ``v1``) or ``long/`` (scale ``long``)."""
    global PREFIX
    arms = [a for a in arms if a in ARMS] or list(ARMS)
    if smoke:
        PREFIX = "smoke-" + PREFIX
    elif scale == "long":
        PREFIX = "sst_opt_long-"
    seeds = [0] if smoke else seeds
    train(runs, arms, seeds, "smoke" if smoke else ("long" if scale == "long" else "cpu"))
    add_derived_metrics(runs, arms, seeds)
    folder = HERE / ("long" if scale == "long" else "v1")
    plot(perplexity_curves(runs, arms, seeds), runs / "ppl_vs_steps.png" if smoke else folder / "ppl_vs_steps.png")
    if smoke:
        # The committed tables come from real runs only: a smoke run prints its table instead of writing it.
        spec = yaml.safe_load((HERE / "v1" / "spec.yaml").read_text())
        spec.update(runs=[{"summary": str(runs)}], expect_runs=len(seeds), filters={"name": ["smoke-" + n for n in spec["filters"]["name"]]})
        spec["rows"][0]["values"] = {"smoke-" + k: v for k, v in spec["rows"][0]["values"].items()}
        (runs / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        sstkit("table", str(runs / "spec.yaml"), "--print")
    else:
        sstkit("table", str(folder / "spec.yaml"))
