"""The ``sstkit`` command: LightningCLI's ``fit / validate / test / predict`` plus sstkit's own subcommands.

Example::

    sstkit fit --config configs/bert/sst2/finetune.yaml --trainer.max_steps 30
    sstkit test --config configs/bert/sst2/finetune.yaml --ckpt_path last
    sstkit table benchmarks/sst2_finetune/spec.yaml
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.strategies import DDPStrategy

from sstkit.errors import SstkitError
from sstkit.models.base import SstkitModule
from sstkit.predictions import PredictionWriter
from sstkit.progress import progress_callback
from sstkit.records import RunRecord
from sstkit.resume import RngState
from sstkit.runs import RunFolder, make_loggers, name_from_config_paths

SPECIAL_CKPT = {"last", "best", "hpc", "registry"}


class SstkitSaveConfig(SaveConfigCallback):
    """Writes ``config.yaml`` into the run folder, sends the *full* config to W&B and into ``summary.json``."""

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        config = self.parser.dump(self.config, skip_none=False, format="json")
        as_dict = json.loads(config)
        as_dict.pop("config", None)
        # Values linked at instantiation (num_labels, vocab_size) are not in the parsed config: take the
        # model's own record of its arguments so the saved config is the one that was actually built.
        model_args = as_dict.get("model", {}).get("init_args")
        if isinstance(model_args, dict):
            model_args.update(json.loads(json.dumps(dict(pl_module.hparams), default=str)))
        for callback in trainer.callbacks:
            if isinstance(callback, RunRecord):
                callback.set_config(as_dict)
                (callback.run.path / "config.yaml").write_text(self.parser.dump(self.config, skip_none=False))
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.config.update(as_dict, allow_val_change=True)


def uses_unused_parameters(callbacks: list[Any]) -> bool:
    """Whether any method callback declares that DDP must look for parameters without gradients."""
    return any(getattr(cb, "ddp_find_unused_parameters", False) for cb in callbacks)


def close_wandb_runs(trainer: L.Trainer) -> None:
    """Finishes the W&B runs of a trainer so their files are complete when the command returns.

    A console run finishes them at exit anyway; an in-process run (tests, notebooks, benchmark scripts) would
    otherwise leave them open. A later use of the same logger starts the same run id again (resume="allow").
    """
    for logger in trainer.loggers:
        experiment = getattr(logger, "_experiment", None)
        if isinstance(logger, WandbLogger) and experiment is not None and hasattr(experiment, "finish"):
            experiment.finish()
            logger._experiment = None


class SstkitCLI(LightningCLI):
    """LightningCLI with run folders, W&B/CSV logging, run records and cluster-friendly defaults."""

    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        super().__init__(
            model_class=SstkitModule,
            subclass_mode_model=True,
            datamodule_class=L.LightningDataModule,
            subclass_mode_data=True,
            save_config_callback=SstkitSaveConfig,
            save_config_kwargs={"overwrite": True},
            seed_everything_default=0,
            parser_kwargs={"description": DESCRIPTION},
            args=args,
            run=run,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--name", type=str | None, default=None,
                            help="Experiment name; with the seed it pins the run folder (default: from the config path).")
        parser.add_argument("--run_root", type=str, default=os.environ.get("SSTKIT_RUNS", "runs"),
                            help="Folder that holds run folders <run_root>/<name>/seed<seed>/ (env SSTKIT_RUNS).")
        parser.add_argument("--wandb.project", type=str, default="sstkit", help="W&B project.")
        parser.add_argument("--wandb.entity", type=str | None, default=None, help="W&B entity (team or user).")
        parser.add_argument("--wandb.tags", type=list[str] | None, default=None, help="W&B tags.")
        # Models size themselves from the data; links whose source or target a class lacks are skipped.
        parser.link_arguments("data.num_labels", "model.init_args.num_labels", apply_on="instantiate")
        parser.link_arguments("data.vocab_size", "model.init_args.vocab_size", apply_on="instantiate")
        parser.link_arguments("data.num_features", "model.init_args.num_features", apply_on="instantiate")
        parser.link_arguments("model.init_args.backbone", "data.init_args.tokenizer")

    # --- run folder, loggers, callbacks ------------------------------------------------------------------
    def _run_folder(self) -> RunFolder:
        config = self.config.get(str(self.subcommand), self.config)
        name = config.get("name") or name_from_config_paths(config.get("config") or []) or "default"
        return RunFolder(Path(config.get("run_root") or "runs"), name, int(config.get("seed_everything") or 0))

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Any]) -> L.Trainer:
        cli_config = self.config.get(str(self.subcommand), self.config)
        run = self._run_folder()
        self._check_ckpt_path(cli_config.get("ckpt_path"))
        config.setdefault("default_root_dir", str(run.path))
        if config.get("default_root_dir") in (None, os.getcwd()):
            config["default_root_dir"] = str(run.path)
        if config.get("logger") in (None, True):
            wandb = cli_config.get("wandb") or {}
            config["logger"] = make_loggers(run, wandb.get("project") or "sstkit", wandb.get("entity"), wandb.get("tags"))
        user_callbacks = list(config.get("callbacks") or []) + list(callbacks)
        extra: list[Any] = [RunRecord(run), RngState()]
        if config.get("enable_checkpointing") is not False and not any(
            isinstance(cb, ModelCheckpoint) for cb in user_callbacks
        ):
            extra.append(ModelCheckpoint(dirpath=str(run.checkpoint_dir), save_last=True))
        if config.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in user_callbacks):
            extra.append(progress_callback())
        if self.subcommand == "predict":
            extra.append(PredictionWriter(run.path))
        callbacks = list(callbacks) + extra
        if config.get("strategy") == "ddp":
            # No buffer broadcast: evaluation shards may differ in batch count by one, and a per-step collective
            # would then hang; the models here keep no buffers that need syncing.
            config["strategy"] = DDPStrategy(
                find_unused_parameters=uses_unused_parameters(user_callbacks), broadcast_buffers=False
            )
        return super()._instantiate_trainer(config, callbacks)

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        finally:
            close_wandb_runs(self.trainer)

    @staticmethod
    def _check_ckpt_path(ckpt_path: str | None) -> None:
        if ckpt_path and ckpt_path not in SPECIAL_CKPT and not Path(ckpt_path).is_file():
            raise SstkitError(f"--ckpt_path {ckpt_path}: no such checkpoint file (or use last / best / hpc)")


DESCRIPTION = (
    "sstkit: train, combine and compare SST-family methods.\n"
    "Subcommands: fit, validate, test, predict (LightningCLI); table (benchmark tables), delta (delta pruning), "
    "patch (PortLLM patches), quantize (Q-BERT), backdoor (expose / detect / remove): `sstkit <command> -h`."
)


# sstkit-only subcommands, imported only when used so that `sstkit fit` starts fast: name -> "module:function",
# each function taking the remaining arguments and returning an exit code.
EXTRA_COMMANDS: dict[str, str] = {
    "table": "sstkit.bench.command:table_main",
    "backdoor": "sstkit.commands.backdoor:backdoor_main",
    "delta": "sstkit.commands.delta:delta_main",
    "patch": "sstkit.commands.patch:patch_main",
    "quantize": "sstkit.quantize_cmd:quantize_main",
    "safety": "sstkit.commands.safety:safety_main",
}


def run_extra_command(name: str, argv: list[str]) -> int:
    """Runs one of :data:`EXTRA_COMMANDS`."""
    module, function = EXTRA_COMMANDS[name].split(":")
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
        stack += [current.__cause__, current.__context__]
    return None


def main(argv: list[str] | None = None) -> None:
    """Console entry point: sstkit-only subcommands first, LightningCLI for the rest."""
    args = sys.argv[1:] if argv is None else argv
    try:
        if args and args[0] in EXTRA_COMMANDS:
            sys.exit(run_extra_command(args[0], args[1:]))
        SstkitCLI(args=argv)
    except Exception as exc:  # only user errors are shortened; bugs keep their traceback
        err = user_error(exc)
        if err is None:
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
