"""PointSegmenter and the point DataModules: order invariance, small samples, data errors, exact resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import point_tiny_config
from sstkit.datamodules import PointceptScenesDataModule, SyntheticScenesDataModule, collate_points
from support import run_cli

from sstkit.errors import DataError, SstkitError
from sstkit.models import PointSegmenter

torch.set_num_threads(1)

TINY = {
    "flatformer": {"preset": "tiny", "backbone_args": {"channels": 16, "heads": 2, "group_size": 24}},
    "swin3d": {"preset": "tiny", "backbone_args": {"channels": [16, 32], "depths": [1, 1], "heads": [2, 2],
                                                   "window_sizes": [4, 4], "voxel_size": 0.25}},
    "pointnet": {"preset": "tiny"},
    "flatformer-pillars": {"preset": "waymo", "backbone_args": {"channels": 16, "heads": 2, "window": [6, 6],
                                                              "group_size": 24, "num_blocks": 1}},
}


def _batch(scenes: int = 2, density: float = 6.0) -> dict[str, torch.Tensor]:
    dm = SyntheticScenesDataModule(num_train=scenes, points_per_m2=density, seed=3)
    dm.setup()
    return collate_points([dm.datasets["train"][i] for i in range(scenes)])


def _model(backbone: str) -> PointSegmenter:
    torch.manual_seed(0)
    return PointSegmenter(backbone.split("-")[0], num_labels=5, **TINY[backbone]).eval()


def test_synthetic_scenes_are_seeded_and_varied() -> None:
    a, b = _batch(), _batch()
    assert torch.equal(a["coord"], b["coord"]) and torch.equal(a["label"], b["label"])
    counts = torch.diff(a["offset"], prepend=torch.zeros(1, dtype=torch.long))
    assert counts[0] != counts[1]  # variable point counts, concatenated without padding
    assert int(a["offset"][-1]) == len(a["coord"]) == len(a["feat"]) == len(a["label"])
    assert set(a["label"].tolist()) >= {0, 1} and a["feat"].shape[1] == 6
    torch.testing.assert_close(a["feat"][:, 3:].norm(dim=1), torch.ones(len(a["feat"])), atol=1e-5, rtol=0)


@pytest.mark.parametrize("backbone", ["flatformer", "swin3d", "flatformer-pillars"])
def test_shuffled_points_give_the_same_outputs(backbone: str) -> None:
    batch, model = _batch(), _model(backbone)
    with torch.no_grad():
        ref = model(batch["coord"], batch["feat"], batch=batch["batch"])
        perm = torch.randperm(len(batch["coord"]), generator=torch.Generator().manual_seed(1))
        out = model(batch["coord"][perm], batch["feat"][perm], batch=batch["batch"][perm])
    torch.testing.assert_close(out[torch.argsort(perm)], ref, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("backbone", ["flatformer", "swin3d", "pointnet", "flatformer-pillars"])
def test_samples_are_independent_and_tiny_samples_work(backbone: str) -> None:
    batch, model = _batch(), _model(backbone)
    tiny = torch.arange(5)  # a sample with fewer points than a FlatFormer group
    coord = torch.cat([batch["coord"][tiny], batch["coord"]])
    feat = torch.cat([batch["feat"][tiny], batch["feat"]])
    index = torch.cat([torch.zeros(5, dtype=torch.long), batch["batch"] + 1])
    with torch.no_grad():
        together = model(coord, feat, batch=index)
        alone = model(batch["coord"][tiny], batch["feat"][tiny], offset=torch.tensor([5]))
        rest = model(batch["coord"], batch["feat"], offset=batch["offset"])
    torch.testing.assert_close(together[:5], alone, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(together[5:], rest, atol=2e-4, rtol=1e-4)


def test_flatformer_padding_is_bounded() -> None:
    batch, model = _batch(), _model("flatformer")
    with torch.no_grad():
        model(batch["coord"], batch["feat"], batch=batch["batch"])
    encoder = model.backbone.encoder
    assert 0 <= encoder.last_padding_ratio < 1


def test_model_argument_errors() -> None:
    with pytest.raises(SstkitError, match="backbone"):
        PointSegmenter("pointnet++")
    with pytest.raises(SstkitError, match="preset"):
        PointSegmenter("swin3d", preset="huge")
    with pytest.raises(SstkitError, match="backbone_args"):
        PointSegmenter("pointnet", backbone_args={"depth": 3})


def test_step_logs_per_class_iou() -> None:
    batch, model = _batch(), _model("pointnet")
    out = model.step(batch, "val")
    model.val_metrics.update(out.preds, out.target)
    values = model.val_metrics.compute()
    assert {"val/miou", "val/iou_class0", "val/iou_class4"} <= set(values)
    per_class = torch.stack([values[f"val/iou_class{i}"] for i in range(5)])
    present = torch.isin(torch.arange(5), torch.unique(torch.cat([out.preds, out.target])))
    torch.testing.assert_close(values["val/miou"], per_class[present].mean())


def _write_scene(folder: Path, n: int, rng: np.random.Generator, **override: np.ndarray) -> None:
    folder.mkdir(parents=True)
    arrays = {"coord": rng.random((n, 3)).astype(np.float32), "color": rng.integers(0, 256, (n, 3)),
              "normal": rng.normal(size=(n, 3)).astype(np.float32), "segment": rng.integers(-1, 3, n)}
    arrays.update(override)
    for name, array in arrays.items():
        np.save(folder / f"{name}.npy", array)


def test_pointcept_folder_reader(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    _write_scene(tmp_path / "toy" / "train" / "Area_1" / "room_1", 50, rng)
    _write_scene(tmp_path / "toy" / "train" / "Area_1" / "room_2", 70, rng)
    _write_scene(tmp_path / "toy" / "val" / "scene0", 30, rng)
    dm = PointceptScenesDataModule(str(tmp_path), "toy", test_split=None, num_labels=3, max_points=60)
    dm.setup("fit")
    assert dm.num_labels == 3 and len(dm.datasets["train"]) == 2
    batch = next(iter(dm.train_dataloader()))
    assert sorted(torch.diff(batch["offset"], prepend=torch.zeros(1, dtype=torch.long)).tolist()) == [50, 60]
    assert batch["label"].min() >= -1 and batch["feat"][:, :3].abs().max() <= 1.0


def test_pointcept_errors_name_scene_and_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    _write_scene(tmp_path / "toy" / "train" / "bad_rows", 20, rng, segment=np.zeros(19, dtype=np.int64))
    (tmp_path / "toy" / "val" / "no_normal").mkdir(parents=True)
    np.save(tmp_path / "toy" / "val" / "no_normal" / "coord.npy", np.zeros((4, 3), np.float32))
    np.save(tmp_path / "toy" / "val" / "no_normal" / "color.npy", np.zeros((4, 3), np.float32))
    dm = PointceptScenesDataModule(str(tmp_path), "toy", test_split=None, num_labels=3)
    dm.setup("fit")
    with pytest.raises(DataError, match=r"bad_rows.*segment\.npy.*19 rows"):
        dm.datasets["train"][0]
    with pytest.raises(DataError, match=r"no_normal.*normal\.npy.*use_normal"):
        dm.datasets["val"][0]
    with pytest.raises(DataError, match="split folder not found"):
        PointceptScenesDataModule(str(tmp_path), "toy", test_split="test", num_labels=3).setup("test")


def test_point_family_resumes_exactly(write_config, tmp_path: Path) -> None:
    config = write_config(point_tiny_config(tmp_path, max_steps=6, val_check_interval=3))
    runs = str(tmp_path / "runs")
    whole = run_cli("fit", "--config", str(config), "--run_root", runs, "--name", "whole")
    ckpt = tmp_path / "step3.ckpt"
    stop = f'{{"class_path": "support.StopAtStep", "init_args": {{"step": 3, "ckpt_path": "{ckpt}"}}}}'
    run_cli("fit", "--config", str(config), "--run_root", runs, "--name", "parts", f"--trainer.callbacks+={stop}")
    resumed = run_cli("fit", "--config", str(config), "--run_root", runs, "--name", "parts", "--ckpt_path", str(ckpt))
    assert resumed.trainer.global_step == 6
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=0, msg=key)
    assert whole.model.num_labels == 5 and whole.model.class_names[0] == "class0"
    assert "val/miou" in whole.trainer.callback_metrics
