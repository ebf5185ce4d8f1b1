"""``sstkit backdoor expose|detect|remove``: Expose Before You Defend on a trained text classifier.

Example::

    sstkit backdoor expose --model runs/backdoor_badnets/seed0/checkpoints/last.ckpt --out exposed/ \\
        --method cul --lr 1e-5 --attack badnets --target-label 1
    sstkit backdoor detect --model runs/backdoor_badnets/seed0/checkpoints/last.ckpt --exposed exposed/ \\
        --out detect.json --attack badnets
    sstkit backdoor remove --model runs/backdoor_badnets/seed0/checkpoints/last.ckpt --exposed exposed/ \\
        --method unlearn --detect-report detect.json --out cleaned/ --attack badnets

The defender's clean set is ``--defense-samples`` rows drawn (seeded) from ``--defense-split`` of ``--dataset``.
``--attack`` / ``--triggers`` / ``--sentence`` / ``--target-label`` only *measure* the attack (ASR, the rank of the
true trigger); the defenses never read them. Each action writes a JSON report (``summary.json`` in the output
folder of expose / remove, the ``--out`` file of detect) with a ``metrics`` block that ``sstkit table`` reads.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
from pathlib import Path
from typing import Any

from sstkit.commands.backdoor_data import DATASETS, EvalSets, load_eval_sets
from sstkit.commands.classifier_io import backbone_of, load_classifier, resolve_device, save_classifier
from sstkit.errors import SstkitError
from sstkit.functional.backdoor.common import attack_success_rate, prediction_stats
from sstkit.functional.backdoor.exposure import StopRule, clean_unlearning, random_label_finetune
from sstkit.functional.backdoor.removal import NeuronMasks, learn_masks, prune_units, unlearn_trigger
from sstkit.functional.backdoor.scan import scan_triggers, token_rank, vocabulary_mask
from sstkit.loaders import load_tokenizer

REPORT = "summary.json"  # the name `sstkit table` collects


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="the possibly backdoored classifier: .ckpt or exported folder")
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="sst2")
    parser.add_argument("--data-dir", default=None, help="data folder (default $SSTKIT_DATA, else ./data)")
    parser.add_argument("--defense-split", choices=("train", "val", "test"), default="train")
    parser.add_argument("--defense-samples", type=int, default=200, help="size of the clean defense set")
    parser.add_argument("--eval-samples", type=int, default=None, help="test rows for CA / ASR (default: all)")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--attack", choices=("badnets", "addsent", "none"), default="none",
                        help="the attack to *measure* (ASR); never used by the defense")
    parser.add_argument("--triggers", nargs="+", default=None, help="BadNets trigger words (measurement only)")
    parser.add_argument("--sentence", default=None, help="AddSent sentence (measurement only)")
    parser.add_argument("--target-label", type=int, default=1, help="the attack's target (measurement only)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tag", default="", help="free text stored in the report's config (e.g. backdoored / clean)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sstkit backdoor", description="Expose Before You Defend (EBYD).")
    sub = parser.add_subparsers(dest="action", required=True)
    expose = sub.add_parser("expose", help="clean unlearning / random-label fine-tuning; writes the exposed model")
    _common(expose)
    expose.add_argument("--method", choices=("cul", "random-label"), default="cul")
    expose.add_argument("--lr", type=float, default=1e-5)
    expose.add_argument("--weight-decay", type=float, default=5e-4)
    expose.add_argument("--max-grad-norm", type=float, default=20.0)
    expose.add_argument("--max-steps", type=int, default=300)
    expose.add_argument("--collapse-share", type=float, default=0.95)
    expose.add_argument("--min-accuracy", type=float, default=None)
    expose.add_argument("--check-every", type=int, default=1)
    expose.add_argument("--out", required=True, help="folder for the exposed model and its summary.json report")
    detect = sub.add_parser("detect", help="trigger scan of the exposed (and original) model; writes a JSON report")
    _common(detect)
    detect.add_argument("--exposed", default=None, help="exposed model folder (from expose); none: original only")
    detect.add_argument("--threshold", type=float, default=0.5, help="flag a model whose best flip rate exceeds it")
    detect.add_argument("--num-candidates", type=int, default=20)
    detect.add_argument("--rounds", type=int, default=2)
    detect.add_argument("--objective", choices=("margin", "ce"), default="margin",
                        help="loss whose embedding gradient ranks the tokens (margin does not saturate)")
    detect.add_argument("--scan-samples", type=int, default=128, help="defense rows used by the scan")
    detect.add_argument("--out", required=True, help="JSON report file")
    remove = sub.add_parser("remove", help="unlearn the recovered trigger, or prune by exposed-model masks")
    _common(remove)
    remove.add_argument("--method", choices=("unlearn", "prune"), required=True)
    remove.add_argument("--exposed", default=None, help="exposed model folder (needed by prune)")
    remove.add_argument("--detect-report", default=None, help="detect's JSON report (the trigger for unlearn)")
    remove.add_argument("--trigger", nargs="+", default=None, help="trigger tokens for unlearn (instead of a report)")
    remove.add_argument("--trigger-source", choices=("exposed", "original"), default="exposed",
                        help="unlearn: the triggers of the exposed model's scan (EBYD) or of the original model's")
    remove.add_argument("--min-flip-ratio", type=float, default=0.5,
                        help="unlearn: also unlearn candidates flipping at least this share of the best one's rate")
    remove.add_argument("--max-triggers", type=int, default=5, help="unlearn: at most this many recovered triggers")
    remove.add_argument("--lr", type=float, default=2e-5, help="unlearn: fine-tuning learning rate")
    remove.add_argument("--epochs", type=int, default=3, help="unlearn: epochs; prune: mask-learning epochs")
    remove.add_argument("--units", nargs="+", choices=("ffn", "head"), default=["ffn", "head"])
    remove.add_argument("--mask-lr", type=float, default=0.2)
    remove.add_argument("--threshold", type=float, default=0.2, help="prune: units whose mask is below it")
    remove.add_argument("--max-prune", type=int, default=None, help="prune: at most this many units")
    remove.add_argument("--out", required=True, help="folder for the cleaned model and its summary.json report")
    return parser


def _load(path: str, args: argparse.Namespace) -> Any:
    """:func:`load_classifier` on ``--device``."""
    return load_classifier(path).to(resolve_device(args.device))


def _measure(model: Any, sets: EvalSets) -> dict[str, float]:
    out = {"ca": prediction_stats(model, sets.test).accuracy}
    if sets.triggered:
        out["asr"] = attack_success_rate(model, sets.triggered, sets.target_label)
    return out


def _report(args: argparse.Namespace, action: str, metrics: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    config = {k: v for k, v in vars(args).items() if k != "action"}
    return {"name": f"backdoor-{action}", "seed": args.seed, "status": "finished", "action": action,
            "config": config, "metrics": metrics, **extra}


def _write(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=True, default=str))
    print(f"wrote {path}")


def expose_main(args: argparse.Namespace) -> int:
    model = _load(args.model, args)
    sets = load_eval_sets(args, backbone_of(model))
    before = _measure(model, sets)
    rule = StopRule(args.collapse_share, args.min_accuracy)
    common = {"lr": args.lr, "weight_decay": args.weight_decay, "max_grad_norm": args.max_grad_norm,
              "max_steps": args.max_steps, "rule": rule, "check_every": args.check_every}
    exposed = copy.deepcopy(model)
    if args.method == "cul":
        result = clean_unlearning(exposed, sets.defense, model.num_labels, **common)
    else:
        result = random_label_finetune(exposed, sets.defense, model.num_labels, seed=args.seed, **common)
    after = _measure(exposed, sets)
    out = save_classifier(exposed, args.out, extra={"method": f"ebyd-expose-{args.method}"})
    metrics = {"original/ca": before["ca"], "exposed/ca": after["ca"], "steps": result.steps,
               "collapse_label": result.collapse_label, "collapsed": float(result.stopped == "collapse")}
    if "asr" in before:
        metrics.update({"original/asr": before["asr"], "exposed/asr": after["asr"]})
    _write(out / REPORT, _report(args, "expose", metrics, {"stopped": result.stopped, "curve": result.curve}))
    return 0


def _scan(model: Any, sets: EvalSets, args: argparse.Namespace, tokenizer: Any, fallback: Any = None) -> dict[str, Any]:
    scan = scan_triggers(model, sets.scan, model.num_labels, allowed=vocabulary_mask(tokenizer), fallback=fallback,
                         num_candidates=args.num_candidates, rounds=args.rounds, seed=args.seed,
                         objective=args.objective,
                         placeholder_id=tokenizer.mask_token_id or tokenizer.unk_token_id,
                         pad_id=tokenizer.pad_token_id or 0)
    out = scan.as_dict()
    out["flagged"] = scan.score > args.threshold
    out["trigger"] = tokenizer.convert_ids_to_tokens(scan.best.token_id) if scan.best else None
    for label_scan in out["scans"]:
        for cand in label_scan["candidates"]:
            cand["token"] = tokenizer.convert_ids_to_tokens(cand["token_id"])
    if sets.true_trigger_ids:
        target = next((s for s in scan.scans if s.label == sets.target_label), None)
        ranks = [token_rank(target, t) for t in sets.true_trigger_ids] if target else []
        found = [r for r in ranks if r is not None]
        out["true_trigger_rank"] = min(found) if found else None
        out["label_correct"] = scan.label == sets.target_label
        out["trigger_correct"] = bool(scan.best) and scan.best.token_id in sets.true_trigger_ids
    return out


def detect_main(args: argparse.Namespace) -> int:
    model = _load(args.model, args)
    tokenizer = load_tokenizer(backbone_of(model))
    sets = load_eval_sets(args, backbone_of(model), scan_samples=args.scan_samples)
    report: dict[str, Any] = {"original": _scan(model, sets, args, tokenizer)}
    metrics = {"original/score": report["original"]["score"]}
    if args.exposed:
        exposed = _load(args.exposed, args)
        report["exposed"] = _scan(exposed, sets, args, tokenizer, fallback=model)
        report["collapse_label"] = prediction_stats(exposed, sets.defense).majority
        metrics["exposed/score"] = report["exposed"]["score"]
    for which in ("original", "exposed"):
        for key in ("label_correct", "trigger_correct", "true_trigger_rank"):
            value = report.get(which, {}).get(key)
            if value is not None:
                metrics[f"{which}/{key}"] = float(value)
    _write(Path(args.out), _report(args, "detect", metrics, report))
    return 0


def _triggers(args: argparse.Namespace, tokenizer: Any) -> list[list[int]]:
    """The triggers to unlearn: ``--trigger`` tokens, or every strong candidate of the detect report's label.

    A candidate is strong when its verified flip rate is at least ``--min-flip-ratio`` × the best one's; at most
    ``--max-triggers`` are taken, best first.
    """
    if args.trigger:
        return [[i] for i in tokenizer.convert_tokens_to_ids(args.trigger)]
    if not args.detect_report:
        raise SstkitError("remove --method unlearn needs --detect-report (from `sstkit backdoor detect`) or --trigger")
    path = Path(args.detect_report)
    if not path.is_file():
        raise SstkitError(f"--detect-report {path}: no such file")
    report = json.loads(path.read_text())
    if args.trigger_source == "exposed" and not report.get("exposed"):
        raise SstkitError(f"--detect-report {path} has no exposed scan (detect ran without --exposed); "
                          "use --trigger-source original")
    scan = report.get(args.trigger_source) or {}
    best = scan.get("best")
    if not best:
        raise SstkitError(f"--detect-report {path}: the {args.trigger_source} scan recovered no trigger (no 'best' entry)")
    label_scan = next((s for s in scan.get("scans", []) if s.get("label") == scan.get("label")), {})
    floor = args.min_flip_ratio * float(best["flip_rate"])
    strong = [c for c in label_scan.get("candidates", []) if float(c["flip_rate"]) >= floor]
    ids = [int(best["token_id"])] + [int(c["token_id"]) for c in strong if int(c["token_id"]) != int(best["token_id"])]
    return [[i] for i in ids[: max(1, args.max_triggers)]]


def remove_main(args: argparse.Namespace) -> int:
    model = _load(args.model, args)
    tokenizer = load_tokenizer(backbone_of(model))
    sets = load_eval_sets(args, backbone_of(model))
    before, extra = _measure(model, sets), {}
    cleaned = copy.deepcopy(model)
    if args.method == "unlearn":
        triggers = _triggers(args, tokenizer)
        extra["triggers"] = [tokenizer.convert_ids_to_tokens(t) for t in triggers]
        extra["losses"] = unlearn_trigger(cleaned, sets.defense, triggers, lr=args.lr, epochs=args.epochs, seed=args.seed,
                                          pad_id=tokenizer.pad_token_id or 0)
    else:
        if not args.exposed:
            raise SstkitError("remove --method prune needs --exposed (the folder written by `sstkit backdoor expose`)")
        exposed = _load(args.exposed, args)
        masks = NeuronMasks(exposed, tuple(args.units))
        extra["mask_losses"] = learn_masks(exposed, masks, sets.defense, lr=args.mask_lr, epochs=args.epochs,
                                           seed=args.seed)
        units = masks.lowest(args.threshold, args.max_prune)
        extra["pruned"] = {kind: sum(u.kind == kind for u in units) for kind in args.units}
        prune_units(cleaned, units)
    after = _measure(cleaned, sets)
    out = save_classifier(cleaned, args.out, extra={"method": f"ebyd-remove-{args.method}"})
    metrics = {"original/ca": before["ca"], "removed/ca": after["ca"]}
    if "pruned" in extra:  # as metrics too, so that `sstkit table` can show how many units were pruned
        metrics.update({f"pruned/{kind}": float(n) for kind, n in extra["pruned"].items()})
        metrics["pruned/units"] = float(sum(extra["pruned"].values()))
    if "asr" in before:
        metrics.update({"original/asr": before["asr"], "removed/asr": after["asr"]})
    _write(out / REPORT, _report(args, "remove", metrics, extra))
    return 0


def backdoor_main(argv: list[str]) -> int:
    """Entry point of ``sstkit backdoor``."""
    args = build_parser().parse_args(argv)
    random.seed(args.seed)
    if args.defense_samples < 1:
        raise SstkitError(f"--defense-samples must be >= 1, got {args.defense_samples}")
    return {"expose": expose_main, "detect": detect_main, "remove": remove_main}[args.action](args)
