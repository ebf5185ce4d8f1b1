r"""Fully hyperbolic graph layers in the Lorentz model (HyboNet, Chen et al., ACL 2022), manifold maths from geoopt.

Points live on the hyperboloid :math:`\mathbb{H}^n_k = \{x : \langle x, x\rangle_L = -k,\ x_0 > 0\}` with the
Lorentzian inner product :math:`\langle x, y\rangle_L = -x_0 y_0 + \sum_{i\ge1} x_i y_i` and curvature
:math:`-1/k` (``k = 1/c`` for a curvature ``-c``; geoopt's ``Lorentz(k)``).

**LorentzLinear** applies a plain Euclidean matrix and then puts the result back on the hyperboloid with a learned
time scale:

.. math::
    y = W\,\mathrm{dropout}(h(x)) + b,\qquad
    t = \sqrt{k}\,\bigl(\sigma(y_0)\,e^{\lambda} + 1.1\bigr),\qquad
    \mathrm{out} = \Bigl(t,\ y_{1:}\,\sqrt{\tfrac{t^2 - k}{\lVert y_{1:}\rVert^2}}\Bigr)

so ``⟨out, out⟩_L = −k`` by construction, whatever ``W`` is. The matrix ``W`` is a real ``nn.Linear`` child called
``linear``: SST, LoRA and ReLoRA wrap that Euclidean matrix and the re-projection keeps every output on the
manifold (the SST paper's recipe for hyperbolic networks).

**LorentzAggregation** is the Lorentzian centroid of the neighbours (Law et al., 2019):
``m = Â x``, ``out = √k · m / √|⟨m, m⟩_L|``. **LorentzCentroidDecoder** scores a node against learned class
centroids (geoopt ``ManifoldParameter`` on the hyperboloid, trained with Riemannian Adam) by the negative squared
Lorentzian distance ``−d²(x, c) = 2k + 2⟨x, c⟩_L``.

Example:
    >>> import geoopt, torch
    >>> manifold = geoopt.Lorentz(k=1.0)
    >>> layer = LorentzLinear(manifold, 5, 4)
    >>> x = to_hyperboloid(manifold, torch.randn(3, 4))
    >>> y = layer(x)
    >>> torch.allclose(lorentz_inner(y, y), torch.full((3, 1), -1.0), atol=1e-4)
    True
"""

from __future__ import annotations

import math

import geoopt
import torch
from torch import Tensor, nn

from sstkit.nn.graph import propagate


def lorentz_inner(x: Tensor, y: Tensor) -> Tensor:
    """``⟨x, y⟩_L`` over the last dimension, kept as a size-1 dimension."""
    return (x * y).sum(-1, keepdim=True) - 2 * x[..., :1] * y[..., :1]


def lorentz_sqdist(x: Tensor, y: Tensor, k: Tensor | float) -> Tensor:
    """HyboNet's squared Lorentzian distance ``−2k − 2⟨x, y⟩_L`` (≥ 0, 0 iff x = y), shape ``x.shape[:-1]``."""
    return (-2 * k - 2 * lorentz_inner(x, y)).squeeze(-1)


def to_hyperboloid(manifold: geoopt.Lorentz, features: Tensor) -> Tensor:
    """Euclidean features ``(N, d)`` → points ``(N, d + 1)``: prepend a zero time coordinate, ``expmap0``."""
    tangent = torch.cat([torch.zeros_like(features[..., :1]), features], dim=-1)
    return manifold.expmap0(tangent)


