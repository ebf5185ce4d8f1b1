r"""HGCN layers in the Poincaré ball (Chami et al., NeurIPS 2019), manifold maths from geoopt's ``PoincareBall``.

A layer maps points of the ball of curvature ``−c`` through the tangent space at the origin:

.. math::
    h = \exp_0\!\bigl(W \log_0(x)\bigr) \oplus \exp_0(b),\qquad
    a = \exp_0\!\bigl(\hat A \log_0(h)\bigr),\qquad
    \mathrm{out} = \exp_0\!\bigl(\sigma(\log_0 a)\bigr)

``exp_0(W log_0 x)`` is exactly the Möbius matrix-vector product ``W ⊗ x`` of HGCN's ``HypLinear``, which lets
``W`` be a plain bias-free ``nn.Linear`` child named ``linear`` (what SST / LoRA patterns select); the
hyperbolic bias ``b`` is a separate tangent vector added with Möbius addition.

Example:
    >>> import geoopt, torch
    >>> ball = geoopt.PoincareBall(c=1.0)
    >>> from sstkit.nn.graph import normalized_adjacency
    >>> adj = normalized_adjacency(torch.tensor([[0, 1], [1, 0]]), 2)
    >>> layer = PoincareGraphConv(ball, 4, 3)
    >>> out = layer(ball.expmap0(torch.randn(2, 4) * 0.1), adj)
    >>> bool((out.norm(dim=-1) < 1).all())
    True
"""

from __future__ import annotations

import geoopt
import torch
from torch import Tensor, nn

from sstkit.nn.graph import propagate


class PoincareLinear(nn.Module):
    """HGCN's hyperbolic linear map ``(W ⊗ x) ⊕ exp_0(b)`` with ``W`` an inner bias-free ``nn.Linear``.

    Args:
        ball: geoopt ``PoincareBall(c)``.
        in_features: input width.
        out_features: output width.
        bias: learn the hyperbolic bias ``b``.
        dropout: dropout on the tangent input.
    """

    def __init__(self, ball: geoopt.PoincareBall, in_features: int, out_features: int, bias: bool = True,
                 dropout: float = 0.0) -> None:  # fmt: skip
        super().__init__()
        self.ball = ball
        self.linear = nn.Linear(in_features, out_features, bias=False)
        nn.init.xavier_uniform_(self.linear.weight, gain=2**0.5)
        self.dropout = nn.Dropout(dropout)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.ball.expmap0(self.linear(self.dropout(self.ball.logmap0(x))))
        if self.bias is not None:
            h = self.ball.mobius_add(h, self.ball.expmap0(self.bias))
        return self.ball.projx(h)


class PoincareGraphConv(nn.Module):
    """One HGCN layer: :class:`PoincareLinear`, tangent-space mean aggregation, tangent-space activation.

    Args:
        ball: geoopt ``PoincareBall(c)``.
        in_features: input width.
        out_features: output width.
        bias: hyperbolic bias of the linear map.
        dropout: dropout on the linear's tangent input.
        act: activation in the tangent space at the origin (``None``: identity).
    """

    def __init__(self, ball: geoopt.PoincareBall, in_features: int, out_features: int, bias: bool = True,
                 dropout: float = 0.0, act: nn.Module | None = None) -> None:  # fmt: skip
        super().__init__()
        self.ball = ball
        self.poincare_linear = PoincareLinear(ball, in_features, out_features, bias, dropout)
        self.act = act if act is not None else nn.Identity()

    def forward(self, x: Tensor, adj: Tensor) -> Tensor:
        h = self.poincare_linear(x)
        aggregated = propagate(adj, self.ball.logmap0(h))
        return self.ball.projx(self.ball.expmap0(self.act(aggregated)))


def poincare_sqdist(ball: geoopt.PoincareBall, x: Tensor, y: Tensor) -> Tensor:
    """Squared geodesic distance in the ball, shape ``x.shape[:-1]``."""
    return ball.dist2(x, y)
