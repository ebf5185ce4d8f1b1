"""PPC, PPLM-style and prompt control, and RLDAF, on tiny random LMs (seconds, no network)."""

from __future__ import annotations

import copy

import pytest
import torch
from chat_fixtures import tiny_lm, tiny_tokenizer

from sstkit.errors import SstkitError
from sstkit.generation.control import (
    RLDAF,
    AttributeHead,
    Controller,
    DecodeSettings,
    PPCController,
    PPLMController,
    PromptController,
    SteerableLM,
    controlled_generate,
    distinct_n,
    fit_attribute_head,
    next_token_kl,
    reinforce_loss,
    select_trainable,
)

PROMPTS = ["the cat sat", "a small model writes short", "how do I stop", "the weather"]
LABELS = [1, 0, 1, 0]
SAMPLE = DecodeSettings(max_new_tokens=6, temperature=1.0, seed=3, batch_size=3)


def make_lm(kind: str = "opt") -> SteerableLM:
    return SteerableLM(tiny_lm(kind), tiny_tokenizer())


def make_head(lm: SteerableLM, seed: int = 0) -> AttributeHead:
    torch.manual_seed(seed)
    return AttributeHead(lm.model.config.hidden_size)


@pytest.mark.parametrize("kind", ["opt", "llama"])
def test_step_size_zero_ppc_equals_unsteered_decoding(kind: str) -> None:
    lm = make_lm(kind)
    plain = controlled_generate(lm, PROMPTS, Controller(), LABELS, SAMPLE)
    for controller in (PPCController(make_head(lm), step_size=0.0, steps=2, kl_weight=0.5),
                       PPLMController(make_head(lm), step_size=0.0, steps=2)):
        steered = controlled_generate(lm, PROMPTS, controller, LABELS, SAMPLE)
        assert steered.token_ids == plain.token_ids, controller.name


def test_steering_changes_tokens_and_raises_the_attribute_probability() -> None:
    lm = make_lm()
    head = make_head(lm)
    plain = controlled_generate(lm, PROMPTS, Controller(), LABELS, SAMPLE)
    steered = controlled_generate(lm, PROMPTS, PPCController(head, step_size=1.0, steps=3, kl_weight=0.0), LABELS,
                                  SAMPLE)
    assert steered.token_ids != plain.token_ids
    # One gradient step on the soft prompt lowers -log p_D(a | h̃) for every row.
    ppc = PPCController(head, step_size=0.05, steps=1, kl_weight=0.0)
    ctx = ppc.start(lm, PROMPTS, torch.tensor(LABELS))
    reference = lm(*ctx.full(lm)).logits[:, -1].detach()
    soft = ctx.prompt.clone().requires_grad_(True)
    before, _, _ = ppc.objective(lm, *ctx.full(lm, soft), ctx.labels, reference)
    moved = ppc.step(soft, before, ctx.mask[..., None].float(), torch.ones(len(PROMPTS)))
    after, _, _ = ppc.objective(lm, *ctx.full(lm, moved), ctx.labels, reference)
    assert bool((after < before).all()), (before, after)


def test_kl_term_is_zero_at_the_unchanged_prompt() -> None:
    lm = make_lm()
    ppc = PPCController(make_head(lm), kl_weight=1.0)
    ctx = ppc.start(lm, PROMPTS, torch.tensor(LABELS))
    with torch.no_grad():
        reference = lm(*ctx.full(lm)).logits[:, -1]
    _, kl, _ = ppc.objective(lm, *ctx.full(lm, ctx.prompt.clone().requires_grad_(True)), ctx.labels, reference)
    assert torch.equal(kl, torch.zeros_like(kl))
    assert float(next_token_kl(reference, reference + torch.randn_like(reference)).min()) > 0


def test_batched_decoding_matches_one_prompt_at_a_time() -> None:
    lm = make_lm()
    greedy = DecodeSettings(max_new_tokens=5, temperature=0.0, batch_size=4)
    ppc = PPCController(make_head(lm), step_size=1.0, steps=2, kl_weight=0.1)
    batched = controlled_generate(lm, PROMPTS, ppc, LABELS, greedy).token_ids
    alone = [controlled_generate(lm, [p], ppc, [a], greedy).token_ids[0] for p, a in zip(PROMPTS, LABELS)]
    assert batched == alone


def test_prompt_controller_prepends_the_attribute_text() -> None:
    lm = make_lm()
    greedy = DecodeSettings(max_new_tokens=4, temperature=0.0)
    out = controlled_generate(lm, ["the cat"], PromptController({1: "a dog ", 0: "the mat "}), [1], greedy)
    same = controlled_generate(lm, ["a dog the cat"], Controller(), [1], greedy)
    assert out.token_ids == same.token_ids
    with pytest.raises(SstkitError, match="no attribute prompt"):
        controlled_generate(lm, ["x"], PromptController({1: "a "}), [0], greedy)


