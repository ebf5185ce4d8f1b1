"""Hessian spectra of parameter blocks: Hessian-vector products, Lanczos, Q-BERT's sensitivity Ω.

For a block of parameters θ_i (one encoder layer), the loss L and its gradient g = ∂L/∂θ_i, the Hessian-vector
product is obtained by double backward, Hv = ∂(gᵀv)/∂θ_i, without forming H. Over a few batches b the products
are averaged, Hv = (1/B) Σ_b H_b v (under DDP the sum runs over the batches of every rank, by ``all_reduce``).

Q-BERT's "top eigenvalue" λ_i is the dominant one, the eigenvalue of largest magnitude, with its sign: what the
paper's power iteration converges to, and why Ω takes |mean λ| (a block's Hessian may have a dominant negative
eigenvalue when fine-tuning has not reached a minimum). sstkit computes it by Lanczos with full
re-orthogonalisation (:func:`top_eigenvalue`) instead of power iteration: where the most negative and the most
positive eigenvalue have nearly equal magnitude, power iteration converges slowly or not at all (+1.511 returned
for a block whose dominant eigenvalue is −1.775, next +1.366), while Lanczos resolves both ends of the spectrum at
once. Each Lanczos step costs one Hessian-vector product; iteration stops when the extreme Ritz pairs (θ, y) have
relative residual ‖Hy − θy‖ ≤ ``tol``·|θ| or after ``max_iter`` steps. Repeating this on ``num_subsets`` disjoint
data subsets gives the Q-BERT sensitivity

    Ω_i = |mean(λ_i)| + std(λ_i).

Blocks are found generically from parameter names: every ``<prefix>.layer.<k>.`` (BERT-style encoders) or
``<prefix>.layers.<k>.`` (OPT, Llama …), or an explicit list of name prefixes, so any model family works.

Example:
    >>> loss_fn = lambda model, batch: F.cross_entropy(model(batch[0]), batch[1])   # doctest: +SKIP
    >>> result = block_sensitivities(model, loss_fn, batches, num_subsets=3, max_iter=20)  # doctest: +SKIP
    >>> result.omega        # {"encoder.layer.0": 1.3, …}                              # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from sstkit.errors import SstkitError

LossFn = Callable[[nn.Module, Any], Tensor]
LAYER_CONTAINERS = ("layer", "layers")


def discover_blocks(model: nn.Module, prefixes: Sequence[str] | None = None) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """Trainable parameters grouped into blocks, in model order.

    Args:
        model: any module.
        prefixes: dotted name prefixes, one per block (``["encoder.layer.0", …]``). Default: every first
            ``layer.<k>`` / ``layers.<k>`` found in a parameter name (HF encoders, OPT/Llama decoders).

    Example:
        >>> list(discover_blocks(bert))[:2]   # doctest: +SKIP
        ['encoder.encoder.layer.0', 'encoder.encoder.layer.1']
    """
    blocks: dict[str, list[tuple[str, nn.Parameter]]] = {}
    wanted = [p.rstrip(".") for p in prefixes] if prefixes is not None else None
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        key = _block_of(name, wanted)
        if key is not None:
            blocks.setdefault(key, []).append((name, param))
    if wanted is not None:
        missing = [p for p in wanted if p not in blocks]
        if missing:
            raise SstkitError(f"hessian: block prefixes {missing} match no trainable parameter of "
                              f"{type(model).__name__}")
        blocks = {p: blocks[p] for p in wanted}
    return blocks


def _block_of(name: str, prefixes: list[str] | None) -> str | None:
    if prefixes is not None:
        return next((p for p in prefixes if name.startswith(p + ".")), None)
    parts = name.split(".")
    for i in range(len(parts) - 2):
        if parts[i] in LAYER_CONTAINERS and parts[i + 1].isdigit():
            return ".".join(parts[: i + 2])
    return None


@contextmanager
def grad_only_for(model: nn.Module, params: Sequence[nn.Parameter]) -> Iterator[None]:
    """Temporarily let only ``params`` require gradients, so autograd builds no graph below the block."""
    keep = {id(p) for p in params}
    saved = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in saved:
            p.requires_grad_(id(p) in keep)
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode (dropout off) for the duration, restoring every submodule's own mode afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.train(mode)


def _dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    return sum((x * y).sum() for x, y in zip(a, b))  # type: ignore[return-value]


def _normalize(v: Sequence[Tensor]) -> list[Tensor]:
    norm = torch.sqrt(_dot(v, v)) + 1e-12
    return [x / norm for x in v]


def hvp(loss: Tensor, params: Sequence[Tensor], vector: Sequence[Tensor]) -> tuple[Tensor, ...]:
    """One Hessian-vector product Hv = ∂(gᵀv)/∂θ by double backward.

    Example:
        >>> (hv,) = hvp((w ** 3).sum(), [w], [torch.ones_like(w)])   # doctest: +SKIP  (= 6w)
    """
    grads = torch.autograd.grad(loss, params, create_graph=True)
    return torch.autograd.grad(_dot(grads, vector), params)


class HessianOperator:
    """v ↦ Hv of the mean loss over ``batches`` w.r.t. ``params``, summed across DDP ranks.

    The first-order gradient graph of each batch is built once and reused by every product (``keep_graph``),
    which halves the cost of each Lanczos step at the price of memory for a few batches.

    Args:
        model: the module ``loss_fn`` runs.
        loss_fn: ``loss_fn(model, batch) -> scalar``.
        batches: the batches (already on the model's device).
        params: the parameters the Hessian is taken over.
        keep_graph: keep the per-batch gradient graphs between products.
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, batches: Sequence[Any], params: Sequence[nn.Parameter],
                 keep_graph: bool = True) -> None:
        if not batches:
            raise SstkitError("hessian: no batches to compute Hessian-vector products on")
        self.model, self.loss_fn, self.batches, self.params = model, loss_fn, list(batches), list(params)
        self.keep_graph = keep_graph
        self._grads: list[tuple[Tensor, ...]] = []
        self.count = 0  # Hessian-vector products with one batch, on this rank

    def _grad(self, batch: Any) -> tuple[Tensor, ...]:
        loss = self.loss_fn(self.model, batch)
        return torch.autograd.grad(loss, self.params, create_graph=True)

    def __call__(self, vector: Sequence[Tensor]) -> list[Tensor]:
        total = [torch.zeros_like(p) for p in self.params]
        # Fused attention kernels (flash, memory-efficient, CPU flash) have no double backward; the math one does.
        with grad_only_for(self.model, self.params), torch.enable_grad(), sdpa_kernel(SDPBackend.MATH):
            if self.keep_graph and not self._grads:
                self._grads = [self._grad(b) for b in self.batches]
            for i, batch in enumerate(self.batches):
                grads = self._grads[i] if self.keep_graph else self._grad(batch)
                products = torch.autograd.grad(_dot(grads, vector), self.params, retain_graph=self.keep_graph)
                for acc, hv in zip(total, products):
                    acc.add_(hv.detach())
                self.count += 1
        count = torch.tensor(float(len(self.batches)), device=total[0].device)
        if dist.is_available() and dist.is_initialized():
            # Summing over ranks makes Hv the mean over every rank's batches; all ranks then iterate identically.
            for acc in total:
                dist.all_reduce(acc)
            dist.all_reduce(count)
        return [acc / count for acc in total]

    def release(self) -> None:
        """Frees the kept gradient graphs."""
        self._grads = []


