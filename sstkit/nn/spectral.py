"""SpectralLinear: a linear layer held as ``W = U diag(s) Vh`` and trained sparsely in its spectrum.

The method, its equations and the symbols used here are described once in :mod:`sstkit.functional.sst`. This
module holds the layer and its two closed-form autograd functions:

* ``dense`` forward materialises ``W`` in fp32 once per call and runs ``F.linear``; :class:`_SpectralWeight`
  turns ``G = dL/dW`` into the factor gradients.
* ``factored`` forward computes ``((x Vhᵀ) ⊙ s) Uᵀ`` without forming ``W``; :class:`_SpectralFactored` returns
  the same factor gradients from the activations.

``SpectralLinear`` is deliberately *not* a subclass of ``nn.Linear``, so layer selection skips layers already
wrapped (idempotent surgery), and code that reads ``linear.weight`` expecting a trainable parameter fails loudly.

Example:
    >>> import torch
    >>> dense = torch.nn.Linear(16, 8)
    >>> layer = SpectralLinear.from_linear(dense, rank=2, generator_seed=0)
    >>> x = torch.randn(3, 16)
    >>> torch.allclose(layer(x), dense(x), atol=1e-5)
    True
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sstkit.nn.sampling import sample_indices

ForwardMode = Literal["dense", "factored"]
FORWARD_MODES = ("dense", "factored")
_AUTOCAST_DEVICES = frozenset({"cpu", "cuda", "xpu", "mps", "hpu"})


def _no_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    # Factors, SVD and the factor gradients must stay fp32 even inside a mixed-precision region.
    if device.type in _AUTOCAST_DEVICES:
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def _full_factors(U: Tensor, Vh: Tensor, U_a: Tensor, Vh_a: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
    """fp32 factors with the active block written over the frozen buffers at the sampled indices."""
    return U.float().index_copy(1, idx, U_a.float()), Vh.float().index_copy(0, idx, Vh_a.float())


class _SpectralWeight(torch.autograd.Function):
    """``W = U diag(s) Vh`` with closed-form (enhanced or true) gradients for ``s`` and the active block."""

    @staticmethod
    def forward(ctx: Any, U: Tensor, Vh: Tensor, s: Tensor, U_a: Tensor, Vh_a: Tensor, idx: Tensor, enhanced: bool):
        Uf, Vhf = _full_factors(U, Vh, U_a, Vh_a, idx)
        # Saving the originals (not Uf/Vhf) keeps no extra weight-sized copies alive until backward.
        ctx.save_for_backward(U, Vh, s, U_a, Vh_a, idx)
        ctx.enhanced = enhanced
        return (Uf * s.float()) @ Vhf

    @staticmethod
    def backward(ctx: Any, G: Tensor):
        U, Vh, s, U_a, Vh_a, idx = ctx.saved_tensors
        need_s, need_u, need_vh = ctx.needs_input_grad[2:5]
        ds = dU = dVh = None
        with _no_autocast(G.device):
            G = G.float()
            s_S = s.float().index_select(0, idx)
            if need_s:
                Uf, Vhf = _full_factors(U, Vh, U_a, Vh_a, idx)
                GV = G @ Vhf.mT  # column i is G v_i, so ds_i = u_iᵀ G v_i and the active columns come for free
                ds = (Uf * GV).sum(0).to(s.dtype)
                GV_S = GV.index_select(1, idx)
            elif need_u:
                GV_S = G @ Vh_a.float().mT
            if need_u:
                dU = (GV_S if ctx.enhanced else GV_S * s_S).to(U_a.dtype)
            if need_vh:
                UtG = U_a.float().mT @ G
                dVh = (UtG if ctx.enhanced else s_S[:, None] * UtG).to(Vh_a.dtype)
        return None, None, ds, dU, dVh, None, None


class _SpectralFactored(torch.autograd.Function):
    """``y = ((x Vhᵀ) ⊙ s) Uᵀ`` for 2-D ``x`` with the same closed-form factor gradients as the dense path."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, U: Tensor, Vh: Tensor, s: Tensor, U_a: Tensor, Vh_a: Tensor, idx: Tensor,
                enhanced: bool, dtype: torch.dtype):  # fmt: skip
        Uf, Vhf = _full_factors(U, Vh, U_a, Vh_a, idx)
        xc = x.to(dtype)
        h = xc @ Vhf.to(dtype).mT
        y = (h * s.to(dtype)) @ Uf.to(dtype).mT
        ctx.save_for_backward(xc, h, U, Vh, s, U_a, Vh_a, idx)
        ctx.enhanced, ctx.x_dtype = enhanced, x.dtype
        return y

    @staticmethod
    def backward(ctx: Any, gy: Tensor):
        xc, h, U, Vh, s, U_a, Vh_a, idx = ctx.saved_tensors
        need_x, need_s, need_u, need_vh = (ctx.needs_input_grad[i] for i in (0, 3, 4, 5))
        dx = ds = dU = dVh = None
        with _no_autocast(gy.device):
            dtype = h.dtype
            Uf, Vhf = _full_factors(U, Vh, U_a, Vh_a, idx)
            gy = gy.to(dtype)
            sc = s.to(dtype)
            gz = gy @ Uf.to(dtype)  # dL/d(h ⊙ s)
            gh = gz * sc
            if need_x:
                dx = (gh @ Vhf.to(dtype)).to(ctx.x_dtype)
            if need_s:
                ds = (gz.float() * h.float()).sum(0).to(s.dtype)
            if need_u:
                h_S = h.index_select(1, idx)
                dU = (gy.mT @ (h_S if ctx.enhanced else h_S * sc.index_select(0, idx))).to(U_a.dtype)
            if need_vh:
                g_S = (gz if ctx.enhanced else gh).index_select(1, idx)
                dVh = (g_S.mT @ xc).to(Vh_a.dtype)
        return dx, None, None, ds, dU, dVh, None, None, None


