"""``sstkit attack``: adversarial word substitution (PWWS, BAE, BERT-Attack, FBA) and obstinate substitution
(GradObstinate, antonym baseline) on a trained text classifier.

Example::

    sstkit attack --model runs/bert-sst2-finetune/seed0/checkpoints/last.ckpt \\
        --data-config configs/bert/sst2/finetune.yaml --recipe pwws --split test --limit 200 --out runs/attacks/pwws
    sstkit attack ... --recipe bae --mlm runs/minilm-mlm/seed0/checkpoints/last.ckpt --write-tsv runs/adv_data

    sstkit attack ... --recipe obstinate --oracle antonym,lexicon,classifier --oracle-model other.ckpt \
        --transfer other.ckpt third.ckpt --out runs/attacks/obstinate

``--out`` gets ``summary.json`` (config + the metrics ``sstkit table`` reads), ``examples.jsonl`` and
``examples.csv``. ``--write-tsv DIR`` writes ``DIR/<dataset>/``: the data config's files, the training file being
the rows the config trains on (its ``limit_train_samples`` subset) followed by the successful adversarial texts
(gold labels), so the same config retrains on them with ``data_dir: DIR`` and ``limit_train_samples: null``
(attack → augment → retrain → attack again: ``configs/bert/sst2/adversarial_retrain.yaml``,
``benchmarks/attacks/loop.sh``).
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from sstkit.errors import SstkitError

REPORT = "summary.json"


def build_parser() -> argparse.ArgumentParser:
    from sstkit.functional.attacks.recipes import ALL_RECIPES

    p = argparse.ArgumentParser(prog="sstkit attack", description="Adversarial word-substitution attacks.")
    p.add_argument("--model", required=True, help="classifier: sstkit .ckpt, exported folder, or HF model name/path")
    p.add_argument("--data-config", required=True, help="a training config whose `data:` section names the data")
    p.add_argument("--recipe", choices=ALL_RECIPES, default="pwws")
    p.add_argument("--split", choices=("train", "val", "test"), default="test")
    p.add_argument("--limit", type=int, default=None, help="attack the first N examples of the split")
    p.add_argument("--offset", type=int, default=0, help="skip the first N examples")
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--data-dir", default=None, help="data folder (default: the config's, else $SSTKIT_DATA)")
    p.add_argument("--mlm", default=None, help="masked LM for bae / bert-attack / fba: sstkit MaskedLM .ckpt, "
                                               "folder or HF name (bert-base-uncased where a network is)")
    p.add_argument("--encoder", default="minilm", help="sentence encoder for similarity ('none' to skip)")
    p.add_argument("--k", type=int, default=None, help="MLM candidates per word (bae 50, bert-attack 48, fba 30)")
    p.add_argument("--similarity", type=float, default=None, help="override the recipe's similarity threshold")
    p.add_argument("--max-percent", type=float, default=None, help="override the share of words that may change")
    p.add_argument("--fba-steps", type=int, default=50, help="FBA chain length per example")
    p.add_argument("--query-budget", type=int, default=None, help="victim queries per example")
    p.add_argument("--batch-size", type=int, default=32, help="victim texts per forward (1: unbatched)")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--perplexity", action="store_true", help="pseudo-perplexity under --mlm of successful examples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--write-tsv", default=None, metavar="DIR", help="write an adversarially augmented data folder")
    p.add_argument("--tag", default="", help="free text stored in the report's config")
    o = p.add_argument_group("obstinate recipes (prediction kept, meaning changed)")
    o.add_argument("--oracle", default="antonym,lexicon", help="validity oracle parts, comma-separated, from "
                                                                "antonym, lexicon, classifier ('none': raw only)")
    o.add_argument("--oracle-mode", choices=("any", "all"), default="any", help="parts that must accept")
    o.add_argument("--oracle-model", default=None, help="the oracle's second classifier (.ckpt / folder / HF name)")
    o.add_argument("--sentiment-lexicon", default=None, help="word<TAB>valence file (default: VADER's lexicon)")
    o.add_argument("--positive-label", type=int, default=1, help="the positive class, for the lexicon oracle")
    o.add_argument("--tau", type=float, default=0.5, help="max embedding cosine of a substitute to the original")
    o.add_argument("--max-swaps", type=int, default=2, help="substitutions one example may accumulate")
    o.add_argument("--objective", choices=("ce", "margin"), default="ce", help="loss the gradient scorer uses")
    o.add_argument("--transfer", nargs="*", default=[], metavar="MODEL",
                   help="other classifiers the successes are re-evaluated on (transfer rates in the summary)")
    return p


def oracle_names(args: argparse.Namespace) -> list[str]:
    """The parts ``--oracle`` names, checked before anything is loaded (bad names fail with one line)."""
    from sstkit.functional.attacks.oracle import ORACLE_PARTS

    names = [n.strip() for n in args.oracle.split(",") if n.strip() and n.strip() != "none"]
    bad = [n for n in names if n not in ORACLE_PARTS]
    if bad:
        raise SstkitError(f"--oracle {args.oracle}: unknown part {bad[0]!r} (expected a comma-separated subset of "
                          f"{', '.join(ORACLE_PARTS)}, or none)")
    if "classifier" in names and not args.oracle_model:
        raise SstkitError("--oracle classifier needs --oracle-model (a second, independently trained classifier)")
    return names


def build_oracle(args: argparse.Namespace, device: Any) -> Any:
    """The validity oracle ``--oracle`` names (None for 'none')."""
    from sstkit.functional.attacks import oracle as oracles
    from sstkit.functional.attacks.victim import Victim

    names = oracle_names(args)
    parts = []
    for name in names:
        if name == "antonym":
            from sstkit.functional.attacks.lexicon import WordNetLexicon

            parts.append(oracles.AntonymOrNegation(WordNetLexicon()))
        elif name == "lexicon":
            parts.append(oracles.SentimentLexiconFlip(oracles.load_valence(args.sentiment_lexicon),
                                                      positive_label=args.positive_label))
        else:
            model, tokenizer, _ = load_victim(args.oracle_model)
            parts.append(oracles.ClassifierDisagreement(Victim(model.to(device), tokenizer, args.batch_size,
                                                               args.max_length, device)))
    return oracles.ValidityOracle(parts, args.oracle_mode) if parts else None


def load_datamodule(config_path: str, data_dir: str | None) -> Any:
    """The data module a training config describes (class_path + init_args), without building a model."""
    path = Path(config_path)
    if not path.is_file():
        raise SstkitError(f"--data-config {path}: no such file")
    config = yaml.safe_load(path.read_text()) or {}
    data = config.get("data")
    if not isinstance(data, dict) or "class_path" not in data:
        raise SstkitError(f"--data-config {path}: no `data: {{class_path: …, init_args: …}}` section")
    module_name, _, cls_name = str(data["class_path"]).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError) as err:
        raise SstkitError(f"--data-config {path}: data.class_path {data['class_path']!r} cannot be imported") from err
    kwargs = dict(data.get("init_args") or {})
    if data_dir is not None:
        kwargs["data_dir"] = data_dir
    dm = cls(**kwargs)
    if not hasattr(dm, "read_split"):
        raise SstkitError(f"--data-config {path}: {cls_name} is not a text classification data module")
    return dm


def load_victim(name: str) -> tuple[Any, Any, str]:
    """(model, tokenizer, backbone) from an sstkit checkpoint / exported folder or a Hugging Face classifier."""
    from sstkit.commands.classifier_io import META_FILE, backbone_of, load_classifier
    from sstkit.loaders import load_tokenizer

    path = Path(name)
    if path.suffix == ".ckpt" or (path.is_dir() and (path / META_FILE).is_file()):
        model = load_classifier(path)
        source = str(path) if path.is_dir() else backbone_of(model)
        return model, load_tokenizer(source), source
    try:
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification.from_pretrained(name), load_tokenizer(name), name
    except OSError as err:
        raise SstkitError(f"--model {name}: not an sstkit checkpoint (.ckpt), exported classifier folder or "
                          f"Hugging Face sequence classifier ({str(err).splitlines()[0]})") from err


def write_examples(out: Path, results: list[Any]) -> None:
    rows = [r.as_dict() for r in results]
    with (out / "examples.jsonl").open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    with (out / "examples.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["original"])
        writer.writeheader()
        writer.writerows(rows)


def config_rows(dm: Any, split: str) -> tuple[list[str], list[int]]:
    """A split's texts and labels as the data config uses them: ``limit_train_samples`` / ``limit_eval_samples``
    applied, so ``--split train`` attacks rows the victim trained on."""
    texts, labels = dm.read_split(split)
    keep = dm.limit_indices(split, len(texts))
    if keep is None:
        return texts, labels
    return [texts[i] for i in keep], [labels[i] for i in keep]


def write_rows(path: Path, opts: Any, texts: list[str], labels: list[int]) -> None:
    """A labelled file in the layout the data module reads (header, text / label columns, label names, TSV / CSV)."""
    width = max(opts.text_column, opts.label_column) + 1
    names = opts.label_names
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f) if opts.format == "csv" else None
        rows = [list(opts.header)] if opts.header is not None else []
        for text, label in zip(texts, labels):
            row = [""] * width
            # TSV has no quoting: a tab or line break inside a text would split the row.
            row[opts.text_column] = text if writer else " ".join(text.split())
            row[opts.label_column] = str(names[label] if names else label)
            rows.append(row)
        for row in rows:
            if writer:
                writer.writerow(row)
            else:
                f.write("\t".join(row) + "\n")


def write_augmented(dm: Any, results: list[Any], target: Path) -> Path:
    """``target/<dataset>/``: the data module's other files copied, and a training file holding the rows the module
    trains on (its ``limit_train_samples`` subset, in file order) followed by the adversarial successes with their
    gold labels. Retrain with ``data_dir: target`` and ``limit_train_samples: null``
    (configs/bert/sst2/adversarial_retrain.yaml): a limit would re-draw a subset and drop most adversarial rows."""
    train = dm.files.get("train")
    if not train:
        raise SstkitError("--write-tsv: the data config has no training file to augment")
    folder = target / dm.dataset_name
    folder.mkdir(parents=True, exist_ok=True)
    for name in dm.files.values():
        if name and name != train and (dm.root / name).is_file():
            shutil.copyfile(dm.root / name, folder / name)
    texts, labels = config_rows(dm, "train")
    wins = [r for r in results if r.status == "success"]
    write_rows(folder / train, dm.opts, texts + [r.perturbed for r in wins], labels + [r.label for r in wins])
    return folder


def attack_main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from sstkit.commands.classifier_io import resolve_device
    from sstkit.functional.attacks.constraints import SentenceEncoder
    from sstkit.functional.attacks.recipes import NEEDS_MLM, build_recipe, load_mlm, run_recipe
    from sstkit.functional.attacks.victim import Victim

    if args.recipe in NEEDS_MLM and not args.mlm:
        raise SstkitError(f"--recipe {args.recipe} needs --mlm (an sstkit MaskedLM checkpoint, e.g. from "
                          "configs/bert/mlm/minilm_mlm.yaml, or a Hugging Face masked LM)")
    if args.recipe.startswith("obstinate"):
        oracle_names(args)
    device = resolve_device(args.device)
    dm = load_datamodule(args.data_config, args.data_dir)
    if not dm.files.get(args.split):
        raise SstkitError(f"--split {args.split}: the data config has no {args.split} file")
    texts, labels = config_rows(dm, args.split)
    end = None if args.limit is None else args.offset + args.limit
    texts, labels = texts[args.offset:end], labels[args.offset:end]
    model, tokenizer, _ = load_victim(args.model)
    model.to(device)
    mlm = load_mlm(args.mlm, args.batch_size, args.max_length) if args.mlm else None
    if mlm is not None:
        mlm.model.to(device)
        mlm.device = device
    encoder = None if args.encoder == "none" else SentenceEncoder.load(args.encoder)
    extra: dict[str, Any] = {}
    if args.recipe.startswith("obstinate"):
        from sstkit.functional.attacks.gradient import EmbeddingGradient

        extra = {"oracle": build_oracle(args, device), "tau": args.tau, "max_swaps": args.max_swaps}
        if args.recipe == "obstinate":
            extra["scorer"] = EmbeddingGradient(model, tokenizer, args.objective, args.max_length)
    recipe = build_recipe(args.recipe, mlm=mlm, encode=encoder, k=args.k, similarity=args.similarity,
                          max_percent=args.max_percent, fba_steps=args.fba_steps, seed=args.seed, **extra)
    victim = Victim(model, tokenizer, batch_size=args.batch_size, max_length=args.max_length, device=device)
    start = time.perf_counter()
    report = run_recipe(recipe, victim, texts, labels, query_budget=args.query_budget, encode=encoder,
                        perplexity=mlm if args.perplexity else None,
                        progress=lambda n: print(f"\r{n}/{len(texts)}", end="", file=sys.stderr, flush=True))
    print(file=sys.stderr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    metrics = dict(report.summary)
    metrics["forwards"] = report.forwards
    metrics["queries_per_second"] = sum(r.queries for r in report.results) / max(report.wall_seconds, 1e-9)
    if args.transfer:
        from sstkit.functional.attacks.obstinate import transfer

        transfers = {}
        for other in args.transfer:
            other_model, other_tok, _ = load_victim(other)
            transfers[other] = transfer(report.results, Victim(other_model.to(device), other_tok, args.batch_size,
                                                               args.max_length, device))
        metrics["transfer"] = transfers
    config = {k.replace("-", "_"): v for k, v in vars(args).items()}
    (out / REPORT).write_text(json.dumps({"name": f"attack-{args.recipe}", "seed": args.seed, "status": "finished",
                                          "config": config, "metrics": metrics,
                                          "timings": {"wall_seconds": time.perf_counter() - start}}, indent=2))
    write_examples(out, report.results)
    if args.write_tsv:
        folder = write_augmented(dm, report.results, Path(args.write_tsv))
        print(f"augmented data: {folder} (retrain: sstkit fit --config {args.data_config} --config "
              f"<overlay with data_dir {args.write_tsv}, limit_train_samples null>, e.g. "
              "configs/bert/sst2/adversarial_retrain.yaml)")
    s = report.summary
    print(f"{args.recipe}: success {s['attack_success_rate']}, accuracy under attack {s['accuracy_under_attack']}, "
          f"skipped {s['skipped']}, mean queries {s['queries']}"
          + (f", validated {s['validated_success_rate']}" if s.get("validated_success_rate") is not None else "")
          + f" -> {out / REPORT}")
    return 0
