"""``sstkit delta prune``: prune a fine-tuned classifier's delta (DARE, DAREx-q, magnitude, WANDA) and export it.

Example::

    sstkit delta prune --finetuned runs/bert-sst2-finetune/seed0/checkpoints/last.ckpt --pretrained minilm \\
        --method darex-q --p 0.99 --q auto --q-mode global --out pruned/darex

It prints the chosen q and writes a plain Hugging Face encoder plus the (unchanged) head into ``--out``
(see :mod:`sstkit.commands.classifier_io`), with ``prune.json`` recording the method, q and delta statistics.
Validation / calibration text defaults to the first half of ``$SSTKIT_DATA/sst2/test.tsv`` (the benchmarks'
validation half).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sstkit.commands.classifier_io import backbone_of, load_classifier, make_batches, read_texts, save_classifier
from sstkit.commands.delta_session import DeltaSession, QChoice
from sstkit.errors import SstkitError
from sstkit.functional.delta import METHODS, delta_stats
from sstkit.loaders import load_encoder
from sstkit.paths import resolve_data_dir

Q_MODES = ("global", "analytic", "unsupervised")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sstkit delta", description="Delta-parameter pruning of fine-tuned models.")
    sub = parser.add_subparsers(dest="action", required=True)
    prune = sub.add_parser("prune", help="prune the delta θ_ft − θ_pre and write a plain HF model + head")
    prune.add_argument("--finetuned", required=True, help="Lightning .ckpt of a TextClassifier, or an exported folder")
    prune.add_argument("--pretrained", default="minilm", help="the pretrained encoder (name or folder)")
    prune.add_argument("--method", choices=METHODS, required=True)
    prune.add_argument("--p", type=float, required=True, help="drop rate in [0, 1)")
    prune.add_argument("--q", default="auto", help="DAREx-q rescale: a number in [1-p, 1), or auto")
    prune.add_argument("--q-mode", choices=Q_MODES, default="global", help="how --q auto chooses q")
    prune.add_argument("--eta", default="auto", help="η of the analytic q: a number, or auto (tuned on validation)")
    prune.add_argument("--stop-share", type=float, default=None,
                       help="analytic q: end the q scan once this share of a layer's rows passed its minimum "
                            "(the official code's 0.8; default: scan the whole grid, as the paper)")
    prune.add_argument("--val-file", default=None, help="labelled TSV for choosing q / η (default sst2/test.tsv)")
    prune.add_argument("--val-offset", type=int, default=0, help="first row of the validation rows")
    prune.add_argument("--val-samples", type=int, default=None, help="number of validation rows (default: half)")
    prune.add_argument("--max-length", type=int, default=64)
    prune.add_argument("--coarse-step", type=float, default=None, help="coarse q grid step (default min(1-p, 0.1))")
    prune.add_argument("--fine-span", type=float, default=1.0, help="fine grid half-width, in coarse steps")
    prune.add_argument("--patience", type=int, default=3, help="coarse points without improvement before stopping")
    prune.add_argument("--mask-seeds", type=int, default=2, help="mask seeds averaged when scoring a q")
    prune.add_argument("--seed", type=int, default=0, help="mask seed of the exported model")
    prune.add_argument("--no-embeddings", action="store_true", help="leave embedding deltas unpruned")
    prune.add_argument("--no-norms", action="store_true", help="leave LayerNorm deltas unpruned")
    prune.add_argument("--out", required=True, help="output folder")
    return parser


def _validation(args: argparse.Namespace, tokenizer: str) -> list[dict]:
    path = Path(args.val_file) if args.val_file else resolve_data_dir(None) / "sst2" / "test.tsv"
    texts, labels = read_texts(path)
    count = args.val_samples if args.val_samples is not None else len(texts) // 2
    texts, labels = texts[args.val_offset:args.val_offset + count], labels[args.val_offset:args.val_offset + count]
    if not texts:
        raise SstkitError(f"{path}: no validation rows at offset {args.val_offset}")
    return make_batches(texts, labels, tokenizer, args.max_length)


def choose_q(session: DeltaSession, args: argparse.Namespace, val: list[dict] | None) -> QChoice | None:
    """The q of ``--q`` / ``--q-mode`` (None for methods without q)."""
    if args.method != "darex-q":
        return None
    if args.q != "auto":
        try:
            q = float(args.q)
        except ValueError:
            raise SstkitError(f"--q must be a number or auto, got {args.q!r}") from None
        if not 1.0 - args.p - 1e-9 <= q <= 1.0:
            raise SstkitError(f"--q {q} must lie in [1-p, 1] = [{1.0 - args.p:g}, 1]")
        return QChoice("given", q)
    assert val is not None
    seeds = list(range(args.mask_seeds))
    search = {"coarse_step": args.coarse_step, "fine_span": args.fine_span, "patience": args.patience}
    if args.q_mode == "global":
        return session.choose_global(args.p, val, seeds, **search)
    if args.q_mode == "unsupervised":
        return session.choose_unsupervised(args.p, val, seeds, **search)
    eta = None
    if args.eta != "auto":
        try:
            eta = float(args.eta)
        except ValueError:
            raise SstkitError(f"--eta must be a number or auto, got {args.eta!r}") from None
    return session.choose_analytic(args.p, val, eta, val, seeds, stop_share=args.stop_share)


def prune_command(args: argparse.Namespace) -> dict:
    """Runs ``delta prune``; returns what it wrote to ``prune.json``."""
    if not 0.0 <= args.p < 1.0:
        raise SstkitError(f"--p must be in [0, 1), got {args.p}")
    if args.mask_seeds < 1:
        raise SstkitError(f"--mask-seeds must be >= 1, got {args.mask_seeds}")
    model = load_classifier(args.finetuned)
    session = DeltaSession(model, load_encoder(args.pretrained, pretrained=True),
                           include_embeddings=not args.no_embeddings, include_norms=not args.no_norms)
    needs_data = args.method == "wanda" or (args.method == "darex-q" and args.q == "auto")
    val = _validation(args, backbone_of(model)) if needs_data else None
    choice = choose_q(session, args, val)
    norms = session.wanda_norms(val) if args.method == "wanda" and val else None
    pruned = session.prune(args.method, args.p, args.seed, choice.q if choice else None, norms)
    record = {"method": args.method, "p": args.p, "seed": args.seed, "finetuned": str(args.finetuned),
              "pretrained": args.pretrained, "include_embeddings": not args.no_embeddings,
              "include_norms": not args.no_norms, "delta": delta_stats(session.delta),
              "pruned_delta": delta_stats(pruned)}
    if choice is not None:
        record.update(q_mode=choice.mode, q=choice.q, q_mean=choice.mean_q, eta=choice.eta, q_score=choice.score,
                      q_trace=choice.trace)
        detail = f" (eta={choice.eta:g})" if choice.eta is not None else ""
        label = "mean over layers" if isinstance(choice.q, dict) else choice.mode
        print(f"chosen q: {choice.mean_q:.4f} [{label}]{detail}")
    out = save_classifier(session.load(pruned), args.out, extra={"delta_prune": {k: record[k] for k in ("method", "p")}})
    (out / "prune.json").write_text(json.dumps(record, indent=2, default=str))
    print(f"wrote {out}")
    return record


def delta_main(argv: list[str]) -> int:
    """Entry point of ``sstkit delta``."""
    args = build_parser().parse_args(argv)
    if args.action == "prune":
        prune_command(args)
    return 0
