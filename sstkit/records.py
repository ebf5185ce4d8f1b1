"""``summary.json``: one record per run (name + seed), continued across resumes, requeues and test runs.

Written on rank 0 only (plain file I/O, no collectives), atomically, after every evaluation and at the end of
every segment, so a killed job still leaves its last metrics. ``sstkit table`` reads these files. At the end of
every segment the run statistics (``global_step``, ``train_time_s``, ``wall_time_s``, ...) and final metrics also go
to the W&B run summary under the same names, so a table from W&B equals the table from ``summary.json``.

Example:
    >>> trainer = Trainer(callbacks=[RunRecord(RunFolder(Path("runs"), "demo", 0))])
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

import lightning as L
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.data import extract_batch_size
from lightning.pytorch.utilities.rank_zero import rank_zero_warn

from sstkit.bench.summary_reader import run_statistics
from sstkit.runs import RunFolder

PACKAGES = ("sstkit", "torch", "lightning", "transformers", "torchmetrics", "jsonargparse", "wandb")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages a result depends on."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


class RunRecord(L.Callback):
    """Keeps ``<run folder>/summary.json`` up to date.

    Every invocation appends a segment (``command``, ``start_step``, ``end_step``, ``status``, ``wall_s`` …). A
    segment is brought up to date at every evaluation, checkpoint and at least once a minute of training, so a
    process killed with SIGKILL leaves its time and last step; the next start marks it ``killed``. The record's
    ``wall_time_s`` sums every segment's wall time, ``train_time_s`` every segment's time in the fit loop.

    Args:
        run: the run folder.
        config: the full CLI config as a plain dict (also settable later with :meth:`set_config`).
        config_changes: experiment keys changed against the stored config (``--allow_config_change``), recorded
            in the segment.
    """

    WRITE_EVERY_S = 60.0

    def __init__(self, run: RunFolder, config: dict[str, Any] | None = None,
                 config_changes: dict[str, Any] | None = None) -> None:
        self.run = run
        self.config = config or {}
        self.config_changes = config_changes or {}
        self.record: dict[str, Any] = {}
        self._segment: dict[str, Any] = {}
        self._wall_t0 = self._train_t0 = self._eval_t0 = self._last_write = 0.0
        self._eval_time = 0.0
        self._in_fit = False
        self._samples = 0

    @staticmethod
    def stored_config(run: RunFolder) -> dict[str, Any]:
        """The config in a run folder's ``summary.json`` ({} when there is none or it is unreadable)."""
        try:
            return json.loads(run.summary_path.read_text()).get("config") or {}
        except (OSError, json.JSONDecodeError, AttributeError):
            return {}

    def set_config(self, config: dict[str, Any]) -> None:
        """Stores the resolved config (the CLI calls this when it saves the config)."""
        self.config = config
        self.record["config"] = config

    def _load(self) -> dict[str, Any]:
        if self.run.summary_path.is_file():
            try:
                return json.loads(self.run.summary_path.read_text())
            except json.JSONDecodeError:
                # Keep the unreadable file for inspection instead of overwriting it.
                os.replace(self.run.summary_path, self.run.summary_path.with_suffix(f".corrupt{int(time.time())}"))
        return {"name": self.run.name, "seed": self.run.seed, "created": _now(), "metrics": {}, "segments": []}

    def write(self) -> None:
        """Writes the record atomically, with the current segment and the totals over all segments up to date."""
        now = time.monotonic()
        if self._segment:
            self._segment.update(updated=_now(), wall_s=round(now - self._wall_t0, 3), eval_s=round(self._eval_time, 3))
            if self._in_fit:
                self._segment["fit_s"] = round(now - self._train_t0, 3)
        segments = self.record.get("segments", [])
        self.record["wall_time_s"] = round(sum(s.get("wall_s", 0.0) for s in segments), 3)
        if any("fit_s" in s for s in segments):
            self.record["train_time_s"] = round(sum(s.get("fit_s", 0.0) for s in segments), 3)
        self.record["updated"] = _now()
        self._last_write = now
        self.run.path.mkdir(parents=True, exist_ok=True)
        tmp = self.run.summary_path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(self.record, indent=2, sort_keys=False, default=str))
        os.replace(tmp, self.run.summary_path)

    # --- lifecycle ---------------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not trainer.is_global_zero:
            return
        self.record = self._load()
        for segment in self.record["segments"]:
            if "status" not in segment:  # its process died without a word (SIGKILL, out of memory, node lost)
                segment.update(status="killed", ended=segment.get("updated", segment.get("started")),
                               end_step=segment.get("step", segment.get("start_step", 0)))
        self.record.update(name=self.run.name, seed=self.run.seed, run_dir=str(self.run.path.resolve()))
        self.record.update(status="running", versions=package_versions(), world_size=trainer.world_size)
        self.record["config"] = self.config or self.record.get("config", {})
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                self.record["wandb"] = {"id": logger.version, "project": logger.name, "dir": logger.save_dir,
                                        "mode": getattr(logger, "_wandb_init", {}).get("mode")}
        self._segment = {"command": stage, "started": _now(), "start_step": trainer.global_step}
        if self.config_changes:
            self._segment["config_changes"] = {k: list(v) for k, v in self.config_changes.items()}
        self.record["segments"].append(self._segment)
        self._wall_t0, self._eval_time = time.monotonic(), 0.0
        self.write()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._train_t0, self._eval_time, self._samples = time.monotonic(), 0.0, 0
        self._in_fit = True
        if self._segment:  # setup() runs before a checkpoint is restored; the true start step is known now
            self._segment["start_step"] = self._segment["step"] = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        try:
            self._samples += extract_batch_size(batch)
        except Exception:  # batches without a recognisable size: throughput in samples stays unknown
            self._samples = -(10**18)
        if trainer.is_global_zero and self._segment and time.monotonic() - self._last_write > self.WRITE_EVERY_S:
            self._segment["step"] = trainer.global_step
            self.write()

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        # A checkpoint is where a killed run will resume: the record should know it got this far.
        if trainer.is_global_zero and self._segment:
            self._segment["step"] = trainer.global_step
            self.write()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._eval_t0 = time.monotonic()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._eval_time += time.monotonic() - self._eval_t0
        if not trainer.sanity_checking:
            self._collect(trainer, "val/")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        seconds = max(1e-9, time.monotonic() - self._train_t0 - self._eval_time)
        steps = trainer.global_step - self._segment.get("start_step", 0)
        self.record.update(global_step=trainer.global_step, epochs=epochs_done(trainer),
                           train_steps_per_s=round(steps / seconds, 4))
        if self._samples > 0:
            self.record["train_samples_per_s"] = round(self._samples * trainer.world_size / seconds, 3)
        self._collect(trainer, "train/")
        self._in_fit = False

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._collect(trainer, "test/")

    def _collect(self, trainer: L.Trainer, prefix: str) -> None:
        if not trainer.is_global_zero:
            return
        for key, value in trainer.callback_metrics.items():
            number = _number(value)
            if number is not None and (key.startswith(prefix) or not key.startswith(("train/", "val/", "test/"))):
                self.record["metrics"][key] = number
        self.record["global_step"] = max(self.record.get("global_step", 0), trainer.global_step)
        if self._segment:
            self._segment["step"] = trainer.global_step
        self.write()

    def _finish(self, trainer: L.Trainer, status: str, error: str | None = None) -> None:
        if not trainer.is_global_zero or not self._segment:
            return
        self._segment.update(ended=_now(), status=status, end_step=trainer.global_step, step=trainer.global_step)
        if error:
            self._segment["error"] = error
        self.record["status"] = status
        self.write()
        self._segment, self._in_fit = {}, False
        self._publish(trainer)

    def _publish(self, trainer: L.Trainer) -> None:
        """Sends the record's run statistics and final metrics to the W&B run summary, under the same names.

        W&B's own ``_runtime`` is not ``wall_time_s`` (the sum of the segments' wall times), and the statistics
        are never logged as metrics, so without this a W&B table would lack them or mean something else.
        """
        values = {**self.record.get("metrics", {}), **run_statistics(self.record)}
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                try:
                    logger.experiment.summary.update(values)
                except Exception as err:  # noqa: BLE001 - summary.json is written; W&B trouble must not fail the run
                    rank_zero_warn(f"could not send the run statistics to W&B: {type(err).__name__}: {err}")

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._finish(trainer, "finished" if not trainer.interrupted else "interrupted")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._finish(trainer, "failed", f"{type(exception).__name__}: {exception}")


def epochs_done(trainer: L.Trainer) -> float:
    """Epochs trained, as a fraction: 20 steps of a 1,895-step epoch are 0.0106 epochs, not Lightning's 1.

    Lightning's ``current_epoch`` counts an epoch cut short by ``max_steps`` as done; the step count does not.
    """
    batches = trainer.num_training_batches
    if not isinstance(batches, int) and not (isinstance(batches, float) and math.isfinite(batches)):
        return float(trainer.current_epoch)  # an iterable without a length: only whole epochs are known
    steps_per_epoch = max(1, math.ceil(int(batches) / max(1, trainer.accumulate_grad_batches)))
    return round(trainer.global_step / steps_per_epoch, 4)
