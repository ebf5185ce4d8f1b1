"""Run folders pinned by experiment name and seed, and the loggers that write into them.

A run's folder is ``<run_root>/<name>/seed<seed>/``. Starting, resuming or requeueing the same name and seed uses
the same folder, the same ``summary.json`` and the same W&B run id, so one experiment stays one record.

Example:
    >>> run = RunFolder(Path("runs"), "sst2_finetune", seed=0)
    >>> loggers = make_loggers(run, project="sstkit")
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class RunFolder:
    """Where one experiment (name + seed) keeps its checkpoints, logs and summary."""

    root: Path
    name: str
    seed: int

    @property
    def path(self) -> Path:
        return self.root / _SAFE.sub("-", self.name) / f"seed{self.seed}"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    def wandb_id(self) -> str:
        """The run's W&B id, created once and reused by every later segment (resume, requeue, test)."""
        id_file = self.path / "wandb_id"
        if id_file.is_file():
            return id_file.read_text().strip()
        self.path.mkdir(parents=True, exist_ok=True)
        run_id = f"{_SAFE.sub('-', self.name)[:40]}-s{self.seed}-{secrets.token_hex(3)}"
        # Several DDP ranks may get here at once: the first writer wins, the others read its id.
        try:
            with open(id_file, "x") as handle:
                handle.write(run_id)
        except FileExistsError:
            return id_file.read_text().strip()
        return run_id


def keep_in_run_folder(checkpoints: list[ModelCheckpoint], run: RunFolder) -> None:
    """Points checkpoint callbacks without a ``dirpath`` at the run's ``checkpoints/`` folder.

    Lightning would put them under the first logger's version folder (``csv/version_<n>/checkpoints``), a new one
    per segment, where the next ``--ckpt_path last`` never looks. In the run folder ``last.ckpt`` is overwritten,
    never versioned (``last-v1.ckpt``), so it is always the newest.
    """
    for callback in checkpoints:
        if callback.dirpath is None:
            callback.dirpath = os.path.realpath(run.checkpoint_dir)
        if Path(callback.dirpath).resolve() == run.checkpoint_dir.resolve():
            callback._enable_version_counter = False


def find_resume_checkpoint(checkpoint_dirs: list[Path], run_path: Path) -> Path | None:
    """The newest resumable checkpoint of a run: ``last*.ckpt`` in its checkpoint folders or an HPC requeue checkpoint.

    This is what ``--ckpt_path last`` and ``--resume_or_start`` resume from; None when the run has none.
    """
    found = [p for d in checkpoint_dirs if d.is_dir() for p in d.glob("last*.ckpt")]
    found += list(run_path.glob("hpc_ckpt_*.ckpt")) if run_path.is_dir() else []
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def name_from_config_paths(paths: list[Any]) -> str | None:
    """``configs/bert/sst2/finetune.yaml`` → ``bert-sst2-finetune`` (the last config file names the run)."""
    if not paths:
        return None
    path = Path(str(paths[-1]))
    parts = list(path.with_suffix("").parts)
    if "configs" in parts:
        parts = parts[parts.index("configs") + 1 :]
    return "-".join(parts[-3:])


def wandb_mode() -> str:
    """``$WANDB_MODE`` if set, else online when credentials exist, else offline: never blocks on a login."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    if netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore"):
        return "online"
    return "offline"


class RunWandbLogger(WandbLogger):
    """A ``WandbLogger`` that only ever logs into its own run id.

    Lightning's logger adopts whatever W&B run is active in the process whenever it (re)starts its experiment, e.g.
    when ``trainer.validate`` runs again after the CLI closed the run: the segment would then be logged into, and
    recorded under, another experiment's run. This one finishes a foreign active run first.
    """

    @property
    def experiment(self) -> Any:
        if self._experiment is None:
            import wandb

            if wandb.run is not None and wandb.run.id != self._wandb_init.get("id"):
                wandb.finish()
        return super().experiment


def make_loggers(run: RunFolder, project: str, entity: str | None = None, tags: list[str] | None = None) -> list[Logger]:
    """A CSV logger (one version folder per segment, nothing overwritten) and, unless disabled, a W&B logger."""
    loggers: list[Logger] = [CSVLogger(save_dir=str(run.path), name="csv")]
    mode = wandb_mode()
    if mode != "disabled":
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        loggers.append(
            RunWandbLogger(
                name=run.name,
                project=project,
                entity=entity,
                id=run.wandb_id(),
                save_dir=str(run.path),
                tags=tags,
                resume="allow",
                mode=mode,
                # An unreachable server must not hang a cluster job: give up quickly.
                settings=wandb.Settings(init_timeout=60, silent=True),
            )
        )
    return loggers
