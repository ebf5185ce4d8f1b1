"""``sstkit ood score``: per-example OOD scores of causal LMs on ID and OOD texts, and the metric table.

Example::

    sstkit ood score --model mlkd=runs/opt-sst2-mlkd/seed0/checkpoints/last.ckpt \\
        --model scratch=runs/opt-sst2-lm/seed0/checkpoints/last.ckpt \\
        --data-config configs/opt/sst2_ood/mlkd.yaml --id sst2/dev.tsv:sentence --ood agnews/test.tsv:0 \\
        --out runs/sst2-ood

The score of a text is the model's perplexity on it (higher = more OOD): the MLKD student's for MLKD, an LM
trained on ID from scratch or fine-tuned from a pretrained one for the perplexity baselines. Every text is scored
as a line of the training stream (between line breaks), padding excluded. The data config is the training
config: its ``data`` section rebuilds the tokenizer. ``FILE[:COLUMN]`` is a path (or one under the data folder)
with a TSV column name (header row) or index (no header); ``.txt`` files are one text per line.
``--classifier [NAME=]CKPT`` adds the classifier baselines of a text classifier trained on the labelled ID
texts, as rows ``NAME/msp``, ``NAME/energy`` and, with ``--fit FILE:TEXT_COLUMN:LABEL_COLUMN`` (the ID training
texts), ``NAME/mahalanobis`` and ``NAME/knn`` (see ``sstkit.commands.ood_classifier``).
``DIR`` receives ``scores.csv`` (model, set, index, score, nll, ppl; the score is the perplexity for an LM, nll
and ppl are empty for a classifier detector), ``metrics.csv``, ``metrics.md`` and ``metrics.json`` (AUROC,
AUPR-In, AUPR-Out, FAR95 per model; OOD is the positive class).

``sstkit ood export --model CKPT --data-config CFG --out DIR`` writes a checkpoint's LM and the config's tokenizer
as a plain Hugging Face folder, so an LM pretrained with sstkit (e.g. on a mixed corpus) can be fine-tuned on
the ID texts with ``--model.init_args.pretrained=DIR --data.init_args.tokenizer=DIR``: the "fine-tuned LM"
baseline and MLKD's teacher without downloadable weights.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

import torch

from sstkit.commands.classifier_io import read_checkpoint, resolve_device
from sstkit.commands.config_file import import_class, load_config
from sstkit.errors import SstkitError
from sstkit.functional.ood.metrics import METRICS, ood_metrics
from sstkit.functional.ood.scores import lm_scores
from sstkit.paths import resolve_data_dir


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sstkit ood", description="OOD detection with causal-LM perplexities")
    sub = p.add_subparsers(dest="action", required=True)
    s = sub.add_parser("score", help="score ID and OOD texts with one or more LMs and write the metric table")
    s.add_argument("--model", action="append", default=[], metavar="[NAME=]CKPT",
                   help="Lightning checkpoint of a sstkit CausalLM (MLKD student, LM baseline); repeatable.")
    s.add_argument("--data-config", default=None,
                   help="Training config whose data section builds the LMs' tokenizer (needed with --model).")
    s.add_argument("--classifier", action="append", default=[], metavar="[NAME=]CKPT",
                   help="Text classifier trained on the labelled ID texts (checkpoint or exported folder): scored "
                        "by MSP and energy, and with --fit also by Mahalanobis and kNN; repeatable.")
    s.add_argument("--fit", default=None, metavar="FILE:TEXT_COLUMN:LABEL_COLUMN",
                   help="Labelled ID training texts the Mahalanobis and kNN detectors are fitted on.")
    s.add_argument("--knn-k", type=int, default=1, help="k of the kNN detector (default 1).")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="Override a key of the data config as in training, e.g. data.init_args.bpe_vocab_size=2048.")
    s.add_argument("--id", required=True, metavar="FILE[:COLUMN]", help="In-distribution test texts.")
    s.add_argument("--ood", required=True, metavar="FILE[:COLUMN]", help="Out-of-distribution test texts.")
    s.add_argument("--limit", type=int, default=None, help="Score only the first N texts of each file.")
    s.add_argument("--batch-size", type=int, default=32, help="Texts per forward pass.")
    s.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N.")
    s.add_argument("--out", required=True, help="Output folder.")
    e = sub.add_parser("export", help="write a CausalLM checkpoint and its tokenizer as a Hugging Face folder")
    e.add_argument("--model", required=True, metavar="CKPT", help="Lightning checkpoint of a sstkit CausalLM.")
    e.add_argument("--data-config", required=True, help="Training config whose data section builds the tokenizer.")
    e.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="Override a data-config key.")
    e.add_argument("--out", required=True, help="Output folder (config.json, model.safetensors, tokenizer files).")
    return p


def _texts(spec: str, limit: int | None, option: str) -> list[str]:
    from sstkit.datamodules.column_corpus import read_column

    name, sep, column = spec.rpartition(":") if ":" in spec else (spec, "", "")
    path = Path(name if sep else spec)
    if not path.is_file():
        path = resolve_data_dir(None) / path
    if not path.is_file():
        raise SstkitError(f"{option} {spec}: no such file (also looked under the data folder)")
    col: str | int = int(column) if column.isdigit() else (column or 0)
    texts = read_column(path, col)[:limit]
    if not texts:
        raise SstkitError(f"{option} {spec}: no texts")
    return texts


def load_causal_lm(path: str) -> Any:
    """A ``CausalLM`` from a Lightning checkpoint; method parts (e.g. MLKD's distiller) are left out."""
    from sstkit.models import CausalLM

    ckpt = read_checkpoint(path)
    hparams = {k: v for k, v in ckpt["hyper_parameters"].items() if not k.startswith("_")}
    try:
        model = CausalLM(**hparams)
    except TypeError as err:
        raise SstkitError(f"--model {path}: not a checkpoint of a sstkit CausalLM ({err})") from err
    state = {k[3:]: v for k, v in ckpt["state_dict"].items() if k.startswith("lm.")}
    model.lm.load_state_dict(state)
    return model.eval()


def _tokenizer(config_path: str, overrides: list[str]) -> Any:
    data = load_config(config_path, overrides, sections=("data",))["data"]
    cls = import_class(data["class_path"], "sstkit.datamodules")
    return cls(**(data.get("init_args") or {})).tokenizer


def score_texts(model: Any, tokenizer: Any, texts: list[str], batch_size: int, device: torch.device) -> torch.Tensor:
    """Per-text perplexity; each text is framed by line breaks as in the training stream, then right-padded."""
    pad = int(model.hparams.get("pad_token_id", 1))
    encoded = tokenizer(["\n" + t + "\n" for t in texts], add_special_tokens=False, verbose=False)["input_ids"]
    encoded = [ids[: model.max_positions] for ids in encoded]
    out = []
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start : start + batch_size]
        width = max(len(ids) for ids in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, seq in enumerate(chunk):
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        out.append(lm_scores(model.lm, ids.to(device), mask.to(device)).cpu())
    return torch.cat(out)


def _score(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    if not args.model and not args.classifier:
        raise SstkitError("sstkit ood score: give at least one --model (causal LM) or --classifier")
    if args.model and not args.data_config:
        raise SstkitError("--model needs --data-config (the training config that rebuilds the LM's tokenizer)")
    if args.fit and not args.classifier:
        raise SstkitError("--fit fits the classifier detectors: give a --classifier too")
    if args.knn_k < 1:
        raise SstkitError(f"--knn-k must be >= 1, got {args.knn_k}")
    tokenizer = _tokenizer(args.data_config, args.set) if args.model else None
    sets = {"id": _texts(args.id, args.limit, "--id"), "ood": _texts(args.ood, args.limit, "--ood")}
    fit = None
    if args.fit:
        from sstkit.commands.ood_classifier import read_labelled

        fit = read_labelled(args.fit)
        if len(fit[0]) < args.knn_k:
            raise SstkitError(f"--fit {args.fit}: {len(fit[0])} texts, fewer than --knn-k {args.knn_k}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, table = [], []
    sizes = {"n_id": len(sets["id"]), "n_ood": len(sets["ood"])}
    for spec in args.classifier:
        from sstkit.commands.ood_classifier import classifier_scores

        name, sep, path = spec.partition("=")
        name, path = (name, path) if sep else (Path(spec).stem, spec)
        for detector, scores in classifier_scores(path, sets, fit, args.knn_k, args.batch_size, device).items():
            for which, values in scores.items():
                rows += [(f"{name}/{detector}", which, i, float(v), "", "") for i, v in enumerate(values)]
            table.append({"model": f"{name}/{detector}", **ood_metrics(scores["id"], scores["ood"]), **sizes})
    for spec in args.model:
        name, sep, path = spec.partition("=")
        name, path = (name, path) if sep else (Path(spec).stem, spec)
        model = load_causal_lm(path).to(device)
        if len(tokenizer) > model.lm.config.vocab_size:
            raise SstkitError(
                f"--model {path}: the tokenizer of --data-config {args.data_config} has {len(tokenizer)} tokens but "
                f"the model has {model.lm.config.vocab_size} embeddings: pass the config (and --set the overrides) "
                "the model was trained with"
            )
        scores = {k: score_texts(model, tokenizer, v, args.batch_size, device) for k, v in sets.items()}
        for which, values in scores.items():
            rows += [(name, which, i, float(v), float(v.log()), float(v)) for i, v in enumerate(values)]
        table.append({"model": name, **ood_metrics(scores["id"], scores["ood"]), **sizes})
    with (out / "scores.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([("model", "set", "index", "score", "nll", "ppl"), *rows])
    columns = ["model", *METRICS, "n_id", "n_ood"]
    with (out / "metrics.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(table)
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(f"{r[c]:.4f}" if isinstance(r[c], float) else str(r[c]) for c in columns) + " |"
              for r in table]
    (out / "metrics.md").write_text("\n".join(lines) + "\n")
    (out / "metrics.json").write_text(json.dumps({"id": args.id, "ood": args.ood, "models": table}, indent=2))
    print("\n".join(lines))
    return 0


def export_lm(model_path: str, tokenizer: Any, out: str | Path) -> Path:
    """Saves the checkpoint's LM and ``tokenizer`` with ``save_pretrained``: a folder ``model.pretrained`` loads.

    Example::

        export_lm("runs/pretrain/seed0/checkpoints/last.ckpt", data_module.tokenizer, "runs/pretrain/hf")
    """
    model = load_causal_lm(model_path)
    if len(tokenizer) > model.lm.config.vocab_size:
        raise SstkitError(f"--model {model_path}: the tokenizer has {len(tokenizer)} tokens but the model has "
                          f"{model.lm.config.vocab_size} embeddings: pass the data config it was trained with")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.lm.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


def ood_main(argv: list[str]) -> int:
    """Entry point of ``sstkit ood``."""
    args = _parser().parse_args(argv)
    if args.action == "export":
        print(export_lm(args.model, _tokenizer(args.data_config, args.set), args.out))
        return 0
    if args.batch_size < 1:
        raise SstkitError(f"--batch-size must be >= 1, got {args.batch_size}")
    return _score(args)
