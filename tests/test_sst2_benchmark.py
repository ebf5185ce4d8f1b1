"""The SST-2 benchmark script reruns what its committed tables hold: the subset size, and the whole-file runs."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import yaml

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "sst2_finetune"


def _run_module():
    spec = importlib.util.spec_from_file_location("sst2_finetune_run", BENCH / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_default_subset_is_the_committed_tables() -> None:
    run = _run_module()
    with (BENCH / "results.csv").open() as f:
        committed = {int(row["data.init_args.limit_train_samples"]) for row in csv.DictReader(f)}
    defaults = run.build_parser().parse_args([]).train_samples
    assert committed | {0} == set(defaults)  # the committed subset size, and the whole file
    args = run.finetune_args(Path("/r"), run.SUBSET)
    assert args[args.index("--data.init_args.limit_train_samples") + 1] == str(run.SUBSET)


def test_whole_file_runs_are_the_launched_ones() -> None:
    """``--train-samples 0``: no limit, run name sst2_finetune_full, read by spec_full.yaml."""
    run = _run_module()
    assert run.finetune_args(Path("/runs"), 0) == [
        "--config", "configs/bert/sst2/finetune.yaml", "--name", "sst2_finetune_full", "--run_root", "/runs",
        "--trainer.val_check_interval", "1.0", "--trainer.limit_val_batches", "8"]
    spec = yaml.safe_load((BENCH / "spec_full.yaml").read_text())
    assert spec["runs"] == [{"summary": "runs/sst2_finetune_full"}]
    assert yaml.safe_load((BENCH / "spec.yaml").read_text())["runs"] == [{"summary": "runs/sst2_finetune"}]
