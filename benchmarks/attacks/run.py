"""Attack benchmark: PWWS, BAE, BERT-Attack and FBA on MiniLM victims (SST-2, AG News), plus victim queries/s at
several batch sizes.

Writes one ``summary.json`` per (recipe, N, victim seed) under ``$ROOT/attacks/<recipe>-n<N>/seed<s>/`` (AG News:
``$ROOT/attacks-agnews/…``) with per-example ``examples.jsonl``, and one per speed measurement under
``$ROOT/attacks-speed/<mode>-b<batch>/seed<s>/``; ``sstkit table benchmarks/attacks/spec.yaml`` (SST-2),
``spec_agnews.yaml`` and ``spec_speed.yaml`` render the tables.

Speed, two measurements in the same process on the same victim:
    ``attack`` — the PWWS attack on the first ``--speed-n`` sentences with the victim scoring up to B texts per
    forward, for each B of ``--speed-batches`` (identical queries and results for every B);
    ``scoring`` — only the victim's forwards: the first ``--scoring-texts`` texts that attack queried, scored again
    at each B of ``--scoring-batches`` (the ceiling batching can reach on this machine, search structure aside).
Queries per CPU-second (``time.process_time``: this process's own CPU time) is the number to compare on a shared
machine; queries per wall-second is recorded too.

Usage (from the repository root; see README.md for sizes)::

    python benchmarks/attacks/run.py --victim benchmarks/attacks/runs/attack-victim-sst2/seed0/checkpoints/last.ckpt \
        --mlm benchmarks/attacks/runs/minilm-mlm/seed0/checkpoints/last.ckpt --n 50 --speed-n 10
    python benchmarks/attacks/run.py --dataset agnews --victim $AGNEWS_VICTIM --recipes pwws --n 20 --no-speed
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from sstkit.commands.attack import config_rows, load_datamodule, load_victim
from sstkit.functional.attacks.constraints import SentenceEncoder
from sstkit.functional.attacks.lexicon import WordNetLexicon
from sstkit.functional.attacks.recipes import RECIPES, build_recipe, load_mlm, run_recipe
from sstkit.functional.attacks.victim import Victim

VICTIM_CONFIGS = {"sst2": "configs/bert/sst2/attack_victim.yaml", "agnews": "configs/bert/agnews/attack_victim.yaml"}


def write(path: Path, name: str, seed: int, config: dict, metrics: dict, results: list | None = None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "summary.json").write_text(json.dumps({"name": name, "seed": seed, "status": "finished",
                                                   "config": config, "metrics": metrics}, indent=2))
    if results is not None:
        with (path / "examples.jsonl").open("w") as f:
            for r in results:
                f.write(json.dumps(r.as_dict()) + "\n")


def timed(victim: Victim, work) -> dict:
    """Runs ``work()`` and returns the victim's query counters and the wall / CPU seconds it took."""
    q0, f0 = victim.queries, victim.forwards
    w0, c0 = time.perf_counter(), time.process_time()
    work()
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    queries, forwards = victim.queries - q0, victim.forwards - f0
    return {"queries": queries, "forwards": forwards, "texts_per_forward": queries / max(forwards, 1),
            "seconds": wall, "cpu_seconds": cpu, "queries_per_second": queries / wall,
            "queries_per_cpu_second": queries / cpu,
            "model_cpu_share": victim.cpu_seconds["model"] / cpu,
            "tokenize_cpu_share": victim.cpu_seconds["tokenize"] / cpu}


