"""ColumnCorpusDataModule: one TSV column as an LM corpus, and OOD texts never reach training."""

from __future__ import annotations

from pathlib import Path

import pytest
from sstkit.datamodules import ColumnCorpusDataModule

from sstkit.errors import DataError


def write(folder: Path) -> Path:
    (folder / "id").mkdir(parents=True)
    (folder / "ood").mkdir()
    (folder / "id" / "train.tsv").write_text("sentence\tlabel\na fine film \t1\na dull film\t0\n")
    (folder / "id" / "dev.tsv").write_text("sentence\tlabel\nquite good\t1\n")
    (folder / "ood" / "news.tsv").write_text("stocks fell today\tBusiness\nteam wins cup\tSports\n")
    return folder


def test_column_becomes_the_corpus_and_clean_ood_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSTKIT_CACHE", str(tmp_path / "cache"))
    data = write(tmp_path / "data")
    dm = ColumnCorpusDataModule(data_dir=str(data), dataset_folder="id", text_column="sentence",
                                ood_files={"ood/news.tsv": 0}, block_size=4)
    train = Path(dm.root) / "train.txt"
    assert train.read_text() == "a fine film\na dull film\n"
    assert (Path(dm.root) / "valid.txt").read_text() == "quite good\n" and dm.files["test"] is None


def test_a_training_text_in_an_ood_file_stops_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSTKIT_CACHE", str(tmp_path / "cache"))
    data = write(tmp_path / "data")
    (data / "ood" / "leak.tsv").write_text("team wins cup\tSports\na dull film\tWorld\n")
    with pytest.raises(DataError, match=r"1 training texts also appear in the OOD file .*leak.tsv .*'a dull film'"):
        ColumnCorpusDataModule(data_dir=str(data), dataset_folder="id", text_column="sentence",
                               ood_files={"ood/news.tsv": 0, "ood/leak.tsv": 0})
    with pytest.raises(DataError, match="no column 'text'"):
        ColumnCorpusDataModule(data_dir=str(data), dataset_folder="id", text_column="text")
    with pytest.raises(DataError, match="ood_files: no such file"):
        ColumnCorpusDataModule(data_dir=str(data), dataset_folder="id", ood_files={"ood/none.tsv": 0})
