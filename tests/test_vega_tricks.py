"""Vega's fine-tuning tricks: FreeLB, SMART, self-calibration, transductive fine-tuning (issue 20).

Exactness checks against plain fine-tuning, the word-embedding-only perturbation, resumable EMA teachers, and
transductive runs that never read the evaluation labels.
"""

from __future__ import annotations

import math
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_BERT, tiny_config
from sstkit.callbacks import SMART, FreeLB, ReplacedTokenDetection, SelfCalibration, TransductiveFineTuning
from support import run_cli, summary

from sstkit.errors import SstkitError
from sstkit.functional.ema import EmaWeights
from sstkit.functional.embedding_noise import EmbeddingPerturbation, per_example_norm, project_to_ball, unperturbed
from sstkit.functional.freelb import freelb_loss
from sstkit.functional.rtd_simcse import mask_for_mlm, rtd_labels, simcse_loss
from sstkit.functional.self_calibration import calibration_alpha, self_calibration_term, soft_cross_entropy
from sstkit.functional.smart import symmetric_kl
from sstkit.functional.transductive import UnlabelledInputs, pseudo_label
from sstkit.models import TextClassifier


def dropout_model() -> TextClassifier:
    """A tiny random BERT in train mode with dropout on, so that dropout masks matter."""
    torch.manual_seed(0)
    return TextClassifier("minilm", pretrained=False, config_overrides=TINY_BERT, head_dropout=0.1).train()


def batch(n: int = 4, length: int = 7) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(n, length, dtype=torch.long)
    mask[0, 5:] = 0  # one padded example
    return {"input_ids": torch.randint(0, 1000, (n, length), generator=g), "attention_mask": mask,
            "labels": torch.tensor([0, 1, 1, 0][:n])}


def grads_of(model: TextClassifier, b: dict[str, torch.Tensor], seed: int = 5,
             callbacks: tuple = ()) -> dict[str, torch.Tensor]:
    """One training_step (with whatever methods are set up) and its backward, in the order of Lightning's
    automatic-optimisation closure (training_step, zero_grad, on_before_backward hooks, backward); the parameter
    gradients. Gradients left from an earlier step are there when the step starts, as under Lightning."""
    torch.manual_seed(seed + 1)
    for p in model.parameters():
        p.grad = torch.randn_like(p)  # stale: Lightning zeroes only after training_step
    torch.manual_seed(seed)
    loss = model.training_step(b, 0)
    model.zero_grad(set_to_none=True)
    for cb in callbacks:
        cb.on_before_backward(None, model, loss)
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], exact: bool = True) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if exact:
            assert torch.equal(a[key], b[key]), key
        else:
            torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5, msg=key)


# --- FreeLB -----------------------------------------------------------------------------------------------------
def test_freelb_one_step_no_init_is_plain_fine_tuning_exactly() -> None:
    b = batch()
    plain = grads_of(dropout_model(), b)
    model = dropout_model()
    cb = FreeLB(steps=1, init_mag=0.0)
    cb.setup(None, model, "fit")
    assert_same(grads_of(model, b, callbacks=(cb,)), plain)


def test_freelb_replays_the_dropout_mask_across_passes() -> None:
    """With α = 0 and δ_0 = 0, K passes see the same input; the same dropout mask makes them the plain gradient."""
    b = batch()
    plain = grads_of(dropout_model(), b)
    model = dropout_model()
    cb = FreeLB(steps=3, adv_lr=0.0, init_mag=0.0)
    cb.setup(None, model, "fit")
    # all three passes count, though Lightning zeroes the gradients between training_step and backward
    assert_same(grads_of(model, b, callbacks=(cb,)), plain, exact=False)


def test_freelb_adversarial_steps_change_the_gradients_and_respect_the_bound() -> None:
    b = batch()
    plain = grads_of(dropout_model(), b)
    model = dropout_model()
    cb = FreeLB(steps=2, adv_lr=0.5, init_mag=0.1)
    cb.setup(None, model, "fit")
    adv = grads_of(model, b, callbacks=(cb,))
    assert any(not torch.allclose(adv[k], plain[k]) for k in plain)
    delta = torch.randn(4, 7, 8) * 3
    assert bool((per_example_norm(project_to_ball(delta, 0.5)) <= 0.5 + 1e-6).all())


