"""The attribute discriminator that steers: a linear head on a causal LM's mean last-layer hidden states.

``p_D(a | x) = softmax(W · mean_t h_t(x) + b)_a``, trained on labelled sentences (SST-2: 0 negative, 1 positive)
with the LM frozen, so its features are those the controllers perturb. It only *steers*; evaluation uses a
separate judge (the MiniLM SST-2 classifier), never this head, so steering cannot game the metric.

Example:
    >>> head = fit_attribute_head(lm, texts, labels, epochs=30)  # doctest: +SKIP
    >>> head.save("runs/ppc/discriminator.pt"); head = AttributeHead.load("runs/ppc/discriminator.pt")  # doctest: +SKIP

Trained during ``sstkit fit`` of a causal LM instead, the head is the callback ``sstkit.callbacks.
AttributeDiscriminator`` (loss :func:`attribute_loss`), saved in the LM's checkpoint (``attribute_head.*``), from
which :meth:`AttributeHead.from_checkpoint` reads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sstkit.errors import SstkitError
from sstkit.generation.control.steerable import SteerableLM, masked_mean

ATTRIBUTES = {"negative": 0, "positive": 1}
# Where a CausalLM trained with the AttributeDiscriminator callback keeps the head in its state dict.
CHECKPOINT_PREFIX = "attribute_head."


def attribute_index(name: str | int) -> int:
    """The label index of an attribute name (``positive``/``negative``) or of an integer label."""
    if isinstance(name, int) or str(name).isdigit():
        return int(name)
    if name not in ATTRIBUTES:
        raise SstkitError(f"attribute {name!r}: expected one of {sorted(ATTRIBUTES)} or a label number")
    return ATTRIBUTES[name]


class AttributeHead(nn.Module):
    """``log p_D(label | hidden states)`` from (B, T, d) hidden states and their mask.

    Args:
        hidden_size: the LM's hidden width d.
        num_labels: attribute classes (2 for sentiment).
    """

    def __init__(self, hidden_size: int, num_labels: int = 2) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden_size, num_labels)

    def forward(self, hidden: Tensor, mask: Tensor) -> Tensor:
        """Log-probabilities (B, num_labels)."""
        return F.log_softmax(self.linear(masked_mean(hidden, mask).to(self.linear.weight.dtype)), -1)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"hidden_size": self.linear.in_features, "num_labels": self.linear.out_features,
                    "state_dict": self.state_dict()}, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> AttributeHead:
        path = Path(path)
        if not path.is_file():
            raise SstkitError(f"{path}: no such discriminator file (write one with fit_attribute_head(...).save)")
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            head = cls(int(blob["hidden_size"]), int(blob["num_labels"]))
            head.load_state_dict(blob["state_dict"])
        except Exception as err:  # a foreign or truncated file
            raise SstkitError(f"{path}: not an sstkit attribute discriminator ({type(err).__name__}: {err})") from err
        return head.eval()

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> AttributeHead:
        """The head an ``AttributeDiscriminator`` callback trained with a ``CausalLM`` (its Lightning checkpoint)."""
        path = Path(path)
        if not path.is_file():
            raise SstkitError(f"{path}: no such checkpoint file")
        state = torch.load(path, map_location="cpu", weights_only=False).get("state_dict", {})
        weights = {k[len(CHECKPOINT_PREFIX):]: v for k, v in state.items() if k.startswith(CHECKPOINT_PREFIX)}
        if "linear.weight" not in weights:
            raise SstkitError(f"{path}: no attribute head in this checkpoint (train the LM with the "
                              "AttributeDiscriminator callback, or give a discriminator .pt file)")
        num_labels, hidden_size = weights["linear.weight"].shape
        head = cls(int(hidden_size), int(num_labels))
        head.load_state_dict(weights)
        return head.eval()


def attribute_loss(lm: SteerableLM, head: AttributeHead, texts: Sequence[str], labels: Sequence[int] | Tensor,
                   lm_gradient: bool = True) -> tuple[Tensor, Tensor]:
    """Cross-entropy of the head on the texts' mean last-layer hidden states, and the rows it gets right.

    ``lm_gradient`` lets the loss train the LM too (multitask: its hidden states learn to carry the attribute);
    False trains the head alone on the LM's current features (a probe, as PPLM's discriminator on a frozen LM).
    Texts are encoded as the controllers encode prompts (``lm.encode``), so the head sees the features it steers.
    """
    ids, mask = lm.encode(texts)
    with torch.set_grad_enabled(lm_gradient and torch.is_grad_enabled()):
        hidden = lm(lm.embed(ids), mask, last_only=True).hidden
    target = torch.as_tensor(labels, device=hidden.device).long()
    log_probs = head(hidden if lm_gradient else hidden.detach(), mask)
    return F.nll_loss(log_probs, target), log_probs.argmax(-1) == target


@torch.no_grad()
def mean_features(lm: SteerableLM, texts: Sequence[str], batch_size: int = 64) -> Tensor:
    """Mean last-layer hidden state of each text (N, d), the LM in eval mode."""
    was_training = lm.model.training
    lm.model.eval()
    chunks = []
    for start in range(0, len(texts), batch_size):
        ids, mask = lm.encode(texts[start:start + batch_size])
        chunks.append(masked_mean(lm(lm.embed(ids), mask, last_only=True).hidden.float(), mask))
    lm.model.train(was_training)
    return torch.cat(chunks)


def fit_attribute_head(lm: SteerableLM, texts: Sequence[str], labels: Sequence[int], epochs: int = 50,
                       lr: float = 1e-2, weight_decay: float = 1e-4, seed: int = 0) -> AttributeHead:
    """Trains an :class:`AttributeHead` on frozen-LM features (full-batch Adam; the features fit in memory)."""
    if len(texts) != len(labels) or not texts:
        raise SstkitError(f"fit_attribute_head: {len(texts)} texts and {len(labels)} labels (need equal, > 0)")
    features = mean_features(lm, texts)
    target = torch.tensor(list(labels), device=features.device)
    torch.manual_seed(seed)
    head = AttributeHead(features.shape[1], int(target.max()) + 1 if int(target.max()) >= 1 else 2).to(features.device)
    # Standardising through the bias/weights would change p_D's scale; Adam on raw features converges fine here.
    optimizer = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        optimizer.zero_grad()
        loss = F.cross_entropy(head.linear(features), target)
        loss.backward()
        optimizer.step()
    return head.eval()


@torch.no_grad()
def head_accuracy(head: AttributeHead, lm: SteerableLM, texts: Sequence[str], labels: Sequence[int]) -> float:
    """Share of texts whose argmax label under the head equals the given one."""
    pred = head.linear(mean_features(lm, texts)).argmax(-1).cpu()
    return float((pred == torch.tensor(list(labels))).float().mean())
