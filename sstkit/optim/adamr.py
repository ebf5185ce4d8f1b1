"""AdamR: Adam with decoupled regularisation of the *delta* toward the pretrained weights (DAREx-L2 / -L1).

Each step first decays the delta, outside the gradient and the moments, then takes the usual Adam step:

    θ ← θ − λ · lr_t / s_t · (θ − θ_pre)          (L2;  L1: sign(θ − θ_pre))
    θ ← Adam(θ, g)

with ``s_t = sqrt(mean of v̂_t over all parameters)``, ``v̂_t = v_t / (1 − β₂ᵗ)`` the bias-corrected second moment
this step's Adam update uses, and ``lr_t`` the group's current learning rate (schedulers apply). Dividing by
``s_t`` puts the decay on the scale of Adam's normalised update, so ``λ`` is *not* on AdamW's weight-decay scale.
With ``λ = 0`` AdamR is exactly :class:`torch.optim.Adam`.

``θ_pre`` is copied once, lazily, from the parameters at the first step (the weights at fit start), kept on the
parameters' device, and saved in / restored from the optimizer's ``state_dict``, so a resumed run continues with
the same anchor.

Example (YAML, LightningCLI's optimizer injection)::

    optimizer:
      class_path: sstkit.optim.AdamR
      init_args: {lr: 5.0e-5, delta_decay: 0.1, penalty: l2}

Example (Python)::

    optimizer = AdamR(model.parameters(), lr=1e-4, delta_decay=0.1)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from sstkit.errors import SstkitError
from sstkit.optim.sharding import refuse_sharded_params
from sstkit.stacking import check_optimizer_params

PENALTIES = ("l2", "l1")
_ANCHOR_KEY = "adamr_pretrained"


class AdamR(torch.optim.Adam):
    """Adam whose step first pulls every parameter toward its value at the first step.

    Args:
        params: parameters or parameter groups (a group may set its own ``delta_decay``; 0 turns it off there).
        lr, betas, eps, weight_decay, amsgrad: as :class:`torch.optim.Adam` (``weight_decay`` is Adam's coupled L2
            on θ itself, default 0; the delta decay is separate).
        delta_decay: λ, the strength of the decay of ``θ − θ_pre``.
        penalty: ``l2`` (decay ∝ θ − θ_pre) or ``l1`` (decay ∝ sign(θ − θ_pre)).
        foreach, fused: passed to Adam.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        delta_decay: float = 0.0,
        penalty: str = "l2",
        amsgrad: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        if delta_decay < 0 or not math.isfinite(delta_decay):
            raise SstkitError(f"AdamR: delta_decay must be a finite number >= 0, got {delta_decay}")
        if penalty not in PENALTIES:
            raise SstkitError(f"AdamR: penalty must be one of {PENALTIES}, got {penalty!r}")
        if lr <= 0:
            raise SstkitError(f"AdamR: lr must be > 0, got {lr}")
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         foreach=foreach, fused=fused)
        for group in self.param_groups:
            group.setdefault("delta_decay", delta_decay)
            group.setdefault("penalty", penalty)
        # A delta toward the first-step value is meaningless for parameters some methods re-sample or merge away.
        check_optimizer_params("adamr", [p for g in self.param_groups if g["delta_decay"] > 0 for p in g["params"]])
        refuse_sharded_params("AdamR", self._params())  # s_t is a mean over all parameters (sstkit.optim.sharding)
        # θ_pre per parameter; not in self.state so that Adam's lazy state initialisation still runs.
        # Keyed by the parameter's position in param_groups (a Tensor is a poor dict key: == is elementwise).
        self.anchors: dict[int, Tensor] = {}

    # --- anchor -------------------------------------------------------------------------------------------
    def _params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def capture_anchors(self, overwrite: bool = False) -> None:
        """Copies the current parameters as ``θ_pre`` (once; ``overwrite`` re-takes them)."""
        for i, p in enumerate(self._params()):
            if overwrite or i not in self.anchors:
                self.anchors[i] = p.detach().clone()

    def delta_norm(self) -> float:
        """‖θ − θ_pre‖₂ over all parameters with an anchor (0 before the first step)."""
        params = self._params()
        total = sum(float((params[i].detach() - a).pow(2).sum()) for i, a in self.anchors.items())
        return math.sqrt(total)

    # --- step ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _second_moment_scale(self) -> float:
        """s_t = sqrt(mean of v̂_t) over every parameter with a gradient, v_t including this step's gradient."""
        total, count = 0.0, 0
        for group in self.param_groups:
            beta2, wd = group["betas"][1], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad if wd == 0 else p.grad + wd * p
                state = self.state.get(p, {})
                step = float(state["step"]) + 1 if "step" in state else 1.0
                v = grad.pow(2) * (1 - beta2)
                if "exp_avg_sq" in state:
                    v = v + beta2 * state["exp_avg_sq"]
                total += float(v.sum()) / (1 - beta2**step)
                count += p.numel()
        return math.sqrt(total / max(count, 1))

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.capture_anchors()
        if any(group["delta_decay"] > 0 for group in self.param_groups):
            scale = self._second_moment_scale()
            index = {id(p): i for i, p in enumerate(self._params())}
            if scale > 0:
                for group in self.param_groups:
                    lam = group["delta_decay"]
                    if lam == 0:
                        continue
                    factor = lam * float(group["lr"]) / scale
                    for p in group["params"]:
                        if p.grad is None:
                            continue
                        diff = p - self.anchors[index[id(p)]]
                        p.sub_(diff.sign() if group["penalty"] == "l1" else diff, alpha=factor)
        super().step()
        return loss

    # --- checkpointing -------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state[_ANCHOR_KEY] = dict(self.anchors)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        anchors = state_dict.pop(_ANCHOR_KEY, None)
        super().load_state_dict(state_dict)
        self.anchors = {}
        if anchors:
            params = self._params()
            for i, anchor in anchors.items():
                p = params[int(i)]
                self.anchors[int(i)] = anchor.to(device=p.device, dtype=p.dtype).clone()