def test_delta_enters_the_word_embeddings_only() -> None:
    """δ reaches the embedding sum through the word lookup; position and token-type embeddings never see it."""
    model = dropout_model().eval()
    emb = model.encoder.embeddings
    seen: dict[str, list[torch.Tensor]] = {"position": [], "type": [], "sum": []}
    emb.position_embeddings.register_forward_hook(lambda m, i, o: seen["position"].append(o.detach().clone()))
    emb.token_type_embeddings.register_forward_hook(lambda m, i, o: seen["type"].append(o.detach().clone()))
    emb.LayerNorm.register_forward_hook(lambda m, i, o: seen["sum"].append(i[0].detach().clone()))
    perturb = EmbeddingPerturbation.attach(model)
    assert EmbeddingPerturbation.attach(model) is perturb  # idempotent: one hook however often setup runs
    b = batch()
    delta = torch.randn(4, 7, perturb.dim)
    with torch.no_grad():
        model(b["input_ids"], b["attention_mask"])
        with perturb.adding(delta):
            model(b["input_ids"], b["attention_mask"])
    assert torch.equal(seen["position"][0], seen["position"][1]) and torch.equal(seen["type"][0], seen["type"][1])
    torch.testing.assert_close(seen["sum"][1] - seen["sum"][0], delta, atol=1e-6, rtol=0)
    with pytest.raises(SstkitError, match="does not fit"), torch.no_grad(), perturb.adding(delta[:, :3]):
        model(b["input_ids"], b["attention_mask"])


def test_freelb_core_in_a_plain_loop_returns_the_mean_loss() -> None:
    model = dropout_model()
    b = batch()
    perturb = EmbeddingPerturbation.attach(model)
    losses = []

    def loss_of() -> torch.Tensor:
        loss = F.cross_entropy(model(b["input_ids"], b["attention_mask"]), b["labels"])
        losses.append(float(loss.detach()))
        return loss

    out = freelb_loss(loss_of, perturb, b["attention_mask"], steps=3, adv_lr=0.3, init_mag=0.1)
    assert len(losses) == 3 and float(out) == pytest.approx(sum(losses) / 3, rel=1e-5)
    assert perturb.delta is None  # the hook is inactive outside the passes


def test_bad_arguments_name_the_value() -> None:
    with pytest.raises(SstkitError, match="FreeLB: steps must be >= 1, got 0"):
        FreeLB(steps=0)
    with pytest.raises(SstkitError, match="SMART.weight must be >= 0"):
        SMART(weight=-1)
    with pytest.raises(SstkitError, match="SelfCalibration.alpha_max"):
        SelfCalibration(alpha_max=2)
    with pytest.raises(SstkitError, match="TransductiveFineTuning.split"):
        TransductiveFineTuning(split="train")


# --- SMART ------------------------------------------------------------------------------------------------------
def test_smart_zero_weight_is_plain_fine_tuning() -> None:
    b = batch()
    plain = grads_of(dropout_model(), b)
    model = dropout_model()
    SMART(weight=0.0).setup(None, model, "fit")
    assert_same(grads_of(model, b), plain)


def test_smart_regularises_and_bregman_teacher_resumes() -> None:
    b = batch()
    plain = grads_of(dropout_model(), b)
    model = dropout_model()
    cb = SMART(weight=1.0, epsilon=1e-2, bregman_weight=1.0)
    cb.setup(None, model, "fit")
    assert set(model.extra_loss_names) == {"smart", "smart_bregman"}
    smart = grads_of(model, b)
    assert any(not torch.allclose(smart[k], plain[k]) for k in plain)
    # symmetric KL is symmetric, zero on equal inputs
    x, y = torch.randn(3, 2), torch.randn(3, 2)
    assert float(symmetric_kl(x, y)) == pytest.approx(float(symmetric_kl(y, x)))
    assert float(symmetric_kl(x, x)) == pytest.approx(0.0, abs=1e-7)
    cb.ema.update(model)
    other = SMART(bregman_weight=1.0)
    other.load_state_dict(cb.state_dict())
    assert all(torch.equal(other.ema.shadow[k], v) for k, v in cb.ema.shadow.items())


