"""Graph plumbing shared by the Euclidean and hyperbolic GCNs: normalised adjacency, a Euclidean GCN layer, and the
Fermi–Dirac link decoder.

Every layer keeps its weight matrix in a plain ``nn.Linear`` child named ``linear``, so method callbacks that
select linears by name (SST, LoRA, ReLoRA with ``patterns: ["re:(^|\\.)linear$"]``) reach the same matrices in the
Euclidean control and in the hyperbolic models.

Example:
    >>> import torch
    >>> edge_index = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    >>> adj = normalized_adjacency(edge_index, 3)
    >>> layer = EuclideanGraphConv(4, 8)
    >>> layer(torch.randn(3, 4), adj).shape
    torch.Size([3, 8])
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

NORMS = ("row", "sym")


def normalized_adjacency(edge_index: Tensor, num_nodes: int, norm: str = "row") -> Tensor:
    """The adjacency with self-loops as a sparse ``(N, N)`` tensor, row- (``D⁻¹Â``) or symmetrically normalised.

    Row normalisation makes ``Â x`` a weighted mean of the neighbours (HGCN's and HyboNet's aggregation); ``sym``
    is Kipf & Welling's ``D^-½ Â D^-½``.

    Args:
        edge_index: ``(2, E)`` edges (both directions for an undirected graph).
        num_nodes: ``N``.
        norm: ``row`` or ``sym``.
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    # Plain torch rather than torch_geometric.utils: importing torch_geometric costs seconds on every CLI start.
    loops = torch.arange(num_nodes, device=edge_index.device)
    edge_index = torch.cat([edge_index[:, edge_index[0] != edge_index[1]], torch.stack([loops, loops])], dim=1)
    row, col = edge_index
    deg = torch.zeros(num_nodes, device=row.device).index_add_(0, row, torch.ones(row.numel(), device=row.device))
    if norm == "row":
        weight = deg.reciprocal()[row]
    else:
        inv_sqrt = deg.rsqrt()
        weight = inv_sqrt[row] * inv_sqrt[col]
    return torch.sparse_coo_tensor(edge_index, weight, (num_nodes, num_nodes), check_invariants=False).coalesce()


def propagate(adj: Tensor, x: Tensor) -> Tensor:
    """``adj @ x`` for a sparse ``adj``; half precision is computed in fp32 (no half sparse matmul on CPU)."""
    work = x if x.dtype in (torch.float32, torch.float64) else x.float()
    return torch.sparse.mm(adj.to(work.dtype), work).to(x.dtype)


class EuclideanGraphConv(nn.Module):
    """Kipf & Welling's GCN layer, ``act(Â · linear(dropout(x)))``: the Euclidean control of the hyperbolic models.

    Args:
        in_features: input width.
        out_features: output width.
        bias: bias of the inner linear.
        dropout: dropout on the input.
        act: activation after aggregation (``None``: identity).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dropout: float = 0.0,
                 act: nn.Module | None = None) -> None:  # fmt: skip
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        nn.init.xavier_uniform_(self.linear.weight)  # Kipf & Welling's (Glorot) initialisation
        if bias:
            nn.init.zeros_(self.linear.bias)
        self.dropout = nn.Dropout(dropout)
        self.act = act if act is not None else nn.Identity()

    def forward(self, x: Tensor, adj: Tensor) -> Tensor:
        return self.act(propagate(adj, self.linear(self.dropout(x))))


class FermiDiracDecoder(nn.Module):
    """Edge probability from a squared distance: ``p = 1 / (exp((d² − r) / t) + 1)``; returns the logit ``(r − d²)/t``.

    Returning the logit (``sigmoid(logit) = p``) lets the loss use ``binary_cross_entropy_with_logits``, which is
    stable where ``d²`` is large.

    Args:
        r: the distance² at which ``p = ½``.
        t: temperature.

    Example:
        >>> FermiDiracDecoder(r=2.0, t=1.0)(torch.tensor([2.0])).sigmoid()
        tensor([0.5000])
    """

    def __init__(self, r: float = 2.0, t: float = 1.0) -> None:
        super().__init__()
        if t <= 0:
            raise ValueError(f"t must be > 0, got {t}")
        self.r, self.t = float(r), float(t)

    def forward(self, sqdist: Tensor) -> Tensor:
        return (self.r - sqdist) / self.t

    def extra_repr(self) -> str:
        return f"r={self.r}, t={self.t}"
