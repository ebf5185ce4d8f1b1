"""The ``sstkit`` command: LightningCLI's ``fit / validate / test / predict`` plus sstkit's own subcommands.

Example::

    sstkit fit --config configs/bert/sst2/finetune.yaml --trainer.max_steps 30
    sstkit test --config configs/bert/sst2/finetune.yaml --ckpt_path last
    sstkit table benchmarks/sst2_finetune/spec.yaml
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, NamedTuple

from sstkit.errors import SstkitError

DESCRIPTION = "sstkit: train, combine and compare SST-family methods."


class Command(NamedTuple):
    """One ``sstkit`` subcommand: where it runs and the line ``sstkit --help`` shows for it."""

    target: str | None  # "module:function" taking the remaining arguments, returning an exit code; None: SstkitCLI
    summary: str


# Every subcommand, imported only when chosen, so `sstkit --help` and `sstkit table` never load Lightning or the
# models. Those without a target are LightningCLI's own, parsed by SstkitCLI (sstkit.commands.trainer).
COMMANDS: dict[str, Command] = {
    "fit": Command(None, "train a model from a YAML config (LightningCLI)"),
    "validate": Command(None, "evaluate a checkpoint on the validation set"),
    "test": Command(None, "evaluate a checkpoint on the test set"),
    "predict": Command(None, "write the predictions of a checkpoint"),
    "table": Command("sstkit.bench.command:table_main", "benchmark tables from runs (summary.json, W&B)"),
    "backdoor": Command("sstkit.commands.backdoor:backdoor_main", "backdoor expose / detect / remove"),
    "delta": Command("sstkit.commands.delta:delta_main", "prune a fine-tuning delta (DARE, DAREx)"),
    "patch": Command("sstkit.commands.patch:patch_main", "PortLLM patches: extract and apply"),
    "quantize": Command("sstkit.commands.quantize:quantize_main", "Q-BERT mixed-precision quantisation"),
    "data": Command("sstkit.commands.data:data_main", "download the data sets into the layout sstkit reads"),
    "explain": Command("sstkit.commands.explain:explain_main", "CD-T local explanations of a classifier"),
    "ood": Command("sstkit.commands.ood:ood_main", "OOD scores (LM / MLKD perplexity) and AUROC, AUPR, FAR95"),
    "attack": Command("sstkit.commands.attack:attack_main", "adversarial word substitution: PWWS, BAE, BERT-Attack, FBA, GradObstinate"),
    "safety": Command("sstkit.commands.safety:safety_main", "safety test suites for chat models: generate, judge, tabulate"),
    "generate": Command("sstkit.commands.generate:generate_main", "attribute-controlled generation: none, prompt, PPLM-style, PPC, RLDAF"),
    "llm2llm": Command("sstkit.commands.llm2llm:llm2llm_main", "LLM2LLM: iterative teacher augmentation of a low-data student"),
}

# Names that used to be defined here; they now live with LightningCLI in sstkit.commands.trainer.
_TRAINER_NAMES = ("SstkitCLI", "SstkitSaveConfig", "SPECIAL_CKPT", "uses_unused_parameters", "close_wandb_runs")


def __getattr__(name: str) -> Any:
    if name in _TRAINER_NAMES:
        return getattr(importlib.import_module("sstkit.commands.trainer"), name)
    raise AttributeError(f"module 'sstkit.cli' has no attribute {name!r}")


def usage() -> str:
    """The text of ``sstkit --help``, built without importing any command."""
    width = max(map(len, COMMANDS))
    lines = [f"usage: sstkit {{{','.join(COMMANDS)}}} ...", "", DESCRIPTION, "", "commands:"]
    lines += [f"  {name:<{width}}  {command.summary}" for name, command in COMMANDS.items()]
    lines += ["", "`sstkit <command> -h` shows a command's options (fit/validate/test/predict also take -c CONFIG)."]
    return "\n".join(lines)


def run_command(target: str, argv: list[str]) -> int:
    """Imports a :data:`COMMANDS` target (``"module:function"``) and runs it on ``argv``."""
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)(argv)


def user_error(exc: BaseException) -> SstkitError | None:
    """The :class:`SstkitError` behind ``exc``, if any: jsonargparse wraps errors raised while building classes."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, SstkitError):
            return current
        if type(current).__name__ == "MisconfigurationException":  # Lightning's word for a bad trainer setting;
            return SstkitError(f"trainer: {current}")  # matched by name so this module never imports Lightning
        stack += [current.__cause__, current.__context__]
    return None


def main(argv: list[str] | None = None) -> None:
    """Console entry point: help and sstkit's own subcommands without Lightning, LightningCLI for the rest."""
    args = sys.argv[1:] if argv is None else argv
    try:
        if not args or args[0] in ("-h", "--help"):
            print(usage(), file=sys.stdout if args else sys.stderr)
            sys.exit(0 if args else 2)
        command = COMMANDS.get(args[0])
        if command is not None and command.target is not None:
            sys.exit(run_command(command.target, args[1:]))
        from sstkit.commands.trainer import SstkitCLI

        SstkitCLI(args=argv)
    except Exception as exc:  # only user errors are shortened; bugs keep their traceback
        err = user_error(exc)
        if err is None:
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