class SpectralLinear(nn.Module):
    """A linear layer stored as its full reduced SVD, of which ``s`` and ``rank`` sampled triplets train.

    Trainable: ``s`` (k), the active block ``U_active`` (out×r) and ``Vh_active`` (r×in), and ``bias``.
    Frozen buffers: ``U`` (out×k), ``Vh`` (k×in) and ``active_indices`` (r, long); the buffers' entries at
    ``active_indices`` are stale while a block is active and are refreshed by :meth:`resample` / :meth:`resvd_`.
    The per-layer sampling ``generator`` is saved in the state dict (extra state), so a resumed run samples the
    same indices. Factors are fp32 whatever the input dtype.

    Args:
        in_features: input width.
        out_features: output width.
        rank: number r of triplets trained at a time, ``1 <= r <= min(in_features, out_features)``.
        bias: whether to keep a (dense, trainable) bias.
        generator_seed: seed of this layer's sampling generator.
        enhanced_grad: drop the ``s_i`` factor from the active columns' gradients (the paper's default).
        forward_mode: ``"dense"`` (materialise W, one matmul) or ``"factored"`` (two thin matmuls).
        device: where to allocate.
        reset: initialise like ``nn.Linear`` and decompose; ``False`` leaves the tensors empty for a caller that
            fills them (``from_linear``, ``load_state_dict``).

    Example:
        >>> layer = SpectralLinear(64, 32, rank=8)
        >>> layer(torch.randn(4, 64)).shape
        torch.Size([4, 32])
    """

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True, generator_seed: int = 0,
                 enhanced_grad: bool = True, forward_mode: ForwardMode = "dense",
                 device: torch.device | str | None = None, reset: bool = True) -> None:  # fmt: skip
        super().__init__()
        k = min(in_features, out_features)
        if not 1 <= rank <= k:
            raise ValueError(f"rank must be in [1, min(in, out) = {k}], got {rank}")
        if forward_mode not in FORWARD_MODES:
            raise ValueError(f"forward_mode must be one of {FORWARD_MODES}, got {forward_mode!r}")
        self.in_features, self.out_features, self.k, self.rank = in_features, out_features, k, rank
        self.enhanced_grad, self.forward_mode, self.generator_seed = enhanced_grad, forward_mode, generator_seed
        f32 = {"device": device, "dtype": torch.float32}
        self.s = nn.Parameter(torch.empty(k, **f32))
        self.U_active = nn.Parameter(torch.empty(out_features, rank, **f32))
        self.Vh_active = nn.Parameter(torch.empty(rank, in_features, **f32))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features, **f32))
        else:
            self.register_parameter("bias", None)
        self.register_buffer("U", torch.empty(out_features, k, **f32))
        self.register_buffer("Vh", torch.empty(k, in_features, **f32))
        self.register_buffer("active_indices", torch.arange(rank, device=device))
        # CPU generator: the same seed samples the same indices on any device and on every DDP rank.
        self.generator = torch.Generator().manual_seed(generator_seed)
        if reset:
            self.reset_parameters()

    @classmethod
    def from_linear(cls, linear: nn.Linear, rank: int, generator_seed: int, enhanced_grad: bool = True,
                    forward_mode: ForwardMode = "dense", rule: str = "mixed") -> SpectralLinear:  # fmt: skip
        """Decompose ``linear`` (full reduced SVD in fp32) and sample the first ``rank`` active indices by ``rule``.

        Example:
            >>> layer = SpectralLinear.from_linear(torch.nn.Linear(16, 8), rank=2, generator_seed=0)
        """
        layer = cls(linear.in_features, linear.out_features, rank, bias=linear.bias is not None,
                    generator_seed=generator_seed, enhanced_grad=enhanced_grad, forward_mode=forward_mode,
                    device=linear.weight.device, reset=False)  # fmt: skip
        with torch.no_grad():
            if linear.bias is not None:
                layer.bias.copy_(linear.bias.float())
        layer._initialise_(linear.weight.detach(), rule)
        return layer

    def reset_parameters(self) -> None:
        """Initialise like ``nn.Linear`` (Kaiming-uniform W, uniform bias), decompose and sample indices."""
        weight = torch.empty(self.out_features, self.in_features, device=self.s.device)
        nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features)
            nn.init.uniform_(self.bias, -bound, bound)
        self._initialise_(weight, "mixed")

    @torch.no_grad()
    def _initialise_(self, weight: Tensor, rule: str) -> None:
        self._decompose_(weight)
        self._read_active_(self.sample(rule))

    @torch.no_grad()
    def _decompose_(self, weight: Tensor) -> None:
        U, s, Vh = torch.linalg.svd(weight.float(), full_matrices=False)
        self.U.copy_(U)
        self.s.copy_(s)
        self.Vh.copy_(Vh)

    @torch.no_grad()
    def _write_back_(self) -> None:
        self.U[:, self.active_indices] = self.U_active.to(self.U.dtype)
        self.Vh[self.active_indices] = self.Vh_active.to(self.Vh.dtype)

    @torch.no_grad()
    def _read_active_(self, indices: Tensor) -> None:
        # In-place copies: the optimizer must keep pointing at the same Parameter objects.
        self.active_indices.copy_(indices)
        self.U_active.copy_(self.U[:, self.active_indices])
        self.Vh_active.copy_(self.Vh[self.active_indices])

    def sample(self, rule: str = "mixed") -> Tensor:
        """Draw ``rank`` distinct indices from this layer's generator (see :func:`sstkit.nn.sampling.sample_indices`).

        Example:
            >>> layer.resample(layer.sample("mixed"))  # doctest: +SKIP
        """
        return sample_indices(self.s.detach(), self.rank, rule, self.generator).to(self.active_indices.device)

    @torch.no_grad()
    def resample(self, indices: Tensor) -> None:
        """Write the active block back into ``U``/``Vh``, then make ``indices`` the active block.

        W is unchanged. The optimizer state of ``U_active``/``Vh_active`` now describes other vectors; the caller
        resets it (:func:`sstkit.functional.optim_state.reset_adam_state`).

        Example:
            >>> layer.resample(torch.tensor([0, 5]))  # doctest: +SKIP
        """
        indices = torch.as_tensor(indices, dtype=torch.long, device=self.active_indices.device).flatten()
        if indices.numel() != self.rank or indices.unique().numel() != self.rank:
            raise ValueError(f"resample needs {self.rank} distinct indices, got {indices.tolist()}")
        if int(indices.min()) < 0 or int(indices.max()) >= self.k:
            raise ValueError(f"resample indices must be in [0, {self.k}), got {indices.tolist()}")
        self._write_back_()
        self._read_active_(indices)

    @torch.no_grad()
    def renormalize_(self, eps: float = 1e-12) -> None:
        """Rescale active columns of U and rows of Vh to unit norm and clamp ``s >= 0``; call after ``optimizer.step``.

        Example:
            >>> optimizer.step(); layer.renormalize_()  # doctest: +SKIP
        """
        U_a, Vh_a = self.U_active.float(), self.Vh_active.float()
        self.U_active.copy_(U_a / U_a.norm(dim=0, keepdim=True).clamp_min(eps))
        self.Vh_active.copy_(Vh_a / Vh_a.norm(dim=1, keepdim=True).clamp_min(eps))
        self.s.clamp_(min=0)

    @torch.no_grad()
    def resvd_(self) -> None:
        """Re-decompose the current W by SVD (restoring orthogonality); the active indices keep their slots.

        ``s`` is re-sorted, so the caller should also reset the optimizer state of ``s`` and the active block.

        Example:
            >>> layer.resvd_()  # doctest: +SKIP
        """
        self._decompose_(self._dense_weight())
        self._read_active_(self.active_indices.clone())

    @torch.no_grad()
    def factors(self) -> tuple[Tensor, Tensor, Tensor]:
        """The effective fp32 ``(U, s, Vh)`` with the active block in place (detached copies).

        Example:
            >>> U, s, Vh = layer.factors()  # doctest: +SKIP
        """
        U, Vh = _full_factors(self.U, self.Vh, self.U_active, self.Vh_active, self.active_indices)
        return U, self.s.detach().float().clone(), Vh

    def _dense_weight(self) -> Tensor:
        U, s, Vh = self.factors()
        return (U * s) @ Vh

    @property
    def weight(self) -> Tensor:
        """The dense ``W = U diag(s) Vh`` (no grad), in the parameters' dtype."""
        with torch.no_grad():
            return self._dense_weight().to(self.s.dtype)

    def forward(self, x: Tensor) -> Tensor:
        factors = (self.U, self.Vh, self.s, self.U_active, self.Vh_active, self.active_indices, self.enhanced_grad)
        if self.forward_mode == "dense":
            with _no_autocast(x.device):
                W = _SpectralWeight.apply(*factors)
            bias = None if self.bias is None else self.bias.to(x.dtype)
            # Outside the fp32 region: under autocast F.linear itself picks the matmul dtype.
            return F.linear(x, W.to(x.dtype), bias)
        device_type = x.device.type
        autocast_on = device_type in _AUTOCAST_DEVICES and torch.is_autocast_enabled(device_type)
        dtype = torch.get_autocast_dtype(device_type) if autocast_on else x.dtype
        with _no_autocast(x.device):
            y = _SpectralFactored.apply(x.reshape(-1, self.in_features), *factors, dtype)
        y = y.reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias.to(y.dtype)

    @torch.no_grad()
    def merge(self, prune_fraction: float = 0.0) -> nn.Linear:
        """A plain ``nn.Linear`` holding the current W, optionally keeping only the largest singular values.

        Args:
            prune_fraction: share of the k singular values to drop, smallest first (``0.25`` keeps the top 75%).

        Example:
            >>> dense = layer.merge(prune_fraction=0.5)  # doctest: +SKIP
        """
        if not 0.0 <= prune_fraction < 1.0:
            raise ValueError(f"prune_fraction must be in [0, 1), got {prune_fraction}")
        U, s, Vh = self.factors()
        keep = self.k - int(prune_fraction * self.k)
        if keep < self.k:
            top = torch.topk(s, keep).indices
            U, s, Vh = U[:, top], s[top], Vh[top]
        dtype = self.s.dtype
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device=self.s.device,
                           dtype=dtype)  # fmt: skip
        linear.weight.copy_(((U * s) @ Vh).to(dtype))
        if self.bias is not None:
            linear.bias.copy_(self.bias.to(dtype))
        return linear

    def get_extra_state(self) -> dict[str, Tensor]:
        return {"generator_state": self.generator.get_state()}

    def set_extra_state(self, state: dict[str, Tensor]) -> None:
        self.generator.set_state(state["generator_state"].cpu())

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, k={self.k}, "
            f"bias={self.bias is not None}, enhanced_grad={self.enhanced_grad}, forward_mode={self.forward_mode!r}"
        )
