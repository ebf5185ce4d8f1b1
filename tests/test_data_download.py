"""`sstkit data download`: the data folder layout the DataModules read, checksums, re-runs, and offline failure.

The hub and the Planetoid source are replaced by tiny fakes (no test downloads anything); the offline test runs
the real download code with name resolution switched off.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import sys
import types
from pathlib import Path

import pytest
from conftest import shared_data

from sstkit.cli import main
from sstkit.commands import data_sources
from sstkit.commands.data import MANIFEST, download, read_manifest
from sstkit.errors import SstkitError


class FakeSplit:
    """Enough of a `datasets.Dataset` for the writers: len, rows by index, columns by name."""

    def __init__(self, rows: list[dict]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: int | str):
        return [row[key] for row in self.rows] if isinstance(key, str) else self.rows[key]


def fake_hub(dataset: str, config: str | None = None, split: str = "train") -> FakeSplit:
    sizes = {"train": 20, "validation": 5, "test": 7}
    if dataset == "glue":
        return FakeSplit([{"sentence": f"{split} sentence {i}", "label": i % 2} for i in range(sizes[split])])
    if dataset == "ag_news":
        return FakeSplit([{"text": f"{split}  news\t{i}", "label": i % 4} for i in range(sizes[split] * 2)])
    if dataset == "wikitext":
        return FakeSplit([{"text": line} for line in ("", f" = {split} = \n", " some <unk> words \n")])
    raise AssertionError(dataset)


def fake_download_url(url: str, folder: str, log: bool = False) -> str:
    """Copies the original Planetoid file from the shared data folder instead of downloading it."""
    file = url.rsplit("/", 1)[1]
    name = {"cora": "Cora", "citeseer": "CiteSeer"}[file.split(".")[1]]
    Path(folder).mkdir(parents=True, exist_ok=True)
    return shutil.copy(shared_data() / "planetoid" / name / "raw" / file, Path(folder) / file)


@pytest.fixture
def fake_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=fake_hub))
    import torch_geometric.data

    monkeypatch.setattr(torch_geometric.data, "download_url", fake_download_url)
    monkeypatch.setattr(data_sources, "AGNEWS_TRAIN_ROWS", 12)


def test_download_writes_the_layout_the_datamodules_read(tmp_path: Path, fake_sources: None) -> None:
    from sstkit.datamodules import AGNewsDataModule, PlanetoidDataModule, SST2DataModule, WikiText2DataModule

    root = tmp_path / "data"
    download(["sst2", "agnews", "wikitext2", "planetoid"], root)
    sst2 = {name: (root / "sst2" / f"{name}.tsv").read_text().splitlines() for name in ("train", "dev", "test")}
    assert all(lines[0] == "sentence\tlabel" for lines in sst2.values())
    assert (len(sst2["train"]) - 1, len(sst2["dev"]) - 1, len(sst2["test"]) - 1) == (18, 2, 5), "GLUE train 90/10"
    assert sorted(sst2["train"][1:] + sst2["dev"][1:]) == sorted(f"train sentence {i}\t{i % 2}" for i in range(20))
    agnews_train = (root / "agnews" / "train.tsv").read_text().splitlines()
    assert len(agnews_train) == 12 and agnews_train[0].split("\t")[1] in ("World", "Sports", "Business", "Sci/Tech")
    assert len((root / "agnews" / "test.tsv").read_text().splitlines()) == 14, "no header, every test row"
    assert (root / "wikitext2" / "valid.txt").read_text() == " = validation = \n some <unk> words \n"
    sums = read_manifest(root)
    written = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != MANIFEST)
    assert sorted(sums) == written and len(written) == 3 + 2 + 3 + 16
    assert all(hashlib.sha256((root / name).read_bytes()).hexdigest() == sha for name, sha in sums.items())
    assert not list(root.glob(".download-*")), "no staging folder left"
    for module in (SST2DataModule(data_dir=str(root)), AGNewsDataModule(data_dir=str(root)),
                   WikiText2DataModule(data_dir=str(root)), PlanetoidDataModule("CiteSeer", data_dir=str(root))):
        module.check_data("fit")


def test_rerun_verifies_and_a_changed_file_stops_it(tmp_path: Path, fake_sources: None,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "data"
    download(["sst2"], root)

    def offline(*args: object, **kwargs: object) -> None:
        raise ConnectionError("no network")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=offline))
    download(["sst2"], root)  # verified from SHA256SUMS, nothing fetched
    (root / "sst2" / "dev.tsv").write_text("sentence\tlabel\nchanged\t1\n")
    with pytest.raises(SstkitError, match=r"sst2/dev.tsv: SHA-256 differs from .*SHA256SUMS.*--force"):
        download(["sst2"], root)
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=fake_hub))
    download(["sst2"], root, force=True)
    assert read_manifest(root)["sst2/dev.tsv"] == hashlib.sha256((root / "sst2/dev.tsv").read_bytes()).hexdigest()


def test_corrupt_planetoid_download_is_refused(tmp_path: Path, fake_sources: None,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import torch_geometric.data

    def corrupt(url: str, folder: str, log: bool = False) -> str:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / url.rsplit("/", 1)[1]).write_bytes(b"not the original file")
        return folder

    monkeypatch.setattr(torch_geometric.data, "download_url", corrupt)
    with pytest.raises(SstkitError, match=r"planetoid/Cora/raw/ind.cora.allx has SHA-256 .* expected 9419ba2f"):
        download(["planetoid"], tmp_path)
    assert not (tmp_path / "planetoid").exists() and not (tmp_path / MANIFEST).exists()


def test_offline_download_fails_with_one_clear_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)  # offline even where CI has a network
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "download", "planetoid", "--to", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: planetoid: could not download https://"), err
    assert "no network?" in err and "SSTKIT_DATA" in err and "Traceback" not in err
    assert not (tmp_path / "planetoid").exists()


def test_unknown_name_suggests_the_closest(tmp_path: Path) -> None:
    with pytest.raises(SstkitError, match=r"unknown data set 'sst' \(did you mean sst2\?\)"):
        download(["sst"], tmp_path)
