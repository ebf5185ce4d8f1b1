"""``sstkit quantize``: Q-BERT on a fine-tuned checkpoint — eigenvalues → bits → optional QAT → test → export.

Example::

    sstkit quantize --checkpoint runs/bert-sst2-finetune/seed0/checkpoints/last.ckpt \\
        --data-config configs/bert/sst2/finetune.yaml --bits 2/3 --groups 128 --qat-steps 200 --out out/qbert23

The data config is a training config (``configs/…``): its ``model.class_path`` says which class loads the
checkpoint and its ``data`` section builds the data module (``--set data.init_args.max_length=64`` changes a key).
``DIR`` receives ``quantized.safetensors`` + ``quant_meta.json`` (integer weights, per-group ranges, sizes),
``omega.json`` (Ω, eigenvalues, HVP count, Hessian seconds) and ``summary.json``, which ``sstkit table`` reads.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from sstkit.commands.config_file import import_class, load_config
from sstkit.errors import SstkitError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sstkit quantize", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="Lightning checkpoint of the fine-tuned model.")
    p.add_argument("--data-config", required=True, help="Training config whose model class and data section to use.")
    p.add_argument("--bits", default="2/3",
                   help="Bit pattern: '8', '4', '2/3' (most sensitive half 3 bits) …, or 'fp32' (baseline: no quantiser).")
    p.add_argument("--order", default="omega", choices=["omega", "reverse", "random"], help="Ranking of blocks.")
    p.add_argument("--groups", type=int, default=128, help="Groups of output rows per matrix.")
    p.add_argument("--activation-bits", default="8", help="Bits of linear inputs, or 'none'.")
    p.add_argument("--embedding-bits", default="8", help="Bits of embeddings, or 'none'.")
    p.add_argument("--omega", default=None, help="Ω from a JSON file (skips the Hessian).")
    p.add_argument("--hessian-batches", type=int, default=2, help="Training batches per data subset.")
    p.add_argument("--num-subsets", type=int, default=3, help="Eigenvalue estimates per block.")
    p.add_argument("--max-iter", type=int, default=20, help="Lanczos steps (Hessian-vector products) per estimate.")
    p.add_argument("--tol", type=float, default=1e-3, help="Relative residual at which Lanczos stops.")
    p.add_argument("--qat-steps", type=int, default=0, help="Quantisation-aware fine-tuning steps (0: none).")
    p.add_argument("--lr", type=float, default=None, help="QAT learning rate (default: the model's).")
    p.add_argument("--seed", type=int, default=0, help="Seed of QAT data order/dropout and of the random order.")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="Override a key of the data config, e.g. data.init_args.max_length=64 (repeatable).")
    p.add_argument("--name", default=None, help="Run name stored in summary.json (default: the out folder's name).")
    p.add_argument("--no-export", action="store_true", help="Skip writing the quantised weights.")
    p.add_argument("--out", required=True, help="Output folder.")
    return p


def _optional_bits(value: str, flag: str) -> int | None:
    if value.lower() in ("none", "null", "fp32"):
        return None
    try:
        return int(value)
    except ValueError:
        raise SstkitError(f"{flag} {value!r}: expected an integer or 'none'") from None


def quantize_main(argv: list[str]) -> int:
    """Entry point of ``sstkit quantize``."""
    from sstkit.callbacks import HessianQuantization
    from sstkit.commands.classifier_io import resolve_device
    from sstkit.functional.quant_export import export_quantized
    from sstkit.functional.quantize import model_size_mb

    args = _parser().parse_args(argv)
    if args.qat_steps < 0:
        raise SstkitError(f"--qat-steps must be >= 0, got {args.qat_steps}")
    if not Path(args.checkpoint).is_file():
        raise SstkitError(f"--checkpoint {args.checkpoint}: no such file")
    config = load_config(args.data_config, args.set, sections=("model", "data"))
    baseline = str(args.bits).lower() == "fp32"
    callback = None if baseline else HessianQuantization(
        bits=args.bits, order=args.order, num_groups=args.groups, omega=args.omega, seed=args.seed,
        activation_bits=_optional_bits(args.activation_bits, "--activation-bits"),
        embedding_bits=_optional_bits(args.embedding_bits, "--embedding-bits"),
        hessian_batches=args.hessian_batches, num_subsets=args.num_subsets, max_iter=args.max_iter, tol=args.tol)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    model = import_class(config["model"]["class_path"]).load_from_checkpoint(args.checkpoint, map_location="cpu")
    if args.lr is not None:
        model.lr = args.lr
    datamodule = import_class(config["data"]["class_path"])(**(config["data"].get("init_args") or {}))
    model.to(resolve_device("auto"))
    if callback is None:
        state: dict[str, Any] = dict(model_size_mb(model))
    else:
        callback.attach(model)
        if not callback.resolved:
            datamodule.setup("fit")
            callback.resolve(callback.compute_omega(model, datamodule.train_dataloader()))
        state = callback.state
        (out / "omega.json").write_text(json.dumps(state, indent=2))
        _print_plan(callback)

    L.seed_everything(args.seed, verbose=False)
    trainer = L.Trainer(max_steps=max(args.qat_steps, 1), callbacks=[callback] if callback else [], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0, precision="32-true",
                        gradient_clip_val=config.get("trainer", {}).get("gradient_clip_val"),
                        default_root_dir=str(out), devices=1)
    qat_start = time.perf_counter()
    if args.qat_steps > 0:
        trainer.fit(model, datamodule=datamodule)
    qat_s = time.perf_counter() - qat_start
    metrics = {k: float(v) for k, v in trainer.test(model, datamodule=datamodule, verbose=False)[0].items()}
    metrics.update({k: float(state[k]) for k in ("size_mb", "size_mb_no_emb", "fp32_mb", "hvps", "hessian_s")
                    if k in state})
    metrics["qat_s"] = qat_s
    if not args.no_export and callback is not None:
        meta = export_quantized(model, out, extra={"omega": state.get("omega"), "block_bits": state["bits"]})
        metrics["file_mb"] = meta["file_mb"]
    record = {
        "name": args.name or out.name, "seed": args.seed, "status": "finished",
        "config": {"bits": str(args.bits), "order": args.order, "groups": args.groups, "qat_steps": args.qat_steps,
                   "activation_bits": args.activation_bits, "embedding_bits": args.embedding_bits,
                   "checkpoint": str(args.checkpoint), "seed_everything": args.seed, "data": config["data"]},
        "metrics": metrics, "wall_time_s": round(time.perf_counter() - start, 3),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    }
    (out / "summary.json").write_text(json.dumps(record, indent=2))
    print("test: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k.startswith("test/")))
    print(f"wrote {out}")
    return 0


def _print_plan(callback: Any) -> None:
    state = callback.state
    print(f"{'block':<36} {'omega':>10} {'bits':>5}")
    for block, bits in state["bits"].items():
        omega = f"{state['omega'][block]:.4g}" if callback.needs_omega else "-"
        print(f"{block:<36} {omega:>10} {bits:>5}")
    print(f"size: {state['size_mb']:.3f} MB ({state['size_mb_no_emb']:.3f} MB without embeddings; "
          f"fp32 {state['fp32_mb']:.3f} MB)")
    if "hvps" in state:
        print(f"Hessian: {state['hvps']} Hessian-vector products in {state['hessian_s']:.1f} s")
