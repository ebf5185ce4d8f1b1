"""Graph convolutional networks in the Lorentz model (HyboNet), the Poincaré ball (HGCN) and Euclidean space (GCN),
for node classification and link prediction on one full graph per step.

Every layer's weight matrix is an ``nn.Linear`` named ``linear`` (``encoder.<i>.lorentz_linear.linear``,
``encoder.<i>.poincare_linear.linear``, ``encoder.<i>.linear``), so SST, LoRA and ReLoRA apply unchanged with
``patterns: ["re:(^|\\.)linear$"]``; manifold points (inputs, outputs, class centroids) are never wrapped.

Example (YAML)::

    model:
      class_path: sstkit.models.HyperbolicGNN
      init_args: {model: lorentz, task: node, hidden_dim: 16, num_layers: 2, dropout: 0.5, lr: 0.01}

Example (Python)::

    model = HyperbolicGNN(model="lorentz", task="link", num_features=1433, hidden_dim=16)
    z = model(data.x, data.edge_index)      # (N, 16) points on the hyperboloid
"""

from __future__ import annotations

from typing import Any

import geoopt
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryAUROC, BinaryAveragePrecision, MulticlassAccuracy, MulticlassF1Score

from sstkit.errors import SstkitError
from sstkit.models.base import SstkitModule, StepOutput
from sstkit.nn.graph import EuclideanGraphConv, FermiDiracDecoder, normalized_adjacency
from sstkit.nn.lorentz import LorentzCentroidDecoder, LorentzGraphConv, lorentz_sqdist, to_hyperboloid
from sstkit.nn.poincare import PoincareGraphConv, poincare_sqdist
from sstkit.optim.riemannian import RiemannianAdamW

MODELS = ("lorentz", "poincare", "euclidean")
TASKS = ("node", "link")
ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "leaky_relu": nn.LeakyReLU, "none": nn.Identity}


