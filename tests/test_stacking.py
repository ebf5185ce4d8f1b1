"""Method stacking: every refused pair refuses with its reason; every pair that composes does what it should.

The pair table is ``sstkit.stacking.REFUSED`` (and ``docs/methods/README.md``); the tests below walk it, so a
method added to ``METHODS`` without a decision for each pair fails ``test_every_pair_is_decided_and_tested``.
"""

from __future__ import annotations

import copy
import itertools
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from sstkit.callbacks import (
    MLKD,
    SMART,
    AttackSuccessRate,
    AttributeDiscriminator,
    CleanUnlearning,
    FreeLB,
    GaLore,
    HessianQuantization,
    HyperAdapters,
    LoRA,
    ReLoRA,
    ReplacedTokenDetection,
    SelfCalibration,
    SparseSpectralTraining,
    TransductiveFineTuning,
)
from test_sst_callback import batch, tiny_model

from sstkit.errors import SstkitError
from sstkit.functional.backdoor.common import attack_success_rate
from sstkit.functional.lora import find_lora_layers
from sstkit.optim import AdamR, GaLoreAdamW
from sstkit.optim.galore import galore_param_groups
from sstkit.stacking import METHODS, REFUSED, check_pair, methods_on, parameter_method

CALLBACKS = {
    "sst": lambda: SparseSpectralTraining(rank=2),
    "lora": lambda: LoRA(rank=2, alpha=4),
    "relora": lambda: ReLoRA(rank=2, alpha=4, merge_every=2),
    "qbert": lambda: HessianQuantization(bits="4", num_groups=2),
    "cul": lambda: CleanUnlearning(),
    "asr": lambda: AttackSuccessRate(),
    "freelb": lambda: FreeLB(steps=2),
    "smart": lambda: SMART(epsilon=1e-2, bregman_weight=0.5),
    "selfcal": lambda: SelfCalibration(ramp_steps=1),
    "transductive": lambda: TransductiveFineTuning(),
    "rtd": lambda: ReplacedTokenDetection(),
    "mlkd": lambda: MLKD(),
    "hyper_adapters": lambda: HyperAdapters(bottleneck=2, task_dim=4, hyper_dim=4),
    "galore": lambda: GaLore(rank=2, update_proj_gap=1),
    "attribute_head": lambda: AttributeDiscriminator(batch_size=4),
}
CAUSAL_LM_METHODS = ("mlkd", "attribute_head")  # set up first, they need a causal LM
# Loss-side methods (issue 20): they change only the training loss, so they compose with every parameterisation,
# optimizer and measurement that is not itself defined by the plain loss (CUL), and with each other but FreeLB+SMART.
TRICKS = ("freelb", "smart", "selfcal", "transductive")
# Pairs that compose, each with the test below that checks what the pair means.
COMPOSES = {
    frozenset({"lora", "adamr"}): "test_lora_with_adamr_decays_the_low_rank_delta",
    frozenset({"qbert", "adamr"}): "test_qat_with_adamr_anchors_the_latent_weights",
    frozenset({"cul", "adamr"}): "test_cul_with_adamr_is_ascent_anchored_at_the_backdoored_weights",
    **{frozenset({"asr", m}): "test_asr_measures_the_stacked_model" for m in METHODS
       if m not in ("asr", *CAUSAL_LM_METHODS)},
    **{frozenset({t, m}): "test_loss_tricks_compose" for t in TRICKS for m in METHODS
       if m not in ("asr", "cul", "rtd", *CAUSAL_LM_METHODS, t) and frozenset({t, m}) != frozenset({"freelb", "smart"})},
    frozenset({"rtd", "adamr"}): "test_loss_tricks_compose",
    frozenset({"hyper_adapters", "adamr"}): "test_hyper_adapters_with_adamr_decays_the_generated_update",
    frozenset({"mlkd", "galore"}): "test_mlkd_with_galore_projects_only_the_student",
    **{frozenset({"attribute_head", m}): "test_attribute_head_composes" for m in ("sst", "lora", "relora", "galore",
                                                                                  "adamr")},
}


