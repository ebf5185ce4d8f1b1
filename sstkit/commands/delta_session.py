"""A fine-tuned classifier, its pretrained encoder and its delta, with pruning, scoring and the three q choices.

Shared by ``sstkit delta prune`` and ``benchmarks/darex``: both prune the encoder delta of a
:class:`~sstkit.models.TextClassifier` (the head is never touched), evaluate the result on labelled batches, and
choose DAREx's q globally (validation accuracy), per layer (analytic, η tuned on validation) or unsupervised
(last-hidden-state change).

Example:
    >>> session = DeltaSession(load_classifier("ft.ckpt"), load_encoder("minilm"))  # doctest: +SKIP
    >>> acc = session.score(session.prune("dare", 0.99, seed=0), val_batches)  # doctest: +SKIP
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from sstkit.commands.classifier_io import accuracy, last_hidden
from sstkit.errors import SstkitError
from sstkit.functional.darex import InputStats, analytic_qs, collect_input_stats, mean_abs_change, search_q
from sstkit.functional.delta import extract_delta, prune_delta
from sstkit.models.text_classifier import TextClassifier

ETA_GRID = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1e3, 3e3, 1e4)  # the official default η is 0.45


@dataclass
class QChoice:
    """A chosen q: one number (global / unsupervised) or per tensor (analytic), with how it was found."""

    mode: str
    q: float | dict[str, float]
    eta: float | None = None
    score: float | None = None
    trace: list[tuple[float, float]] = field(default_factory=list)

    @property
    def mean_q(self) -> float:
        """q itself, or the mean of the per-tensor q's."""
        return self.q if isinstance(self.q, float) else sum(self.q.values()) / max(len(self.q), 1)