class LorentzLinear(nn.Module):
    """HyboNet's Lorentz linear layer: an inner ``nn.Linear`` and a re-projection with a learned time scale.

    Args:
        manifold: geoopt ``Lorentz(k)``.
        in_features: ambient input width (``n + 1`` for points of ``H^n``).
        out_features: ambient output width.
        bias: bias of the inner linear.
        dropout: dropout on the input, before the matrix.
        scale: initial upper bound ``e^λ`` of the time coordinate's range (in units of ``√k``).
        fixscale: keep ``λ`` fixed.
        nonlin: optional activation applied to the input point first (HyboNet's non-linearity).
    """

    def __init__(self, manifold: geoopt.Lorentz, in_features: int, out_features: int, bias: bool = True,
                 dropout: float = 0.0, scale: float = 10.0, fixscale: bool = False,
                 nonlin: nn.Module | None = None) -> None:  # fmt: skip
        super().__init__()
        if out_features < 2:
            raise ValueError(f"out_features must be >= 2 (a time and a space coordinate), got {out_features}")
        self.manifold = manifold
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.nonlin = nonlin if nonlin is not None else nn.Identity()
        self.log_scale = nn.Parameter(torch.tensor(math.log(scale)), requires_grad=not fixscale)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # HyboNet's initialisation: small uniform weights, and no weight on the input's time coordinate, which
        # carries no direction of its own.
        bound = 1.0 / math.sqrt(self.linear.out_features)
        nn.init.uniform_(self.linear.weight, -bound, bound)
        with torch.no_grad():
            self.linear.weight[:, 0] = 0
        if self.linear.bias is not None:
            nn.init.zeros_(self.linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        y = self.linear(self.dropout(self.nonlin(x)))
        return project_with_time(y, self.manifold.k, self.log_scale)


def project_with_time(y: Tensor, k: Tensor, log_scale: Tensor) -> Tensor:
    """Puts ambient vectors on ``H_k``: time from the first coordinate, the space part rescaled to match it."""
    sqrt_k = k.sqrt()
    time = sqrt_k * (torch.sigmoid(y[..., :1]) * log_scale.exp() + 1.1)
    space = y[..., 1:]
    scale = (time * time - k) / (space * space).sum(-1, keepdim=True).clamp_min(1e-8)
    space = space * scale.sqrt()
    # Time again from the rescaled space part: equal to `time` unless the space part was (numerically) zero —
    # e.g. a ReLU that zeroed every space coordinate — where HyboNet's formula leaves the point off the manifold
    # (⟨x, x⟩_L = −t²); this maps it to the origin instead.
    time = (k + (space * space).sum(-1, keepdim=True)).sqrt()
    return torch.cat([time, space], dim=-1)


class LorentzAggregation(nn.Module):
    """Lorentzian centroid of each node's neighbourhood: ``√k · (Â x) / √|⟨Â x, Â x⟩_L|``.

    Args:
        manifold: geoopt ``Lorentz(k)``.
    """

    def __init__(self, manifold: geoopt.Lorentz) -> None:
        super().__init__()
        self.manifold = manifold

    def forward(self, x: Tensor, adj: Tensor) -> Tensor:
        support = propagate(adj, x)
        # A positive combination of points of the upper sheet is time-like, so the norm below is well defined.
        norm = lorentz_inner(support, support).abs().clamp_min(1e-8).sqrt()
        # projx recomputes the time coordinate from the space part: the division above is exact in theory only.
        return self.manifold.projx(self.manifold.k.sqrt() * support / norm)


class LorentzGraphConv(nn.Module):
    """One HyboNet graph convolution: :class:`LorentzLinear` then :class:`LorentzAggregation`.

    Args:
        manifold: geoopt ``Lorentz(k)``.
        in_features: ambient input width.
        out_features: ambient output width.
        bias: bias of the inner linear.
        dropout: input dropout of the linear.
        nonlin: activation applied to the input point (HyboNet applies none in the first layer).
        scale: initial time-scale bound of the linear.
    """

    def __init__(self, manifold: geoopt.Lorentz, in_features: int, out_features: int, bias: bool = True,
                 dropout: float = 0.0, nonlin: nn.Module | None = None, scale: float = 10.0) -> None:  # fmt: skip
        super().__init__()
        self.lorentz_linear = LorentzLinear(manifold, in_features, out_features, bias, dropout, scale, nonlin=nonlin)
        self.aggregation = LorentzAggregation(manifold)

    def forward(self, x: Tensor, adj: Tensor) -> Tensor:
        return self.aggregation(self.lorentz_linear(x), adj)


class LorentzCentroidDecoder(nn.Module):
    """Class logits ``2k + 2⟨x, c_j⟩_L + b_j = −d²_L(x, c_j) + b_j`` against learned centroids ``c_j`` on ``H_k``.

    The centroids are a geoopt ``ManifoldParameter``: the model's optimizer (Riemannian Adam) moves them along the
    hyperboloid, never off it. Method callbacks never touch them (they are no ``nn.Linear``).

    Args:
        manifold: geoopt ``Lorentz(k)``.
        dim: ambient width of the points.
        num_classes: number of centroids.
        bias: learn a per-class offset.
    """

    def __init__(self, manifold: geoopt.Lorentz, dim: int, num_classes: int, bias: bool = True) -> None:
        super().__init__()
        self.manifold = manifold
        points = manifold.random_normal(num_classes, dim, std=1.0 / math.sqrt(dim))
        self.centroids = geoopt.ManifoldParameter(points.data, manifold=manifold)
        self.bias = nn.Parameter(torch.zeros(num_classes)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        inner = x @ self.centroids.t() - 2 * x[:, :1] * self.centroids[:, :1].t()
        logits = 2 * self.manifold.k + 2 * inner
        return logits + self.bias if self.bias is not None else logits
