"""What every chat backend shares: prompts as messages, generation settings, results, and stop-string cutting.

Example:
    >>> to_messages("Hi", system="Be brief.")
    [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'Hi'}]
    >>> cut_at_stop("Answer: yes\\nUser: more", ["\\nUser:"])
    ('Answer: yes', True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from sstkit.errors import SstkitError

Message = dict[str, str]
Prompt = str | Sequence[Message]
ROLES = {"system", "user", "assistant"}


@dataclass(frozen=True)
class GenerationSettings:
    """How to decode.

    Args:
        max_new_tokens: the token budget of each reply.
        temperature: 0 decodes greedily; above 0 samples from softmax(logits / temperature).
        top_p: nucleus sampling mass (1.0 = off); only when sampling.
        stop: strings that end a reply; the reply is cut before the first one.
        seed: seeds sampling, so one seed gives the same replies on every call.
        batch_size: prompts decoded together (left-padded).
    """

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = field(default_factory=tuple)
    seed: int = 0
    batch_size: int = 8

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise SstkitError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise SstkitError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise SstkitError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.batch_size < 1:
            raise SstkitError(f"batch_size must be >= 1, got {self.batch_size}")
        object.__setattr__(self, "stop", tuple(self.stop))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class Generation:
    """One reply: its text (cut at a stop string), the number of new tokens, and why decoding ended
    (``stop``: a stop string, ``eos``: the end-of-turn token, ``length``: the token budget)."""

    text: str
    new_tokens: int
    finish_reason: str


@runtime_checkable
class ChatBackend(Protocol):
    """A chat model: ``generate(prompts, settings, system=None) -> list[Generation]``, one reply per prompt."""

    name: str

    def generate(
        self, prompts: Sequence[Prompt], settings: GenerationSettings | None = None, system: str | None = None
    ) -> list[Generation]: ...


def to_messages(prompt: Prompt, system: str | None = None) -> list[Message]:
    """A prompt as chat messages; ``system`` is prepended unless the prompt already starts with a system message."""
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    else:
        messages = [dict(m) for m in prompt]
        for message in messages:
            if message.get("role") not in ROLES or not isinstance(message.get("content"), str):
                raise SstkitError(f"a chat message needs a role in {sorted(ROLES)} and string content, got {message!r}")
    if system and (not messages or messages[0]["role"] != "system"):
        messages.insert(0, {"role": "system", "content": system})
    return messages


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to the earliest stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