@dataclass
class EigenResult:
    """The top (largest-magnitude) eigenvalue, its Lanczos step count and the Ritz vector (the eigenvector estimate)."""

    value: float
    iterations: int
    converged: bool
    vector: list[Tensor] = field(repr=False, default_factory=list)


def top_eigenvalue(operator: Callable[[Sequence[Tensor]], list[Tensor]], params: Sequence[Tensor],
                   max_iter: int = 20, tol: float = 1e-3, seed: int = 0) -> EigenResult:
    """The largest-magnitude eigenvalue of a symmetric operator, with its sign, by Lanczos.

    Each step costs one operator product. The Krylov basis is fully re-orthogonalised (twice per step), so the
    Ritz values of the tridiagonal matrix T are reliable; both ends of the spectrum converge together, which plain
    power iteration cannot do when the most negative and the most positive eigenvalue have nearly equal magnitude.
    Iteration stops when both extreme Ritz pairs (θ, y) have residual ‖Hy − θy‖ = β·|last entry of y| at most
    ``tol``·|θ_top|: a purely relative bound, so eigenvalues of size 1e-6 or 1e-9 are found as accurately as those
    of size 1. Memory: ``max_iter`` vectors of the block's size.

    The start vector comes from a private generator seeded by ``seed``, so every DDP rank starts from the same
    vector and the global RNG (hence a resumed run) is untouched.

    Example:
        >>> A = torch.diag(torch.tensor([3.0, 1.0, -3.2]))
        >>> round(top_eigenvalue(lambda v: [A @ v[0]], [torch.zeros(3)], max_iter=50, tol=1e-6).value, 3)
        -3.2
    """
    if max_iter < 1:
        raise SstkitError(f"max_iter must be >= 1, got {max_iter}")
    if tol <= 0:
        raise SstkitError(f"tol must be > 0, got {tol}")
    generator = torch.Generator().manual_seed(seed)
    q = _normalize([torch.randn(p.shape, generator=generator).to(p.device, p.dtype) for p in params])
    basis: list[list[Tensor]] = []
    alphas: list[float] = []
    betas: list[float] = []
    for step in range(1, max_iter + 1):
        basis.append(q)
        w = operator(q)
        alphas.append(float(_dot(w, q)))
        for _ in range(2):  # "twice is enough": one Gram-Schmidt pass leaves rounding-level loss of orthogonality
            for b in basis:
                c = _dot(w, b)
                w = [x - c * y for x, y in zip(w, b)]
        beta = float(torch.sqrt(_dot(w, w)))
        ritz, vectors = torch.linalg.eigh(_tridiagonal(alphas, betas))
        top = int(ritz.abs().argmax())
        residual = beta * vectors[-1].abs()  # ‖H y_i − θ_i y_i‖ for every Ritz pair
        converged = bool(max(residual[0], residual[-1]) <= tol * abs(ritz[top])) or beta == 0.0
        if converged or step == max_iter:
            coefficients = vectors[:, top].tolist()
            vector = [sum(c * b[i] for c, b in zip(coefficients, basis)) for i in range(len(params))]
            return EigenResult(float(ritz[top]), step, converged, vector)
        betas.append(beta)
        q = [x / beta for x in w]
    raise AssertionError("unreachable")


