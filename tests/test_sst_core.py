"""Sparse Spectral Training core: SpectralLinear, the sampler, surgery and the functional helpers."""

from __future__ import annotations

import copy
import io
import warnings

import pytest
import torch
from torch import nn

from sstkit.functional.optim_state import reset_adam_state
from sstkit.functional.sst import (
    apply_sst,
    find_spectral_layers,
    merge_sst,
    resample_all,
    resvd_all,
    sample_indices,
    sst_step_end,
)
from sstkit.functional.surgery import select_linears
from sstkit.nn import SpectralLinear

MODES = ["dense", "factored"]


class Block(nn.Module):
    """A tiny transformer-ish block: self-attention from four linears, then an MLP."""

    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.query, self.key, self.value, self.dense = (nn.Linear(d, d) for _ in range(4))
        self.ffn = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.query(x), self.key(x), self.value(x)
        att = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
        x = self.norm(x + self.dense(att @ v))
        return x + self.ffn(x)


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(12, 24), nn.ReLU(), nn.Linear(24, 8), nn.ReLU(), nn.Linear(8, 3))


def layer(mode: str = "dense", enhanced: bool = True, out: int = 10, inp: int = 14, rank: int = 3) -> SpectralLinear:
    torch.manual_seed(0)
    return SpectralLinear.from_linear(nn.Linear(inp, out), rank, 7, enhanced_grad=enhanced, forward_mode=mode)


@pytest.mark.parametrize("mode", MODES)
def test_step0_equals_dense_mlp(mode: str) -> None:
    torch.manual_seed(0)
    dense = mlp()
    model = copy.deepcopy(dense)
    layers = apply_sst(model, rank=0.5, patterns=["*"], seed=1, forward_mode=mode)
    assert list(layers) == ["0", "2", "4"] and [m.rank for m in layers.values()] == [6, 4, 2]
    x = torch.randn(5, 12)
    torch.testing.assert_close(model(x), dense(x), atol=1e-5, rtol=1e-5)


def test_step0_equals_dense_block_with_regex_and_exclude() -> None:
    torch.manual_seed(0)
    dense = Block()
    model = copy.deepcopy(dense)
    layers = apply_sst(model, rank=4, patterns=["re:(query|key|value|dense)$", "ffn.*"], exclude=["*key"], seed=0)
    assert sorted(layers) == ["dense", "ffn.0", "ffn.2", "query", "value"]
    assert isinstance(model.key, nn.Linear)
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(model(x), dense(x), atol=1e-5, rtol=1e-5)


