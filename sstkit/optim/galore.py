"""GaLore: AdamW whose moments live in a low-rank projection of each weight matrix's gradient (Zhao et al., 2024).

For a parameter in a group with a ``rank`` key, every step projects the gradient ``G`` (m × n) onto ``r``
singular directions of a recent gradient, runs Adam in that r-dimensional space and projects the normalised
update back, scaled by ``scale``:

    P ← top-r singular vectors of G          (every ``update_proj_gap`` steps; left if m < n, else right)
    R = Pᵀ G  (or G P)                        Adam moments of R: r × n (or m × r) instead of m × n
    W ← W − lr · scale · P · Adam(R)          then decoupled weight decay W ← W − lr · λ · W

Groups without ``rank`` are plain AdamW. This follows ``galore_torch.GaLoreAdamW`` (the ``std`` projector, its
group keys ``rank``, ``update_proj_gap``, ``scale``) but is written here because galore-torch 1.0 imports
bitsandbytes (a CUDA wheel set) in its package ``__init__`` and builds on the deprecated transformers AdamW; the
projection matrix is kept as a tensor in the optimizer state so that :func:`sstkit.bench.resources.optimizer_state_bytes`
counts it.

Example (Python)::

    groups = [{"params": [model.fc.weight], "rank": 16, "update_proj_gap": 200, "scale": 0.25},
              {"params": [model.fc.bias]}]
    optimizer = GaLoreAdamW(groups, lr=1e-2, weight_decay=0.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from sstkit.errors import SstkitError, require_int
from sstkit.optim.sharding import refuse_sharded_params
from sstkit.stacking import check_optimizer_params


def projection(grad: Tensor, rank: int) -> tuple[Tensor, str]:
    """The top-``rank`` singular vectors of ``grad`` on its shorter side: ``(U_r, "left")`` if m < n, else
    ``(Vh_r, "right")`` — the side GaLore projects, so the moments take the smaller shape.

    Example:
        >>> p, side = projection(torch.randn(8, 4), 2)
        >>> tuple(p.shape), side
        ((2, 4), 'right')
    """
    u, _, vh = torch.linalg.svd(grad.float(), full_matrices=False)
    if grad.shape[0] >= grad.shape[1]:
        return vh[:rank].to(grad.dtype), "right"
    return u[:, :rank].to(grad.dtype), "left"


def galore_param_groups(
    param_groups: Iterable[dict[str, Any]], targets: set[int], rank: int, update_proj_gap: int = 200,
    scale: float = 0.25,
) -> list[dict[str, Any]]:
    """Splits each group into its plain parameters and those whose ``id`` is in ``targets``; the latter get
    GaLore's keys. Every other group setting (lr, weight decay, a scheduler's ``initial_lr``) is kept.

    Example:
        >>> lin = torch.nn.Linear(4, 4)
        >>> groups = galore_param_groups([{"params": list(lin.parameters()), "lr": 0.1}], {id(lin.weight)}, 2)
        >>> [("rank" in g, len(g["params"])) for g in groups]
        [(False, 1), (True, 1)]
    """
    groups = []
    for group in param_groups:
        rest = {k: v for k, v in group.items() if k != "params"}
        plain = [p for p in group["params"] if id(p) not in targets]
        projected = [p for p in group["params"] if id(p) in targets]
        if plain:
            groups.append({**rest, "params": plain})
        if projected:
            groups.append({**rest, "params": projected, "rank": rank, "update_proj_gap": update_proj_gap,
                           "scale": scale})
    return groups


class GaLoreAdamW(torch.optim.Optimizer):
    """AdamW with GaLore's gradient low-rank projection on the groups that set ``rank``.

    Args:
        params: parameters or groups; a group with ``rank`` (an int >= 1) projects its 2-D parameters' gradients
            and may set ``update_proj_gap`` (steps between new projections, default 200) and ``scale`` (the
            update's factor, default 0.25, the GaLore paper's α).
        lr, betas, eps, weight_decay: as :class:`torch.optim.AdamW` (decoupled decay).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise SstkitError(f"galore: lr, eps, weight_decay must be >= 0 and betas in [0, 1), got lr={lr}, "
                              f"betas={betas}, eps={eps}, weight_decay={weight_decay}")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})
        refuse_sharded_params("galore", [p for g in self.param_groups if "rank" in g for p in g["params"]])
        for group in self.param_groups:
            if "rank" not in group:
                continue
            rank, gap = group["rank"], group.setdefault("update_proj_gap", 200)
            group.setdefault("scale", 0.25)
            require_int("galore", "a group's rank", rank)
            require_int("galore", "update_proj_gap", gap)
            if any(p.dim() != 2 for p in group["params"]):
                raise SstkitError("galore: a group with rank may hold only 2-D weight matrices")
            check_optimizer_params("galore", group["params"])

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                grad = p.grad
                lowrank = "rank" in group and min(p.shape) > group["rank"]
                if lowrank:
                    # A new projection every update_proj_gap steps; the moments carry over, as in GaLore.
                    # The side follows the shape (not stored: optimizer state_dict loading mangles strings).
                    right = p.shape[0] >= p.shape[1]
                    if int(state["step"]) % group["update_proj_gap"] == 0:
                        state["projection"] = projection(grad, group["rank"])[0]
                    proj = state["projection"]
                    grad = grad @ proj.T if right else proj.T @ grad
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(grad)
                    state["exp_avg_sq"] = torch.zeros_like(grad)
                state["step"] += 1
                t = float(state["step"])
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                step_size = group["lr"] * math.sqrt(1 - beta2**t) / (1 - beta1**t)
                update = exp_avg / exp_avg_sq.sqrt().add_(group["eps"])
                if lowrank:
                    proj = state["projection"]
                    update = (update @ proj if right else proj @ update) * group["scale"]
                p.add_(update, alpha=-step_size)
                if group["weight_decay"]:
                    p.add_(p, alpha=-group["lr"] * group["weight_decay"])
        return loss