def test_every_pair_is_decided_and_tested() -> None:
    pairs = {frozenset(p) for p in itertools.combinations(METHODS, 2)}
    assert set(REFUSED) | set(COMPOSES) == pairs
    assert not set(REFUSED) & set(COMPOSES)
    assert all(name in globals() for name in COMPOSES.values())


def tiny_lm() -> torch.nn.Module:
    from sstkit.models import CausalLM

    torch.manual_seed(0)
    return CausalLM("tiny", vocab_size=64).eval()


def _setup(method: str, model: torch.nn.Module) -> None:
    CALLBACKS[method]().setup(None, model, "fit")


# --- refusals -------------------------------------------------------------------------------------------------
CALLBACK_REFUSALS = [(a, b) for pair in REFUSED for a, b in itertools.permutations(pair) if "adamr" not in pair]


@pytest.mark.parametrize(("first", "second"), CALLBACK_REFUSALS, ids=[f"{a}-then-{b}" for a, b in CALLBACK_REFUSALS])
def test_second_callback_refuses_with_reason(first: str, second: str) -> None:
    # MLKD and the attribute head need causal LMs: set up first, they need one; set up second, they refuse first.
    model = tiny_lm() if first in CAUSAL_LM_METHODS else tiny_model()
    _setup(first, model)
    state = copy.deepcopy(model.state_dict())
    reason = REFUSED[frozenset({first, second})]
    with pytest.raises(SstkitError, match=rf"{METHODS[second]} cannot be stacked on {METHODS[first]}") as err:
        _setup(second, model)
    assert reason in str(err.value)
    # Refused before any surgery: the model is as the first method left it.
    assert methods_on(model) == (first,) and model.state_dict().keys() == state.keys()


@pytest.mark.parametrize("first", ["sst", "relora"])
def test_adamr_refuses_parameters_of_resampled_or_merged_methods(first: str) -> None:
    model = tiny_model()
    _setup(first, model)
    with pytest.raises(SstkitError, match=rf"AdamR cannot be stacked on {METHODS[first]} \(\d+ of the optimizer"):
        AdamR(model.parameters(), lr=1e-3, delta_decay=0.1)
    # λ = 0 is plain Adam, and a group that turns the decay off for the method's parameters is allowed.
    AdamR(model.parameters(), lr=1e-3, delta_decay=0.0)
    owned = {id(p) for layer in _layers(first, model) for p in layer.parameters()}
    rest = [p for p in model.parameters() if id(p) not in owned]
    mine = [p for p in model.parameters() if id(p) in owned]
    AdamR([{"params": rest}, {"params": mine, "delta_decay": 0.0}], lr=1e-3, delta_decay=0.1)


def _layers(method: str, model: torch.nn.Module) -> list[torch.nn.Module]:
    from sstkit.functional.sst import find_spectral_layers

    return list(find_spectral_layers(model).values()) if method == "sst" else list(find_lora_layers(model).values())


def test_setup_again_is_idempotent_and_same_method_allowed() -> None:
    model = tiny_model()
    cb = SparseSpectralTraining(rank=2)
    cb.setup(None, model, "fit")
    cb.setup(None, model, "test")  # setup runs again for validate/test: no refusal of itself
    AttackSuccessRate().setup(None, model, "fit")
    assert methods_on(model) == ("sst", "asr")
    check_pair("sst", "sst")


# --- pairs that compose -----------------------------------------------------------------------------------------
def _steps(model: torch.nn.Module, optimizer: torch.optim.Optimizer, steps: int, ascent: bool = False) -> None:
    b = batch()
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(b["input_ids"], b["attention_mask"]), b["labels"])
        (-loss if ascent else loss).backward()
        optimizer.step()
    model.eval()


