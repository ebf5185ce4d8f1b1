"""Planetoid citation graphs (Cora, CiteSeer, PubMed) read from the data folder without downloading.

The raw files are read from ``<data folder>/planetoid/<Name>/raw/ind.<name>.*`` (the folder may be read-only);
torch_geometric's processed files go to the writable cache (``$SSTKIT_CACHE/planetoid/<fingerprint>/``, keyed by
the raw files, so changed data is re-processed). Node classification uses the public split (20 labelled nodes per
class, 500 validation, 1000 test nodes); link prediction an 85/5/10 edge split (see :class:`GraphDataModule`).

Example (YAML)::

    data:
      class_path: sstkit.datamodules.PlanetoidDataModule
      init_args: {name: Cora, task: node}
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sstkit.errors import DataError, SstkitError
from sstkit.paths import DATA_ENV, cache_dir, fingerprint, resolve_data_dir

from .graph import GraphDataModule

NAMES = {"cora": "Cora", "citeseer": "CiteSeer", "pubmed": "PubMed"}
RAW_PARTS = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")


if TYPE_CHECKING:  # torch_geometric is imported where it is used: it costs seconds at every CLI start
    from torch_geometric.data import Data


def cached_planetoid(root: Path, name: str, raw_root: Path, **kwargs: Any) -> Any:
    """torch_geometric's ``Planetoid`` reading raw files from ``raw_root`` and writing processed ones under ``root``.

    Example:
        >>> dataset = cached_planetoid(cache_dir("planetoid"), "Cora", Path("data/planetoid/Cora/raw"))  # doctest: +SKIP
    """
    from torch_geometric.datasets import Planetoid

    class CachedPlanetoid(Planetoid):
        @property
        def raw_dir(self) -> str:
            return str(raw_root)

    return CachedPlanetoid(str(root), name, **kwargs)


class PlanetoidDataModule(GraphDataModule):
    """Cora / CiteSeer / PubMed for node classification (public split) or link prediction (85/5/10 edges).

    Args:
        name: ``Cora``, ``CiteSeer`` or ``PubMed`` (case-insensitive).
        data_dir: data folder (default ``$SSTKIT_DATA``, else ``./data``) holding ``planetoid/<Name>/raw/``.
        download: fetch the raw files with torch_geometric into the cache instead (needs a network).
        normalize_features: row-normalise the bag-of-words features (as GCN, HGCN and HyboNet do).
        task, split_seed, val_ratio, test_ratio, num_workers: see :class:`GraphDataModule`.
    """

    def __init__(self, name: str = "Cora", data_dir: str | None = None, download: bool = False,
                 normalize_features: bool = True, task: str = "node", split_seed: int = 0, val_ratio: float = 0.05,
                 test_ratio: float = 0.10, num_workers: int = 0) -> None:  # fmt: skip
        super().__init__(task, split_seed, val_ratio, test_ratio, num_workers)
        if name.lower() not in NAMES:
            raise SstkitError(f"data.name must be one of {sorted(NAMES.values())}, got {name!r}")
        self.name = NAMES[name.lower()]
        self.data_dir, self.download, self.normalize_features = data_dir, download, normalize_features

    def raw_files(self) -> list[Path]:
        """The raw files this data set needs in the data folder."""
        raw = resolve_data_dir(self.data_dir) / "planetoid" / self.name / "raw"
        return [raw / f"ind.{self.name.lower()}.{part}" for part in RAW_PARTS]

    def check_data(self, stage: str | None = None) -> None:
        """Raises :class:`DataError` for a missing or empty raw file (the CLI calls it before writing anything)."""
        if self.download:
            return
        for path in self.raw_files():
            if not path.is_file() or path.stat().st_size == 0:
                raise DataError(path, f"Planetoid {self.name} file {'not found' if not path.is_file() else 'is empty'}. "
                                      f"Point the data folder at a copy (`data_dir:` in the config or ${DATA_ENV}), or "
                                      "set `download: true` to fetch it with torch_geometric into the cache.")  # fmt: skip

    def load_graph(self) -> Data:
        from torch_geometric.datasets import Planetoid
        from torch_geometric.transforms import NormalizeFeatures

        transform = NormalizeFeatures() if self.normalize_features else None
        if self.download:
            dataset = Planetoid(str(cache_dir("planetoid", "download")), self.name, transform=transform)
        else:
            files = self.raw_files()
            self.check_data()
            root = cache_dir("planetoid", fingerprint(*files))
            dataset = cached_planetoid(root, self.name, files[0].parent, transform=transform)
        return dataset[0]
