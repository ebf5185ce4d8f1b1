"""Point benchmark on synthetic indoor scenes (CPU-sized): segmentation quality of PointNet, FlatFormer and
Swin3D (3 seeds, equal iterations), Swin3D's cRSE ablation, and FlatFormer's attention time and padding against
naive padded window attention over the same voxels.

Rerun (about 6 CPU-minutes on one thread):

    nice -n 10 .venv/bin/python benchmarks/point/run.py

Writes one summary.json per run under benchmarks/point/runs/ and the tables results.md / attention/results.md via
``sstkit table``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ARMS = {  # arm -> (config file, extra CLI arguments)
    "PointNet": ("pointnet", []),
    "FlatFormer": ("flatformer", []),
    "Swin3D (cRSE xyz+rgb+normal)": ("swin3d", []),
    "Swin3D (no cRSE)": ("swin3d", ["--model.init_args.backbone_args", '{"signals": null}']),
}


def write(folder: Path, name: str, seed: int, config: dict, metrics: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    record = {"name": name, "seed": seed, "status": "finished", "config": config, "metrics": metrics}
    (folder / "summary.json").write_text(json.dumps(record, indent=2))


REFERENCE_ARM = "Swin3D (cRSE xyz+rgb+normal)"


def run_arm(args: argparse.Namespace, arm: str, seed: int, steps: int, budget: str) -> dict:
    """Trains one arm for ``steps`` steps, validates, and writes its summary.json; returns its metrics."""
    from sstkit.cli import SstkitCLI

    config, extra = ARMS[arm]
    run_root = HERE / "runs" / "train"
    name = f"{config}-{len(extra) and 'nocrse' or 'default'}-{budget.split()[1]}"
    cli_args = ["fit", "--config", str(REPO / "configs" / "point" / "synthetic" / f"{config}.yaml"),
                "--seed_everything", str(seed), "--name", name, "--run_root", str(run_root),
                "--trainer.max_steps", str(steps), "--trainer.val_check_interval", str(steps),
                "--trainer.enable_progress_bar", "false", "--trainer.logger", "false",
                "--data.init_args.points_per_m2", str(args.density), *extra]
    shutil.rmtree(run_root / name / f"seed{seed}", ignore_errors=True)
    start, cpu_start = time.perf_counter(), time.process_time()
    cli = SstkitCLI(args=cli_args)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("val/")}
    metrics.update(wall_s=wall, cpu_s=cpu, steps=cli.trainer.global_step,
                   params=sum(p.numel() for p in cli.model.parameters()))
    write(HERE / "runs" / "eval" / name / f"seed{seed}", "point-bench", seed, {"arm": arm, "budget": budget},
          metrics)
    print(f"{arm} ({budget}) seed {seed}: mIoU {metrics.get('val/miou', float('nan')):.4f} in {wall:.0f} s",
          flush=True)
    return metrics


def train(args: argparse.Namespace) -> None:
    """Equal iterations for every arm, then equal CPU time: the cheaper arms get as many steps as fit into the
    reference arm's (Swin3D with cRSE) mean CPU time — the robust form of "equal wall time" on a shared machine."""
    arms = [a for a in ARMS if not args.arms or a.split()[0] in args.arms]
    cpu: dict[str, float] = {}
    for arm in arms:
        runs = [run_arm(args, arm, seed, args.steps, "equal iterations") for seed in args.seeds]
        cpu[arm] = sum(r["cpu_s"] for r in runs) / len(runs)
    if REFERENCE_ARM not in cpu or args.skip_equal_time:
        return
    for arm in arms:
        if arm != REFERENCE_ARM:
            steps = max(1, round(args.steps * cpu[REFERENCE_ARM] / cpu[arm]))
            for seed in args.seeds:
                run_arm(args, arm, seed, steps, "equal CPU time")


