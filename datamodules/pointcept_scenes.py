"""Scenes in Pointcept's folder layout, e.g. ScanNet or S3DIS exported by Pointcept's preprocessing scripts.

Layout: ``<data_dir>/<dataset_folder>/<split>/<scene>/{coord,color,normal,segment}.npy`` (scenes may be nested,
as S3DIS's ``Area_5/office_1``): ``coord`` (n, 3) float metres, ``color`` (n, 3) 0–255, ``normal`` (n, 3),
``segment`` (n,) integer labels with -1 (or any negative value) for unlabelled points. ScanNet exports name the
label file ``segment20.npy``; set ``segment_file`` accordingly. Files are read lazily, one scene per item.
Errors name the scene folder and the file.

Example (YAML)::

    data:
      class_path: sstkit.datamodules.PointceptScenesDataModule
      init_args: {dataset_folder: scannet, segment_file: segment20.npy, num_labels: 20, val_split: val}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from sstkit.errors import DataError, SstkitError
from sstkit.paths import resolve_data_dir

from .point_scenes import PointScenesDataModule


class PointceptScenes(Dataset):
    """The scenes under one split folder (every folder holding a ``coord.npy``)."""

    def __init__(self, root: Path, segment_file: str, num_labels: int, use_normal: bool = True,
                 max_points: int | None = None, seed: int = 0) -> None:
        if not root.is_dir():
            raise DataError(root, "split folder not found; expected <split>/<scene>/coord.npy (Pointcept layout)")
        self.scenes = sorted(p.parent for p in root.rglob("coord.npy"))
        if not self.scenes:
            raise DataError(root, "no scene folders with coord.npy found (Pointcept layout <split>/<scene>/coord.npy)")
        self.segment_file, self.num_labels, self.use_normal = segment_file, num_labels, use_normal
        self.max_points, self.seed = max_points, seed

    def __len__(self) -> int:
        return len(self.scenes)

    def _load(self, scene: Path, name: str, columns: int | None, dtype: Any) -> np.ndarray:
        path = scene / name
        if not path.is_file():
            hint = "; set use_normal: false to train without normals" if name == "normal.npy" else ""
            raise DataError(path, f"missing file of scene {scene.name}{hint}")
        try:
            array = np.load(path)
        except Exception as exc:  # numpy raises several types for truncated or foreign files
            raise DataError(path, f"cannot read scene {scene.name}: {exc}") from None
        shape_ok = array.ndim == 1 if columns is None else array.ndim == 2 and array.shape[1] == columns
        if not shape_ok:
            expected = "(n,)" if columns is None else f"(n, {columns})"
            raise DataError(path, f"scene {scene.name}: expected shape {expected}, got {array.shape}")
        return array.astype(dtype)

    def __getitem__(self, index: int) -> dict[str, Any]:
        scene = self.scenes[index]
        coord = self._load(scene, "coord.npy", 3, np.float32)
        color = self._load(scene, "color.npy", 3, np.float32) / 127.5 - 1.0
        normal = (self._load(scene, "normal.npy", 3, np.float32) if self.use_normal
                  else np.zeros_like(coord))
        label = self._load(scene, self.segment_file, None, np.int64).reshape(-1)
        for name, array in (("color.npy", color), ("normal.npy", normal), (self.segment_file, label)):
            if len(array) != len(coord):
                raise DataError(scene / name, f"scene {scene.name}: {len(array)} rows but coord.npy has {len(coord)}")
        if len(label) and label.max() >= self.num_labels:
            raise DataError(scene / self.segment_file,
                            f"scene {scene.name}: label {int(label.max())} >= num_labels ({self.num_labels})")
        label = np.where(label < 0, -1, label)
        feat = np.concatenate([color, normal], 1)
        if self.max_points and len(coord) > self.max_points:
            # A fixed subset per scene: same on every rank and after a resume.
            keep = np.sort(np.random.default_rng([self.seed, index]).choice(len(coord), self.max_points, False))
            coord, feat, label = coord[keep], feat[keep], label[keep]
        return {"coord": coord, "feat": feat, "label": label, "index": index}


class PointceptScenesDataModule(PointScenesDataModule):
    """A folder of Pointcept-layout scenes (ScanNet, S3DIS exports …).

    Args:
        data_dir: the data folder; None means ``$SSTKIT_DATA``, else ``./data``.
        dataset_folder: the dataset's sub-folder.
        train_split, val_split, test_split: split folder names (None: no such split).
        segment_file: label file name (``segment.npy``; ScanNet: ``segment20.npy``).
        num_labels: number of classes; class_names: their names (default ``class0`` …).
        use_normal: read ``normal.npy`` (else zeros).
        max_points: subsample larger scenes to this many points (fixed per scene).
        seed: seed of the subsampling.
        batch_size, eval_batch_size, num_workers: see :class:`PointScenesDataModule`.
    """

    def __init__(self, data_dir: str | None = None, dataset_folder: str = "", train_split: str | None = "train",
                 val_split: str | None = "val", test_split: str | None = "test", segment_file: str = "segment.npy",
                 num_labels: int = 20, class_names: list[str] | None = None, use_normal: bool = True,
                 max_points: int | None = None, seed: int = 0, batch_size: int = 2,
                 eval_batch_size: int | None = None, num_workers: int = 0) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers)
        if num_labels < 2:
            raise SstkitError(f"data.num_labels must be >= 2, got {num_labels}")
        if class_names is not None and len(class_names) != num_labels:
            raise SstkitError(f"data.class_names has {len(class_names)} names for num_labels={num_labels}")
        self.class_names = tuple(class_names or [f"class{i}" for i in range(num_labels)])
        self.root = resolve_data_dir(data_dir) / dataset_folder
        self.splits = {"train": train_split, "val": val_split, "test": test_split}
        self.options = (segment_file, num_labels, use_normal, max_points, seed)

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for split in wanted.get(stage or "", tuple(self.splits)):
            folder = self.splits[split]
            if folder and split not in self.datasets:
                self.datasets[split] = PointceptScenes(self.root / folder, *self.options)
