"""Shared fixtures: a small copy of the data sets, a private cache, offline W&B, and a tiny random BERT config.

Tests never reach a network: models are built from configs in code, and W&B runs offline.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/support.py for subprocess runs too

TINY_BERT = {"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}


def shared_data() -> Path:
    """The data folder: $SSTKIT_DATA, else ../shared/data next to the repository."""
    path = Path(os.environ.get("SSTKIT_DATA") or REPO.parent / "shared" / "data").resolve()
    if not (path / "sst2" / "train.tsv").is_file():
        pytest.exit(f"test data not found at {path}: set SSTKIT_DATA to the shared data folder", returncode=4)
    return path


def _head(src: Path, dst: Path, rows: int, header: bool) -> None:
    lines = src.read_text(encoding="utf-8").splitlines(keepends=True)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text("".join(lines[: rows + int(header)]), encoding="utf-8")


@pytest.fixture(scope="session", autouse=True)
def _environment(tmp_path_factory: pytest.TempPathFactory) -> None:
    cache = tmp_path_factory.mktemp("cache")
    os.environ.update(SSTKIT_CACHE=str(cache), WANDB_MODE="offline", WANDB_SILENT="true", TOKENIZERS_PARALLELISM="false")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small data folder with the real layout: SST-2 96/37/21 rows (odd eval sizes), AG News 64/33."""
    src, root = shared_data(), tmp_path_factory.mktemp("data")
    for name, rows in (("train", 96), ("dev", 37), ("test", 21)):
        _head(src / "sst2" / f"{name}.tsv", root / "sst2" / f"{name}.tsv", rows, header=True)
    for name, rows in (("train", 64), ("test", 33)):
        _head(src / "agnews" / f"{name}.tsv", root / "agnews" / f"{name}.tsv", rows, header=False)
    for name in ("valid", "test"):  # WikiText-2: the first 300 lines (~20k words) of each file
        _head(src / "wikitext2" / f"{name}.txt", root / "wikitext2" / f"{name}.txt", 300, header=False)
    return root


def _trainer(overrides: dict) -> dict:
    """The trainer section every tiny config shares: one CPU process, 4 steps, no sanity check."""
    return {"accelerator": "cpu", "devices": 1, "max_steps": 4, "log_every_n_steps": 1, "num_sanity_val_steps": 0,
            "enable_model_summary": False, **overrides}


def tiny_config(data_dir: Path, **trainer: object) -> dict:
    """A complete CLI config for a 1-layer random BERT on the small SST-2 copy."""
    return {
        "seed_everything": 0,
        "trainer": _trainer(trainer),
        "model": {"class_path": "sstkit.models.TextClassifier",
                  "init_args": {"backbone": "minilm", "pretrained": False, "config_overrides": TINY_BERT,
                                "lr": 1e-3, "warmup_steps": 1}},
        "data": {"class_path": "sstkit.datamodules.SST2DataModule",
                 "init_args": {"data_dir": str(data_dir), "batch_size": 8, "eval_batch_size": 8, "max_length": 32}},
    }


def lm_tiny_config(data_dir: Path, **trainer: object) -> dict:
    """A complete CLI config for a 2-layer, 64-wide random OPT on the small WikiText-2 copy (BPE of 512 tokens)."""
    return {
        "seed_everything": 0,
        "trainer": _trainer(trainer),
        "model": {"class_path": "sstkit.models.CausalLM",
                  "init_args": {"size": "tiny", "lr": 1e-3, "warmup_steps": 1}},
        "data": {"class_path": "sstkit.datamodules.WikiText2DataModule",
                 "init_args": {"data_dir": str(data_dir), "bpe_vocab_size": 512, "block_size": 32, "batch_size": 4,
                               "eval_batch_size": 4, "limit_train_blocks": 48, "limit_eval_blocks": 17}},
    }


def point_tiny_config(data_dir: Path, **trainer: object) -> dict:
    """A complete CLI config for a tiny FlatFormer on a few small synthetic scenes (data_dir is unused)."""
    return {
        "seed_everything": 0,
        "trainer": _trainer(trainer),
        "model": {"class_path": "sstkit.models.PointSegmenter",
                  "init_args": {"backbone": "flatformer", "preset": "tiny", "lr": 1e-3, "warmup_steps": 1,
                                "backbone_args": {"channels": 16, "heads": 2, "group_size": 16}}},
        "data": {"class_path": "sstkit.datamodules.SyntheticScenesDataModule",
                 "init_args": {"num_train": 8, "num_val": 3, "num_test": 3, "points_per_m2": 8, "batch_size": 2}},
    }


def graph_tiny_config(data_dir: Path, **trainer: object) -> dict:
    """A complete CLI config for a 2-layer Lorentz GCN (width 8) classifying the nodes of a 64-node tree."""
    return {
        "seed_everything": 0,
        "trainer": _trainer(trainer),
        "model": {"class_path": "sstkit.models.HyperbolicGNN",
                  "init_args": {"model": "lorentz", "task": "node", "hidden_dim": 8, "num_layers": 2, "dropout": 0.1,
                                "lr": 0.01}},
        "data": {"class_path": "sstkit.datamodules.SyntheticGraphDataModule",
                 "init_args": {"kind": "tree", "num_nodes": 64, "branching": 3, "features": "random", "feature_dim": 8,
                               "task": "node", "val_ratio": 0.2, "test_ratio": 0.2}},
    }


def poisoned_tiny_config(data_dir: Path, **trainer: object) -> dict:
    """The tiny text config on BadNets-poisoned SST-2 (triggered val/test sets for ASR), validating every 2 steps."""
    config = tiny_config(data_dir, **{"val_check_interval": 2, **trainer})
    config["data"] = {"class_path": "sstkit.datamodules.PoisonedTextDataModule",
                      "init_args": {"base": config["data"], "attack": "badnets", "rate": 0.1, "target_label": 1}}
    return config


# Tiny configs per model family, for the generic method tests (tests/method_settings.py).
FAMILIES = {"text": tiny_config, "lm": lm_tiny_config, "point": point_tiny_config, "graph": graph_tiny_config,
            "poisoned_text": poisoned_tiny_config}


def family_config(family: str, data_dir: Path, **trainer: object) -> dict:
    """A complete tiny CLI config of a model family."""
    return FAMILIES[family](data_dir, **trainer)


@pytest.fixture
def write_config(tmp_path: Path):
    """Writes a config dict to a YAML file and returns its path."""

    def write(config: dict, name: str = "config.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(config))
        return path

    return write
