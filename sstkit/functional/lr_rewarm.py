"""Learning-rate re-warm-up after an optimizer-state restart, shared by SST (per iteration) and ReLoRA (per merge).

When a method zeroes the Adam moments of some parameters (a resampled spectral block, a re-initialised LoRA
factor), the first updates after the reset are too large: with fresh moments Adam's step is about ``lr·sign(g)``
for every coordinate. Both papers therefore re-warm the learning rate after each restart. :class:`LrRewarm`
multiplies every param group's ``lr`` by

    factor(j) = min(1, (j + 1) / warmup_steps)        j = optimizer steps taken since the last restart

for exactly the duration of ``optimizer.step()`` (torch step pre-/post-hooks) and then puts the original ``lr``
back. The model's own scheduler therefore never sees the scaled value: ``LambdaLR``, chainable schedulers and
Lightning's LR monitor keep working, and the "jagged" schedule is ``factor × schedule``. Before the first
restart the factor is 1 (the model's own warm-up covers the start). The counters live in :meth:`state_dict`, so
a resumed run re-warms exactly where the interrupted one would have.

Example:
    >>> import torch
    >>> p = torch.nn.Parameter(torch.ones(2))
    >>> opt = torch.optim.SGD([p], lr=1.0)
    >>> rewarm = LrRewarm(warmup_steps=4)
    >>> handles = rewarm.attach(opt)
    >>> rewarm.restart()
    >>> p.sum().backward(); opt.step()
    >>> p.tolist(), opt.param_groups[0]["lr"], rewarm.steps  # the step used lr 0.25; lr is restored after it
    ([0.75, 0.75], 1.0, 1)
    >>> rewarm.detach()
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

StepCallback = Callable[[torch.optim.Optimizer], None]


class LrRewarm:
    """Counts optimizer steps and scales the learning rate linearly back up after each :meth:`restart`.

    Args:
        warmup_steps: length of the re-warm-up in optimizer steps; 0 disables the scaling (counting still works).
        after_step: optional function called with the optimizer right after every real ``optimizer.step()``
            (after the step counter is advanced and the learning rate restored), where a method does its
            post-step work (renormalise, resample, merge …).

    Example:
        >>> rewarm = LrRewarm(20)
        >>> rewarm.restart(); rewarm.factor()
        0.05
    """

    def __init__(self, warmup_steps: int, after_step: StepCallback | None = None) -> None:
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an int >= 0, got {warmup_steps!r}")
        self.warmup_steps = warmup_steps
        self.after_step = after_step
        self.steps = 0  # real optimizer steps taken (a step skipped by AMP's GradScaler is not one)
        self.last_restart: int | None = None
        self._handles: list[Any] = []
        self._saved: dict[int, tuple[torch.optim.Optimizer, list[Any]]] = {}

    # --- the schedule -------------------------------------------------------------------------------------
    def restart(self) -> None:
        """Marks a restart now: the next optimizer step is the first of a new warm-up."""
        self.last_restart = self.steps

    def factor(self) -> float:
        """The learning-rate multiplier for the next optimizer step."""
        if self.warmup_steps == 0 or self.last_restart is None:
            return 1.0
        since = self.steps - self.last_restart
        return min(1.0, (since + 1) / self.warmup_steps)

    # --- optimizer hooks ----------------------------------------------------------------------------------
    def attach(self, optimizer: torch.optim.Optimizer) -> list[Any]:
        """Registers the step pre-/post-hooks on ``optimizer`` (a Lightning wrapper is unwrapped).

        Returns:
            The hook handles (also kept for :meth:`detach`).
        """
        inner = getattr(optimizer, "_optimizer", optimizer)
        handles = [inner.register_step_pre_hook(self._pre_step), inner.register_step_post_hook(self._post_step)]
        self._handles += handles
        return handles

    def detach(self) -> None:
        """Removes every hook registered by :meth:`attach`, restoring an LR left scaled by an interrupted step."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        for optimizer, saved in self._saved.values():
            self._restore(optimizer, saved)
        self._saved = {}

    def _pre_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        factor = self.factor()
        if factor == 1.0:
            return
        # Kept until the post-hook: if the closure raises inside step(), detach() still puts the LR back.
        self._saved[id(optimizer)] = (optimizer, [group["lr"] for group in optimizer.param_groups])
        for group in optimizer.param_groups:
            # A tensor lr (capturable / fused optimizers) must stay a tensor of the same device.
            group["lr"] = group["lr"] * factor

    def _post_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        pending = self._saved.pop(id(optimizer), None)
        if pending is not None:
            self._restore(*pending)
        self.steps += 1
        if self.after_step is not None:
            self.after_step(optimizer)

    @staticmethod
    def _restore(optimizer: torch.optim.Optimizer, saved: list[Any]) -> None:
        for group, lr in zip(optimizer.param_groups, saved, strict=True):
            group["lr"] = lr

    # --- checkpointing ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Counters needed to continue the schedule exactly."""
        return {"steps": self.steps, "last_restart": self.last_restart, "warmup_steps": self.warmup_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores :meth:`state_dict` (``warmup_steps`` stays the configured one, so it may be changed on resume)."""
        self.steps = int(state["steps"])
        self.last_restart = None if state["last_restart"] is None else int(state["last_restart"])