def _reference_factor_grads(lay: SpectralLinear, G: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Autograd through U diag(s) Vh with the active block as leaves: the true gradient."""
    s = lay.s.detach().clone().requires_grad_()
    U_a = lay.U_active.detach().clone().requires_grad_()
    Vh_a = lay.Vh_active.detach().clone().requires_grad_()
    idx = lay.active_indices
    W = (lay.U.index_copy(1, idx, U_a) * s) @ lay.Vh.index_copy(0, idx, Vh_a)
    (W * G).sum().backward()
    return s.grad, U_a.grad, Vh_a.grad


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("enhanced", [True, False])
def test_closed_form_gradients(mode: str, enhanced: bool) -> None:
    lay = layer(mode, enhanced)
    x, gy = torch.randn(6, 14), torch.randn(6, 10)
    (lay(x) * gy).sum().backward()
    G = gy.T @ x  # dL/dW of the dense layer for this loss
    ds, dU, dVh = _reference_factor_grads(lay, G)
    idx = lay.active_indices
    s_S = lay.s.detach()[idx]
    if enhanced:  # the formula: the s_i factor dropped from the active columns' gradients
        dU, dVh = G @ lay.Vh_active.detach().T, lay.U_active.detach().T @ G
        torch.testing.assert_close(dU * s_S, _reference_factor_grads(lay, G)[1], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(s_S[:, None] * dVh, _reference_factor_grads(lay, G)[2], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(lay.s.grad, ds, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(lay.U_active.grad, dU, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(lay.Vh_active.grad, dVh, atol=1e-4, rtol=1e-4)
    assert lay.U.grad is None and not lay.U.requires_grad


@pytest.mark.parametrize("mode", MODES)
def test_enhanced_gradients_equal_autograd_of_the_scaled_factors(mode: str) -> None:
    # Enhanced gradients are the true gradients with respect to the scaled factors: W = W_rest + U_S B with
    # B = diag(s_S) Vh_S gives ∂L/∂B = U_Sᵀ G (the enhanced dVh), and W = W_rest + A Vh_S with A = U_S diag(s_S)
    # gives ∂L/∂A = G Vh_Sᵀ (the enhanced dU). Autograd runs through a plain F.linear with a non-linear loss,
    # independent of the closed form; one active s_i is zero, where the true factor gradient vanishes.
    lay = layer(mode, enhanced=True)
    idx = lay.active_indices
    with torch.no_grad():
        lay.s[idx[0]] = 0.0
    x, target = torch.randn(6, 14), torch.randn(6, 10)

    def loss_of(out: torch.Tensor) -> torch.Tensor:
        return ((out.tanh() - target) ** 2).sum()

    loss_of(lay(x)).backward()
    U = lay.U.index_copy(1, idx, lay.U_active.detach())
    Vh = lay.Vh.index_copy(0, idx, lay.Vh_active.detach())
    s_rest = lay.s.detach().index_fill(0, idx, 0.0)
    W_rest = (U * s_rest) @ Vh
    s_S = lay.s.detach()[idx]
    B = (s_S[:, None] * lay.Vh_active.detach()).requires_grad_()
    loss_of(nn.functional.linear(x, W_rest + lay.U_active.detach() @ B, lay.bias.detach())).backward()
    A = (lay.U_active.detach() * s_S).requires_grad_()
    loss_of(nn.functional.linear(x, W_rest + A @ lay.Vh_active.detach(), lay.bias.detach())).backward()
    torch.testing.assert_close(lay.Vh_active.grad, B.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(lay.U_active.grad, A.grad, atol=1e-5, rtol=1e-4)
    assert lay.Vh_active.grad[0].abs().sum() > 0  # the zero singular value's factor still moves


def test_enhanced_gradient_with_zero_singular_values_is_finite() -> None:
    lay = layer()
    with torch.no_grad():
        lay.s.zero_()
    lay(torch.randn(4, 14)).sum().backward()
    assert torch.isfinite(lay.U_active.grad).all() and lay.U_active.grad.abs().sum() > 0


@pytest.mark.parametrize("mode", MODES)
def test_adamw_step_changes_only_active_block(mode: str) -> None:
    lay = layer(mode)
    U0, s0, Vh0 = lay.factors()
    opt = torch.optim.AdamW(lay.parameters(), lr=0.05, weight_decay=0.5)
    lay(torch.randn(8, 14)).pow(2).sum().backward()
    opt.step()
    lay.renormalize_()
    U1, s1, Vh1 = lay.factors()
    idx = lay.active_indices
    frozen = torch.ones(lay.k, dtype=torch.bool)
    frozen[idx] = False
    assert torch.equal(U1[:, frozen], U0[:, frozen]) and torch.equal(Vh1[frozen], Vh0[frozen])
    assert not torch.allclose(U1[:, idx], U0[:, idx]) and not torch.allclose(Vh1[idx], Vh0[idx])
    torch.testing.assert_close(U1[:, idx].norm(dim=0), torch.ones(lay.rank))
    torch.testing.assert_close(Vh1[idx].norm(dim=1), torch.ones(lay.rank))
    assert not torch.equal(s1, s0) and (s1 >= 0).all()
    with torch.no_grad():
        lay.s[0] = -0.5
    lay.renormalize_()
    assert (lay.s >= 0).all()


def test_resvd_preserves_weight_and_orthonormalises() -> None:
    lay = layer()
    with torch.no_grad():
        lay.U_active.add_(0.3 * torch.randn_like(lay.U_active))
        lay.Vh_active.add_(0.3 * torch.randn_like(lay.Vh_active))
    W0 = lay.weight
    idx = lay.active_indices.clone()
    lay.resvd_()
    torch.testing.assert_close(lay.weight, W0, atol=1e-5, rtol=1e-5)
    eye = torch.eye(lay.k)
    torch.testing.assert_close(lay.U.T @ lay.U, eye, atol=1e-5, rtol=0)
    torch.testing.assert_close(lay.Vh @ lay.Vh.T, eye, atol=1e-5, rtol=0)
    assert torch.equal(lay.active_indices, idx) and torch.equal(lay.U_active, lay.U[:, idx])
    assert (lay.s[:-1] >= lay.s[1:]).all()


@pytest.mark.parametrize("rule", ["mixed", "multinomial", "uniform", "top"])
@pytest.mark.parametrize("nonzero", [2, 0])
def test_sampler_returns_unique_indices_with_zero_singular_values(rule: str, nonzero: int) -> None:
    s = torch.zeros(16)
    s[:nonzero] = torch.tensor([3.0, 1.0])[:nonzero]
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        idx = sample_indices(s, 8, rule, g)
        assert idx.dtype == torch.long and idx.numel() == 8 and idx.unique().numel() == 8
        assert 0 <= int(idx.min()) and int(idx.max()) < 16
        if rule in ("multinomial", "top") and nonzero:
            assert {0, 1} <= set(idx.tolist())


def test_sampler_mixed_probabilities_and_determinism() -> None:
    zeros = torch.tensor([10.0, 0.0, 0.0, 0.0])
    draws = torch.stack([sample_indices(zeros, 1, "mixed", torch.Generator().manual_seed(i)) for i in range(400)])
    share = (draws == 0).float().mean()  # p_0 = ½(1/4 + 1) = 0.625, zeros keep p = 0.125 each
    assert 0.53 < share < 0.72 and (draws != 0).any()
    s = torch.rand(32)
    a, b = (sample_indices(s, 5, "mixed", torch.Generator().manual_seed(3)) for _ in range(2))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="rule"):
        sample_indices(zeros, 1, "bogus")


def test_resample_writes_back_and_keeps_weight() -> None:
    lay = layer()
    with torch.no_grad():
        lay.U_active.mul_(1.5)
        lay.Vh_active.add_(0.1)
    old, old_U, old_Vh = lay.active_indices.clone(), lay.U_active.detach().clone(), lay.Vh_active.detach().clone()
    W0, U_param = lay.weight, lay.U_active
    new = torch.tensor([0, 1, 9])
    lay.resample(new)
    torch.testing.assert_close(lay.weight, W0, atol=1e-6, rtol=1e-6)
    assert torch.equal(lay.U[:, old], old_U) and torch.equal(lay.Vh[old], old_Vh)
    assert torch.equal(lay.active_indices, new) and torch.equal(lay.U_active, lay.U[:, new])
    assert lay.U_active is U_param  # same Parameter object: the optimizer keeps pointing at it
    with pytest.raises(ValueError, match="distinct"):
        lay.resample(torch.tensor([0, 0, 1]))


def test_reset_adam_state_zeroes_moments_and_step() -> None:
    lay = layer()
    opt = torch.optim.AdamW(lay.parameters(), lr=0.01)
    lay(torch.randn(3, 14)).sum().backward()
    opt.step()
    assert reset_adam_state(opt, [lay.U_active, lay.Vh_active]) == 2
    for p in (lay.U_active, lay.Vh_active):
        st = opt.state[p]
        assert not st["exp_avg"].any() and not st["exp_avg_sq"].any() and int(st["step"]) == 0
    assert opt.state[lay.s]["exp_avg"].any()
    assert reset_adam_state(torch.optim.AdamW([nn.Parameter(torch.ones(1))]), [lay.s]) == 0


@pytest.mark.parametrize("mode", MODES)
def test_merge_matches_forward_and_prunes(mode: str) -> None:
    lay = layer(mode)
    x = torch.randn(4, 14)
    merged = lay.merge()
    assert type(merged) is nn.Linear
    torch.testing.assert_close(merged(x), lay(x), atol=1e-5, rtol=1e-5)
    pruned = lay.merge(prune_fraction=0.5)
    assert torch.linalg.matrix_rank(pruned.weight).item() == lay.k - lay.k // 2


def test_merge_sst_leaves_no_spectral_layers() -> None:
    torch.manual_seed(0)
    model = Block()
    apply_sst(model, rank=2, patterns=["*"], seed=0)
    x = torch.randn(2, 3, 16)
    y = model(x)
    assert sorted(merge_sst(model)) == ["dense", "ffn.0", "ffn.2", "key", "query", "value"]
    assert not find_spectral_layers(model) and not any(m.__module__.startswith("sstkit") for m in model.modules())
    torch.testing.assert_close(model(x), y, atol=1e-5, rtol=1e-5)


def test_state_dict_round_trip_restores_exactly() -> None:
    torch.manual_seed(0)
    model = mlp()
    layers = apply_sst(model, rank=2, patterns=["*"], seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    model(torch.randn(4, 12)).sum().backward()
    opt.step()
    resample_all(layers, "mixed", optimizer=opt)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    torch.manual_seed(1)
    other = mlp()
    other_layers = apply_sst(other, rank=2, patterns=["*"], seed=99)
    other.load_state_dict(torch.load(io.BytesIO(buffer.getvalue())))
    for name, lay in layers.items():
        for key, value in lay.state_dict().items():
            if key != "_extra_state":
                assert torch.equal(value, other_layers[name].state_dict()[key]), (name, key)
    x = torch.randn(3, 12)
    assert torch.equal(model(x), other(x))
    # The generators were restored too, so the next samples agree.
    a, b = resample_all(layers), resample_all(other_layers)
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_dense_and_factored_forward_agree() -> None:
    dense, factored = layer("dense"), layer("factored")
    x = torch.randn(2, 3, 14)
    torch.testing.assert_close(factored(x), dense(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_bf16_autocast_runs_and_factors_stay_fp32(mode: str) -> None:
    lay = layer(mode)
    opt = torch.optim.AdamW(lay.parameters(), lr=0.01)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = lay(torch.randn(4, 14))
        assert y.dtype == torch.bfloat16
        y.float().pow(2).mean().backward()
    opt.step()
    lay.renormalize_()
    lay.resvd_()
    for t in (lay.s, lay.U_active, lay.Vh_active, lay.U, lay.Vh, lay.s.grad, lay.U_active.grad):
        assert t.dtype == torch.float32
    assert torch.isfinite(lay.weight).all()


def test_surgery_is_idempotent_and_warns_when_empty() -> None:
    torch.manual_seed(0)
    model = Block()
    first = apply_sst(model, rank=2, patterns=["*"], seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = apply_sst(model, rank=2, patterns=["*"], seed=0)
    assert all(again[n] is first[n] for n in first) and list(again) == list(first)
    with pytest.warns(UserWarning, match=r"\['\*query_proj\*'\].*key"):
        assert apply_sst(Block(), rank=2, patterns=["*query_proj*"], seed=0) == {}


def test_select_linears_skips_tied_and_multihead_attention() -> None:
    model = nn.ModuleDict({"emb": nn.Embedding(5, 4), "head": nn.Linear(4, 5), "mha": nn.MultiheadAttention(4, 1)})
    model["head"].weight = model["emb"].weight
    with pytest.warns(UserWarning, match=r"head \(.*tied.*mha\.out_proj"):
        assert select_linears(model, ["*"], warn_if_empty=False) == []


def test_sst_step_end_schedule() -> None:
    lay = layer(rank=5)  # k = 10, r = 5: a round is 2 iterations
    layers = {"l": lay}
    opt = torch.optim.AdamW(lay.parameters(), lr=0.01)
    actions = []
    for step in range(1, 9):
        lay(torch.randn(4, 14)).sum().backward()
        opt.step()
        opt.zero_grad()
        actions.append(sst_step_end(layers, step, steps_per_iteration=2, optimizer=opt).get("l"))
    assert actions == [None, "resample", None, "resvd", None, "resample", None, "resvd"]
    assert not opt.state[lay.U_active]["exp_avg"].any()
    resvd_all(layers, optimizer=opt)
    assert not opt.state[lay.s]["exp_avg"].any()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_modes_agree_under_autocast() -> None:
    torch.manual_seed(0)
    dense = nn.Linear(64, 32).cuda()
    layers = {m: SpectralLinear.from_linear(dense, 8, 0, forward_mode=m) for m in MODES}
    assert torch.equal(layers["dense"].active_indices, layers["factored"].active_indices)  # CPU generator
    x = torch.randn(16, 64, device="cuda")
    for lay in layers.values():
        torch.testing.assert_close(lay(x), dense(x), atol=1e-4, rtol=1e-4)
        assert lay.active_indices.is_cuda
        with torch.autocast("cuda", dtype=torch.bfloat16):
            lay(x).float().pow(2).mean().backward()
        assert lay.U_active.grad.dtype == torch.float32
        lay.resvd_()
        lay.resample(lay.sample())
    torch.testing.assert_close(layers["dense"].s.grad, layers["factored"].s.grad, atol=5e-2, rtol=5e-2)
