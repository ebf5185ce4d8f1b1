"""One optimizer for models that mix manifold and Euclidean parameters: Riemannian Adam with AdamW's weight decay.

geoopt's :class:`~geoopt.optim.RiemannianAdam` moves a ``ManifoldParameter`` (e.g. class centroids on the
hyperboloid) along its manifold and is plain Adam on ordinary tensors, but its weight decay is an L2 term added to
the gradient. :class:`RiemannianAdamW` applies AdamW's decoupled decay ``p ← p·(1 − lr·wd)`` to ordinary tensors
instead (never to manifold points, where shrinking towards 0 would leave the manifold), so Euclidean parameters
get exactly AdamW. It is a single ``torch.optim.Optimizer``: methods that need one optimizer (SST's and ReLoRA's
restarts, the LR re-warm-up hooks) work on hyperbolic models unchanged, and their Adam-state resets apply since
the state keys are Adam's (``exp_avg``, ``exp_avg_sq``, ``step``).

Example:
    >>> import torch
    >>> opt = RiemannianAdamW([torch.nn.Parameter(torch.ones(2))], lr=0.1, weight_decay=0.01)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from geoopt import ManifoldParameter, ManifoldTensor
from geoopt.optim import RiemannianAdam


class RiemannianAdamW(RiemannianAdam):
    """geoopt's Riemannian Adam with decoupled (AdamW) weight decay on non-manifold parameters.

    Args:
        params: parameters or param groups; a group's ``weight_decay`` is its decoupled decay.
        lr: learning rate.
        betas: Adam's moment coefficients.
        eps: Adam's epsilon.
        weight_decay: default decoupled weight decay.
        amsgrad: AMSGrad variant.
        stabilize: project manifold parameters back every this many steps (geoopt's option).

    Example:
        >>> opt = RiemannianAdamW(model.parameters(), lr=1e-2, weight_decay=1e-2)  # doctest: +SKIP
    """

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, stabilize: int | None = None) -> None:  # fmt: skip
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         stabilize=stabilize)  # fmt: skip

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        decays = [group["weight_decay"] for group in self.param_groups]
        with torch.no_grad():
            for group, decay in zip(self.param_groups, decays, strict=True):
                if decay:
                    for p in group["params"]:
                        if p.grad is not None and not isinstance(p, ManifoldParameter | ManifoldTensor):
                            p.mul_(1.0 - group["lr"] * decay)
                group["weight_decay"] = 0.0  # the parent's L2 term is switched off for this step
        try:
            super().step()
        finally:
            for group, decay in zip(self.param_groups, decays, strict=True):
                group["weight_decay"] = decay
        return loss

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Loads a state, keeping each parameter's step the plain integer geoopt counts with.

        geoopt's optimizer is a ``torch.optim.Adam``, whose loading turns integer steps into float32 tensors; the
        bias corrections ``1 - beta ** step`` are then computed in float32 instead of Python floats, and a
        resumed run drifts from the uninterrupted one in the last bits, from the first step after the resume.
        """
        super().load_state_dict(state_dict)
        for state in self.state.values():
            if torch.is_tensor(state.get("step")):
                state["step"] = int(state["step"].item())
