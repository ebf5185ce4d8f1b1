"""Multi-process training: the real console script under DDP on two CPU processes (gloo)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tiny_config
from support import run_cli, run_sstkit, summary

pytestmark = pytest.mark.ddp


def test_ddp_shards_and_unpadded_validation(write_config, data_dir: Path, tmp_path: Path) -> None:
    config = tiny_config(data_dir, max_steps=-1, max_epochs=1)
    # 37 validation rows, batches of 6: rank 0 gets 19 rows (4 batches), rank 1 18 rows (3 batches).
    config["data"]["init_args"]["eval_batch_size"] = 6
    config = write_config(config)
    runs, traces = tmp_path / "runs", tmp_path / "traces"
    trace = f'{{"class_path": "support.SampleTrace", "init_args": {{"out_dir": "{traces}"}}}}'
    result = run_sstkit("fit", "--config", str(config), "--name", "ddp", "--run_root", str(runs),
                        "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu",
                        f"--trainer.callbacks+={trace}", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "validation at step" in result.stdout, "non-TTY stdout gets plain progress lines"

    ranks = [json.loads((traces / f"trace-rank{r}.json").read_text()) for r in (0, 1)]
    shard0, shard1 = set(ranks[0]["indices"]), set(ranks[1]["indices"])
    assert ranks[0]["world_size"] == 2
    assert not shard0 & shard1, "the two ranks must train on disjoint shards"
    assert shard0 | shard1 == set(range(96)), "together they cover the training set once"

    record = summary(runs, "ddp")
    assert record["world_size"] == 2 and record["status"] == "finished"
    # No padded repeats, so the metric equals one process's.
    single = run_cli("validate", "--config", str(config), "--name", "single", "--run_root", str(runs),
                     "--ckpt_path", str(runs / "ddp" / "seed0" / "checkpoints" / "last.ckpt"))
    metrics = single.trainer.callback_metrics
    for key in ("val/acc", "val/f1", "val/loss"):
        assert abs(record["metrics"][key] - float(metrics[key])) < 1e-6, key
