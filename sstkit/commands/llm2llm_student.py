"""An LLM2LLM student that is an ordinary sstkit run per iteration: ``sstkit fit``, ``test`` and ``predict``.

Each iteration writes ``iter<i>/fit.yaml``: the student's config (e.g. ``configs/bert/sst2/finetune.yaml``) with
its ``data`` section replaced by a :class:`~sstkit.datamodules.TextClassificationDataModule` that reads the
iteration's ``train.tsv`` and the task's own validation and test files, and runs it through
:class:`~sstkit.commands.trainer.SstkitCLI` in this process — the code path of ``sstkit fit`` — into the run folder
``<run_root>/<name>-iter<i>/seed<seed>/`` (``summary.json``, W&B). The test metrics and the predictions on the
student's own training data come from ``sstkit test`` and ``sstkit predict`` on its last checkpoint.

Continued fine-tuning (a baseline) loads the previous iteration's weights in ``before_fit``; the optimizer,
schedule and step count start afresh, as when fine-tuning a released checkpoint.

Example:
    >>> student = SstkitRunStudent(Path("configs/bert/sst2/finetune.yaml"), task, Path("runs"), "l2l")  # doctest: +SKIP
    >>> record = student.train(0, Path("runs/l2l/iter0/train.tsv"), None)  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from sstkit.commands.trainer import SstkitCLI
from sstkit.errors import SstkitError
from sstkit.functional.llm2llm.data import Example, write_examples
from sstkit.runs import RunFolder

# Data settings of the student's config that carry over to the per-iteration DataModule.
CARRIED = ("tokenizer", "max_length", "batch_size", "eval_batch_size", "num_workers")


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` merged in, nested dicts key by key."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


class _InitFromCLI(SstkitCLI):
    """``sstkit fit`` that starts from another run's weights (continued fine-tuning)."""

    init_checkpoint: Path | None = None

    def before_fit(self) -> None:
        if self.init_checkpoint is not None:
            state = torch.load(self.init_checkpoint, map_location="cpu", weights_only=False)["state_dict"]
            self.model.load_state_dict(state)


class SstkitRunStudent:
    """Trains, tests and predicts with sstkit runs.

    Args:
        config: the student's sstkit config (model, trainer, optimizer; its data section gives batch sizes).
        task: ``val_file``, ``test_file`` (absolute paths), ``header``, ``num_labels``.
        run_root: where the run folders go.
        name: run name prefix; iteration i runs as ``<name>-iter<i>``.
        seed: ``seed_everything`` of every run.
        overrides: nested settings merged into the config (e.g. ``{"trainer": {"max_epochs": 8}}``).
        keep_checkpoints: keep each run's checkpoints (else deleted once no later step needs them).
    """

    metric = "test/acc"  # the test metric a benchmark table reports

    def __init__(self, config: Path, task: dict[str, Any], run_root: Path, name: str, seed: int = 0,
                 overrides: dict[str, Any] | None = None, keep_checkpoints: bool = False) -> None:
        if not Path(config).is_file():
            raise SstkitError(f"student.config: no such file {config}")
        loaded = yaml.safe_load(Path(config).read_text()) or {}
        if not isinstance(loaded, dict) or "model" not in loaded:
            raise SstkitError(f"student.config {config}: expected an sstkit config with a model section")
        self.base = deep_merge(loaded, overrides or {})
        self.task, self.run_root, self.name, self.seed = task, Path(run_root), name, seed
        self.keep_checkpoints = keep_checkpoints

    # The DataModule each iteration trains on; a student kind swaps it with task_data_args.
    data_class = "sstkit.datamodules.TextClassificationDataModule"
    carried: tuple[str, ...] = CARRIED

    def task_data_args(self, train_file: Path) -> dict[str, Any]:
        """DataModule arguments that depend on the student kind (labels and the file to predict)."""
        return {"predict_file": str((train_file.parent / "predict.tsv").resolve()),
                "num_labels": int(self.task["num_labels"])}

    def fit_config(self, iteration: int, train_file: Path) -> dict[str, Any]:
        """The iteration's full sstkit config."""
        config = copy.deepcopy(self.base)
        data_args = (config.get("data") or {}).get("init_args") or {}
        args = {k: data_args[k] for k in self.carried if k in data_args}
        args.update(data_dir=str(train_file.parent.resolve()), dataset_folder="", train_file=train_file.name,
                    val_file=self.task["val_file"], test_file=self.task["test_file"],
                    header=list(self.task["header"]), **self.task_data_args(train_file))
        config["data"] = {"class_path": self.data_class, "init_args": args}
        config.update(name=f"{self.name}-iter{iteration}", seed_everything=self.seed)
        return config

    def _cli(self, *args: str, cli: type[SstkitCLI] = SstkitCLI) -> None:
        cli(args=[*args, "--run_root", str(self.run_root)])

    def train(self, iteration: int, train_file: Path, init_from: dict[str, Any] | None) -> dict[str, Any]:
        """``sstkit fit`` then ``sstkit test``; returns the run folder, its metrics and its config file."""
        config_file = train_file.parent / "fit.yaml"
        config_file.write_text(yaml.safe_dump(self.fit_config(iteration, train_file), sort_keys=False))
        # The DataModule checks every file it names up front; predict() rewrites this one with what it predicts.
        shutil.copyfile(train_file, train_file.parent / "predict.tsv")
        run = RunFolder(self.run_root, f"{self.name}-iter{iteration}", self.seed).path
        init = Path(init_from["run"]) / "checkpoints" / "last.ckpt" if init_from else None
        if init is not None and not init.is_file():
            raise SstkitError(f"continued fine-tuning: the previous iteration's checkpoint {init} is missing "
                              "(set student.keep_checkpoints: true, or delete the later iterations and rerun)")
        cli = type("InitFrom", (_InitFromCLI,), {"init_checkpoint": init})
        self._cli("fit", "--config", str(config_file), cli=cli)
        ckpt = run / "checkpoints" / "last.ckpt"
        self._cli("test", "--config", str(config_file), "--ckpt_path", str(ckpt))
        metrics = json.loads((run / "summary.json").read_text()).get("metrics", {})
        return {"run": str(run), "config_file": str(config_file), "metrics": metrics}

    def predict(self, record: dict[str, Any], examples: Sequence[Example]) -> list[int]:
        """``sstkit predict`` on ``examples`` (greedy: the arg-max class)."""
        run, config_file = Path(record["run"]), Path(record["config_file"])
        # The run's config names predict.tsv next to it, so predicting changes nothing in the run's record.
        write_examples(config_file.parent, examples, self.task["header"], name="predict")
        self._cli("predict", "--config", str(config_file), "--ckpt_path", str(run / "checkpoints" / "last.ckpt"))
        rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines() if line.strip()]
        return [int(row["preds"]) for row in sorted(rows, key=lambda r: r["index"])]

    def release(self, record: dict[str, Any]) -> None:
        """Deletes a run's checkpoints once nothing needs them (unless ``keep_checkpoints``)."""
        if not self.keep_checkpoints:
            shutil.rmtree(Path(record["run"]) / "checkpoints", ignore_errors=True)
