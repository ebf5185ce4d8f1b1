"""Obstinate benchmark: GradObstinate vs the antonym baseline on MiniLM SST-2 victims, raw and oracle-validated
success, mean substitutions, and transfer of each victim's obstinate examples to the other classifiers (the
oracle's, and ``--transfer`` targets such as the bag-of-words model, which are only evaluated).

For every victim and recipe: one ``summary.json`` + ``examples.jsonl`` under ``$ROOT/<victim>/<recipe>/``; then
``results.csv`` / ``results.md`` (one row per victim x recipe) and ``examples.md`` (validated and raw-only examples)
next to this file. ``--table-only`` re-renders the tables from the run folders.

Usage (from the repository root; README.md gives the sizes actually run)::

    python benchmarks/obstinate/run.py --n 100 \\
        --victim full-s0=../main/benchmarks/sst2_finetune/runs/sst2_finetune_full/seed0/checkpoints/last.ckpt \\
                 full-s1=…/seed1/checkpoints/last.ckpt minilm3k-s0=…/cdt-minilm-sst2/seed0/checkpoints/last.ckpt \\
        --oracle-model lora1.5k-s1=benchmarks/obstinate/runs/obstinate-lora-sst2/seed1/checkpoints/last.ckpt \\
        --transfer bow-s0=benchmarks/obstinate/runs/obstinate-bow-sst2/seed0/checkpoints/last.ckpt
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

from sstkit.commands.attack import load_victim
from sstkit.commands.classifier_io import read_texts
from sstkit.functional.attacks.gradient import EmbeddingGradient
from sstkit.functional.attacks.lexicon import WordNetLexicon
from sstkit.functional.attacks.metrics import AttackResult
from sstkit.functional.attacks.obstinate import OBSTINATE_RECIPES, transfer
from sstkit.functional.attacks.oracle import (
    AntonymOrNegation,
    ClassifierDisagreement,
    SentimentLexiconFlip,
    ValidityOracle,
    load_valence,
)
from sstkit.functional.attacks.recipes import build_recipe, run_recipe
from sstkit.functional.attacks.victim import Victim
from sstkit.paths import resolve_data_dir

HERE = Path(__file__).parent
PARTS = ("antonym", "lexicon", "classifier")


def named(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, _, path = item.partition("=")
        if not path:
            raise SystemExit(f"expected NAME=PATH, got {item!r}")
        out[name] = path
    return out


def attack_all(args: argparse.Namespace) -> None:
    victims, oracle_model, targets = named(args.victim), named([args.oracle_model]), named(args.transfer)
    checkpoints = {**victims, **oracle_model, **targets}
    texts, labels = read_texts(resolve_data_dir(None) / "sst2" / "test.tsv", limit=args.n)
    lexicon = WordNetLexicon()
    loaded = {name: load_victim(path)[:2] for name, path in checkpoints.items()}
    (oracle_name,) = oracle_model
    oracle = ValidityOracle([AntonymOrNegation(lexicon), SentimentLexiconFlip(load_valence()),
                             ClassifierDisagreement(Victim(*loaded[oracle_name], batch_size=args.batch_size))])
    accuracy = Path(args.root) / "accuracy.json"
    accuracy.parent.mkdir(parents=True, exist_ok=True)
    acc = {} if args.force or not accuracy.is_file() else json.loads(accuracy.read_text())
    for name, (model, tokenizer) in loaded.items():
        if name not in acc:  # a classifier added to an earlier run gets its row; the others are kept
            preds = Victim(model, tokenizer, batch_size=args.batch_size).predict(texts)
            acc[name] = {"n": len(texts), "accuracy": sum(p == y for p, y in zip(preds, labels)) / len(texts),
                         "checkpoint": checkpoints[name]}
    accuracy.write_text(json.dumps(acc, indent=2))
    for name in victims:
        model, tokenizer = loaded[name]
        for recipe in OBSTINATE_RECIPES:
            out = Path(args.root) / name / recipe
            if (out / "summary.json").is_file() and not args.force:
                continue
            scorer = EmbeddingGradient(model, tokenizer) if recipe == "obstinate" else None
            built = build_recipe(recipe, lexicon=lexicon, scorer=scorer, oracle=oracle, k=args.k, tau=args.tau,
                                 max_swaps=args.max_swaps)
            victim = Victim(model, tokenizer, batch_size=args.batch_size)
            start = time.perf_counter()
            report = run_recipe(built, victim, texts, labels)
            metrics = dict(report.summary, wall_seconds=time.perf_counter() - start, transfer={})
            for other, (o_model, o_tok) in loaded.items():
                if other != name:
                    metrics["transfer"][other] = transfer(report.results, Victim(o_model, o_tok, args.batch_size))
            out.mkdir(parents=True, exist_ok=True)
            config = {"recipe": recipe, "victim": victims[name], "oracle_model": oracle_model[oracle_name],
                      "n": args.n, "k": args.k, "tau": args.tau, "max_swaps": args.max_swaps}
            (out / "summary.json").write_text(json.dumps({"name": f"obstinate-{name}-{recipe}", "seed": 0,
                                                          "status": "finished", "config": config,
                                                          "metrics": metrics}, indent=2))
            with (out / "examples.jsonl").open("w") as f:
                for r in report.results:
                    f.write(json.dumps(r.as_dict()) + "\n")
            print(f"{name} {recipe}: raw {metrics['attack_success_rate']}, validated "
                  f"{metrics['validated_success_rate']}, {metrics['wall_seconds']:.0f} s", flush=True)
    add_transfer(Path(args.root), loaded, args.batch_size)


def add_transfer(root: Path, loaded: dict, batch_size: int) -> None:
    """Transfer of finished runs' obstinate examples to classifiers their summary does not cover yet (a transfer
    target added later), read back from ``examples.jsonl``: no attack is rerun."""
    for summary_path in sorted(root.glob("*/*/summary.json")):
        run, victim = json.loads(summary_path.read_text()), summary_path.parent.parent.name
        missing = [o for o in loaded if o != victim and o not in run["metrics"]["transfer"]]
        if not missing:
            continue
        lines = (summary_path.parent / "examples.jsonl").read_text().splitlines()
        results = [AttackResult(**json.loads(line)) for line in lines]
        for other in missing:
            run["metrics"]["transfer"][other] = transfer(results, Victim(*loaded[other], batch_size=batch_size))
        summary_path.write_text(json.dumps(run, indent=2))
        print(f"{victim} {summary_path.parent.name}: transfer added for {', '.join(missing)}", flush=True)


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def render(root: Path) -> None:
    rows, examples = [], []
    for summary in sorted(root.glob("*/*/summary.json")):
        run = json.loads(summary.read_text())
        m, victim, recipe = run["metrics"], summary.parent.parent.name, summary.parent.name
        results = [json.loads(line) for line in (summary.parent / "examples.jsonl").read_text().splitlines()]
        wins = [r for r in results if r["status"] == "success"]
        parts = {p: sum(1 for r in wins if r["validated"] and p in (r["oracle"] or "").split(",")) for p in PARTS}
        row = {"victim": victim, "recipe": recipe, "n": m["examples"], "attacked": m["successes"] + m["failures"],
               "raw_success_pct": pct(m["attack_success_rate"]),
               "validated_success_pct": pct(m["validated_success_rate"]),
               **{f"validated_by_{p}": parts[p] for p in PARTS},
               # evidence other than the edit being an antonym/negation, which the antonym baseline has by design
               "validated_lexicon_or_classifier_pct": pct(
                   sum(1 for r in wins if r["validated"] and {"lexicon", "classifier"} & set(r["oracle"].split(",")))
                   / max(m["successes"] + m["failures"], 1)),
               "substitutions": "–" if m["substitutions"] is None else f"{m['substitutions']:.2f}",
               "queries": f"{m['queries']:.0f}", "s_per_example": f"{m['seconds_per_example']:.2f}"}
        for other, t in sorted(m["transfer"].items()):
            row[f"transfer_raw_{other}"] = f"{pct(t['transfer_rate'])} (n={t['transfer_n']})"
            row[f"transfer_validated_{other}"] = f"{pct(t['transfer_validated_rate'])} (n={t['transfer_validated_n']})"
        rows.append(row)
        if not examples or examples[0][0] == victim:  # examples of the first victim only: the table stays short
            for r in [r for r in wins if r["validated"]][:3] + [r for r in wins if not r["validated"]][:3]:
                examples.append((victim, recipe, r))
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with (HERE / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    main_cols = [c for c in columns if not c.startswith("transfer_")]
    lines = ["## Obstinate substitutions on MiniLM SST-2 victims: GradObstinate vs the antonym baseline", "",
             "Raw = prediction kept after a dissimilar substitution (re-queried); validated = the oracle (antonym / "
             "negation, VADER lexicon flip, second classifier) accepted it; percentages over attacked sentences.", "",
             "| " + " | ".join(main_cols) + " |", "|" + "---|" * len(main_cols)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in main_cols) + " |" for row in rows]
    others = sorted({c.split("_", 2)[2] for c in columns if c.startswith("transfer_raw_")})
    lines += ["", "Transfer: share of the victim's obstinate examples on which the other classifier also keeps its "
              "prediction (over examples it classified like the victim); raw / oracle-validated.", "",
              "| victim | recipe | " + " | ".join(others) + " |", "|---|---|" + "---|" * len(others)]
    for row in rows:
        cells = [f"{row.get('transfer_raw_' + o, '')} / {row.get('transfer_validated_' + o, '')}" for o in others]
        lines.append(f"| {row['victim']} | {row['recipe']} | " + " | ".join(cells) + " |")
    if (root / "accuracy.json").is_file():
        acc = json.loads((root / "accuracy.json").read_text())
        lines += ["", "Accuracy of every classifier on the same sentences (the oracle's classifier included):", "",
                  "| classifier | sentences | accuracy_pct |", "|---|---|---|"]
        lines += [f"| {name} | {a['n']} | {pct(a['accuracy'])} |" for name, a in acc.items()]
    lines += ["", f"<sub>Generated by `python benchmarks/obstinate/run.py --table-only` from {len(rows)} runs "
              f"({root}); do not edit by hand.</sub>"]
    (HERE / "results.md").write_text("\n".join(lines) + "\n")
    ex = ["## Examples (first victim; up to three validated and three raw-only per recipe)", "",
          "| victim | recipe | validated (oracle parts) | original | obstinate |", "|---|---|---|---|---|"]
    for victim, recipe, r in examples:
        verdict = f"yes ({r['oracle']})" if r["validated"] else "no"
        ex.append(f"| {victim} | {recipe} | {verdict} | {r['original']} | {r['perturbed']} |")
    (HERE / "examples.md").write_text("\n".join(ex) + "\n")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--victim", nargs="*", default=[], help="NAME=CHECKPOINT, the attacked classifiers")
    p.add_argument("--oracle-model", default=None, help="NAME=CHECKPOINT, the oracle's second classifier")
    p.add_argument("--transfer", nargs="*", default=[],
                   help="NAME=CHECKPOINT, classifiers that are only transfer targets (neither attacked nor oracle)")
    p.add_argument("--n", type=int, default=100, help="first N SST-2 test sentences")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--tau", type=float, default=0.5)
    p.add_argument("--max-swaps", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--root", default="benchmarks/obstinate/runs/attacks-n100", help="run folders (one per N)")
    p.add_argument("--force", action="store_true", help="rerun finished (victim, recipe) pairs")
    p.add_argument("--table-only", action="store_true")
    args = p.parse_args()
    if not args.table_only:
        if not args.victim or not args.oracle_model:
            raise SystemExit("--victim and --oracle-model are needed (or --table-only)")
        attack_all(args)
    render(Path(args.root))


if __name__ == "__main__":
    main()