def _lora_delta(model: torch.nn.Module) -> float:
    total = 0.0
    for layer in find_lora_layers(model).values():
        a, b = layer.lora_A["default"].weight.detach(), layer.lora_B["default"].weight.detach()
        total += float((layer.scaling["default"] * b @ a).pow(2).sum())
    return total**0.5


def test_lora_with_adamr_decays_the_low_rank_delta() -> None:
    """AdamR on LoRA: B starts at 0, so pulling (A, B) to their start shrinks ΔW = (alpha/r)·B A; W0 stays put."""
    deltas = {}
    for lam in (0.0, 0.1):
        model = tiny_model()
        _setup("lora", model)
        frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
        _steps(model, AdamR([p for p in model.parameters() if p.requires_grad], lr=1e-2, delta_decay=lam), 8)
        deltas[lam] = _lora_delta(model)
        assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert 0 < deltas[0.1] < 0.8 * deltas[0.0]


def test_hyper_adapters_with_adamr_decays_the_generated_update() -> None:
    """AdamR on hypernetwork adapters: G_up starts at 0, so pulling it to its start shrinks every generated W_up."""
    norms = {}
    for lam in (0.0, 0.3):
        model = tiny_model()
        _setup("hyper_adapters", model)
        frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
        _steps(model, AdamR([p for p in model.parameters() if p.requires_grad], lr=1e-2, delta_decay=lam), 8)
        norms[lam] = float(model.adapter_bank.up_generator.weight.detach().norm())
        assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert 0 < norms[0.3] < 0.8 * norms[0.0]


def test_qat_with_adamr_anchors_the_latent_weights() -> None:
    """AdamR under Q-BERT's QAT regularises the latent full-precision weights (the ones the STE updates)."""
    from sstkit.nn.quant import QuantLinear

    drift = {}
    for lam in (0.0, 0.1):
        model = tiny_model()
        _setup("qbert", model)
        quant = [m for m in model.modules() if isinstance(m, QuantLinear)]
        assert quant and all(m.bits == 4 for m in quant if m.bits is not None)
        start = {id(m.weight): m.weight.detach().clone() for m in quant}
        optimizer = AdamR(model.parameters(), lr=1e-2, delta_decay=lam)
        _steps(model, optimizer, 8)
        index = {id(p): i for i, p in enumerate(optimizer._params())}
        for m in quant:  # the anchor is the latent weight at the first step, not its quantised value
            assert torch.equal(optimizer.anchors[index[id(m.weight)]], start[id(m.weight)])
        drift[lam] = sum(float((m.weight.detach() - start[id(m.weight)]).pow(2).sum()) for m in quant) ** 0.5
    assert 0 < drift[0.1] < 0.8 * drift[0.0]


def test_cul_with_adamr_is_ascent_anchored_at_the_backdoored_weights(tmp_path: Any) -> None:
    """CUL loads init_from in setup, before the optimizer exists: AdamR's anchor is the model to expose."""
    source = tiny_model()
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.05)
    ckpt = tmp_path / "backdoored.ckpt"
    torch.save({"state_dict": source.state_dict()}, ckpt)
    drift, losses = {}, {}
    for lam in (0.0, 0.3):
        model = tiny_model()
        cul = CleanUnlearning(init_from=str(ckpt), max_grad_norm=None)
        cul.setup(None, model, "fit")
        optimizer = AdamR(model.parameters(), lr=1e-2, delta_decay=lam)
        b = batch()
        model.train()
        for _ in range(6):
            optimizer.zero_grad()
            F.cross_entropy(model(b["input_ids"], b["attention_mask"]), b["labels"]).backward()
            cul.on_before_optimizer_step(None, model, optimizer)  # descent gradients -> ascent
            optimizer.step()
        model.eval()
        for anchor, p in zip(optimizer.anchors.values(), source.parameters(), strict=True):
            assert torch.equal(anchor, p.detach())
        drift[lam] = sum(float((p.detach() - q.detach()).pow(2).sum())
                         for p, q in zip(model.parameters(), source.parameters())) ** 0.5
        with torch.no_grad():
            losses[lam] = float(F.cross_entropy(model(b["input_ids"], b["attention_mask"]), b["labels"]))
    with torch.no_grad():
        start_loss = float(F.cross_entropy(source.eval()(b["input_ids"], b["attention_mask"]), b["labels"]))
    assert losses[0.0] > start_loss and losses[0.3] > start_loss  # still an ascent
    assert drift[0.3] < 0.8 * drift[0.0]  # but held near the backdoored weights


