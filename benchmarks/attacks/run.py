"""Attack benchmark: PWWS, BAE, BERT-Attack and FBA on a MiniLM SST-2 victim, plus batched vs unbatched queries/s.

Writes one ``summary.json`` per (recipe, N, victim seed) under ``$ROOT/attacks/<recipe>-n<N>/seed<s>/`` and one per query
mode under ``$ROOT/attacks-speed/<mode>/seed<s>/``, with per-example ``examples.jsonl``; then
``sstkit table benchmarks/attacks/spec.yaml`` and ``spec_speed.yaml`` render the tables.

Usage (from the repository root; see README.md for sizes)::

    python benchmarks/attacks/run.py --victim benchmarks/attacks/runs/attack-victim-sst2/seed0/checkpoints/last.ckpt \
        --mlm benchmarks/attacks/runs/minilm-mlm/seed0/checkpoints/last.ckpt --n 50 --speed-n 10
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from sstkit.commands.attack import load_victim
from sstkit.commands.classifier_io import read_texts
from sstkit.functional.attacks.constraints import SentenceEncoder
from sstkit.functional.attacks.recipes import RECIPES, build_recipe, load_mlm, run_recipe
from sstkit.functional.attacks.victim import Victim
from sstkit.paths import resolve_data_dir


def write(path: Path, name: str, seed: int, config: dict, metrics: dict, results: list | None = None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "summary.json").write_text(json.dumps({"name": name, "seed": seed, "status": "finished",
                                                   "config": config, "metrics": metrics}, indent=2))
    if results is not None:
        with (path / "examples.jsonl").open("w") as f:
            for r in results:
                f.write(json.dumps(r.as_dict()) + "\n")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--victim", nargs="+", required=True, help="victim checkpoints, one per seed (seed = position)")
    p.add_argument("--mlm", default=None, help="masked LM (needed by bae, bert-attack, fba)")
    p.add_argument("--n", type=int, default=50, help="first N SST-2 test sentences per recipe")
    p.add_argument("--speed-n", type=int, default=10, help="sentences of the batched/unbatched PWWS comparison")
    p.add_argument("--recipes", nargs="*", default=list(RECIPES), help="none: only the speed comparison")
    p.add_argument("--root", default="benchmarks/attacks/runs")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--no-speed", action="store_true", help="skip the batched/unbatched comparison")
    args = p.parse_args()

    texts, labels = read_texts(resolve_data_dir(None) / "sst2" / "test.tsv", limit=args.n)
    mlm = load_mlm(args.mlm, args.batch_size, 128) if args.mlm else None
    encoder = SentenceEncoder.load("minilm")
    for seed, ckpt in enumerate(args.victim):
        model, tokenizer, _ = load_victim(ckpt)
        for recipe in args.recipes:
            built = build_recipe(recipe, mlm=mlm, encode=encoder, seed=seed)
            victim = Victim(model, tokenizer, batch_size=args.batch_size)
            report = run_recipe(built, victim, texts, labels, encode=encoder, perplexity=mlm)
            config = {"recipe": recipe, "victim": ckpt, "n": args.n, "batch_size": args.batch_size,
                      "options": built.options}
            metrics = {**report.summary, "forwards": report.forwards}
            write(Path(args.root) / "attacks" / f"{recipe}-n{args.n}" / f"seed{seed}", f"attack-{recipe}", seed, config, metrics,
                  report.results)
            print(recipe, seed, json.dumps(report.summary), flush=True)
        if args.no_speed:
            continue
        # Queries/s of the same PWWS attack, batched and one text per forward, in this run, on the same texts.
        for mode, batch in (("batched", args.batch_size), ("unbatched", 1)):
            victim = Victim(model, tokenizer, batch_size=batch)
            start = time.perf_counter()
            report = run_recipe(build_recipe("pwws"), victim, texts[:args.speed_n], labels[:args.speed_n])
            seconds = time.perf_counter() - start
            metrics = {"queries": victim.queries, "forwards": victim.forwards, "seconds": seconds,
                       "queries_per_second": victim.queries / seconds,
                       "successes": report.summary["successes"]}
            write(Path(args.root) / "attacks-speed" / mode / f"seed{seed}", f"attack-speed-{mode}", seed,
                  {"mode": mode, "batch_size": batch, "n": args.speed_n, "recipe": "pwws"}, metrics)
            print(mode, seed, json.dumps(metrics), flush=True)


if __name__ == "__main__":
    main()
