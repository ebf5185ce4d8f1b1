"""Hyperbolic layers by value: the Lorentz maths against geoopt and closed forms, and the HyboNet / HGCN layers
against their papers' formulas written out here on a tiny graph (float64, independent of the implementation)."""

from __future__ import annotations

import math

import geoopt
import pytest
import torch

from sstkit.models import HyperbolicGNN
from sstkit.nn.graph import normalized_adjacency
from sstkit.nn.lorentz import (
    LorentzAggregation,
    LorentzCentroidDecoder,
    LorentzLinear,
    lorentz_inner,
    lorentz_sqdist,
    to_hyperboloid,
)
from sstkit.nn.poincare import PoincareGraphConv, PoincareLinear, poincare_sqdist


@pytest.fixture(autouse=True)
def _float64():
    # float64 everywhere in this module, so the comparisons test formulas, not rounding.
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


# A 4-node path 0-1-2-3 plus the edge 1-3: the hand-written row-normalised adjacency with self-loops (D⁻¹(A + I)).
EDGES = torch.tensor([[0, 1, 1, 2, 2, 3, 1, 3], [1, 0, 2, 1, 3, 2, 3, 1]])
ADJ = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [0, 1, 1, 1], [0, 1, 1, 1]], dtype=torch.float64)
ADJ = ADJ / ADJ.sum(1, keepdim=True)