def speed(model, tokenizer, texts: list[str], labels: list[int], args: argparse.Namespace, seed: int) -> None:
    """The ``attack`` and ``scoring`` speed measurements (module docstring)."""
    root = Path(args.root) / "attacks-speed"
    # One lexicon for every batch size, warmed by an untimed run: WordNet's first look-ups (reading its files) would
    # otherwise land on whichever batch size runs first.
    lexicon = WordNetLexicon()
    run_recipe(build_recipe("pwws", lexicon=lexicon), Victim(model, tokenizer, batch_size=max(args.speed_batches)),
               texts[:args.speed_n], labels[:args.speed_n])
    queried: list[str] = []
    for batch in args.speed_batches:
        victim = Victim(model, tokenizer, batch_size=batch)
        m = timed(victim, lambda v=victim: run_recipe(build_recipe("pwws", lexicon=lexicon), v, texts[:args.speed_n],
                                                      labels[:args.speed_n]))
        queried = queried or list(victim.cache)
        write(root / f"attack-b{batch}" / f"seed{seed}", f"attack-speed-b{batch}", seed,
              {"mode": "attack", "batch_size": batch, "n": args.speed_n, "recipe": "pwws", "dataset": args.dataset},
              m)
        print("attack", batch, json.dumps(m), flush=True)
    pool = queried[:args.scoring_texts]
    for batch in args.scoring_batches:
        victim = Victim(model, tokenizer, batch_size=batch)
        victim.probs(pool[:batch])  # warm-up (first-call allocations), then a fresh cache
        victim.clear_cache()
        victim.cpu_seconds = {"tokenize": 0.0, "model": 0.0}
        m = timed(victim, lambda v=victim: v.probs(pool))
        write(root / f"scoring-b{batch}" / f"seed{seed}", f"attack-speed-scoring-b{batch}", seed,
              {"mode": "scoring", "batch_size": batch, "n": len(pool), "recipe": "pwws", "dataset": args.dataset}, m)
        print("scoring", batch, json.dumps(m), flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--victim", nargs="+", required=True, help="victim checkpoints, one per seed")
    p.add_argument("--seeds", nargs="*", type=int, default=None, help="the victims' seeds (default 0, 1, …)")
    p.add_argument("--dataset", choices=tuple(VICTIM_CONFIGS), default="sst2")
    p.add_argument("--mlm", default=None, help="masked LM (needed by bae, bert-attack, fba)")
    p.add_argument("--n", type=int, default=50, help="first N test sentences per recipe")
    p.add_argument("--speed-n", type=int, default=10, help="sentences of the PWWS speed measurement")
    p.add_argument("--speed-batches", nargs="+", type=int, default=[1, 8, 32])
    p.add_argument("--scoring-texts", type=int, default=256)
    p.add_argument("--scoring-batches", nargs="+", type=int, default=[1, 2, 4, 8, 16, 32, 64])
    p.add_argument("--recipes", nargs="*", default=list(RECIPES), help="none: only the speed comparison")
    p.add_argument("--root", default="benchmarks/attacks/runs")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--no-speed", action="store_true", help="skip the speed measurements")
    args = p.parse_args()
    seeds = args.seeds if args.seeds else list(range(len(args.victim)))
    if len(seeds) != len(args.victim):
        p.error(f"--seeds: {len(seeds)} seeds for {len(args.victim)} victims")

    texts, labels = config_rows(load_datamodule(VICTIM_CONFIGS[args.dataset], None), "test")
    texts, labels = texts[:max(args.n, args.speed_n)], labels[:max(args.n, args.speed_n)]
    mlm = load_mlm(args.mlm, args.batch_size, 128) if args.mlm else None
    encoder = SentenceEncoder.load("minilm") if args.recipes else None
    folder = "attacks" if args.dataset == "sst2" else f"attacks-{args.dataset}"
    for seed, ckpt in zip(seeds, args.victim):
        model, tokenizer, _ = load_victim(ckpt)
        for recipe in args.recipes:
            built = build_recipe(recipe, mlm=mlm, encode=encoder, seed=seed)
            victim = Victim(model, tokenizer, batch_size=args.batch_size)
            report = run_recipe(built, victim, texts[:args.n], labels[:args.n], encode=encoder, perplexity=mlm)
            config = {"recipe": recipe, "dataset": args.dataset, "victim": ckpt, "n": args.n,
                      "batch_size": args.batch_size, "options": built.options}
            metrics = {**report.summary, "forwards": report.forwards}
            write(Path(args.root) / folder / f"{recipe}-n{args.n}" / f"seed{seed}", f"attack-{recipe}", seed, config,
                  metrics, report.results)
            print(recipe, seed, json.dumps(report.summary), flush=True)
        if not args.no_speed:
            speed(model, tokenizer, texts, labels, args, seed)


if __name__ == "__main__":
    main()
