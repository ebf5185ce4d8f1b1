"""AdamR: λ = 0 is torch Adam, λ > 0 shrinks the delta, the decay formula, and exact state round trips."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from sstkit.errors import SstkitError
from sstkit.optim import AdamR


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))


def _grads(steps: int, model: nn.Module) -> list[list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [[torch.randn(p.shape, generator=gen) for p in model.parameters()] for _ in range(steps)]


def _run(model: nn.Module, optimizer: torch.optim.Optimizer, grads: list[list[torch.Tensor]]) -> None:
    for step in grads:
        for p, g in zip(model.parameters(), step, strict=True):
            p.grad = g.clone()
        optimizer.step()


def test_lambda_zero_equals_adam_step_for_step() -> None:
    a, b = _model(), _model()
    opt_a, opt_b = AdamR(a.parameters(), lr=1e-2, delta_decay=0.0), torch.optim.Adam(b.parameters(), lr=1e-2)
    for _ in range(6):
        x = torch.randn(4, 6)
        for model, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
        for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
            torch.testing.assert_close(pa, pb, rtol=0, atol=0)


@pytest.mark.parametrize("penalty", ["l2", "l1"])
def test_positive_lambda_shrinks_delta_for_the_same_gradients(penalty: str) -> None:
    grads = _grads(20, _model())
    norms = []
    for lam in (0.0, 0.5):
        model = _model()
        opt = AdamR(model.parameters(), lr=1e-2, delta_decay=lam, penalty=penalty)
        _run(model, opt, grads)
        norms.append(opt.delta_norm())
    assert norms[1] < norms[0]


def test_decay_formula_of_one_step() -> None:
    model, reference = _model(), _model()
    grads = _grads(2, model)
    lam, lr = 0.3, 1e-2
    opt = AdamR(model.parameters(), lr=lr, delta_decay=lam)
    _run(model, opt, grads)
    # Reference: Adam's first step, then the decay of step 2 by hand, then Adam's second step.
    ref_opt = torch.optim.Adam(reference.parameters(), lr=lr)
    anchors = [p.detach().clone() for p in reference.parameters()]
    _run(reference, ref_opt, grads[:1])
    beta2 = 0.999
    v_hat = [(beta2 * ref_opt.state[p]["exp_avg_sq"] + (1 - beta2) * g**2) / (1 - beta2**2)
             for p, g in zip(reference.parameters(), grads[1], strict=True)]
    s = math.sqrt(sum(float(v.sum()) for v in v_hat) / sum(v.numel() for v in v_hat))
    with torch.no_grad():
        for p, a in zip(reference.parameters(), anchors, strict=True):
            p.sub_(lam * lr / s * (p - a))
    _run(reference, ref_opt, grads[1:])
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_state_dict_round_trip_is_exact() -> None:
    grads = _grads(8, _model())
    whole = _model()
    opt = AdamR(whole.parameters(), lr=1e-2, delta_decay=0.2)
    _run(whole, opt, grads)
    part = _model()
    opt_part = AdamR(part.parameters(), lr=1e-2, delta_decay=0.2)
    _run(part, opt_part, grads[:4])
    saved_model, saved_opt = copy.deepcopy(part.state_dict()), copy.deepcopy(opt_part.state_dict())
    resumed = _model()
    with torch.no_grad():
        for p in resumed.parameters():
            p.add_(1.0)  # a different init: the anchor must come from the optimizer state, not from here
    resumed.load_state_dict(saved_model)
    opt_resumed = AdamR(resumed.parameters(), lr=1e-2, delta_decay=0.2)
    opt_resumed.load_state_dict(saved_opt)
    _run(resumed, opt_resumed, grads[4:])
    for p, q in zip(whole.parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_bad_arguments() -> None:
    params = _model().parameters()
    with pytest.raises(SstkitError, match="delta_decay"):
        AdamR(params, delta_decay=-1.0)
    with pytest.raises(SstkitError, match="penalty"):
        AdamR(_model().parameters(), penalty="l3")