def minkowski(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """⟨x, y⟩_L = −x₀y₀ + Σ xᵢyᵢ."""
    return -x[..., 0] * y[..., 0] + (x[..., 1:] * y[..., 1:]).sum(-1)


def lorentz_exp0(v: torch.Tensor, k: float) -> torch.Tensor:
    """exp at the origin (√k, 0, …) of a space vector v: (√k cosh(‖v‖/√k), √k sinh(‖v‖/√k) v/‖v‖)."""
    norm = v.norm(dim=-1, keepdim=True)
    return torch.cat([math.sqrt(k) * torch.cosh(norm / math.sqrt(k)),
                      math.sqrt(k) * torch.sinh(norm / math.sqrt(k)) * v / norm], dim=-1)  # fmt: skip


def points(k: float, n: int = 5, d: int = 3, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return lorentz_exp0(torch.randn(n, d, generator=gen), k)


@pytest.mark.parametrize("k", [1.0, 0.5, 2.0])
def test_lorentz_inner_and_distance_match_geoopt(k: float) -> None:
    manifold = geoopt.Lorentz(k=k)
    x, y = points(k, seed=0), points(k, seed=1)
    torch.testing.assert_close(lorentz_inner(x, y).squeeze(-1), minkowski(x, y))
    torch.testing.assert_close(lorentz_inner(x, y).squeeze(-1), manifold.inner(x, x, y))
    torch.testing.assert_close(minkowski(x, x), torch.full((5,), -k))
    # HyboNet's squared Lorentzian distance −2k − 2⟨x, y⟩_L = 2k (cosh(d/√k) − 1) with d geoopt's geodesic distance.
    d = manifold.dist(x, y)
    torch.testing.assert_close(lorentz_sqdist(x, y, k), 2 * k * (torch.cosh(d / math.sqrt(k)) - 1))
    torch.testing.assert_close(d, math.sqrt(k) * torch.acosh(-minkowski(x, y) / k))
    assert lorentz_sqdist(x, x, k).abs().max() < 1e-12


@pytest.mark.parametrize("k", [1.0, 0.5])
def test_exp_and_log_maps_match_closed_forms(k: float) -> None:
    manifold = geoopt.Lorentz(k=k)
    features = torch.randn(5, 3, generator=torch.Generator().manual_seed(2))
    # to_hyperboloid = exp at the origin of (0, f); the origin's distance to it is ‖f‖; log0 undoes it.
    x = to_hyperboloid(manifold, features)
    torch.testing.assert_close(x, lorentz_exp0(features, k))
    torch.testing.assert_close(manifold.dist0(x), features.norm(dim=-1))
    torch.testing.assert_close(manifold.logmap0(x), torch.cat([torch.zeros(5, 1), features], dim=-1))
    # exp / log at a general point: exp_x(u) = cosh(‖u‖_L/√k) x + √k sinh(‖u‖_L/√k) u/‖u‖_L,
    # log_x(y) = d(x, y) · w/‖w‖_L with w = y + ⟨x, y⟩_L x / k.
    base, y = points(k, seed=3), points(k, seed=4)
    w = y + (minkowski(base, y) / k)[:, None] * base
    w_norm = minkowski(w, w).clamp_min(0).sqrt()[:, None]
    log = (math.sqrt(k) * torch.acosh(-minkowski(base, y) / k))[:, None] * w / w_norm
    torch.testing.assert_close(manifold.logmap(base, y), log)
    u_norm = minkowski(log, log).sqrt()[:, None]
    exp = torch.cosh(u_norm / math.sqrt(k)) * base + math.sqrt(k) * torch.sinh(u_norm / math.sqrt(k)) * log / u_norm
    torch.testing.assert_close(exp, y)
    torch.testing.assert_close(manifold.expmap(base, log), y)


def test_lorentz_linear_is_hybonets_formula() -> None:
    k = 0.5
    torch.manual_seed(0)
    layer = LorentzLinear(geoopt.Lorentz(k=k), 4, 5, scale=3.0).double()
    with torch.no_grad():
        layer.linear.weight.normal_()
        layer.linear.bias.normal_()
    x = points(k, n=4, d=3, seed=5)
    # HyboNet (Chen et al., 2022), eq. 3: y = Wx + b; t = √k (σ(y₀) e^λ + 1.1); out = (t, y₁: √((t² − k)/‖y₁:‖²)).
    y = x @ layer.linear.weight.T + layer.linear.bias
    t = math.sqrt(k) * (torch.sigmoid(y[:, :1]) * 3.0 + 1.1)
    expected = torch.cat([t, y[:, 1:] * ((t * t - k) / (y[:, 1:] ** 2).sum(-1, keepdim=True)).sqrt()], dim=-1)
    torch.testing.assert_close(layer(x), expected)


def test_lorentz_aggregation_is_the_lorentzian_centroid_on_a_tiny_graph() -> None:
    k = 2.0
    x = points(k, n=4, d=3, seed=6)
    # Law et al. (2019), HyboNet's aggregation: μᵢ = √k mᵢ / √|⟨mᵢ, mᵢ⟩_L|, mᵢ = Σⱼ âᵢⱼ xⱼ.
    m = ADJ @ x
    expected = math.sqrt(k) * m / minkowski(m, m).abs().sqrt()[:, None]
    torch.testing.assert_close(normalized_adjacency(EDGES, 4).to_dense(), ADJ)
    torch.testing.assert_close(LorentzAggregation(geoopt.Lorentz(k=k))(x, normalized_adjacency(EDGES, 4)), expected)


def test_lorentz_decoder_logits_are_negative_squared_distances() -> None:
    k = 1.0
    manifold = geoopt.Lorentz(k=k)
    torch.manual_seed(0)
    decoder = LorentzCentroidDecoder(manifold, 4, 3).double()
    with torch.no_grad():
        decoder.bias.normal_()
    x = points(k, n=6, d=3, seed=7)
    d = manifold.dist(x[:, None, :], decoder.centroids[None, :, :])
    expected = -2 * k * (torch.cosh(d / math.sqrt(k)) - 1) + decoder.bias
    torch.testing.assert_close(decoder(x), expected)


def test_hybonet_encoder_end_to_end_by_hand() -> None:
    # The whole 2-layer Lorentz encoder of the model family, recomputed from its weights with the formulas above.
    torch.manual_seed(0)
    model = HyperbolicGNN(model="lorentz", task="node", num_features=3, num_labels=2, hidden_dim=4, num_layers=2,
                          curvature=2.0, dropout=0.0).double().eval()  # fmt: skip
    with torch.no_grad():  # generic weights: HyboNet's initialisation (zero bias) may send ReLU outputs to the origin
        for conv in model.encoder:
            conv.lorentz_linear.linear.weight.normal_()
            conv.lorentz_linear.linear.bias.normal_()
    k = 0.5
    features = torch.randn(4, 3, generator=torch.Generator().manual_seed(8))
    h = lorentz_exp0(features, k)
    for i, conv in enumerate(model.encoder):
        inner = conv.lorentz_linear
        if i > 0:
            h = torch.relu(h)  # HyboNet's non-linearity on the input point, from the second layer
        y = h @ inner.linear.weight.T + inner.linear.bias
        t = math.sqrt(k) * (torch.sigmoid(y[:, :1]) * inner.log_scale.exp() + 1.1)
        h = torch.cat([t, y[:, 1:] * ((t * t - k) / (y[:, 1:] ** 2).sum(-1, keepdim=True)).sqrt()], dim=-1)
        m = ADJ @ h
        h = math.sqrt(k) * m / minkowski(m, m).abs().sqrt()[:, None]
    with torch.no_grad():
        torch.testing.assert_close(model(features, EDGES), h)


# --- Poincaré ball (HGCN, Chami et al., 2019), curvature −c -------------------------------------------------
def ball_exp0(v: torch.Tensor, c: float) -> torch.Tensor:
    norm = v.norm(dim=-1, keepdim=True)
    return torch.tanh(math.sqrt(c) * norm) * v / (math.sqrt(c) * norm)


def ball_log0(x: torch.Tensor, c: float) -> torch.Tensor:
    norm = x.norm(dim=-1, keepdim=True)
    return torch.atanh(math.sqrt(c) * norm) * x / (math.sqrt(c) * norm)


def mobius_add(x: torch.Tensor, y: torch.Tensor, c: float) -> torch.Tensor:
    xy, x2, y2 = (x * y).sum(-1, keepdim=True), (x * x).sum(-1, keepdim=True), (y * y).sum(-1, keepdim=True)
    return ((1 + 2 * c * xy + c * y2) * x + (1 - c * x2) * y) / (1 + 2 * c * xy + c * c * x2 * y2)


def mobius_matvec(weight: torch.Tensor, x: torch.Tensor, c: float) -> torch.Tensor:
    """HGCN's W ⊗ x = (1/√c) tanh(‖Wx‖/‖x‖ · artanh(√c‖x‖)) Wx/‖Wx‖."""
    mx, xn = x @ weight.T, x.norm(dim=-1, keepdim=True)
    mxn = mx.norm(dim=-1, keepdim=True)
    return torch.tanh(mxn / xn * torch.atanh(math.sqrt(c) * xn)) * mx / (mxn * math.sqrt(c))


@pytest.mark.parametrize("c", [1.0, 0.7])
def test_poincare_layers_are_hgcns_formulas(c: float) -> None:
    ball = geoopt.PoincareBall(c=c)
    torch.manual_seed(0)
    linear = PoincareLinear(ball, 3, 4).double()
    with torch.no_grad():
        linear.bias.normal_(std=0.3)
    x = ball_exp0(0.5 * torch.randn(4, 3, generator=torch.Generator().manual_seed(9)), c)
    h = mobius_add(mobius_matvec(linear.linear.weight, x, c), ball_exp0(linear.bias, c), c)
    torch.testing.assert_close(linear(x), h)
    # One HGCN layer: the same linear map, mean aggregation in the tangent space at 0, activation there.
    conv = PoincareGraphConv(ball, 3, 4, act=torch.nn.ReLU()).double()
    conv.poincare_linear.load_state_dict(linear.state_dict())
    expected = ball_exp0(torch.relu(ADJ @ ball_log0(h, c)), c)
    torch.testing.assert_close(conv(x, normalized_adjacency(EDGES, 4)), expected)
    # The squared geodesic distance: d = (2/√c) artanh(√c ‖−x ⊕ y‖).
    y = ball_exp0(0.5 * torch.randn(4, 3, generator=torch.Generator().manual_seed(10)), c)
    d = 2 / math.sqrt(c) * torch.atanh(math.sqrt(c) * mobius_add(-x, y, c).norm(dim=-1))
    torch.testing.assert_close(poincare_sqdist(ball, x, y), d**2)