class DeltaSession:
    """Holds ``θ_ft``, ``θ_pre`` and ``δ`` of a classifier's encoder; loads pruned encoders into a working copy.

    Args:
        finetuned: the fine-tuned classifier (its encoder keys are the delta's keys).
        pretrained: the pretrained encoder of the same architecture.
        include_embeddings, include_norms: see :func:`sstkit.functional.delta.extract_delta`.
    """

    def __init__(self, finetuned: TextClassifier, pretrained: nn.Module, include_embeddings: bool = True,
                 include_norms: bool = True) -> None:
        self.model = copy.deepcopy(finetuned).eval()
        self.ft_state = {k: v.detach().clone() for k, v in finetuned.encoder.state_dict().items()}
        self.pre_state = {k: v.detach().clone() for k, v in pretrained.state_dict().items()}
        if not set(self.ft_state) & set(self.pre_state):
            raise SstkitError("delta: the pretrained encoder shares no parameter with the fine-tuned one; "
                              "is --pretrained the model this checkpoint was fine-tuned from?")
        self.delta = extract_delta(self.ft_state, self.pre_state, include_embeddings, include_norms)
        self._stats: dict[str, InputStats] | None = None

    # --- building models ----------------------------------------------------------------------------------
    def merged_state(self, pruned: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The fine-tuned encoder state with every delta tensor replaced by ``θ_pre + δ'``."""
        state = dict(self.ft_state)
        for name, d in pruned.items():
            state[name] = (self.pre_state[name].float() + d).to(self.ft_state[name].dtype)
        return state

    def load(self, pruned: Mapping[str, Tensor] | None) -> TextClassifier:
        """The working classifier with a pruned delta (None: the unpruned fine-tuned encoder)."""
        self.model.encoder.load_state_dict(self.ft_state if pruned is None else self.merged_state(pruned))
        return self.model

    def control(self) -> TextClassifier:
        """The no-delta control: pretrained encoder (where it has the tensor), fine-tuned head."""
        self.model.encoder.load_state_dict({**self.ft_state, **{k: self.pre_state[k] for k in self.delta}})
        return self.model

    def prune(self, method: str, p: float, seed: int = 0, q: float | Mapping[str, float] | None = None,
              input_norms: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        """``δ'`` of one mask seed (the seed matters for DARE / DAREx only)."""
        generator = torch.Generator().manual_seed(seed)
        return prune_delta(self.delta, method, p, q=q, generator=generator, input_norms=input_norms)

    # --- statistics ---------------------------------------------------------------------------------------
    def input_stats(self, batches: Sequence[dict[str, Tensor]]) -> dict[str, InputStats]:
        """Signed mean / norm of every encoder linear's input under the fine-tuned model (cached)."""
        if self._stats is None:
            model = self.load(None)
            self._stats = collect_input_stats(
                model.encoder, lambda b: model(b["input_ids"], b["attention_mask"]), batches)
        return self._stats

    def wanda_norms(self, batches: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
        """``‖x_j‖₂`` keyed by weight name, for :func:`sstkit.functional.delta.wanda_prune`."""
        return {f"{name}.weight": st.norm for name, st in self.input_stats(batches).items()}

    def mean_inputs(self, batches: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
        """``x̄`` keyed by weight name (for the c statistics)."""
        return {f"{name}.weight": st.mean for name, st in self.input_stats(batches).items()}

    # --- scoring ------------------------------------------------------------------------------------------
    def score(self, pruned: Mapping[str, Tensor] | None, batches: Sequence[dict[str, Tensor]]) -> float:
        """Accuracy of the classifier with a pruned delta."""
        return accuracy(self.load(pruned), list(batches))

    def mean_score(self, method: str, p: float, q: float | Mapping[str, float] | None,
                   batches: Sequence[dict[str, Tensor]], seeds: Sequence[int]) -> float:
        """Accuracy averaged over mask seeds."""
        return sum(self.score(self.prune(method, p, s, q), batches) for s in seeds) / len(seeds)

    # --- choosing q ---------------------------------------------------------------------------------------
    def choose_global(self, p: float, val: Sequence[dict[str, Tensor]], seeds: Sequence[int],
                      **search: float | None) -> QChoice:
        """One q by coarse-then-fine validation search (accuracy averaged over ``seeds``)."""
        result = search_q(lambda q: self.mean_score("darex-q", p, q, val, seeds), p, **search)
        return QChoice("global", result.q, score=result.score, trace=result.trace)

    def choose_unsupervised(self, p: float, unlabelled: Sequence[dict[str, Tensor]], seeds: Sequence[int],
                            **search: float | None) -> QChoice:
        """The q whose pruned encoder changes the last hidden state least (no labels)."""
        reference = list(last_hidden(self.load(None), list(unlabelled)))
        masks = [b["attention_mask"] for b in unlabelled]

        def change(q: float) -> float:
            total = 0.0
            for s in seeds:
                hidden = list(last_hidden(self.load(self.prune("darex-q", p, s, q)), list(unlabelled)))
                total += mean_abs_change(reference, hidden, masks)
            return -total / len(seeds)

        result = search_q(change, p, **search)
        return QChoice("unsupervised", result.q, score=-result.score, trace=result.trace)

    def choose_analytic(self, p: float, unlabelled: Sequence[dict[str, Tensor]], eta: float | None,
                        val: Sequence[dict[str, Tensor]] | None, seeds: Sequence[int],
                        eta_grid: Sequence[float] = ETA_GRID, stop_share: float | None = None) -> QChoice:
        """Per-layer analytic q_e; ``eta=None`` tunes η over ``eta_grid`` by validation accuracy.

        ``stop_share``: see :func:`sstkit.functional.darex.analytic_q_rows` (None: the paper's full scan).
        """
        stats = self.input_stats(unlabelled)
        if eta is not None:
            return QChoice("analytic", analytic_qs(self.delta, stats, p, eta, stop_share=stop_share), eta=eta)
        if not val:
            raise SstkitError("analytic q with eta=auto needs labelled validation data to tune eta")
        best: QChoice | None = None
        trace = []
        for candidate in eta_grid:
            qs = analytic_qs(self.delta, stats, p, candidate, stop_share=stop_share)
            value = self.mean_score("darex-q", p, qs, val, seeds)
            trace.append((candidate, value))
            if best is None or value > (best.score or -1.0):
                best = QChoice("analytic", qs, eta=candidate, score=value)
        assert best is not None
        best.trace = trace
        return best
