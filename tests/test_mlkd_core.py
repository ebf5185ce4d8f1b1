"""MLKD's functional core: zero loss for student = teacher, padding never counts, β trains, layer defaults."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import OPTConfig, OPTForCausalLM

from sstkit.errors import SstkitError
from sstkit.functional.ood.mlkd import (
    HiddenDistiller,
    default_student_layers,
    mlkd_loss,
    prediction_distillation,
    reinitialize_,
)
from sstkit.functional.ood.scores import lm_scores, sequence_nll


def tiny_opt(seed: int = 0, layers: int = 3) -> OPTForCausalLM:
    torch.manual_seed(seed)
    config = OPTConfig(hidden_size=16, num_hidden_layers=layers, num_attention_heads=2, ffn_dim=32, vocab_size=40,
                       word_embed_proj_dim=16, max_position_embeddings=32, dropout=0.0, pad_token_id=1)
    return OPTForCausalLM(config).eval()


def run(model: OPTForCausalLM, ids: torch.Tensor, mask: torch.Tensor):
    return model(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False)


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(2, 40, (3, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 4:] = 0
    ids[mask == 0] = 1  # pad id
    return ids, mask


def test_loss_is_zero_when_student_equals_teacher_with_identity_projection() -> None:
    teacher = tiny_opt()
    student = copy.deepcopy(teacher)
    ids, mask = batch()
    s, t = run(student, ids, mask), run(teacher, ids, mask)
    # K = 1: each student layer's nearest teacher layer is itself (distance 0 through the identity projection).
    distiller = HiddenDistiller(16, 16, student_layers=[1, 2], teacher_layers=[1, 2, 3], top_k=1)
    with torch.no_grad():
        total, pred, hidden = mlkd_loss(s.logits, t.logits, s.hidden_states, t.hidden_states, distiller, mask, 2.0)
    assert float(pred) == pytest.approx(0.0, abs=1e-6) and float(hidden) == pytest.approx(0.0, abs=1e-10)
    assert float(total) == pytest.approx(0.0, abs=1e-6)
    # A different student is not at zero: the test can fail.
    other = run(tiny_opt(seed=1), ids, mask)
    assert float(mlkd_loss(other.logits, t.logits, other.hidden_states, t.hidden_states, distiller, mask)[0]) > 1e-3


def test_padding_positions_change_no_loss_and_no_score() -> None:
    teacher, student = tiny_opt(0), tiny_opt(1)
    ids, mask = batch()
    distiller = HiddenDistiller(16, 16, student_layers=[1, 2], teacher_layers=[1, 2, 3], top_k=2)
    s, t = run(student, ids, mask), run(teacher, ids, mask)
    base = mlkd_loss(s.logits, t.logits, s.hidden_states, t.hidden_states, distiller, mask)[0]
    nll = sequence_nll(s.logits, ids, mask)
    # Other tokens in the padded slots: neither the loss nor any example's score moves.
    ids2 = ids.clone()
    ids2[mask == 0] = 7
    s2, t2 = run(student, ids2, mask), run(teacher, ids2, mask)
    again = mlkd_loss(s2.logits, t2.logits, s2.hidden_states, t2.hidden_states, distiller, mask)[0]
    assert float(again) == pytest.approx(float(base), rel=1e-5)
    torch.testing.assert_close(sequence_nll(s2.logits, ids2, mask), nll)
    # A padded example scores as it does alone without padding.
    alone = lm_scores(student, ids[2:3, :4], mask[2:3, :4])
    torch.testing.assert_close(lm_scores(student, ids, mask)[2:3], alone, rtol=1e-5, atol=1e-5)


def test_sequence_nll_shifts_the_mask_with_the_targets() -> None:
    logits = torch.zeros(1, 4, 5)
    logits[0, 0, 3] = 10.0  # position 0 predicts token 3 (real), position 2 would predict the pad
    ids = torch.tensor([[2, 3, 4, 1]])
    mask = torch.tensor([[1, 1, 1, 0]])
    expected = torch.stack([torch.log_softmax(logits[0, i], -1)[ids[0, i + 1]] for i in range(2)]).neg().mean()
    torch.testing.assert_close(sequence_nll(logits, ids, mask), expected.view(1))


def test_temperature_and_kl_direction() -> None:
    zs, zt = torch.randn(2, 3, 6), torch.randn(2, 3, 6)
    p = torch.softmax(zt / 2, -1)
    expected = (p * (torch.log_softmax(zt / 2, -1) - torch.log_softmax(zs / 2, -1))).sum(-1).mean()
    torch.testing.assert_close(prediction_distillation(zs, zt, None, 2.0), expected)
    with pytest.raises(SstkitError, match="temperature"):
        prediction_distillation(zs, zt, None, 0.0)


def test_beta_and_projection_train_and_top_k_picks_the_nearest() -> None:
    distiller = HiddenDistiller(4, 4, student_layers=[0], teacher_layers=[0, 1, 2], top_k=2)
    torch.testing.assert_close(distiller.beta(), torch.ones(1, 2))
    hs = [torch.zeros(1, 1, 4)]
    ht = [torch.zeros(1, 1, 4), torch.full((1, 1, 4), 1.0), torch.full((1, 1, 4), 3.0)]
    # Distances 0, 1, 9: K = 2 takes 0 and 1.
    loss = distiller(hs, ht)
    assert float(loss) == pytest.approx(1.0)
    loss.backward()
    assert distiller.beta_logits.grad is not None and distiller.beta_logits.grad.abs().sum() > 0
    assert distiller.projections[0].weight.grad is not None
    frozen = HiddenDistiller(4, 4, [0], [0, 1], top_k=1, shared_projection=False, train_beta=False)
    assert len(frozen.projections) == 2 and not frozen.beta_logits.requires_grad
    with pytest.raises(SstkitError, match="top_k"):
        HiddenDistiller(4, 4, [0], [0, 1], top_k=3)
    with pytest.raises(SstkitError, match="layer 5 does not exist"):
        HiddenDistiller(4, 4, [5], [0], top_k=1)(hs, ht)


def test_default_layers_and_reinitialisation() -> None:
    assert default_student_layers(12) == [3, 4, 5, 6, 7, 8, 9] and default_student_layers(2) == [1]
    model = tiny_opt(0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.random.get_rng_state()
    reinitialize_(model, seed=5)
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is untouched
    assert not torch.equal(before["model.decoder.layers.0.fc1.weight"], model.state_dict()["model.decoder.layers.0.fc1.weight"])
    again = reinitialize_(tiny_opt(3), seed=5)
    torch.testing.assert_close(again.state_dict(), model.state_dict())
