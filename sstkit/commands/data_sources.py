"""Where ``sstkit data download`` gets each data set, and the files it writes (the data folder's layout).

Each :class:`Source` writes its files into a staging folder with the same relative paths as the data folder
(``sst2/train.tsv``, ``planetoid/Cora/raw/ind.cora.x`` …); the command then checks, moves and records them.
Text sets come from the Hugging Face hub through ``datasets`` (the DataModules' own ``download: true`` recipes);
the Planetoid graphs are the original files that torch_geometric's ``Planetoid`` downloads.

Example:
    >>> SOURCES["sst2"].fetch(Path("/tmp/staging"), progress=lambda text: None)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sstkit.errors import SstkitError

Progress = Callable[[str], None]  # called with the name of each file as it is written

AGNEWS_TRAIN_ROWS = 10_000  # the data folder's AG News train.tsv: a seeded sample of the 120,000 training rows

# The original Planetoid files (github.com/kimiyoung/planetoid); a download must match them byte for byte.
# Checked against the shared data folder by tests/test_data_download.py.
PLANETOID_SHA256 = {
    "Cora": {
        "ind.cora.allx": "9419ba2f26f5c35243db64aba110e0f35a04851609e0dc5433450676ca6b8543",
        "ind.cora.ally": "2b998f5cc7fedc86e7f97ca2498f47a1ffc1462c29e2d578b23bf3f62b6e7d71",
        "ind.cora.graph": "58f13302f39dde8852dad6fe6d15b89b077b6d7f837626bce671ef80344b383d",
        "ind.cora.test.index": "297ce89af2b51a6a194181c7dbe1796c6a1cf9cd9349a88383b1b1e227867875",
        "ind.cora.tx": "b9afbaa4a400df991f6f02ef677e1e44da55ffc04801fd02f9e673987829226a",
        "ind.cora.ty": "41f5ac76596a1699cc33f53084a2419e92961c42bb75f36fc38e616d348532ad",
        "ind.cora.x": "23cfa55d91c6f624233f5eb7b6e3f141f1bd2b2ae39608a63cf5d084bb27baab",
        "ind.cora.y": "94465c14eb53e04ca262198dcbb2521ee8af60fb3f3d546cd6ca24a511b0e7d1",
    },
    "CiteSeer": {
        "ind.citeseer.allx": "2ac30345d95c9ec933a817ee0bdd6a5f077f8c184a20e696910192d534414668",
        "ind.citeseer.ally": "f704b2d986dde6c2669934de1f3ae5696a6cf9455c0f6b2646a2d135ea0a1c95",
        "ind.citeseer.graph": "d79a4ef9d3e7169aee8946145f6b7306e35bc79bffad26346cfb94e10e9912a7",
        "ind.citeseer.test.index": "2af990671580b6b2df5d158d1038f8292e30c9cd821b5453f399659b25b723d4",
        "ind.citeseer.tx": "539a8906a2da97628d212f2fdd668c109a8b3f0d36574b59e5d3fd5b5303da21",
        "ind.citeseer.ty": "55e5bd1ba1e733a04598753ad1a8d57957f4b8f89e74519f41f4f4938767e4ce",
        "ind.citeseer.x": "d20de19150741e555de0ed037195630fc194114ebc7fd72ced62810148aa22f6",
        "ind.citeseer.y": "8ba87e515d8e3ee3cf52f6d2c5b86aa73f11ecad825a808455209ec26cd54924",
    },
}


@dataclass
class Source:
    """One data set: the files it puts in the data folder, where it comes from, and known checksums."""

    files: list[str]
    origin: str
    fetch: Callable[[Path, Progress], None]
    known_sha256: dict[str, str] = field(default_factory=dict)  # relative path -> sha256, where fixed upstream


def _fetch_sst2(staging: Path, progress: Progress) -> None:
    from sstkit.datamodules import SST2DataModule

    # GLUE's train split 90/10 (seed 0) into train/dev and GLUE's validation as test.tsv: the DataModule's recipe.
    SST2DataModule(data_dir=str(staging), download=True).fetch_from_hub(staging / "sst2")
    progress("sst2/{train,dev,test}.tsv")


def _fetch_agnews(staging: Path, progress: Progress) -> None:
    from sstkit.datamodules.agnews import AGNEWS_LABELS
    from sstkit.datamodules.hub import write_hub_split

    target = staging / "agnews"
    write_hub_split(("ag_news",), "test", target, {"test.tsv": 1.0}, "text", "label", label_names=AGNEWS_LABELS)
    write_hub_split(("ag_news",), "train", target, {"train.tsv": 1.0}, "text", "label", label_names=AGNEWS_LABELS)
    _sample_rows(target / "train.tsv", AGNEWS_TRAIN_ROWS, seed=0)
    progress("agnews/{train,test}.tsv")


def _sample_rows(path: Path, rows: int, seed: int) -> None:
    """Keeps a seeded random sample of ``rows`` lines of a header-less file, in their original order."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    if len(lines) <= rows:
        return
    keep = sorted(torch.randperm(len(lines), generator=torch.Generator().manual_seed(seed))[:rows].tolist())
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text("".join(lines[i] for i in keep), encoding="utf-8")
    os.replace(tmp, path)


def _fetch_wikitext2(staging: Path, progress: Progress) -> None:
    from sstkit.datamodules import WikiText2DataModule

    # wikitext-2-v1: the tokenised version with <unk> kept, as in the data folder.
    module = WikiText2DataModule(data_dir=str(staging), download=True, hub_config="wikitext-2-v1")
    module.fetch_from_hub(staging / "wikitext2")
    progress("wikitext2/{train,valid,test}.txt")


def _fetch_planetoid(staging: Path, progress: Progress) -> None:
    try:
        from torch_geometric.data import download_url
        from torch_geometric.datasets import Planetoid
    except ImportError as err:
        raise SstkitError("planetoid needs torch_geometric: pip install 'sstkit[graph]'") from err
    for name, files in PLANETOID_SHA256.items():
        raw = staging / "planetoid" / name / "raw"
        for file in files:
            try:
                download_url(f"{Planetoid.url}/{file}", str(raw), log=False)
            except Exception as err:  # urllib / fsspec raise many kinds of connection errors
                raise SstkitError(f"could not download {Planetoid.url}/{file}: {err}") from err
            progress(f"planetoid/{name}/raw/{file}")


SOURCES: dict[str, Source] = {
    "sst2": Source(["sst2/train.tsv", "sst2/dev.tsv", "sst2/test.tsv"], "Hugging Face hub: glue/sst2", _fetch_sst2),
    "agnews": Source(["agnews/train.tsv", "agnews/test.tsv"], "Hugging Face hub: ag_news", _fetch_agnews),
    "wikitext2": Source(["wikitext2/train.txt", "wikitext2/valid.txt", "wikitext2/test.txt"],
                        "Hugging Face hub: wikitext/wikitext-2-v1", _fetch_wikitext2),
    "planetoid": Source(
        [f"planetoid/{name}/raw/{file}" for name, files in PLANETOID_SHA256.items() for file in files],
        "github.com/kimiyoung/planetoid", _fetch_planetoid,
        {f"planetoid/{name}/raw/{file}": sha for name, files in PLANETOID_SHA256.items() for file, sha in files.items()},
    ),
}
