"""``sstkit patch extract | apply``: PortLLM patches from LoRA-fine-tuned classifiers, applied to evolved bases.

Example::

    sstkit patch extract --finetuned runs/bert-sst2-lora_patch/seed0/checkpoints/last.ckpt --out patches/sst2
    sstkit patch apply --base evolved/minilm-mlm-400 --patch patches/sst2 --out patched/sst2

``extract`` reads the checkpoint's LoRA factors (peft layout, see :mod:`sstkit.functional.patch`); LoRA's α is
not stored in the weights, so it is taken from ``--alpha`` or, failing that, from the checkpoint's LoRA callback
state. ``apply`` loads the base encoder (a name such as ``minilm`` or an HF folder), checks its architecture
against the patch's manifest, adds the updates, loads the head and writes an exported classifier folder.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from sstkit.commands.classifier_io import read_checkpoint, save_classifier
from sstkit.errors import SstkitError
from sstkit.functional.patch import (
    apply_patch,
    architecture_of,
    check_architecture,
    extract_patch,
    load_patch,
    save_patch,
)
from sstkit.loaders import resolve_backbone
from sstkit.models.text_classifier import TextClassifier

ENCODER_PREFIX = "encoder."
LORA_DEFAULT_ALPHA = 16.0  # sstkit.callbacks.LoRA's default, used when the saved config omits alpha


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sstkit patch", description="PortLLM portable LoRA patches.")
    sub = parser.add_subparsers(dest="action", required=True)
    extract = sub.add_parser("extract", help="LoRA checkpoint → patch folder (safetensors + manifest.json)")
    extract.add_argument("--finetuned", required=True, help="Lightning .ckpt of a LoRA-fine-tuned TextClassifier")
    extract.add_argument("--alpha", type=float, default=None, help="LoRA alpha (default: from the checkpoint)")
    extract.add_argument("--modules-to-save", nargs="*", default=["head.*"],
                         help="patterns of plain parameter names saved whole (default: the head)")
    extract.add_argument("--out", required=True, help="patch folder to write")
    apply = sub.add_parser("apply", help="base + patch → exported classifier folder")
    apply.add_argument("--base", required=True, help="the (evolved) base encoder: a name such as minilm, or a folder")
    apply.add_argument("--patch", required=True, help="patch folder written by `sstkit patch extract`")
    apply.add_argument("--out", required=True, help="output folder")
    return parser


def _walk(obj: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield str(key), value
            yield from _walk(value)


def find_alpha(ckpt: dict[str, Any], ckpt_path: str | Path) -> float | None:
    """LoRA α from the checkpoint (callback states, hyperparameters) or its run folder's ``config.yaml``."""
    for source in (ckpt.get("callbacks", {}), ckpt.get("hyper_parameters", {})):
        for key, value in _walk(source):
            if key in ("lora_alpha", "alpha") and isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
    # The CLI writes <run>/config.yaml next to <run>/checkpoints/; the LoRA callback's init_args hold α.
    config_path = Path(ckpt_path).resolve().parent.parent / "config.yaml"
    if config_path.is_file():
        config = yaml.safe_load(config_path.read_text()) or {}
        for callback in (config.get("trainer") or {}).get("callbacks") or []:
            if isinstance(callback, dict) and str(callback.get("class_path", "")).endswith("LoRA"):
                return float((callback.get("init_args") or {}).get("alpha", LORA_DEFAULT_ALPHA))
    return None


def _architecture(hp: dict[str, Any]) -> dict[str, Any]:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(resolve_backbone(str(hp.get("backbone", "minilm"))),
                                        **(hp.get("config_overrides") or {}))
    return architecture_of(config)


def extract_command(args: argparse.Namespace) -> None:
    ckpt = read_checkpoint(args.finetuned)
    alpha = args.alpha if args.alpha is not None else find_alpha(ckpt, args.finetuned)
    if alpha is None:
        raise SstkitError(f"{args.finetuned}: LoRA alpha not recorded in the checkpoint; pass --alpha")
    hp = ckpt["hyper_parameters"]
    extra = {"num_labels": hp.get("num_labels", 2), "pooling": hp.get("pooling", "mean"),
             "backbone": hp.get("backbone", "minilm"), "source": str(args.finetuned)}
    patch = extract_patch(ckpt["state_dict"], _architecture(hp), args.modules_to_save, ENCODER_PREFIX, alpha, extra)
    save_patch(patch, args.out)
    print(f"wrote {args.out}: {len(patch.deltas)} adapted matrices (alpha={patch.manifest['alpha']}, "
          f"r={patch.manifest['r']}), saved modules: {len(patch.saved)} tensors")


def apply_command(args: argparse.Namespace) -> None:
    from transformers import AutoConfig

    patch = load_patch(args.patch)
    extra = patch.manifest.get("extra", {})
    try:
        config = AutoConfig.from_pretrained(resolve_backbone(args.base))
    except OSError as err:
        raise SstkitError(f"--base {args.base}: not a model folder or known model name ({err})") from err
    check_architecture(patch, architecture_of(config))  # before loading any weights: fail fast
    model = TextClassifier(backbone=args.base, num_labels=int(extra.get("num_labels", 2)),
                           pooling=extra.get("pooling", "mean"), pretrained=True)
    apply_patch(model.encoder, patch, root=model)
    save_classifier(model.eval(), args.out, extra={"patch": str(args.patch), "base": args.base})
    print(f"wrote {args.out}: {args.base} + patch {args.patch}")


def patch_main(argv: list[str]) -> int:
    """Entry point of ``sstkit patch``."""
    args = build_parser().parse_args(argv)
    if args.action == "extract":
        extract_command(args)
    else:
        apply_command(args)
    return 0
