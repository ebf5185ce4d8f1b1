"""Tiny random chat models for tests: a byte-level BPE with a chat template, and Llama / OPT built from configs."""

from __future__ import annotations

import functools
from typing import Any

import torch

CORPUS = [
    "the cat sat on the mat and looked at the dog", "a small model writes short replies to simple questions",
    "how do I stop a running program on my computer", "please tell me a story about a friendly robot",
    "the weather today is sunny with a light breeze", "system user assistant said hello and goodbye",
] * 20
TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant:{% endif %}"
)


@functools.lru_cache(maxsize=1)
def _tokenizer() -> Any:
    from sstkit.datamodules.bpe import train_bpe

    tokenizer = train_bpe(CORPUS, vocab_size=300)
    tokenizer.chat_template = TEMPLATE
    return tokenizer


def tiny_tokenizer() -> Any:
    """A fresh copy, so a test that changes padding side or pad token does not leak into others."""
    import copy

    return copy.deepcopy(_tokenizer())


def tiny_lm(kind: str = "llama", seed: int = 0) -> Any:
    """A random 2-layer Llama or OPT over :func:`tiny_tokenizer`'s vocabulary, in eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM

    vocab = len(_tokenizer())
    torch.manual_seed(seed)
    if kind == "llama":
        config = LlamaConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, intermediate_size=64, max_position_embeddings=1024,
                             bos_token_id=0, eos_token_id=2, pad_token_id=1)
        return LlamaForCausalLM(config).eval()
    config = OPTConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64,
                       word_embed_proj_dim=32, max_position_embeddings=1024, bos_token_id=0, eos_token_id=2,
                       pad_token_id=1)
    return OPTForCausalLM(config).eval()


def tiny_chat(kind: str = "llama", seed: int = 0) -> Any:
    from sstkit.generation.hf import HFChatModel

    return HFChatModel(tiny_lm(kind, seed), tiny_tokenizer(), name=f"tiny-{kind}")
