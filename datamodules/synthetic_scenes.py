"""Seeded synthetic indoor scenes: a floor, walls, and boxes, spheres and cylinders standing on the floor.

Every scene is generated from ``(seed, split, index)`` alone, so it is the same on every process and after a
resume, and nothing is written to disk. Points are sampled uniformly on the surfaces (``points_per_m2``), so
scenes have different point counts; each point carries a colour (each surface gets a random colour from a
shared palette plus noise, so colour alone does not give the class away), the analytic surface normal, and the
label of the surface it lies on: ``floor, wall, box, sphere, cylinder``.

Example (YAML)::

    data:
      class_path: sstkit.datamodules.SyntheticScenesDataModule
      init_args: {num_train: 64, num_val: 16, points_per_m2: 40, batch_size: 4}
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch.utils.data import Dataset

from sstkit.errors import SstkitError

from .point_scenes import PointScenesDataModule

CLASSES = ("floor", "wall", "box", "sphere", "cylinder")
_SPLIT_SEED = {"train": 0, "val": 1, "test": 2}


def _plane(rng: np.random.Generator, origin: np.ndarray, u: np.ndarray, v: np.ndarray, normal: np.ndarray,
           density: float) -> tuple[np.ndarray, np.ndarray]:
    area = np.linalg.norm(u) * np.linalg.norm(v)
    n = max(1, int(rng.poisson(area * density)))
    ab = rng.random((n, 2))
    return origin + ab[:, :1] * u + ab[:, 1:] * v, np.repeat(normal[None], n, 0)


def _box(rng: np.random.Generator, lo: np.ndarray, size: np.ndarray, density: float) -> tuple[np.ndarray, np.ndarray]:
    ex, ey, ez = np.diag(size)
    faces = [(lo + ez, ex, ey, [0, 0, 1]), (lo, ex, ez, [0, -1, 0]), (lo + ey, ex, ez, [0, 1, 0]),
             (lo, ey, ez, [-1, 0, 0]), (lo + ex, ey, ez, [1, 0, 0])]  # no bottom face: it rests on the floor
    parts = [_plane(rng, o, u, v, np.array(n, float), density) for o, u, v, n in faces]
    return np.concatenate([p for p, _ in parts]), np.concatenate([n for _, n in parts])


def _sphere(rng: np.random.Generator, centre: np.ndarray, radius: float, density: float
            ) -> tuple[np.ndarray, np.ndarray]:
    n = max(1, int(rng.poisson(4 * np.pi * radius**2 * density)))
    normal = rng.normal(size=(n, 3))
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    return centre + radius * normal, normal


def _cylinder(rng: np.random.Generator, base: np.ndarray, radius: float, height: float, density: float
              ) -> tuple[np.ndarray, np.ndarray]:
    n_side = max(1, int(rng.poisson(2 * np.pi * radius * height * density)))
    n_top = max(1, int(rng.poisson(np.pi * radius**2 * density)))
    angle = rng.random(n_side) * 2 * np.pi
    side_n = np.stack([np.cos(angle), np.sin(angle), np.zeros(n_side)], 1)
    side = base + radius * side_n + np.outer(rng.random(n_side) * height, [0, 0, 1])
    r, a = radius * np.sqrt(rng.random(n_top)), rng.random(n_top) * 2 * np.pi
    top = base + np.stack([r * np.cos(a), r * np.sin(a), np.full(n_top, height)], 1)
    return np.concatenate([side, top]), np.concatenate([side_n, np.tile([0.0, 0.0, 1.0], (n_top, 1))])


def make_scene(rng: np.random.Generator, points_per_m2: float = 40.0, max_objects: int = 6) -> dict[str, np.ndarray]:
    """One random room: ``coord`` (n, 3) metres, ``color`` (n, 3) in [0, 1], ``normal`` (n, 3), ``segment`` (n,)."""
    width, depth, height = rng.uniform(3, 5), rng.uniform(3, 5), rng.uniform(2.2, 2.8)
    palette = rng.random((8, 3))
    parts: list[tuple[np.ndarray, np.ndarray, int]] = []
    parts.append((*_plane(rng, np.zeros(3), np.array([width, 0, 0]), np.array([0, depth, 0]),
                          np.array([0.0, 0, 1]), points_per_m2), 0))
    walls = [(np.zeros(3), [width, 0, 0], [0, 1, 0]), (np.array([0, depth, 0]), [width, 0, 0], [0, -1, 0]),
             (np.zeros(3), [0, depth, 0], [1, 0, 0]), (np.array([width, 0, 0]), [0, depth, 0], [-1, 0, 0])]
    for origin, u, normal in walls:
        parts.append((*_plane(rng, origin, np.array(u, float), np.array([0, 0, height]), np.array(normal, float),
                              points_per_m2), 1))
    for _ in range(int(rng.integers(2, max_objects + 1))):
        kind = int(rng.integers(2, 5))
        x, y = rng.uniform(0.6, width - 0.6), rng.uniform(0.6, depth - 0.6)
        if kind == 2:
            size = rng.uniform(0.3, 1.0, 3)
            points, normals = _box(rng, np.array([x - size[0] / 2, y - size[1] / 2, 0]), size, points_per_m2)
        elif kind == 3:
            radius = rng.uniform(0.2, 0.5)
            points, normals = _sphere(rng, np.array([x, y, radius]), radius, points_per_m2)
        else:
            points, normals = _cylinder(rng, np.array([x, y, 0]), rng.uniform(0.15, 0.4), rng.uniform(0.4, 1.5),
                                        points_per_m2)
        parts.append((points, normals, kind))
    colours = [np.clip(palette[rng.integers(len(palette))] + rng.normal(0, 0.04, (len(p), 3)), 0, 1)
               for p, _, _ in parts]
    return {
        "coord": np.concatenate([p for p, _, _ in parts]).astype(np.float32),
        "color": np.concatenate(colours).astype(np.float32),
        "normal": np.concatenate([n for _, n, _ in parts]).astype(np.float32),
        "segment": np.concatenate([np.full(len(p), k) for p, _, k in parts]).astype(np.int64),
    }


class SyntheticScenes(Dataset):
    """``size`` seeded scenes of one split, generated on access."""

    def __init__(self, size: int, seed: int, split: str, points_per_m2: float, max_objects: int) -> None:
        self.size, self.seed, self.split = size, seed, _SPLIT_SEED[split]
        self.points_per_m2, self.max_objects = points_per_m2, max_objects

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, self.split, index])
        scene = make_scene(rng, self.points_per_m2, self.max_objects)
        feat = np.concatenate([scene["color"] * 2 - 1, scene["normal"]], 1)
        return {"coord": scene["coord"], "feat": feat, "label": scene["segment"], "index": index}


class SyntheticScenesDataModule(PointScenesDataModule):
    """Synthetic indoor scenes for tests, demos and the point benchmark.

    Args:
        num_train, num_val, num_test: scenes per split.
        points_per_m2: surface sampling density (≈ 2–4 k points per scene at 40).
        max_objects: at most this many objects per room (at least 2).
        seed: generator seed of the scenes (independent of ``seed_everything``).
        batch_size, eval_batch_size, num_workers: see :class:`PointScenesDataModule`.
    """

    class_names = CLASSES

    def __init__(self, num_train: int = 64, num_val: int = 16, num_test: int = 16, points_per_m2: float = 40.0,
                 max_objects: int = 6, seed: int = 0, batch_size: int = 4, eval_batch_size: int | None = None,
                 num_workers: int = 0) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers)
        for key, value in (("num_train", num_train), ("num_val", num_val), ("num_test", num_test)):
            if value < 1:
                raise SstkitError(f"data.{key} must be >= 1, got {value}")
        if points_per_m2 <= 0 or max_objects < 2:
            raise SstkitError(f"data.points_per_m2 must be > 0 and max_objects >= 2, got {points_per_m2}, {max_objects}")
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}
        self.options = (seed, points_per_m2, max_objects)

    def setup(self, stage: str | None = None) -> None:
        seed, density, objects = self.options
        for split, size in self.sizes.items():
            self.datasets.setdefault(split, SyntheticScenes(size, seed, split, density, objects))