def _tridiagonal(alphas: Sequence[float], betas: Sequence[float]) -> Tensor:
    """The Lanczos matrix T (float64: its eigenvalues decide convergence)."""
    t = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if betas:
        off = torch.tensor(betas, dtype=torch.float64)
        t += torch.diag(off, 1) + torch.diag(off, -1)
    return t


@dataclass
class SensitivityResult:
    """Per-block eigenvalue estimates and the sensitivity Ω = |mean λ| + std λ."""

    eigenvalues: dict[str, list[float]]
    omega: dict[str, float]
    hvps: int  # Hessian-vector products with one batch, on this rank
    seconds: float
    iterations: dict[str, list[int]] = field(default_factory=dict)


def omega_of(values: Sequence[float]) -> float:
    """Ω = |mean λ| + std λ (population std, so a single estimate gives |λ|)."""
    mean = sum(values) / len(values)
    std = math.sqrt(sum((x - mean) ** 2 for x in values) / len(values))
    return abs(mean) + std


def block_sensitivities(model: nn.Module, loss_fn: LossFn, batches: Sequence[Any],
                        blocks: Sequence[str] | None = None, num_subsets: int = 3, max_iter: int = 20,
                        tol: float = 1e-3, seed: int = 0, keep_graph: bool = True) -> SensitivityResult:
    """Q-BERT's Ω for every block: top Hessian eigenvalues on ``num_subsets`` disjoint subsets of ``batches``.

    The model runs in eval mode (dropout off) and its modes are restored afterwards. Use fp32 weights.

    Args:
        model: any module; ``loss_fn(model, batch)`` returns the scalar loss.
        loss_fn: the loss closure.
        batches: at least ``num_subsets`` batches, split into consecutive equal subsets.
        blocks: block name prefixes (default: discovered, see :func:`discover_blocks`).
        num_subsets: number of eigenvalue estimates per block.
        max_iter, tol: Lanczos limits (steps = Hessian-vector products; relative residual).
        seed: start vectors (block j, subset s uses ``seed + 1000·j + s``).
        keep_graph: reuse each batch's gradient graph across products.

    Example:
        >>> res = block_sensitivities(model, loss_fn, batches, num_subsets=2, max_iter=10)  # doctest: +SKIP
    """
    if num_subsets < 1:
        raise SstkitError(f"num_subsets must be >= 1, got {num_subsets}")
    if len(batches) < num_subsets:
        raise SstkitError(f"hessian: {len(batches)} batches cannot make {num_subsets} data subsets")
    found = discover_blocks(model, blocks)
    if not found:
        raise SstkitError(f"hessian: no blocks found in {type(model).__name__} (no parameter named *.layer.<k>.* "
                          f"or *.layers.<k>.*); pass the block name prefixes explicitly")
    per = len(batches) // num_subsets
    subsets = [list(batches[s * per:(s + 1) * per]) for s in range(num_subsets)]
    start, hvps = time.perf_counter(), 0
    eigenvalues: dict[str, list[float]] = {}
    iterations: dict[str, list[int]] = {}
    with eval_mode(model):
        for j, (name, named) in enumerate(found.items()):
            params = [p for _, p in named]
            for s, subset in enumerate(subsets):
                operator = HessianOperator(model, loss_fn, subset, params, keep_graph)
                result = top_eigenvalue(operator, params, max_iter, tol, seed + 1000 * j + s)
                operator.release()
                hvps += operator.count
                eigenvalues.setdefault(name, []).append(result.value)
                iterations.setdefault(name, []).append(result.iterations)
    omega = {name: omega_of(values) for name, values in eigenvalues.items()}
    return SensitivityResult(eigenvalues, omega, hvps, time.perf_counter() - start, iterations)
