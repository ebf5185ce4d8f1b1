"""``sstkit fit / validate / test / predict``: :class:`SstkitCLI`, LightningCLI with run folders and run records.

:mod:`sstkit.cli` imports this module only when one of these commands runs, since Lightning and every model
family take seconds to load; importing it registers the models, data modules, callbacks and optimizers, so
short ``class_path`` names (``TextClassifier``, ``SparseSpectralTraining``) resolve.

Example:
    >>> from sstkit.commands.trainer import SstkitCLI
    >>> cli = SstkitCLI(args=["fit", "--config", "configs/bert/sst2/finetune.yaml"], run=False)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
from jsonargparse import ActionYesNo
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.strategies import DDPStrategy

import sstkit
from sstkit.cli import COMMANDS, DESCRIPTION
from sstkit.config_errors import SstkitArgumentParser
from sstkit.errors import SstkitError
from sstkit.identity import config_changes, describe_changes, resolved_config
from sstkit.models.base import SstkitModule
from sstkit.predictions import PredictionWriter
from sstkit.progress import progress_callback
from sstkit.records import RunRecord
from sstkit.resume import LoaderPosition, PendingValidation, RngState
from sstkit.runs import RunFolder, find_resume_checkpoint, keep_in_run_folder, make_loggers, name_from_config_paths

# LightningCLI resolves a short class_path among the subclasses loaded so far.
sstkit.register_classes()

SPECIAL_CKPT = {"last", "best", "hpc", "registry"}


class SstkitSaveConfig(SaveConfigCallback):
    """Writes ``config.yaml`` into the run folder, sends the *full* config to W&B and into ``summary.json``."""

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        as_dict = resolved_config(self.parser, self.config, dict(pl_module.hparams))
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
        # The usage line and "did you mean" of `sstkit fitt` list every subcommand.
        SstkitArgumentParser.commands = list(COMMANDS)
        super().__init__(
            model_class=SstkitModule,
            subclass_mode_model=True,
            datamodule_class=L.LightningDataModule,
            subclass_mode_data=True,
            save_config_callback=SstkitSaveConfig,
            save_config_kwargs={"overwrite": True},
            seed_everything_default=0,
            parser_kwargs={"description": f"{DESCRIPTION} `sstkit --help` lists every command.", "prog": "sstkit"},
            parser_class=SstkitArgumentParser,
            args=args,
            run=run,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--name", type=str | None, default=None,
                            help="Experiment name; with the seed it pins the run folder (default: from the config path).")
        parser.add_argument("--run_root", type=str, default=os.environ.get("SSTKIT_RUNS", "runs"),
                            help="Folder that holds run folders <run_root>/<name>/seed<seed>/ (env SSTKIT_RUNS).")
        parser.add_argument("--resume_or_start", action=ActionYesNo, default=False,
                            help="Resume from the run's last checkpoint if it has one, else start (SLURM requeue scripts).")
        parser.add_argument("--allow_config_change", action=ActionYesNo, default=False,
                            help="Continue a run folder whose record holds another model/data/optimizer/method config.")
        parser.add_argument("--wandb.project", type=str, default="sstkit", help="W&B project.")
        parser.add_argument("--wandb.entity", type=str | None, default=None, help="W&B entity (team or user).")
        parser.add_argument("--wandb.tags", type=list[str] | None, default=None, help="W&B tags.")
        # Models size themselves from the data; links whose source or target a class lacks are skipped.
        parser.link_arguments("data.num_labels", "model.init_args.num_labels", apply_on="instantiate")
        parser.link_arguments("data.vocab_size", "model.init_args.vocab_size", apply_on="instantiate")
        parser.link_arguments("data.num_features", "model.init_args.num_features", apply_on="instantiate")
        parser.link_arguments("data.task_types", "model.init_args.task_types", apply_on="instantiate")
        parser.link_arguments("model.init_args.backbone", "data.init_args.tokenizer")

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        # Bad data must stop the command before the trainer makes a run folder, loggers or a W&B run.
        check = getattr(self.datamodule, "check_data", None)
        if callable(check):
            check(self.subcommand)
        return super().instantiate_trainer(**kwargs)

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
        user_callbacks = list(config.get("callbacks") or []) + list(callbacks)
        checkpoints = [cb for cb in user_callbacks if isinstance(cb, ModelCheckpoint)]
        extra: list[Any] = []
        if config.get("enable_checkpointing") is not False and not checkpoints:
            checkpoints = [ModelCheckpoint(dirpath=str(run.checkpoint_dir), save_last=True)]
            extra += checkpoints
        keep_in_run_folder(checkpoints, run)
        # Both checks come before the loggers, which create the run folder and the W&B run.
        self._resolve_resume(cli_config, checkpoints, run)
        changes = self._check_same_experiment(cli_config, run)
        if config.get("logger") in (None, True):
            wandb = cli_config.get("wandb") or {}
            config["logger"] = make_loggers(run, wandb.get("project") or "sstkit", wandb.get("entity"), wandb.get("tags"))
        extra += [RunRecord(run, config_changes=changes), RngState(), LoaderPosition(), PendingValidation()]
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

    def _resolve_resume(self, cli_config: Any, checkpoints: list[ModelCheckpoint], run: RunFolder) -> None:
        """Turns ``--ckpt_path last`` / ``--resume_or_start`` into the run's newest checkpoint, or fails clearly.

        Lightning itself would warn and train from step 0 when ``last`` finds nothing.
        """
        ckpt_path, resume_or_start = cli_config.get("ckpt_path"), bool(cli_config.get("resume_or_start"))
        if ckpt_path != "last" and not resume_or_start:
            return
        if resume_or_start and ckpt_path is not None:
            raise SstkitError(f"--resume_or_start and --ckpt_path {ckpt_path}: give one of them")
        found = find_resume_checkpoint([Path(str(cb.dirpath)) for cb in checkpoints if cb.dirpath], run.path)
        if found is None and not resume_or_start:
            where = ", ".join(sorted({str(cb.dirpath) for cb in checkpoints if cb.dirpath})) or str(run.checkpoint_dir)
            raise SstkitError(
                f"--ckpt_path last: run '{run.name}' (seed {run.seed}) has no checkpoint to resume in {where}; "
                "start without --ckpt_path, or use --resume_or_start to resume when one exists and start otherwise"
            )
        init = self.config_init.get(str(self.subcommand), self.config_init)
        init["ckpt_path"] = str(found) if found is not None else None

    def _check_same_experiment(self, cli_config: Any, run: RunFolder) -> dict[str, Any]:
        """Refuses a config that differs from the one the run folder's record was made with (unless allowed)."""
        stored = RunRecord.stored_config(run)
        if not stored:
            return {}
        hparams = dict(self.model.hparams) if self.model is not None else None
        changes = config_changes(stored, resolved_config(self._parser(self.subcommand), cli_config, hparams))
        if changes and not cli_config.get("allow_config_change"):
            raise SstkitError(
                f"run folder {run.path} holds another experiment ({describe_changes(changes)}); "
                "use --name or --run_root for a new run, or --allow_config_change to continue this one"
            )
        return changes

    @staticmethod
    def _check_ckpt_path(ckpt_path: str | None) -> None:
        if ckpt_path and ckpt_path not in SPECIAL_CKPT and not Path(ckpt_path).is_file():
            raise SstkitError(f"--ckpt_path {ckpt_path}: no such checkpoint file (or use last / best / hpc)")