def test_discriminator_learns_separable_labels_and_round_trips(tmp_path) -> None:
    lm = make_lm()
    texts = ["the cat sat on the mat"] * 8 + ["how do I stop a running program"] * 8
    head = fit_attribute_head(lm, texts, [1] * 8 + [0] * 8, epochs=200, lr=0.05)
    from sstkit.generation.control import head_accuracy

    assert head_accuracy(head, lm, texts, [1] * 8 + [0] * 8) == 1.0
    loaded = AttributeHead.load(head.save(tmp_path / "d.pt"))
    assert torch.equal(loaded.linear.weight, head.linear.weight)
    (tmp_path / "bad.pt").write_text("no")
    with pytest.raises(SstkitError, match="not an sstkit attribute discriminator"):
        AttributeHead.load(tmp_path / "bad.pt")


def test_reinforce_gradient_on_a_two_action_policy_equals_the_closed_form() -> None:
    theta = torch.tensor([0.3, -0.2], requires_grad=True)
    rewards = torch.tensor([1.0, 0.25])
    probs = torch.softmax(theta, 0).detach()
    # Exact expectation over both actions, each weighted by its (constant) probability: E[(r - b) ∇ log π(a)].
    loss = sum(float(probs[a]) * reinforce_loss(torch.log_softmax(theta, 0)[a:a + 1], rewards[a:a + 1],
                                                baseline=0.6) for a in range(2))
    (grad,) = torch.autograd.grad(loss, theta)
    p0, p1 = float(probs[0]), float(probs[1])
    # ∂E[r]/∂θ_0 = p0 p1 (r0 − r1) = −∂E[r]/∂θ_1; the loss is −E[r], and the baseline drops out.
    closed = torch.tensor([-p0 * p1 * (1.0 - 0.25), p0 * p1 * (1.0 - 0.25)])
    assert torch.allclose(grad, closed, atol=1e-7)


@pytest.mark.parametrize("subset", ["norms_biases", "last_block", "lora"])
def test_rldaf_updates_only_the_configured_subset(subset: str) -> None:
    lm = make_lm()
    reference = SteerableLM(copy.deepcopy(lm.model), lm.tokenizer)
    head = make_head(lm)
    params = select_trainable(lm.model, subset)
    trainable = {id(p) for p in params}
    before = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
    reference_before = copy.deepcopy(reference.model.state_dict())
    optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1)
    trainer = RLDAF(lm, reference, head, PPCController(head, step_size=1.0, steps=1), optimizer, kl_coef=0.1,
                    fluency_weight=0.1)
    for _ in range(2):
        stats = trainer.step(PROMPTS, LABELS, SAMPLE)
    assert 0.0 <= stats.attribute_prob <= 1.0
    changed = {n for n, p in lm.model.named_parameters() if not torch.equal(p, before[n])}
    names = {n for n, p in lm.model.named_parameters() if id(p) in trainable}
    assert changed and changed <= names, sorted(changed - names)
    assert all(torch.equal(v, reference_before[k]) for k, v in reference.model.state_dict().items())


def test_bad_subset_and_settings_fail_clearly() -> None:
    with pytest.raises(SstkitError, match="RLDAF subset 'all'"):
        select_trainable(tiny_lm("opt"), "all")
    with pytest.raises(SstkitError, match="step_size, steps and kl_weight"):
        PPCController(AttributeHead(4), step_size=-1.0)


def test_distinct_n_counts_unique_ngrams() -> None:
    assert distinct_n(["a b a b"], 1) == 0.5
    assert distinct_n(["a b a b"], 2) == 2 / 3
    assert distinct_n([""], 3) == 0.0


def test_generate_command_writes_texts_and_metrics(tmp_path) -> None:
    import json

    from sstkit.commands.generate import generate_main

    folder = tmp_path / "lm"
    tiny_lm("opt").save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    (tmp_path / "prompts.txt").write_text("the cat sat\nhow do I stop\n")
    rows = ["sentence\tlabel"] + [f"the cat sat on the mat {i}\t1" for i in range(6)] + \
        [f"how do I stop a running program {i}\t0" for i in range(6)]
    (tmp_path / "train.tsv").write_text("\n".join(rows) + "\n")
    common = ["--model", str(folder), "--prompts", str(tmp_path / "prompts.txt"), "--max-new-tokens", "3",
              "--discriminator", str(tmp_path / "d.pt"), "--discriminator-data", str(tmp_path / "train.tsv"),
              "--discriminator-dev", str(tmp_path / "train.tsv"), "--discriminator-dev-rows", "5", "--attribute",
              "positive", "--attribute",
              "negative", "--device", "cpu", "--fluency-lm", str(folder)]
    assert generate_main([*common, "--controller", "ppc", "--rldaf-steps", "1", "--rldaf-prompts",
                          str(tmp_path / "prompts.txt"), "--out", str(tmp_path / "out")]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["n"] == 4 and metrics["ppl"] > 1 and 0 < metrics["dist1"] <= 1
    lines = (tmp_path / "out" / "generations.jsonl").read_text().splitlines()
    assert [json.loads(x)["attribute"] for x in lines] == [1, 1, 0, 0]
    assert json.loads((tmp_path / "d.json").read_text())["dev_rows"] == 5
    with pytest.raises(SstkitError, match="no such file"):
        generate_main([*common, "--prompts", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o2")])
    with pytest.raises(SstkitError, match="attribute 'happy'"):
        generate_main([*common, "--attribute", "happy", "--out", str(tmp_path / "o3")])
