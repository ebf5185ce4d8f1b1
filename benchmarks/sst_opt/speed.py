"""SST step time against full-rank training, dense vs factored forward, in one process (no other load).

    python benchmarks/sst_opt/speed.py

For each model shape (the CPU-scale OPT of run.py and the `small` preset of the configs) and each arm — full-rank,
SST with the dense forward (W = U diag(s) Vh materialised once per step, one matmul) and SST with the factored
forward (x·Vhᵀ, ·s, ·Uᵀ) — this times complete training steps (forward, backward, AdamW step, SST's
renormalisation) on random token blocks, arms interleaved over repetitions so drifts in machine speed hit all of
them. Each repetition writes a summary.json with the arm's ms/step and its ratio to the full-rank step of the same
repetition; ``sstkit table speed_spec.yaml`` renders ``speed/results.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from sstkit.functional.sst import apply_sst, sst_step_end
from sstkit.functional.surgery import TRANSFORMER_PROJECTIONS
from sstkit.models import CausalLM

HERE = Path(__file__).resolve().parent
SHAPES = {  # name: (CausalLM size, config overrides, vocab, block, batch, rank = d/8)
    "cpu-scale (d=128, 2 layers)": ("tiny", {"hidden_size": 128, "num_hidden_layers": 2, "ffn_dim": 512,
                                            "num_attention_heads": 4}, 4096, 64, 16, 16),
    "small preset (d=256, 4 layers)": ("small", {}, 8192, 128, 16, 32),
}
ARMS = ("full", "sst-dense", "sst-factored")


def build(shape: tuple, arm: str) -> tuple[CausalLM, dict, torch.optim.Optimizer]:
    size, overrides, vocab, _, _, rank = shape
    torch.manual_seed(0)
    model = CausalLM(size, vocab_size=vocab, config_overrides={**overrides, "dropout": 0.0})
    layers = {}
    if arm != "full":
        layers = apply_sst(model, rank, TRANSFORMER_PROJECTIONS, seed=0, forward_mode=arm.split("-")[1])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    return model.train(), layers, optimizer


def ms_per_step(shape: tuple, arm: str, steps: int) -> float:
    model, layers, optimizer = build(shape, arm)
    _, _, vocab, block, batch, _ = shape
    generator = torch.Generator().manual_seed(1)
    data = [torch.randint(4, vocab, (batch, block), generator=generator) for _ in range(steps + 2)]

    def train_step(i: int) -> None:
        loss = model.step({"input_ids": data[i]}, "train").loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if layers:
            sst_step_end(layers, i + 1, steps_per_iteration=10**9)  # renormalise; no resample inside the timing

    for i in range(2):  # warm-up: allocator, first-call costs
        train_step(i)
    start = time.perf_counter()
    for i in range(2, steps + 2):
        train_step(i)
    return 1000 * (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=HERE / "runs" / "speed")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    for rep in range(args.reps):
        for shape_name, shape in SHAPES.items():
            times = {arm: ms_per_step(shape, arm, args.steps) for arm in ARMS}
            for arm, ms in times.items():
                folder = args.runs / f"{shape_name.split(' ')[0]}-{arm}" / f"seed{rep}"
                folder.mkdir(parents=True, exist_ok=True)
                record = {"name": "sst_speed", "seed": rep, "status": "finished",
                          "config": {"seed_everything": rep, "shape": shape_name, "arm": arm, "steps": args.steps,
                                     "threads": torch.get_num_threads()},
                          "metrics": {"ms_per_step": ms, "vs_full": ms / times["full"]}}
                (folder / "summary.json").write_text(json.dumps(record, indent=2))
            print(rep, shape_name, {k: round(v, 1) for k, v in times.items()}, flush=True)


if __name__ == "__main__":
    main()
