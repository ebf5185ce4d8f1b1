"""``sstkit generate``: attribute-controlled generation (none, prompt, PPLM-style, PPC; optionally after RLDAF).

Example::

    sstkit generate --model runs/opt-sst2-ppc-lm/seed0/checkpoints/last.ckpt \\
        --data-config configs/opt/sst2_ood/lm.yaml --controller ppc --attribute positive \\
        --prompts benchmarks/ppc/prompts.txt --discriminator runs/ppc/discriminator.pt \\
        --judge runs/cdt-minilm-sst2/seed0/checkpoints/last.ckpt --fluency-lm smollm2 --out runs/ppc/gen

``--discriminator`` is the steering head on the LM's mean hidden states; when the file does not exist yet it is
fitted on ``--discriminator-data`` (SST-2 training rows) and saved there. A ``--model`` checkpoint trained with the
``AttributeDiscriminator`` callback (``configs/opt/mixed/ppc_lm.yaml``) carries its head, used when
``--discriminator`` is not given (or give the ``.ckpt`` as ``--discriminator``). ``--judge`` (a separate classifier) and
``--fluency-lm`` (a second LM) are only for the metrics. ``--rldaf-steps N`` first fine-tunes the LM's
``--rldaf-subset`` with RLDAF on ``--rldaf-prompts``. ``DIR`` receives ``generations.jsonl`` and ``metrics.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path
from typing import Any

import torch

from sstkit.errors import SstkitError
from sstkit.generation.control import (
    RLDAF,
    SUBSETS,
    AttributeHead,
    Controller,
    DecodeSettings,
    PPCController,
    PPLMController,
    PromptController,
    SteerableLM,
    attribute_index,
    controlled_generate,
    select_trainable,
)

CONTROLLERS = ("none", "prompt", "pplm", "ppc")
# Fixed attribute texts of the prompt-only baseline, written as a previous line of the LM's sentence stream.
ATTRIBUTE_PROMPTS = {1: "a wonderful , moving and beautiful film .\n", 0: "a dull , boring and terrible film .\n"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sstkit generate", description="attribute-controlled generation")
    p.add_argument("--model", required=True, help="sstkit CausalLM checkpoint (.ckpt), smollm2, or an HF name/path.")
    p.add_argument("--data-config", help="Training config of a .ckpt model (rebuilds its tokenizer).")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="Override a data-config key.")
    p.add_argument("--controller", choices=CONTROLLERS, default="ppc")
    p.add_argument("--attribute", action="append", default=None, help="positive / negative; repeatable.")
    p.add_argument("--prompts", required=True, help="Text file, one prompt per line.")
    p.add_argument("--limit", type=int, default=None, help="Use the first N prompts.")
    p.add_argument("--discriminator", help="Attribute head file (.pt; fitted and saved there when missing) or a "
                   "CausalLM .ckpt trained with the AttributeDiscriminator callback; default: --model's own head.")
    p.add_argument("--discriminator-data", default="sst2/train.tsv", help="Labelled TSV to fit the head on.")
    p.add_argument("--discriminator-rows", type=int, default=4000, help="Rows of it used.")
    p.add_argument("--discriminator-dev", default="sst2/dev.tsv", help="Labelled TSV for the head's accuracy.")
    p.add_argument("--discriminator-dev-rows", type=int, default=1000, help="Rows of it used.")
    p.add_argument("--step-size", type=float, default=0.1, help="alpha: each step's length, relative to the norm "
                   "of the prompt embeddings (PPC) or hidden states (PPLM).")
    p.add_argument("--steps", type=int, default=3, help="Gradient steps per generated token.")
    p.add_argument("--kl-weight", type=float, default=0.1, help="lambda: weight of the KL to the unsteered LM.")
    p.add_argument("--layer", type=int, default=-1, help="PPLM: the block whose output is perturbed.")
    p.add_argument("--reset", action="store_true", help="PPC: restart the soft prompt from P at every token.")
    p.add_argument("--max-new-tokens", type=int, default=20)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--rldaf-steps", type=int, default=0, help="RLDAF updates before generating (0 = none).")
    p.add_argument("--rldaf-subset", choices=SUBSETS, default="norms_biases")
    p.add_argument("--rldaf-prompts", help="Training prompts of RLDAF (keep them apart from --prompts).")
    p.add_argument("--rldaf-lr", type=float, default=1e-3)
    p.add_argument("--rldaf-kl", type=float, default=0.1, help="kappa: KL to the reference LM.")
    p.add_argument("--rldaf-fluency", type=float, default=0.0, help="beta: reference-NLL penalty in the reward.")
    p.add_argument("--judge", help="Separate classifier checkpoint for attribute accuracy.")
    p.add_argument("--fluency-lm", help="Second LM for perplexity (e.g. smollm2).")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N.")
    p.add_argument("--out", required=True, help="Output folder.")
    return p


def build_controller(name: str, head: AttributeHead | None, step_size: float = 0.1, steps: int = 3,
                     kl_weight: float = 0.1, layer: int = -1, reset: bool = False) -> Controller:
    """The controller ``name`` (``none``, ``prompt``, ``pplm``, ``ppc``)."""
    if name == "none":
        return Controller()
    if name == "prompt":
        return PromptController(ATTRIBUTE_PROMPTS)
    if head is None:
        raise SstkitError(f"--controller {name} steers with a discriminator: give --discriminator FILE (or a --model "
                          "checkpoint trained with the AttributeDiscriminator callback)")
    if name == "pplm":
        return PPLMController(head, step_size, steps, kl_weight, layer)
    if name == "ppc":
        return PPCController(head, step_size, steps, kl_weight, reset)
    raise SstkitError(f"--controller {name!r}: expected one of {list(CONTROLLERS)}")


def run_rldaf(lm: SteerableLM, head: AttributeHead, controller: Controller, prompts: list[str], steps: int,
              subset: str, lr: float, kl_coef: float, fluency_weight: float, settings: DecodeSettings,
              log: Any = print) -> SteerableLM:
    """Fine-tunes a copy of ``lm`` with RLDAF: prompts cycled in batches, both attributes alternating."""
    policy = SteerableLM(copy.deepcopy(lm.model), lm.tokenizer, lm.prefix)
    params = select_trainable(policy.model, subset)
    trainer = RLDAF(policy, lm, head, controller, torch.optim.Adam(params, lr=lr), kl_coef, fluency_weight)
    for step in range(steps):
        start = (step * settings.batch_size) % len(prompts)
        batch = (prompts * 2)[start:start + settings.batch_size]
        labels = [(step + i) % 2 for i in range(len(batch))]
        step_settings = DecodeSettings(settings.max_new_tokens, settings.temperature, settings.top_k,
                                       settings.seed + 1000 * (step + 1), settings.batch_size)
        stats = trainer.step(batch, labels, step_settings)
        log(f"rldaf step {step + 1}/{steps}: reward {stats.reward:.4f} p_D {stats.attribute_prob:.4f} "
            f"kl {stats.kl:.5f}")
    for param in policy.model.parameters():
        param.requires_grad_(False)
    policy.model.eval()
    return policy


def generate_main(argv: list[str]) -> int:
    """Entry point of ``sstkit generate``."""
    # Imported here so that `sstkit generate -h` does not load Lightning (the judge's model family does).
    from sstkit.commands.classifier_io import resolve_device
    from sstkit.commands.generate_io import (
        checkpoint_has_head,
        evaluate,
        load_fluency_lm,
        load_judge,
        load_or_fit_discriminator,
        load_steerable,
        read_prompts,
    )

    args = _parser().parse_args(argv)
    if args.limit is not None and args.limit < 1:
        raise SstkitError(f"--limit must be >= 1, got {args.limit}")
    if args.rldaf_steps and not args.rldaf_prompts:
        raise SstkitError("--rldaf-steps needs --rldaf-prompts (training prompts, apart from --prompts)")
    labels = [attribute_index(a) for a in (args.attribute or ["positive"])]
    settings = DecodeSettings(args.max_new_tokens, args.temperature, args.top_k, args.seed, args.batch_size)
    prompts = read_prompts(args.prompts, args.limit)
    torch.manual_seed(args.seed)
    lm = load_steerable(args.model, args.data_config, args.set, resolve_device(args.device))
    lm.model.requires_grad_(False)
    if args.discriminator is None and checkpoint_has_head(args.model):
        args.discriminator = args.model  # the head the AttributeDiscriminator callback trained with the LM
    head = (load_or_fit_discriminator(lm, args.discriminator, args.discriminator_data, args.discriminator_rows,
                                      args.discriminator_dev, args.discriminator_dev_rows)
            if args.discriminator else None)
    controller = build_controller(args.controller, head, args.step_size, args.steps, args.kl_weight, args.layer,
                                  args.reset)
    if args.rldaf_steps:
        if head is None:
            raise SstkitError("--rldaf-steps rewards with the discriminator: give --discriminator FILE")
        lm = run_rldaf(lm, head, build_controller("ppc", head, args.step_size, args.steps, args.kl_weight),
                       read_prompts(args.rldaf_prompts), args.rldaf_steps, args.rldaf_subset, args.rldaf_lr,
                       args.rldaf_kl, args.rldaf_fluency, settings)
    all_prompts = [p for _ in labels for p in prompts]
    all_labels = [a for a in labels for _ in prompts]
    output = controlled_generate(lm, all_prompts, controller, all_labels, settings)
    judge = load_judge(args.judge) if args.judge else None
    fluency = load_fluency_lm(args.fluency_lm) if args.fluency_lm else None
    metrics = {"controller": args.controller, "rldaf_steps": args.rldaf_steps, **evaluate(output, judge, fluency)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "generations.jsonl").open("w", encoding="utf-8") as handle:
        for prompt, label, text in zip(output.prompts, output.labels, output.texts, strict=True):
            handle.write(json.dumps({"prompt": prompt, "attribute": label, "text": text}) + "\n")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics))
    return 0
