"""Benchmark of attribute-controlled generation (PPC, Wang & Sha 2024) on a small sstkit-trained OPT.

The OPT is trained on SST-2 + WikiText-2 text together with its steering discriminator (the AttributeDiscriminator
callback: a linear head on its mean hidden states, trained on SST-2 labels), by ``configs/opt/mixed/ppc_lm.yaml``.

Runs unsteered, prompt-only, PPLM-style, PPC, and PPC after RLDAF (plus the RLDAF LM decoded without a controller)
for both sentiments of SST-2 over the prompts in prompts.txt and several sampling seeds, and writes
runs.jsonl (one record per method and seed, appended as each finishes, so an interrupted run resumes),
results.csv / results.md (mean ± std over seeds) and samples.txt (kept out of RESULTS.md). Metrics: accuracy of the *separate* MiniLM judge
on prompt + continuation, perplexity of the continuation under SmolLM2-135M (packaged, a second LM), Dist-1/2/3,
and tokens per CPU-second (one thread; CPU time, since the machine is shared).

    python benchmarks/ppc/run.py --judge runs/cdt-minilm-sst2/seed0/checkpoints/last.ckpt   # whole benchmark
    python benchmarks/ppc/run.py --table-only                                                 # table from runs.jsonl

The LM is trained first when its checkpoint is missing: ``sstkit fit --config configs/opt/mixed/ppc_lm.yaml``.
``sst2_only/`` holds the earlier run of this script on an OPT trained on SST-2 sentences only, with a probe
fitted afterwards on the frozen LM (``--lm`` of ``configs/opt/sst2_ood/ppc_lm.yaml``, ``--config`` that file,
``--discriminator fit``, 30 prompts, seeds 0 1 2, 16 RLDAF updates).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

from sstkit.commands.generate import build_controller, run_rldaf  # noqa: E402
from sstkit.commands.generate_io import (  # noqa: E402
    evaluate,
    load_fluency_lm,
    load_judge,
    load_or_fit_discriminator,
    load_steerable,
    read_prompts,
)
from sstkit.generation.control import DecodeSettings, controlled_generate, head_accuracy  # noqa: E402

CONFIG = "configs/opt/mixed/ppc_lm.yaml"
DEV_ROWS = 872  # the first rows of sst2/dev.tsv, as the AttributeDiscriminator of the config measures them
METHODS = ["none", "prompt", "pplm", "ppc", "ppc+rldaf", "rldaf-only"]
COLUMNS = [("judge_acc", "judge acc. (%)", 100.0), ("ppl", "PPL (SmolLM2)", 1.0), ("dist1", "Dist-1", 1.0),
           ("dist2", "Dist-2", 1.0), ("dist3", "Dist-3", 1.0), ("tokens_per_s", "tokens / CPU s", 1.0)]


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lm", default="runs/opt-mixed-ppc-lm/seed0/checkpoints/last.ckpt")
    p.add_argument("--config", default=CONFIG, help="The LM's training config (rebuilds its tokenizer).")
    p.add_argument("--discriminator", default="checkpoint", help="'checkpoint': the head trained with the LM "
                   "(AttributeDiscriminator callback); 'fit': a probe fitted on 4,000 SST-2 rows, LM frozen.")
    p.add_argument("--judge", default="runs/cdt-minilm-sst2/seed0/checkpoints/last.ckpt")
    p.add_argument("--fluency-lm", default="smollm2")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--prompts", default=str(HERE / "prompts.txt"))
    p.add_argument("--limit", type=int, default=20, help="Use the first N prompts.")
    p.add_argument("--rldaf-prompts", default=str(HERE / "train_prompts.txt"))
    p.add_argument("--max-new-tokens", type=int, default=20)
    p.add_argument("--step-size", type=float, default=0.1)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--kl-weight", type=float, default=0.5)
    p.add_argument("--rldaf-steps", type=int, default=8)
    p.add_argument("--rldaf-subset", default="norms_biases")
    p.add_argument("--rldaf-lr", type=float, default=3e-3)
    p.add_argument("--rldaf-kl", type=float, default=0.1)
    p.add_argument("--rldaf-fluency", type=float, default=0.02)
    p.add_argument("--out", default=str(HERE))
    p.add_argument("--table-only", action="store_true")
    return p.parse_args()


def write_tables(out: Path, args: argparse.Namespace) -> None:
    records = [json.loads(x) for x in (out / "runs.jsonl").read_text().splitlines() if x.strip()]
    rows = []
    for method in METHODS:
        runs = [r for r in records if r["method"] == method]
        if not runs:
            continue
        row = {"method": method, "runs": len(runs), "texts_per_run": int(runs[0]["n"])}
        for key, _, factor in COLUMNS:
            values = [r[key] * factor for r in runs if key in r]
            row[key] = statistics.mean(values) if values else float("nan")
            row[key + "_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        rows.append(row)
    keys = ["method", "runs", "texts_per_run"] + [k for key, _, _ in COLUMNS for k in (key, key + "_std")]
    lines = [",".join(keys)] + [",".join(f"{r[k]:.4f}" if isinstance(r[k], float) else str(r[k]) for k in keys)
                                for r in rows]
    (out / "results.csv").write_text("\n".join(lines) + "\n")
    head = ["method", *[title for _, title, _ in COLUMNS], "runs"]
    seeds = sorted({r["seed"] for r in records})
    disc = json.loads((out / "discriminator.json").read_text()) if (out / "discriminator.json").is_file() else {}
    md = ["## Sentiment-controlled generation, small sstkit OPT — unsteered, prompt, PPLM-style, PPC, "
          "PPC + RLDAF (CPU scale)", "",
          f"Generator: `{disc.get('lm', '?')}` (config `{disc.get('config', '?')}`, {disc.get('lm_steps', '?')} "
          f"steps, validation perplexity {disc.get('lm_val_ppl', float('nan')):.1f}); discriminator: "
          f"{disc.get('source', '?')}, {100 * disc.get('dev_accuracy', float('nan')):.1f} % on "
          f"the first {disc.get('dev_rows', '?')} rows of sst2/dev.tsv.", "",
          f"{rows[0]['texts_per_run'] // 2} prompts × 2 attributes per run, sampling seeds {seeds}, "
          f"{args.max_new_tokens} new tokens (temperature 1). Steering: α = {args.step_size} (relative), "
          f"{args.steps} steps per token, λ = {args.kl_weight}; discriminator = linear head on the generator's mean "
          f"hidden states. RLDAF: one run, {args.rldaf_steps} updates × 16 episodes, subset {args.rldaf_subset}, "
          f"lr {args.rldaf_lr}, κ = {args.rldaf_kl}, β = {args.rldaf_fluency}. Judge acc. = separate MiniLM SST-2 "
          "classifier on prompt + continuation; PPL = continuation given prompt under SmolLM2-135M; tokens per "
          "CPU-second on one thread. Mean ± std over seeds.", "",
          "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        cells = [f"{r[k]:.2f} ± {r[k + '_std']:.2f}" if k != "tokens_per_s" else f"{r[k]:.1f} ± {r[k + '_std']:.1f}"
                 for k, _, _ in COLUMNS]
        md.append(f"| {r['method']} | " + " | ".join(cells) + f" | {r['runs']} |")
    (out / "results.md").write_text("\n".join(md) + "\n")


def load_discriminator(lm: object, args: argparse.Namespace, out: Path) -> object:
    """The steering head (from the LM's checkpoint, or a probe fitted here); its SST-2 dev accuracy is recorded."""
    from sstkit.commands.classifier_io import read_texts
    from sstkit.paths import resolve_data_dir

    if args.discriminator == "checkpoint":
        head, source = load_or_fit_discriminator(lm, args.lm), "linear head trained with the LM (AttributeDiscriminator)"
    else:
        head = load_or_fit_discriminator(lm, out / "discriminator.pt", "sst2/train.tsv", limit=4000, dev_file=None)
        source = "linear probe fitted on 4,000 SST-2 rows with the LM frozen"
    texts, labels = read_texts(resolve_data_dir(None) / "sst2" / "dev.tsv", limit=DEV_ROWS)
    record = {"lm": args.lm, "config": args.config, "source": source,
              "dev_accuracy": round(head_accuracy(head, lm, texts, labels), 4), "dev_rows": len(texts)}
    summary = Path(args.lm).parents[1] / "summary.json"  # the LM's run record (runs/<name>/seed0/summary.json)
    if summary.is_file():
        run = json.loads(summary.read_text())
        record.update(lm_steps=run.get("global_step"), lm_val_ppl=run.get("metrics", {}).get("val/ppl"))
    (out / "discriminator.json").write_text(json.dumps(record, indent=1) + "\n")
    return head


def main() -> int:
    args = parse()
    out = Path(args.out)
    if args.table_only:
        write_tables(out, args)
        print((out / "results.md").read_text())
        return 0
    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    if not Path(args.lm).is_file():
        subprocess.run([sys.executable, "-m", "sstkit", "fit", "--config", args.config], check=True, cwd=REPO)
    lm = load_steerable(args.lm, args.config)
    lm.model.requires_grad_(False)
    head = load_discriminator(lm, args, out)
    judge = load_judge(args.judge)
    fluency = load_fluency_lm(args.fluency_lm)
    prompts = read_prompts(args.prompts, args.limit)
    all_prompts, labels = prompts * 2, [1] * len(prompts) + [0] * len(prompts)
    runs_file = out / "runs.jsonl"
    done = {(r["method"], r["seed"]) for r in map(json.loads, runs_file.read_text().splitlines())} \
        if runs_file.is_file() else set()
    policy = None
    samples: dict[str, list[str]] = {}
    for seed in args.seeds:
        settings = DecodeSettings(args.max_new_tokens, temperature=1.0, top_k=0, seed=seed, batch_size=len(labels))
        for method in METHODS:
            if (method, seed) in done:
                continue
            model = lm
            if method in ("ppc+rldaf", "rldaf-only"):
                if policy is None:
                    began = time.process_time()
                    policy = run_rldaf(lm, head, build_controller("ppc", head, args.step_size, args.steps,
                                                                  args.kl_weight),
                                       read_prompts(args.rldaf_prompts), args.rldaf_steps, args.rldaf_subset,
                                       args.rldaf_lr, args.rldaf_kl, args.rldaf_fluency,
                                       DecodeSettings(args.max_new_tokens, 1.0, 0, 0, 16))
                    print(f"RLDAF: {time.process_time() - began:.0f} CPU s", flush=True)
                model = policy
            name = {"ppc+rldaf": "ppc", "rldaf-only": "none"}.get(method, method)
            controller = build_controller(name, head, args.step_size, args.steps, args.kl_weight)
            output = controlled_generate(model, all_prompts, controller, labels, settings)
            record = {"method": method, "seed": seed, **evaluate(output, judge, fluency)}
            with runs_file.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
            print(json.dumps(record), flush=True)
            if seed == args.seeds[0]:
                samples[method] = [f"[{'+' if a else '-'}] {p} **{' '.join(t.split())}**" for p, a, t in
                                   zip(output.prompts[::5], output.labels[::5], output.texts[::5], strict=True)]
            write_tables(out, args)
    if len(samples) == len(METHODS):  # a resumed run has not seen every method's first seed
        text = [f"# Samples (seed {args.seeds[0]}, every 5th text; [+]/[-] = target attribute, bold = generated)"]
        for method, lines in samples.items():
            text += ["", f"## {method}", ""] + [f"- {line}" for line in lines]
        (out / "samples.txt").write_text("\n".join(text) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
