"""OOD scores of a classifier trained on the ID texts: MSP, energy, Mahalanobis and kNN (higher = more OOD).

The classifier baselines of the MLKD paper. With logits ``z`` (shape ``(N, C)``) and penultimate features ``h``:

- MSP (Hendrycks & Gimpel, 2017): ``-max_c softmax(z)_c``;
- energy (Liu et al., 2020): ``-T · logsumexp(z / T)``, the free energy, higher on OOD inputs;
- Mahalanobis (Lee et al., 2018): ``min_c (h - μ_c)ᵀ Σ⁻¹ (h - μ_c)`` with class means ``μ_c`` and one covariance
  ``Σ`` shared by the classes, both fitted on ID training features;
- kNN (Sun et al., 2022): the Euclidean distance from the L2-normalised ``h`` to its k-th nearest L2-normalised
  ID training feature.

Signs follow ``sstkit.functional.ood.metrics`` (OOD is the positive class, higher = more OOD), so the scores go
straight into :func:`ood_metrics`. ``pytorch-ood`` implements the same four detectors, but its current release
pulls torchvision and a CUDA build of torch into the environment; these are a few lines of torch each.

Example::

    >>> import torch
    >>> logits = torch.tensor([[4.0, 0.0], [0.1, 0.0]])
    >>> msp_score(logits).round(decimals=3).tolist()
    [-0.982, -0.525]
    >>> maha = Mahalanobis().fit(torch.randn(20, 3), torch.arange(20) % 2)
    >>> maha.score(torch.randn(5, 3)).shape
    torch.Size([5])
"""

from __future__ import annotations

import torch
from torch import Tensor

from sstkit.errors import SstkitError


def msp_score(logits: Tensor) -> Tensor:
    """Negative maximum softmax probability, shape (N,)."""
    return -torch.softmax(logits.double(), dim=-1).max(dim=-1).values


def energy_score(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Free energy ``-T · logsumexp(z / T)``, shape (N,)."""
    if temperature <= 0:
        raise SstkitError(f"energy temperature must be > 0, got {temperature}")
    return -temperature * torch.logsumexp(logits.double() / temperature, dim=-1)


class Mahalanobis:
    """Class-conditional Gaussians with a tied covariance, fitted on ID features (no input perturbation)."""

    def __init__(self) -> None:
        self.means: Tensor | None = None
        self.precision: Tensor | None = None

    def fit(self, features: Tensor, labels: Tensor) -> Mahalanobis:
        """Class means and the pseudo-inverse of the pooled within-class covariance; returns ``self``."""
        feats, labels = features.double(), labels.long()
        if feats.ndim != 2 or labels.shape != feats.shape[:1]:
            raise SstkitError(f"Mahalanobis.fit: features (N, D) and labels (N,), got {tuple(feats.shape)} and "
                              f"{tuple(labels.shape)}")
        classes = torch.unique(labels)
        self.means = torch.stack([feats[labels == c].mean(0) for c in classes])
        centred = feats - self.means[torch.searchsorted(classes, labels)]
        # pinv: with fewer training texts than feature dimensions the covariance is singular.
        self.precision = torch.linalg.pinv(centred.T @ centred / len(feats), hermitian=True)
        return self

    def score(self, features: Tensor) -> Tensor:
        """Smallest squared Mahalanobis distance to a class mean, shape (N,)."""
        if self.means is None or self.precision is None:
            raise SstkitError("Mahalanobis.score before fit")
        diff = features.double()[:, None, :] - self.means[None]  # (N, C, D)
        return torch.einsum("ncd,de,nce->nc", diff, self.precision, diff).min(dim=1).values


class KNN:
    """Distance to the k-th nearest ID training feature after L2 normalisation (Sun et al., 2022)."""

    def __init__(self, k: int = 1) -> None:
        if k < 1:
            raise SstkitError(f"kNN k must be >= 1, got {k}")
        self.k = k
        self.bank: Tensor | None = None

    def fit(self, features: Tensor) -> KNN:
        """Keeps the normalised training features; returns ``self``."""
        if features.ndim != 2 or len(features) < self.k:
            raise SstkitError(f"kNN.fit: need (N, D) features with N >= k={self.k}, got {tuple(features.shape)}")
        self.bank = torch.nn.functional.normalize(features.double(), dim=-1)
        return self

    def score(self, features: Tensor, chunk: int = 256) -> Tensor:
        """k-th smallest Euclidean distance to the bank, shape (N,); computed in chunks of ``chunk`` rows."""
        if self.bank is None:
            raise SstkitError("kNN.score before fit")
        queries = torch.nn.functional.normalize(features.double(), dim=-1)
        out = [torch.cdist(q, self.bank).kthvalue(self.k, dim=-1).values for q in queries.split(chunk)]
        return torch.cat(out)