def _flat_attention(attn, x, pe, grid, batch, window, group) -> torch.Tensor:
    """Sort, group and attend (FlatFormer); grouping is part of the timed work."""
    from sstkit.nn.point import equal_size_groups, window_order

    groups = equal_size_groups(window_order(grid, batch, window, "x"), batch, group)
    return attn(x[groups.index], pe[groups.index], groups.real if groups.has_padding else None)


def _padded_attention(attn, x, pe, grid, batch, window_size) -> torch.Tensor:
    """Pack windows and pad each to the fullest one, then attend with a key mask (the naive baseline)."""
    from sstkit.nn.point import pack_windows, pad_windows

    index, valid = pad_windows(pack_windows(grid, batch, window_size))
    return attn(x[index], pe[index], valid)


def attention_timing(args: argparse.Namespace) -> None:
    """FlatFormer grouped attention vs attention over windows padded to the fullest window, same voxels."""
    from sstkit.datamodules import SyntheticScenesDataModule, collate_points

    from sstkit.nn.point import (
        FlatAttention,
        equal_size_groups,
        pack_windows,
        sincos_position_encoding,
        voxelize,
        window_order,
    )

    window, group, channels, heads = (13, 13, 13), 144, 128, 8  # FlatFormer's Waymo sizes, 3-D windows
    for seed in args.seeds:
        data = SyntheticScenesDataModule(num_train=4, points_per_m2=100, seed=100 + seed)
        data.setup()
        batch = collate_points([data.datasets["train"][i] for i in range(4)])
        vox = voxelize(batch["coord"], batch["batch"], 0.04)
        torch.manual_seed(seed)
        attn = FlatAttention(channels, heads).eval()
        x = torch.randn(vox.num_voxels, channels)
        pe = sincos_position_encoding(vox.grid, channels)

        flat = functools.partial(_flat_attention, attn, x, pe, vox.grid, vox.batch, window, group)
        padded = functools.partial(_padded_attention, attn, x, pe, vox.grid, vox.batch, window[0])
        times = {}
        with torch.no_grad():
            for name, fn in (("flat", flat), ("padded", padded)):
                fn()
                start = time.perf_counter()
                for _ in range(args.repeats):
                    fn()
                times[name] = (time.perf_counter() - start) / args.repeats * 1000
        groups = equal_size_groups(window_order(vox.grid, vox.batch, window, "x"), vox.batch, group)
        packed = pack_windows(vox.grid, vox.batch, window[0])
        padded_slots = packed.num_windows * int(packed.counts.max())
        metrics = {"voxels": vox.num_voxels, "flat_ms": times["flat"], "padded_ms": times["padded"],
                   "speedup": times["padded"] / times["flat"], "flat_padding": groups.padding_ratio,
                   "window_padding": (padded_slots - vox.num_voxels) / vox.num_voxels,
                   "max_window": int(packed.counts.max()), "mean_window": float(packed.counts.float().mean())}
        write(HERE / "runs" / "attention" / f"seed{seed}", "point-attention", seed,
              {"arm": "C=128, 8 heads, 13³ windows, G=144"}, metrics)
        print(f"attention seed {seed}: {metrics}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--density", type=float, default=10.0, help="points per m² of the synthetic scenes")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip_train", action="store_true")
    parser.add_argument("--skip_timing", action="store_true")
    parser.add_argument("--skip_equal_time", action="store_true")
    parser.add_argument("--arms", nargs="*", default=None, help="only these models (PointNet, FlatFormer, Swin3D)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the benchmark machine is shared: one core gives stable timings
    os.environ.setdefault("WANDB_MODE", "offline")
    if not args.skip_timing:
        attention_timing(args)
    if not args.skip_train:
        sys.argv = sys.argv[:1]  # LightningCLI would otherwise see this script's own options
        train(args)
    from sstkit.cli import main as sstkit_main

    for spec in ("spec.yaml", "spec_attention.yaml"):
        try:
            sstkit_main(["table", str(HERE / spec)])
        except SystemExit as exc:
            if exc.code:
                raise


if __name__ == "__main__":
    main()