class _Trainer(SimpleNamespace):
    """What AttackSuccessRate.measure reads from a trainer: the data module and a (single-process) reduce."""

    def __init__(self, datamodule: Any) -> None:
        super().__init__(datamodule=datamodule, strategy=SimpleNamespace(reduce=lambda t, reduce_op: t))


@pytest.mark.parametrize("method", [m for m in CALLBACKS if m not in ("asr", *CAUSAL_LM_METHODS)])
def test_asr_measures_the_stacked_model(method: str) -> None:
    """ASR after any method's surgery is the ASR of the model as that method changed it."""
    model = tiny_model()
    _setup(method, model)
    if method in ("sst", "lora", "relora"):
        _steps(model, torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=5e-2), 3)
    asr = AttackSuccessRate(target_label=1)
    asr.setup(None, model, "test")
    assert methods_on(model) == (method, "asr")
    b = batch(4)
    triggered = [{**b, "labels": torch.tensor([0, 0, 0, 1])}]
    dm = SimpleNamespace(triggered_dataloader=lambda split: triggered, target_label=1)
    value = asr.measure(_Trainer(dm), model, "test")
    with torch.no_grad():
        preds = model(b["input_ids"], b["attention_mask"]).argmax(-1)
    assert value == pytest.approx(float((preds[:3] == 1).double().mean()))
    assert value == attack_success_rate(model, triggered, 1)


COMPOSING_TRICKS = sorted({tuple(sorted(p)) for p, test in COMPOSES.items() if test == "test_loss_tricks_compose"})


@pytest.mark.parametrize(("first", "second"), COMPOSING_TRICKS, ids=[f"{a}+{b}" for a, b in COMPOSING_TRICKS])
def test_loss_tricks_compose(first: str, second: str) -> None:
    """A loss-side trick stacked with another method: both are set up, and two AdamW/AdamR steps train the model."""
    from sstkit.models.base import SstkitModule

    model = tiny_model().train()
    assert isinstance(model, SstkitModule)
    for method in (first, second):
        if method != "adamr":
            _setup(method, model)
    assert methods_on(model) == tuple(m for m in (first, second) if m != "adamr")
    params = [p for p in model.parameters() if p.requires_grad]
    if "adamr" in (first, second):
        optimizer = AdamR(params, lr=1e-2, delta_decay=0.1)
    elif "galore" in (first, second):
        optimizer = _galore_optimizer(model, params)
    else:
        optimizer = torch.optim.AdamW(params)
    before = [p.detach().clone() for p in params]
    b = batch()
    for _ in range(2):
        optimizer.zero_grad()
        loss = model.training_step(b, 0)
        assert torch.isfinite(loss)
        loss.backward()
        optimizer.step()
    assert any(not torch.equal(p.detach(), q) for p, q in zip(params, before))
    tricks = {"freelb": model._loss_wrapper is not None, "rtd": hasattr(model, "rtd_generator"), "smart": "smart" in model.extra_loss_names,
              "selfcal": "selfcal" in model.extra_loss_names, "transductive": "transductive" in model.extra_loss_names}
    assert all(tricks[m] for m in (first, second) if m in tricks)