class HyperbolicGNN(SstkitModule):
    """A GCN encoder on a chosen geometry plus a node-classification or link-prediction decoder.

    Node classification: Lorentz → class-centroid decoder (``−d²_L`` to learned centroids on the hyperboloid);
    Poincaré / Euclidean → a linear head on the tangent vectors at the origin. Cross entropy over the split's
    nodes; metrics ``acc`` (micro) and ``f1`` (macro). Link prediction: Fermi–Dirac decoder on the geometry's
    squared distance, binary cross entropy against one sampled negative edge per positive training edge (drawn
    anew every step by PyG's ``negative_sampling``, which avoids the training graph's edges; held-out edges are
    unknown to training, as they must be); evaluation on the split's fixed positive and negative edges; metrics
    ``roc_auc`` and ``ap``.

    Args:
        model: ``lorentz`` (HyboNet), ``poincare`` (HGCN) or ``euclidean`` (GCN).
        task: ``node`` or ``link``.
        num_features: input feature width; linked from the data module by the CLI.
        num_labels: number of classes (node task); linked from the data module by the CLI.
        hidden_dim: embedding width (for ``lorentz``, the ambient width: points of ``H^(hidden_dim−1)``).
        num_layers: graph convolutions.
        curvature: ``c`` of the curvature ``−c`` (fixed); ignored by ``euclidean``.
        dropout: input dropout of every layer.
        act: ``relu``, ``elu``, ``leaky_relu`` or ``none``.
        bias: biases in the layers and decoder.
        adjacency_norm: ``row`` (mean, HGCN/HyboNet) or ``sym`` (GCN).
        fd_r, fd_t: Fermi–Dirac ``r`` and ``t``.
        time_scale: initial time-range bound of the Lorentz linears (HyboNet's ``scale``).
        lr, weight_decay, warmup_steps, warmup_ratio, scheduler: see :class:`SstkitModule`; the optimizer is
            :class:`~sstkit.optim.riemannian.RiemannianAdamW` (Riemannian Adam on manifold parameters, AdamW on
            the rest), one optimizer so restart-based methods work.
    """

    # The Euclidean matrices inside the layers (LorentzLinear.linear, …): what SST / LoRA / ReLoRA wrap by default,
    # never the manifold points.
    method_patterns = (r"re:(^|\.)linear$",)

    def __init__(
        self,
        model: str = "lorentz",
        task: str = "node",
        num_features: int = 16,
        num_labels: int = 2,
        hidden_dim: int = 16,
        num_layers: int = 2,
        curvature: float = 1.0,
        dropout: float = 0.5,
        act: str = "relu",
        bias: bool = True,
        adjacency_norm: str = "row",
        fd_r: float = 2.0,
        fd_t: float = 1.0,
        time_scale: float = 10.0,
        lr: float = 0.01,
        weight_decay: float = 0.01,
        warmup_steps: int | None = 0,
        warmup_ratio: float = 0.0,
        scheduler: str = "constant",
    ) -> None:
        super().__init__(lr, weight_decay, warmup_steps, warmup_ratio, scheduler)
        for key, value, allowed in (("model", model, MODELS), ("task", task, TASKS), ("act", act, ACTIVATIONS),
                                    ("adjacency_norm", adjacency_norm, ("row", "sym"))):  # fmt: skip
            if value not in allowed:
                raise SstkitError(f"model.{key} must be one of {tuple(allowed)}, got {value!r}")
        for key, value, low in (("num_features", num_features, 1), ("hidden_dim", hidden_dim, 2),
                                ("num_layers", num_layers, 1)):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise SstkitError(f"model.{key} must be an int >= {low}, got {value!r}")
        if task == "node" and num_labels < 2:
            raise SstkitError(f"model.num_labels must be >= 2 for node classification, got {num_labels}")
        if curvature <= 0:
            raise SstkitError(f"model.curvature must be > 0 (the curvature is -c), got {curvature}")
        if not 0.0 <= dropout < 1.0:
            raise SstkitError(f"model.dropout must be in [0, 1), got {dropout}")
        self.save_hyperparameters()
        self.geometry, self.task, self.num_labels, self.adjacency_norm = model, task, num_labels, adjacency_norm
        self.encoder = nn.ModuleList()
        if model == "lorentz":
            self.manifold: nn.Module = geoopt.Lorentz(k=1.0 / curvature)
            dims = [num_features + 1] + [hidden_dim] * num_layers
            for i in range(num_layers):
                nonlin = ACTIVATIONS[act]() if i > 0 else None  # HyboNet: no non-linearity on the input layer
                self.encoder.append(LorentzGraphConv(self.manifold, dims[i], dims[i + 1], bias, dropout, nonlin,
                                                     time_scale))  # fmt: skip
        elif model == "poincare":
            self.manifold = geoopt.PoincareBall(c=curvature)
            dims = [num_features] + [hidden_dim] * num_layers
            for i in range(num_layers):
                last = i == num_layers - 1
                self.encoder.append(PoincareGraphConv(self.manifold, dims[i], dims[i + 1], bias, dropout,
                                                      None if last else ACTIVATIONS[act]()))  # fmt: skip
        else:
            self.manifold = nn.Identity()
            dims = [num_features] + [hidden_dim] * num_layers
            for i in range(num_layers):
                last = i == num_layers - 1 and task == "link"
                self.encoder.append(EuclideanGraphConv(dims[i], dims[i + 1], bias, dropout,
                                                       None if last else ACTIVATIONS[act]()))  # fmt: skip
        if task == "node":
            if model == "lorentz":
                self.decoder: nn.Module = LorentzCentroidDecoder(self.manifold, hidden_dim, num_labels, bias)
            else:
                self.decoder = nn.Module()
                self.decoder.head = nn.Linear(hidden_dim, num_labels, bias=bias)
        else:
            self.decoder = FermiDiracDecoder(fd_r, fd_t)
        self.setup_metrics()

    def build_metrics(self) -> MetricCollection:
        if self.task == "node":
            return MetricCollection({"acc": MulticlassAccuracy(self.num_labels, average="micro"),
                                     "f1": MulticlassF1Score(self.num_labels, average="macro")})  # fmt: skip
        return MetricCollection({"roc_auc": BinaryAUROC(), "ap": BinaryAveragePrecision()})

    # --- forward ----------------------------------------------------------------------------------------------
    def embed_input(self, x: Tensor) -> Tensor:
        """Node features → points of the model's space."""
        if self.geometry == "lorentz":
            return to_hyperboloid(self.manifold, x)
        if self.geometry == "poincare":
            return self.manifold.expmap0(x)
        return x

    def forward(self, x: Tensor, edge_index: Tensor, return_all: bool = False) -> Tensor | list[Tensor]:
        """Node embeddings ``(N, hidden_dim)`` (every layer's output with ``return_all``)."""
        adj = normalized_adjacency(edge_index, x.shape[0], self.adjacency_norm)
        h, outputs = self.embed_input(x), []
        for layer in self.encoder:
            h = layer(h, adj)
            outputs.append(h)
        return outputs if return_all else h

    def sqdist(self, a: Tensor, b: Tensor) -> Tensor:
        """Squared distance of paired embeddings in the model's geometry."""
        if self.geometry == "lorentz":
            return lorentz_sqdist(a, b, self.manifold.k)
        if self.geometry == "poincare":
            return poincare_sqdist(self.manifold, a, b)
        return (a - b).pow(2).sum(-1)

    def node_logits(self, z: Tensor) -> Tensor:
        """Class logits of every node."""
        if self.geometry == "lorentz":
            return self.decoder(z)
        tangent = self.manifold.logmap0(z) if self.geometry == "poincare" else z
        return self.decoder.head(tangent)

    def edge_logits(self, z: Tensor, pairs: Tensor) -> Tensor:
        """Fermi–Dirac logits of node pairs ``(2, P)``."""
        return self.decoder(self.sqdist(z[pairs[0]], z[pairs[1]]))

    # --- steps ------------------------------------------------------------------------------------------------
    def step(self, batch: Any, stage: str) -> StepOutput:
        z = self(batch.x, batch.edge_index)
        if self.task == "node":
            mask = batch.mask
            logits, labels = self.node_logits(z)[mask], batch.y[mask]
            loss = F.cross_entropy(logits.float(), labels)
            # batch_size = targets scored, so the epoch loss is the mean over targets also when DDP ranks split them.
            return StepOutput(loss=loss, preds=logits.detach(), target=labels, batch_size=labels.numel())
        pairs, labels = batch.edge_label_index, batch.edge_label.float()
        if stage == "train":
            # Fresh negatives every step (global RNG: restored exactly on resume by sstkit's RngState callback).
            from torch_geometric.utils import negative_sampling  # deferred: torch_geometric is slow to import

            negatives = negative_sampling(batch.edge_index, num_nodes=batch.num_nodes, num_neg_samples=pairs.shape[1])
            pairs = torch.cat([pairs, negatives], dim=1)
            labels = torch.cat([labels, labels.new_zeros(negatives.shape[1])])
        logits = self.edge_logits(z, pairs)
        loss = F.binary_cross_entropy_with_logits(logits.float(), labels)
        return StepOutput(loss=loss, preds=logits.detach().sigmoid(), target=labels.long(), batch_size=labels.numel())

    # --- optimisation -----------------------------------------------------------------------------------------
    def parameter_groups(self) -> list[dict[str, Any]]:
        """Decayed matrices, undecayed vectors/scales, and manifold parameters (moved by Riemannian Adam, no decay)."""
        decay, no_decay, manifold = [], [], []
        for _, param in self.named_parameters():
            if not param.requires_grad:
                continue
            if isinstance(param, geoopt.ManifoldParameter):
                manifold.append(param)
            else:
                (no_decay if param.ndim < 2 else decay).append(param)
        groups = [{"params": decay, "weight_decay": self.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return groups + ([{"params": manifold, "weight_decay": 0.0}] if manifold else [])

    def configure_optimizers(self) -> Any:
        optimizer = RiemannianAdamW(self.parameter_groups(), lr=self.lr)
        if self.scheduler_name == "none":
            return optimizer
        total = int(self.trainer.estimated_stepping_batches) if self._trainer is not None else 1
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self.lr_lambda(max(1, total)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
