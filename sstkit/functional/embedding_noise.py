"""Perturbations of the word embeddings only: the shared mechanics of FreeLB and SMART.

A forward hook on the word-embedding table adds δ to its *output*, which is exactly what passing
``inputs_embeds = word_embeddings(input_ids) + δ`` does: a BERT-type embedding layer adds the position and
token-type embeddings (and applies its LayerNorm) after the word lookup, so they never see δ. Hooking, rather than
calling the encoder with ``inputs_embeds``, keeps a model family's own forward (pooling, head, loss, extra loss
terms) untouched, so the methods plug in without editing the family.

Example::

    perturb = EmbeddingPerturbation.attach(model)          # finds encoder.get_input_embeddings()
    delta = torch.zeros(*input_ids.shape, perturb.dim)
    with perturb.adding(delta):
        logits = model(input_ids, attention_mask)         # word embeddings + delta, positions unchanged
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from sstkit.errors import SstkitError

_ATTR = "_sstkit_embedding_perturbation"


def find_word_embeddings(model: nn.Module) -> nn.Module:
    """The word-embedding table of the first Hugging Face model inside ``model`` (an ``nn.Embedding`` or a module
    that replaced it, such as Q-BERT's ``QuantEmbedding``)."""
    for module in model.modules():
        get = getattr(module, "get_input_embeddings", None)
        if callable(get) and module is not model:
            table = get()
            if isinstance(table, nn.Module) and hasattr(table, "embedding_dim"):
                return table
    raise SstkitError(f"{type(model).__name__} has no Hugging Face encoder with word embeddings "
                      "(get_input_embeddings); embedding perturbations need a BERT-type text model")


class EmbeddingPerturbation:
    """Adds a tensor δ of shape (batch, length, dim) to the word-embedding output while :meth:`adding` is active."""

    def __init__(self, table: nn.Module) -> None:
        self.table, self.delta = table, None
        self.handle = table.register_forward_hook(self._hook)

    @classmethod
    def attach(cls, model: nn.Module) -> EmbeddingPerturbation:
        """The model's perturbation hook, installed once per table however often it is called (idempotent).

        Callers attach again at each step: a method set up later may have replaced the table (Q-BERT's
        ``QuantEmbedding``), and the hook must sit on the module the forward pass calls.
        """
        table = find_word_embeddings(model)
        existing = getattr(table, _ATTR, None)
        if existing is None:
            existing = cls(table)
            object.__setattr__(table, _ATTR, existing)  # a plain attribute, not a submodule or state
        return existing

    @property
    def dim(self) -> int:
        """Width of the word embeddings."""
        return self.table.embedding_dim

    def _hook(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
        if self.delta is None:
            return output
        if self.delta.shape != output.shape:
            raise SstkitError(f"embedding perturbation of shape {tuple(self.delta.shape)} does not fit the word "
                              f"embeddings {tuple(output.shape)}")
        # δ is kept in fp32 by its owner; cast to the embedding dtype only where it enters the model.
        return output + self.delta.to(output.dtype)

    @contextmanager
    def adding(self, delta: Tensor | None) -> Iterator[None]:
        """Every forward pass inside the block sees word embeddings + ``delta`` (None: the clean embeddings)."""
        previous, self.delta = self.delta, delta
        try:
            yield
        finally:
            self.delta = previous


@contextmanager
def unperturbed(model: nn.Module) -> Iterator[None]:
    """Forward passes inside the block see clean word embeddings, even inside a FreeLB pass.

    Teachers (EMA predictions) and other batches (pseudo-labelled inputs, of another shape) use it, so a method
    stacked under FreeLB perturbs only the batch being trained.
    """
    try:
        existing = getattr(find_word_embeddings(model), _ATTR, None)
    except SstkitError:
        existing = None
    if existing is None:
        yield
        return
    with existing.adding(None):
        yield


def token_mask(attention_mask: Tensor) -> Tensor:
    """(batch, length, 1) float mask of real tokens: padding is never perturbed."""
    return attention_mask.unsqueeze(-1).float()


def per_example_norm(x: Tensor) -> Tensor:
    """L2 norm of each example's (length × dim) slice, shape (batch, 1, 1), floored at 1e-8."""
    return x.flatten(1).float().norm(dim=1).clamp(min=1e-8).view(-1, 1, 1)


def project_to_ball(delta: Tensor, max_norm: float) -> Tensor:
    """Rescales the examples whose δ is longer than ``max_norm`` onto that sphere (``max_norm <= 0``: no bound)."""
    if max_norm <= 0:
        return delta
    norm = per_example_norm(delta)
    return delta * torch.where(norm > max_norm, max_norm / norm, torch.ones_like(norm))
