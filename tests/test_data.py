"""Text DataModules: the data folder rules, caching, subsets, padding, and errors that name file and line."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch
from sstkit.datamodules import AGNewsDataModule, SST2DataModule, TextClassificationDataModule

from sstkit.errors import DataError, SstkitError


def make_folder(root: Path, train: str, dev: str = "sentence\tlabel\ngood\t1\n", test: str | None = None) -> Path:
    (root / "sst2").mkdir(parents=True, exist_ok=True)
    (root / "sst2" / "train.tsv").write_text(train)
    (root / "sst2" / "dev.tsv").write_text(dev)
    (root / "sst2" / "test.tsv").write_text(test or dev)
    return root


def load(root: Path, **kwargs) -> SST2DataModule:
    dm = SST2DataModule(data_dir=str(root), max_length=16, batch_size=4, **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_reads_sst2_and_batches(data_dir: Path) -> None:
    dm = load(data_dir)
    assert dm.num_labels == 2 and len(dm.datasets["train"]) == 96 and len(dm.datasets["val"]) == 37
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[0] == 4
    lengths = batch["attention_mask"].sum(1)
    assert batch["input_ids"].shape[1] == lengths.max(), "dynamic padding pads to the longest in the batch"
    assert set(batch["labels"].tolist()) <= {0, 1}


def test_agnews_label_names(data_dir: Path) -> None:
    dm = AGNewsDataModule(data_dir=str(data_dir), max_length=16)
    dm.setup("fit")
    assert dm.num_labels == 4 and set(dm.datasets["train"].labels.tolist()) <= {0, 1, 2, 3}


def test_data_dir_from_environment(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSTKIT_DATA", str(data_dir))
    assert SST2DataModule().root == data_dir / "sst2"


def test_limit_train_samples_is_seeded(data_dir: Path) -> None:
    a = load(data_dir, limit_train_samples=10, seed=1).datasets["train"]
    b = load(data_dir, limit_train_samples=10, seed=1).datasets["train"]
    c = load(data_dir, limit_train_samples=10, seed=2).datasets["train"]
    assert len(a) == 10 and torch.equal(a.ids, b.ids) and not torch.equal(a.ids, c.ids)


def test_cache_goes_to_cache_folder_with_read_only_data(data_dir: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_folder(tmp_path / "ro", "sentence\tlabel\nfine film\t1\nbad film\t0\n")
    for path in [*root.rglob("*"), root]:
        os.chmod(path, stat.S_IREAD | stat.S_IEXEC if path.is_dir() else stat.S_IREAD)
    monkeypatch.setenv("SSTKIT_CACHE", str(tmp_path / "cache"))
    try:
        dm = load(root)
        assert len(dm.datasets["train"]) == 2
        assert list((tmp_path / "cache" / "tokenized").glob("sst2-train-*.pt"))
    finally:
        for path in [root, *root.rglob("*")]:
            os.chmod(path, stat.S_IRWXU)


@pytest.mark.parametrize(
    ("train", "message", "line"),
    [
        ("text\tlabel\ngood\t1\n", "expected the header", 1),
        ("sentence\tlabel\ngood\tpositive\n", "'positive' is not an integer", 2),
        ("sentence\tlabel\ngood\t1\nbad\t7\n", "outside [0, 2)", 3),
        ("sentence\tlabel\ngood\t1\n\t0\n", "empty text", 3),
        ("sentence\tlabel\ngood 1\n", "expected 2 columns", 2),
        ("sentence\tlabel\n", "empty", None),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path: Path, train: str, message: str, line: int | None) -> None:
    root = make_folder(tmp_path, train)
    with pytest.raises(DataError) as err:
        load(root)
    assert message in str(err.value)
    assert str(root / "sst2" / "train.tsv") in str(err.value)
    assert err.value.line == line


def test_missing_file_names_path_and_ways_out(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="SSTKIT_DATA.*download: true"):
        SST2DataModule(data_dir=str(tmp_path))


def test_bad_arguments() -> None:
    with pytest.raises(SstkitError, match="label_names or num_labels"):
        TextClassificationDataModule(dataset_folder="x")
    with pytest.raises(SstkitError, match="batch_size"):
        SST2DataModule(batch_size=0, download=True)


def test_resumable_loader_skips_served_batches(data_dir: Path) -> None:
    dm = load(data_dir)
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(3)
    full = [b["index"].tolist() for b in loader]
    iterator = iter(loader)
    for _ in range(5):
        next(iterator)
    state = loader.state_dict()
    assert state == {"served": 5}
    again = dm.train_dataloader()
    again.sampler.set_epoch(3)
    again.load_state_dict(state)
    assert [b["index"].tolist() for b in again] == full[5:]


@pytest.mark.parametrize(
    ("train", "where"),
    [("sentence\tlabel\ngood\t1\nbad\tseven\n", "train.tsv:3: label 'seven'"), ("", "train.tsv: the split is empty")],
    ids=["corrupt", "empty"],
)
def test_bad_data_stops_before_anything_is_written(tmp_path: Path, data_dir: Path, train: str, where: str,
                                                   capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import tiny_config

    from sstkit.cli import main

    root = make_folder(tmp_path / "data", train, dev=(data_dir / "sst2" / "dev.tsv").read_text())
    config = tiny_config(root)
    config_path = tmp_path / "exp.yaml"
    config_path.write_text(__import__("yaml").safe_dump(config))
    monkeypatch.chdir(tmp_path)  # a W&B folder or ./runs would appear here
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config_path), "--run_root", str(tmp_path / "runs"), "--name", "bad-data"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert where in err and str(root / "sst2") in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "no run folder, wandb_id or W&B run"


def test_corpus_that_is_not_utf8_names_file_and_line(tmp_path: Path) -> None:
    from sstkit.datamodules import WikiText2DataModule

    (tmp_path / "wikitext2").mkdir()
    (tmp_path / "wikitext2" / "valid.txt").write_bytes(b"fine line\nsecond\n\xff broken\n")
    (tmp_path / "wikitext2" / "test.txt").write_text("\n\n")
    dm = WikiText2DataModule(data_dir=str(tmp_path))
    with pytest.raises(DataError, match=r"valid.txt:3: not UTF-8"):
        dm.check_data("fit")
    with pytest.raises(DataError, match=r"test.txt: the test split is empty"):
        dm.check_data("test")

