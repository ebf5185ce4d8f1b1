"""GradObstinate's gradient scorer: first-order loss change of every vocabulary token at every word, in one backward.

For the text ``x`` with prediction ``ŷ = argmax f(x)`` and ``g_i = ∂L(f(x), ŷ) / ∂e_i`` (the gradient at the input
embedding of the token of word ``i``), replacing the token ``w_i`` by ``w′`` changes the loss by, to first order,

    ΔL_i(w′) ≈ (e_{w′} − e_{w_i}) · g_i

(Wang, Shi and Zhang, 2023, "GradObstinate"). The most negative ``ΔL`` keep the prediction most firmly, so
:class:`GradientWordSwap` proposes, per word, the ``k`` whole-word tokens with the smallest ``ΔL`` among those whose
embedding cosine to ``e_{w_i}`` is below ``tau`` (dissimilar words only: near-duplicates keep the meaning).

``objective``: ``ce`` (cross-entropy to ``ŷ``, the paper's loss) or ``margin`` (mean over other classes of
``z_c − z_ŷ``, linear in the logits: on a model linear in its embeddings the first-order score is then exact).

Only words of one token are scored (a multi-piece word's replacement changes the sequence length, outside the
first-order picture); the embedding layer is found with ``get_input_embeddings()`` (Hugging Face models, sstkit's
``TextClassifier`` through its ``encoder``) or as the model's ``nn.Embedding`` with one row per tokenizer entry.

Example:
    >>> scorer = EmbeddingGradient(model, tokenizer)  # doctest: +SKIP
    >>> grads = scorer.gradients(AttackedText.from_text("a great film"))  # doctest: +SKIP
    >>> grads.delta(1)[:5]  # first-order ΔL of the first five vocabulary tokens at "great"  # doctest: +SKIP
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from sstkit.functional.attacks.text import AttackedText
from sstkit.functional.attacks.transformations import _match_case

OBJECTIVES = ("ce", "margin")


def find_input_embeddings(model: nn.Module, vocab_size: int) -> nn.Embedding:
    """The word-embedding layer of ``model`` (see the module docstring for the search order)."""
    for owner in (model, getattr(model, "encoder", None)):
        getter = getattr(owner, "get_input_embeddings", None)
        if callable(getter):
            try:
                emb = getter()
            except NotImplementedError:
                emb = None
            if isinstance(emb, nn.Embedding):
                return emb
    for module in model.modules():
        if isinstance(module, nn.Embedding) and module.num_embeddings == vocab_size:
            return module
    raise ValueError(f"{type(model).__name__}: no input embedding layer with {vocab_size} rows found "
                     "(the gradient scorer needs an nn.Embedding over the tokenizer's vocabulary)")


def loss_of(logits: Tensor, target: int, objective: str) -> Tensor:
    """The scalar the scorer differentiates, for one row of logits."""
    if objective == "ce":
        return torch.nn.functional.cross_entropy(logits[None], torch.tensor([target], device=logits.device))
    others = torch.cat([logits[:target], logits[target + 1:]])
    return (others - logits[target]).mean()


@dataclass
class TextGradients:
    """Per-word gradients of one text: ``grad[i]`` is None for words that are not a single token."""

    text: str
    prediction: int
    token_of: list[int | None]  # vocabulary id of word i's single token
    grad: list[Tensor | None]

    def norm(self, i: int) -> float:
        g = self.grad[i]
        return 0.0 if g is None else float(g.norm())


class EmbeddingGradient:
    """First-order token-substitution scores from the gradient at the victim's input embeddings.

    Args:
        model: the classifier (called as ``model(input_ids=…, attention_mask=…)``, logits or ``.logits``).
        tokenizer: its (fast) Hugging Face tokenizer.
        objective: one of :data:`OBJECTIVES`.
        max_length: truncation length in tokens (words beyond it get no gradient).
    """

    def __init__(self, model: nn.Module, tokenizer: Any, objective: str = "ce", max_length: int = 128) -> None:
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        self.model, self.tokenizer, self.objective, self.max_length = model, tokenizer, objective, max_length
        self.embedding = find_input_embeddings(model, len(tokenizer))
        self.device = self.embedding.weight.device
        self.backwards = 0
        self._cache: OrderedDict[str, TextGradients] = OrderedDict()
        with torch.no_grad():
            weight = self.embedding.weight.detach().float()
            self.unit = torch.nn.functional.normalize(weight, dim=-1)
        vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        special = set(tokenizer.all_special_ids)
        # Candidate substitutes are whole words of letters: no word pieces, specials, [unused…] or punctuation.
        self.word_tokens = list(vocab)
        self.allowed = torch.tensor([i not in special and t.isalpha() and len(t) > 1 for i, t in enumerate(vocab)])

    def gradients(self, text: AttackedText) -> TextGradients:
        """``g_i`` for every single-token word of ``text`` (one forward and one backward; cached by text)."""
        if text.text in self._cache:
            self._cache.move_to_end(text.text)
            return self._cache[text.text]
        enc = self.tokenizer(list(text.words), is_split_into_words=True, truncation=True,
                             max_length=self.max_length, return_tensors="pt")
        word_ids = enc.word_ids(0)
        captured: list[Tensor] = []

        def hook(_module: nn.Module, _inputs: Any, output: Tensor) -> Tensor:
            # A leaf we can differentiate to, without filling the parameters' .grad.
            leaf = output.detach().requires_grad_(True)
            captured.append(leaf)
            return leaf

        handle = self.embedding.register_forward_hook(hook)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.enable_grad():
                out = self.model(input_ids=enc["input_ids"].to(self.device),
                                 attention_mask=enc["attention_mask"].to(self.device))
                logits = (out.logits if hasattr(out, "logits") else out)[0].float()
                prediction = int(logits.argmax())
                (grad,) = torch.autograd.grad(loss_of(logits, prediction, self.objective), [captured[0]])
        finally:
            handle.remove()
            self.model.train(was_training)
        self.backwards += 1
        spans: dict[int, list[int]] = {}
        for pos, w in enumerate(word_ids):
            if w is not None:
                spans.setdefault(w, []).append(pos)
        ids = enc["input_ids"][0].tolist()
        token_of: list[int | None] = [None] * len(text)
        grads: list[Tensor | None] = [None] * len(text)
        for w, positions in spans.items():
            if len(positions) == 1:
                token_of[w] = ids[positions[0]]
                grads[w] = grad[0, positions[0]].detach().float().cpu()
        result = TextGradients(text.text, prediction, token_of, grads)
        self._cache[text.text] = result
        while len(self._cache) > 1024:
            self._cache.popitem(last=False)
        return result

    def delta(self, grads: TextGradients, i: int) -> Tensor:
        """First-order ``ΔL_i(w′)`` for every vocabulary token ``w′`` (shape ``(vocab,)``)."""
        g, tok = grads.grad[i], grads.token_of[i]
        if g is None or tok is None:
            raise ValueError(f"word {i} is not a single token: no first-order score")
        weight = self.embedding.weight.detach().float().cpu()
        return (weight - weight[tok]) @ g

    def cosine(self, token: int) -> Tensor:
        """Embedding cosine of every vocabulary token to ``token``."""
        return (self.unit @ self.unit[token]).cpu()


class GradientWordSwap:
    """Per word, the ``k`` dissimilar whole-word tokens with the smallest first-order loss change.

    Args:
        scorer: the :class:`EmbeddingGradient` of the victim.
        k: candidates per word.
        tau: keep tokens with embedding cosine to the original token below ``tau``.
    """

    def __init__(self, scorer: EmbeddingGradient, k: int = 10, tau: float = 0.5) -> None:
        self.scorer, self.k, self.tau = scorer, k, tau

    def ranked(self, text: AttackedText, i: int) -> list[tuple[str, float]]:
        """``(token, ΔL)`` for word ``i``, smallest ``ΔL`` first (empty for multi-piece words)."""
        grads = self.scorer.gradients(text)
        tok = grads.token_of[i]
        if tok is None:
            return []
        delta = self.scorer.delta(grads, i)
        ok = self.scorer.allowed & (self.scorer.cosine(tok) < self.tau)
        ok[tok] = False
        delta = torch.where(ok, delta, torch.full_like(delta, float("inf")))
        k = min(self.k, int(ok.sum()))
        # stable sort: ties broken by vocabulary id, so the ranking is deterministic
        order = torch.sort(delta, stable=True).indices[:k].tolist()
        vocab = self.scorer.word_tokens
        return [(vocab[j], float(delta[j])) for j in order]

    def __call__(self, text: AttackedText, indices: Sequence[int]) -> list[AttackedText]:
        out = []
        for i in indices:
            for token, _ in self.ranked(text, i):
                if token != text.words[i].lower():
                    out.append(text.replace(i, _match_case(text.words[i], token)))
        return out