# --- EMA teacher and self-calibration ---------------------------------------------------------------------------
def test_ema_teacher_swaps_back_and_averages() -> None:
    model = dropout_model()
    ema = EmaWeights(0.5)
    ema.update(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    name = "head.1.weight"
    torch.testing.assert_close(ema.shadow[name], before[name] + 0.5)
    with ema.swapped(model):
        assert not model.training
        torch.testing.assert_close(model.head[1].weight.detach(), before[name] + 0.5)
    assert model.training and torch.equal(model.head[1].weight, before[name] + 1.0)


def test_self_calibration_is_cross_entropy_to_the_mixed_target() -> None:
    logits, teacher = torch.randn(5, 3, requires_grad=True), torch.randn(5, 3)
    labels = torch.tensor([0, 2, 1, 1, 0])
    alpha = 0.3
    target = (1 - alpha) * F.one_hot(labels, 3).float() + alpha * teacher.softmax(-1)
    total = F.cross_entropy(logits, labels) + self_calibration_term(logits, labels, teacher, alpha)
    torch.testing.assert_close(total, soft_cross_entropy(logits, target))
    assert calibration_alpha(0, 0.5, 10) == 0 and calibration_alpha(5, 0.5, 10) == 0.25
    assert calibration_alpha(20, 0.5, 10) == 0.5


def test_self_calibration_at_alpha_zero_is_plain_fine_tuning() -> None:
    b = batch()
    plain = grads_of(dropout_model(), b)
    model = dropout_model()
    SelfCalibration(alpha_max=0.0).setup(None, model, "fit")
    assert_same(grads_of(model, b), plain)


# --- transductive -----------------------------------------------------------------------------------------------
class NoLabels:
    """A tokenised split whose label column raises when read."""

    def __init__(self, ids: torch.Tensor, offsets: torch.Tensor) -> None:
        self.ids, self.offsets = ids, offsets

    @property
    def labels(self) -> torch.Tensor:
        raise AssertionError("the evaluation labels were read")


def _split(n: int = 9) -> NoLabels:
    g = torch.Generator().manual_seed(3)
    lengths = torch.randint(3, 8, (n,), generator=g)
    offsets = torch.zeros(n + 1, dtype=torch.long)
    offsets[1:] = lengths.cumsum(0)
    return NoLabels(torch.randint(5, 1000, (int(offsets[-1]),), generator=g), offsets)


def test_pseudo_labels_never_read_the_evaluation_labels() -> None:
    model = dropout_model().eval()
    split = _split()
    inputs = UnlabelledInputs.of(split)  # would raise if it touched split.labels
    logits_of = lambda b: model(b["input_ids"], b["attention_mask"])  # noqa: E731
    kept = pseudo_label(logits_of, inputs, threshold=0.0, batch_size=4)
    assert len(kept) == 9 and kept.indices.tolist() == list(range(9))
    strict = pseudo_label(logits_of, inputs, threshold=float(kept.confidence.median()), batch_size=4)
    assert 0 < len(strict) < 9 and bool((strict.confidence >= kept.confidence.median()).all())


def test_transductive_callback_reads_inputs_only_and_marks_the_run(write_config, data_dir: Path,
                                                                   tmp_path: Path) -> None:
    cb = TransductiveFineTuning(threshold=0.0)
    dm = types.SimpleNamespace(datasets={"test": _split(), "train": list(range(96))}, setup=lambda stage: None)
    assert len(cb._split_inputs(types.SimpleNamespace(datamodule=dm))) == 9
    config = tiny_config(data_dir, max_steps=3)
    config["trainer"]["callbacks"] = [{"class_path": "sstkit.callbacks.TransductiveFineTuning",
                                       "init_args": {"threshold": 0.0, "start_step": 1}}]
    cli = run_cli("fit", "--config", str(write_config(config)), "--run_root", str(tmp_path), "--name", "td")
    callback = next(c for c in cli.trainer.callbacks if isinstance(c, TransductiveFineTuning))
    assert len(callback.labelled) == 21  # every test input pseudo-labelled at step 1
    metrics = summary(tmp_path, "td")["metrics"]
    assert metrics["method/transductive/transductive"] == 1.0 and metrics["method/transductive/pseudo_labels"] == 21


# --- RTD + SimCSE continued pretraining -------------------------------------------------------------------------
def test_rtd_labels_are_exact_and_masking_spares_special_and_padding() -> None:
    original = torch.tensor([[101, 7, 8, 9, 102, 0]])
    corrupted = torch.tensor([[101, 7, 5, 9, 102, 0]])  # position 1 "replaced" by itself, position 2 by 5
    mask = torch.tensor([[1, 1, 1, 1, 1, 0]])
    assert rtd_labels(original, corrupted, mask).tolist() == [[0.0, 0.0, 1.0, 0.0, 0.0, 0.0]]
    ids = torch.randint(1000, 2000, (64, 12))
    ids[:, 0], ids[:, -1] = 101, 102
    attn = torch.ones_like(ids)
    attn[:, 9:] = 0
    masked, chosen = mask_for_mlm(ids, attn, [0, 101, 102, 103], mask_token_id=103, prob=0.5)
    assert not chosen[:, 0].any() and not chosen[:, -1].any() and not chosen[:, 9:].any()
    assert 0.3 < float(chosen[:, 1:9].float().mean()) < 0.7
    assert torch.equal(masked[chosen], torch.full((int(chosen.sum()),), 103)) and torch.equal(masked[~chosen], ids[~chosen])


def test_simcse_on_identical_views_without_dropout_has_its_closed_form() -> None:
    model = dropout_model().eval()  # dropout off: both views are the same embedding
    b = batch()
    with torch.no_grad():
        z1, z2 = model.encode(b["input_ids"], b["attention_mask"]), model.encode(b["input_ids"], b["attention_mask"])
    assert torch.equal(z1, z2)
    tau, n = 0.05, len(z1)
    cos = [[float(F.cosine_similarity(z1[i], z1[j], dim=0)) for j in range(n)] for i in range(n)]
    closed = sum(math.log(sum(math.exp((cos[i][j] - cos[i][i]) / tau) for j in range(n))) for i in range(n)) / n
    assert float(simcse_loss(z1, z2, tau)) == pytest.approx(closed, rel=1e-4)


def test_rtd_pretraining_trains_encoder_and_generator_and_exports(tmp_path: Path) -> None:
    model = dropout_model()
    cb = ReplacedTokenDetection(generator_scale=0.5, export_dir=str(tmp_path / "adapted"))
    cb.setup(None, model, "fit")
    generator = model.rtd_generator
    cb.setup(None, model, "validate")
    assert model.rtd_generator is generator  # surgery once
    b = batch()
    b["labels"] = torch.tensor([7, 7, 7, 7])  # labels are never used: an out-of-range class would fail CE
    model.zero_grad()
    torch.manual_seed(0)
    loss = model.training_step(b, 0)
    loss.backward()
    assert torch.isfinite(loss)
    assert model.rtd_generator.bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    assert model.encoder.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    assert model.head[1].weight.grad is None  # the classification head is not part of the objective
    cb.on_train_end(types.SimpleNamespace(is_global_zero=True), model)
    adapted = TextClassifier(str(tmp_path / "adapted"), pretrained=True)
    for key, value in model.encoder.state_dict().items():
        torch.testing.assert_close(adapted.encoder.state_dict()[key], value, msg=key)


def test_freelb_perturbs_only_the_trained_batch_of_stacked_methods() -> None:
    """Under FreeLB, the transductive pseudo batch (another shape) and the EMA teacher see clean embeddings."""
    model = dropout_model()
    td, cal = TransductiveFineTuning(threshold=0.0), SelfCalibration(alpha_max=0.5, ramp_steps=0)
    FreeLB(steps=2, init_mag=0.5).setup(None, model, "fit")
    td.setup(None, model, "fit")
    cal.setup(None, model, "fit")
    td.inputs, td._pad, td._train_size = UnlabelledInputs.of(_split()), 0, 96
    td.labelled = pseudo_label(lambda b: model(b["input_ids"], b["attention_mask"]), td.inputs, 0.0)
    seen = []
    model.encoder.embeddings.LayerNorm.register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    loss = model.training_step(batch(), 0)
    loss.backward()
    assert torch.isfinite(loss) and len(seen) == 2 * 3  # per pass: the batch, the EMA teacher, the pseudo batch
    with EmbeddingPerturbation.attach(model).adding(torch.ones(4, 7, 32)), unperturbed(model):
        assert EmbeddingPerturbation.attach(model).delta is None
