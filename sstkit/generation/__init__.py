"""Text generation with chat models, usable without Lightning: a Hugging Face backend and an OpenAI-compatible one.

Both take the same prompts (a string, or a list of ``{"role", "content"}`` messages) and the same
:class:`GenerationSettings`, and return :class:`Generation` records, so a judge, a teacher or a test-suite runner
works with either.

Example:
    >>> from sstkit.generation import HFChatModel, GenerationSettings
    >>> chat = HFChatModel.load("smollm2")  # doctest: +SKIP
    >>> chat.generate(["Say hi."], GenerationSettings(max_new_tokens=8))[0].text  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from sstkit.generation.base import ChatBackend, Generation, GenerationSettings, Prompt, cut_at_stop, to_messages

__all__ = ["ChatBackend", "Generation", "GenerationSettings", "HFChatModel", "OpenAIChatClient", "Prompt",
           "cut_at_stop", "load_chat_backend", "to_messages"]


def __getattr__(name: str) -> Any:
    # The backends import torch/transformers or urllib only when used.
    if name == "HFChatModel":
        from sstkit.generation.hf import HFChatModel

        return HFChatModel
    if name == "OpenAIChatClient":
        from sstkit.generation.openai_client import OpenAIChatClient

        return OpenAIChatClient
    if name == "load_chat_backend":
        from sstkit.generation.hf import load_chat_backend

        return load_chat_backend
    raise AttributeError(name)
