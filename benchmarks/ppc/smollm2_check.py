"""A tiny PPC check on a pretrained generator: SmolLM2-135M-Instruct (packaged, offline), unsteered vs PPC.

SmolLM2 decodes at a few tokens per CPU-second and PPC multiplies that by about ten, so this is a check of a few
prompts, not a benchmark: both sentiments for the first ``--limit`` prompts of prompts.txt, ``--max-new-tokens``
tokens, one sampling seed. The steering head is fitted on ``--rows`` SST-2 training rows of SmolLM2's mean hidden
states with the LM frozen (saved in the output folder, reused on a rerun); the separate MiniLM judge scores the
texts. Writes ``<out>/{none,ppc}/`` (``sstkit generate`` outputs), ``discriminator.json`` and ``results.md``.

    python benchmarks/ppc/smollm2_check.py --judge runs/cdt-minilm-sst2/seed0/checkpoints/last.ckpt
    python benchmarks/ppc/smollm2_check.py --table-only
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from sstkit.commands.generate import generate_main  # noqa: E402

CONTROLLERS = ("none", "ppc")


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--judge", default="runs/cdt-minilm-sst2/seed0/checkpoints/last.ckpt")
    p.add_argument("--limit", type=int, default=5)
    p.add_argument("--max-new-tokens", type=int, default=12)
    p.add_argument("--rows", type=int, default=300, help="SST-2 training rows the head is fitted on.")
    p.add_argument("--dev-rows", type=int, default=300, help="Rows of sst2/dev.tsv its accuracy is measured on.")
    p.add_argument("--out", default=str(HERE / "smollm2"))
    p.add_argument("--table-only", action="store_true")
    return p.parse_args()


def write_table(out: Path, args: argparse.Namespace) -> None:
    disc = json.loads((out / "discriminator.json").read_text())
    lines = ["## PPC on SmolLM2-135M-Instruct (tiny CPU check)", "",
             f"{args.limit} prompts × 2 attributes, {args.max_new_tokens} new tokens, sampling seed 0; steering head "
             f"fitted on {disc['train_rows']} SST-2 rows of SmolLM2's mean hidden states (LM frozen): "
             f"{100 * disc['dev_accuracy']:.1f} % on {disc['dev_rows']} rows of sst2/dev.tsv. PPC: α = 0.1, 2 steps "
             "per token, λ = 0.5. Judge acc. = separate MiniLM SST-2 classifier on prompt + continuation.", "",
             "| controller | judge acc. (%) | Dist-1 | Dist-2 | tokens / CPU s | texts |", "| --- | --- | --- | --- | --- | --- |"]
    for name in CONTROLLERS:
        path = out / name / "metrics.json"
        if path.is_file():
            m = json.loads(path.read_text())
            lines.append(f"| {name} | {100 * m['judge_acc']:.1f} | {m['dist1']:.2f} | {m['dist2']:.2f} | "
                         f"{m['tokens_per_s']:.2f} | {int(m['n'])} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")


def main() -> int:
    args = parse()
    out = Path(args.out)
    if not args.table_only:
        out.mkdir(parents=True, exist_ok=True)
        head = out / "discriminator.pt"
        for name in CONTROLLERS:
            generate_main(["--model", "smollm2", "--controller", name, "--attribute", "positive", "--attribute",
                           "negative", "--prompts", str(HERE / "prompts.txt"), "--limit", str(args.limit),
                           "--max-new-tokens", str(args.max_new_tokens), "--steps", "2", "--kl-weight", "0.5",
                           "--step-size", "0.1", "--discriminator", str(head), "--discriminator-rows", str(args.rows),
                           "--discriminator-dev-rows", str(args.dev_rows), "--judge", args.judge, "--device", "cpu",
                           "--out", str(out / name)])
    write_table(out, args)
    print((out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
