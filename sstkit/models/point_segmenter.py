"""Point-cloud semantic segmentation: one LightningModule over FlatFormer, Swin3D or PointNet backbones.

Batches are Pointcept-style dicts of concatenated points (no padding): ``coord`` (N, 3), ``feat`` (N, F),
``label`` (N,) with -1 for ignored points, and ``offset`` (B,) cumulative sample ends (or ``batch`` (N,)).
Metrics are per-class IoU (``iou_<class>``) and mIoU (``miou``) from one shared confusion matrix
(torchmetrics ``MulticlassJaccardIndex``), plus point accuracy.

Example (YAML)::

    model:
      class_path: sstkit.models.PointSegmenter
      init_args: {backbone: swin3d, preset: tiny, backbone_args: {signals: XYZ_RGB_NORM}}

Example (Python)::

    model = PointSegmenter("flatformer", num_labels=5, preset="tiny")
    logits = model(batch["coord"], batch["feat"], batch["offset"])
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from sstkit.errors import SstkitError
from sstkit.models.base import SstkitModule, StepOutput
from sstkit.nn.point import SWIN3D_PRESETS, FlatFormerBackbone, PointNetBackbone, Swin3DBackbone, offset_to_batch

IGNORE_INDEX = -1
BACKBONES = {"flatformer": FlatFormerBackbone, "swin3d": Swin3DBackbone, "pointnet": PointNetBackbone}
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # FlatFormer's Waymo config: C=128, 8 heads, 13×13 pillar windows, G=144, 2 blocks.
    "flatformer": {
        "waymo": {"channels": 128, "heads": 8, "window": [13, 13], "group_size": 144, "num_blocks": 2,
                  "voxel_size": 0.32},
        "indoor": {"channels": 128, "heads": 8, "window": [13, 13, 13], "group_size": 144, "num_blocks": 2,
                   "voxel_size": 0.04},
        # CPU-sized; the same 0.1 m voxels as Swin3D's tiny preset.
        "tiny": {"channels": 64, "heads": 4, "window": [5, 5, 5], "group_size": 24, "num_blocks": 1,
                 "voxel_size": 0.1},
    },
    "swin3d": {name: dict(values) for name, values in SWIN3D_PRESETS.items()},
    "pointnet": {"default": {}, "tiny": {"local_channels": [32, 64], "global_channels": 128, "out_channels": 64}},
}
DEFAULT_PRESET = {"flatformer": "indoor", "swin3d": "small", "pointnet": "default"}


class ClassIoU(MulticlassJaccardIndex):
    """IoU of one class, as a scalar metric (shares the confusion matrix with the other classes' metrics)."""

    def __init__(self, num_classes: int, class_index: int, **kwargs: Any) -> None:
        super().__init__(num_classes, average="none", **kwargs)
        self.class_index = class_index

    def compute(self) -> Tensor:
        return super().compute()[self.class_index]


class PointSegmenter(SstkitModule):
    """A point backbone and a linear per-point classifier.

    Args:
        backbone: ``flatformer``, ``swin3d`` or ``pointnet``.
        num_labels: number of classes (linked from the data module's ``num_labels`` by the CLI).
        preset: the backbone's size preset (flatformer: ``indoor`` (default), ``waymo``, ``tiny``; swin3d:
            ``small`` (Swin3D-S, default), ``tiny``; pointnet: ``default``, ``tiny``).
        backbone_args: overrides of the preset (e.g. ``{group_size: 64}``, ``{signals: null}``).
        in_channels: features per point (6: colour, normal).
        class_names: names for the ``iou_<name>`` metrics (default ``class0``, ``class1``, …).
        label_smoothing: of the cross-entropy.
        lr, weight_decay, warmup_steps, warmup_ratio, scheduler: see :class:`SstkitModule`.
    """

    def __init__(
        self,
        backbone: str = "flatformer",
        num_labels: int = 5,
        preset: str | None = None,
        backbone_args: dict[str, Any] | None = None,
        in_channels: int = 6,
        class_names: list[str] | None = None,
        label_smoothing: float = 0.0,
        lr: float = 2e-3,
        weight_decay: float = 0.01,
        warmup_steps: int | None = None,
        warmup_ratio: float = 0.05,
        scheduler: str = "linear",
    ) -> None:
        super().__init__(lr, weight_decay, warmup_steps, warmup_ratio, scheduler)
        if backbone not in BACKBONES:
            raise SstkitError(f"model.backbone must be one of {sorted(BACKBONES)}, got {backbone!r}")
        preset = preset or DEFAULT_PRESET[backbone]
        if preset not in PRESETS[backbone]:
            raise SstkitError(f"model.preset for {backbone} must be one of {sorted(PRESETS[backbone])}, got {preset!r}")
        if num_labels < 2:
            raise SstkitError(f"model.num_labels must be >= 2, got {num_labels}")
        if class_names is not None and len(class_names) != num_labels:
            raise SstkitError(f"model.class_names has {len(class_names)} names for {num_labels} classes")
        self.save_hyperparameters()
        self.num_labels, self.label_smoothing = num_labels, label_smoothing
        self.class_names = list(class_names or [f"class{i}" for i in range(num_labels)])
        options = {**PRESETS[backbone][preset], **(backbone_args or {})}
        try:
            self.backbone = BACKBONES[backbone](in_channels, **options)
        except TypeError as exc:
            raise SstkitError(f"model.backbone_args for {backbone}: {exc}") from None
        self.head = nn.Linear(self.backbone.out_channels, num_labels)
        self.setup_metrics()

    def build_metrics(self) -> MetricCollection:
        kwargs = {"ignore_index": IGNORE_INDEX, "validate_args": False}
        metrics = {
            "miou": MulticlassJaccardIndex(self.num_labels, average="macro", **kwargs),
            "acc": MulticlassAccuracy(self.num_labels, average="micro", **kwargs),
        }
        metrics.update({f"iou_{name}": ClassIoU(self.num_labels, i, **kwargs)
                        for i, name in enumerate(self.class_names)})
        return MetricCollection(metrics)

    def forward(self, coord: Tensor, feat: Tensor, offset: Tensor | None = None, batch: Tensor | None = None
                ) -> Tensor:
        """Per-point class logits (N, num_labels)."""
        if batch is None:
            if offset is None:
                raise SstkitError("PointSegmenter needs either offset or batch")
            batch = offset_to_batch(offset)
        return self.head(self.backbone(coord, feat, batch))

    def step(self, batch: dict[str, Tensor], stage: str) -> StepOutput:
        logits = self(batch["coord"], batch["feat"], batch.get("offset"), batch.get("batch"))
        label = batch["label"]
        loss = F.cross_entropy(logits.float(), label, ignore_index=IGNORE_INDEX,
                               label_smoothing=self.label_smoothing)
        return StepOutput(loss=loss, preds=logits.detach().argmax(-1), target=label,
                          batch_size=int(batch["offset"].shape[0]) if "offset" in batch else 1)

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        logits = self(batch["coord"], batch["feat"], batch.get("offset"), batch.get("batch"))
        return {"offset": batch["offset"], "preds": logits.argmax(-1), "probs": torch.softmax(logits.float(), -1)}