def _galore_optimizer(model: torch.nn.Module, params: list[torch.Tensor]) -> GaLoreAdamW:
    """GaLore-AdamW on ``params`` as the GaLore callback builds it: its selected weights projected at rank 2."""
    cb = CALLBACKS["galore"]()
    cb.setup(None, copy.deepcopy(model), "fit")  # names only; the copy keeps the model's method record intact
    names = set(cb.projected)
    targets = {id(p) for n, p in model.named_parameters() if n in names}
    assert targets, "GaLore selected no weight"
    return GaLoreAdamW(galore_param_groups([{"params": params}], targets, rank=2, update_proj_gap=1), lr=1e-2)


def test_mlkd_with_galore_projects_only_the_student() -> None:
    """MLKD then GaLore: GaLore projects the re-drawn student's projections (not the frozen teacher's), and a
    GaLore step moves each of them by a matrix of rank <= 2 (the projected update)."""
    model = tiny_lm().train()
    _setup("mlkd", model)
    _setup("galore", model)
    assert methods_on(model) == ("mlkd", "galore")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = _galore_optimizer(model, params)
    projected = [p for g in optimizer.param_groups if "rank" in g for p in g["params"]]
    assert projected and all(p.requires_grad for p in projected)
    before = [p.detach().clone() for p in projected]
    optimizer.zero_grad()
    model.training_step({"input_ids": torch.randint(0, 64, (2, 8)), "index": torch.arange(2)}, 0).backward()
    optimizer.step()
    deltas = [p.detach() - q for p, q in zip(projected, before)]
    assert any(d.abs().max() > 0 for d in deltas)
    assert all(torch.linalg.matrix_rank(d, rtol=1e-3) <= 2 for d in deltas)


class _CharTokenizer:
    """Enough of a tokenizer for SteerableLM on the 64-token tiny LM: one id per character."""

    pad_token_id = 1

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [4 + ord(c) % 60 for c in text]


ATTRIBUTE_PARTNERS = sorted(m for p, t in COMPOSES.items() if t == "test_attribute_head_composes" for m in p
                            if m != "attribute_head")


@pytest.mark.parametrize("head_first", [True, False], ids=["head-first", "head-second"])
@pytest.mark.parametrize("other", ATTRIBUTE_PARTNERS)
def test_attribute_head_composes(other: str, head_first: bool) -> None:
    """The attribute head with a parameterisation or optimizer of the LM, in either order: the head stays a plain,
    trainable nn.Linear that no surgery wrapped or froze, and two steps move both it and the other's parameters."""
    model = tiny_lm().train()
    head_cb = AttributeDiscriminator(batch_size=4)
    for method in (["attribute_head", other] if head_first else [other, "attribute_head"]):
        if method == "attribute_head":
            head_cb.setup(None, model, "fit")
        elif method != "adamr":
            _setup(method, model)
    head_cb.tokenizer, head_cb.texts, head_cb.labels = _CharTokenizer(), ["good", "bad film", "fine", "dull"], [1, 0, 1, 0]
    head = model.attribute_head.linear
    assert type(head) is torch.nn.Linear and all(p.requires_grad for p in head.parameters())
    assert "attribute_head" in model.extra_loss_names
    params = [p for p in model.parameters() if p.requires_grad]
    if other == "adamr":
        optimizer: torch.optim.Optimizer = AdamR(params, lr=1e-2, delta_decay=0.1)
        own = [p for p in params if parameter_method(p) is None]
    elif other == "galore":
        optimizer = _galore_optimizer(model, params)
        own = [p for g in optimizer.param_groups if "rank" in g for p in g["params"]]
    else:
        optimizer = torch.optim.AdamW(params, lr=1e-2)
        own = [p for p in params if parameter_method(p) == other]
    assert own and all(id(p) != id(head.weight) for p in own)
    before = [p.detach().clone() for p in (head.weight, *own)]
    for _ in range(2):
        optimizer.zero_grad()
        model.training_step({"input_ids": torch.randint(4, 64, (2, 8)), "index": torch.arange(2)}, 0).backward()
        optimizer.step()
    assert not torch.equal(head.weight.detach(), before[0])
    assert any(not torch.equal(p.detach(), q) for p, q in zip(own, before[1:]))
