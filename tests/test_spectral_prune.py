"""Singular-value pruning (sstkit.functional.spectral_prune) of dense and SST layers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sstkit.functional.spectral_prune import kept_values, prune_singular_values, svd_truncate
from sstkit.functional.sst import apply_sst
from sstkit.nn.spectral import SpectralLinear

torch.set_num_threads(1)


def test_svd_truncate_is_the_best_rank_r_approximation() -> None:
    torch.manual_seed(0)
    w = torch.randn(10, 6)
    pruned = svd_truncate(w, 0.5)  # keeps 3 of 6
    s = torch.linalg.svdvals(w)
    assert int(torch.linalg.matrix_rank(pruned)) == 3
    # Eckart–Young: the Frobenius error is the norm of the dropped singular values.
    torch.testing.assert_close(torch.linalg.norm(w - pruned), torch.linalg.norm(s[3:]), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(svd_truncate(w, 0.0), w)


def test_kept_values_matches_spectral_linear_merge() -> None:
    assert [kept_values(12, f) for f in (0.0, 0.1, 0.5, 0.9)] == [12, 11, 6, 2]
    with pytest.raises(ValueError, match="prune_fraction"):
        kept_values(4, 1.0)


def _model() -> nn.Module:
    torch.manual_seed(1)
    model = nn.Sequential()
    model.add_module("fc1", nn.Linear(8, 12))
    model.add_module("act", nn.ReLU())
    model.add_module("fc2", nn.Linear(12, 8))
    return model


def test_dense_layers_are_truncated_in_place_biases_kept() -> None:
    model = _model()
    bias = model.fc1.bias.detach().clone()
    names = prune_singular_values(model, 0.5, patterns=["fc1"])
    assert names == ["fc1"]
    assert int(torch.linalg.matrix_rank(model.fc1.weight)) == 4
    assert int(torch.linalg.matrix_rank(model.fc2.weight)) == 8  # not selected
    assert torch.equal(model.fc1.bias, bias)


def test_sst_layers_are_merged_from_their_own_spectrum() -> None:
    """An SST layer becomes nn.Linear with U[:, top] diag(s[top]) Vh[top]: the top s, not an SVD of W."""
    model = _model()
    apply_sst(model, 2, ["fc1", "fc2"], seed=0)
    with torch.no_grad():  # make s unsorted so "top" must follow s, not the slot order
        model.fc1.s.copy_(torch.tensor([1.0, 5.0, 2.0, 4.0, 0.5, 3.0, 0.1, 6.0]))
    U, s, Vh = model.fc1.factors()
    top = torch.topk(s, 4).indices
    expected = (U[:, top] * s[top]) @ Vh[top]
    x = torch.randn(3, 8)
    names = prune_singular_values(model, 0.5)  # SST layers are pruned whatever the patterns
    assert names == ["fc1", "fc2"]
    assert type(model.fc1) is nn.Linear and not any(isinstance(m, SpectralLinear) for m in model.modules())
    torch.testing.assert_close(model.fc1.weight, expected)
    assert model(x).shape == (3, 8)


def test_zero_fraction_keeps_the_function() -> None:
    model = _model()
    x = torch.randn(5, 8)
    before = model(x)
    prune_singular_values(model, 0.0, patterns=["*"])
    torch.testing.assert_close(model(x), before, rtol=1e-4, atol=1e-5)
