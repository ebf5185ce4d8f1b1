"""FlatFormer's equal-size grouping: sorted tokens are cut into groups of exactly ``G`` tokens per sample.

After sorting (see :mod:`sstkit.nn.point.serialization`) the tokens of a sample are contiguous. Each sample's
``n`` tokens are padded to ``ceil(n / G) * G`` by repeating its own tokens cyclically (copies of real tokens of
the same sample, never of another sample or zeros), so every group holds ``G`` tokens of one sample and no group
spans two samples. At most ``G - 1`` copies are added per sample; a sample with fewer than ``G`` tokens is one
group (its tokens repeated), which the official implementation does not handle. Copies are marked in
``key_mask`` so attention can ignore them as keys, and their outputs are dropped when scattering back.

Example:
    >>> groups = equal_size_groups(perm, batch, group_size=144)
    >>> tokens = x[groups.index]          # (num_groups, G, C)
    >>> x_new[groups.index[groups.real]] = out[groups.real]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sstkit.errors import SstkitError


@dataclass
class FlatGroups:
    """Groups of equal size over a sorted token list.

    Attributes:
        index: (num_groups, G) token indices (into the unsorted token array).
        real: (num_groups, G) True for the first occurrence of a token, False for padding copies.
        counts: (B,) tokens per sample; padded: (B,) tokens per sample after padding.
    """

    index: Tensor
    real: Tensor
    counts: Tensor
    padded: Tensor

    @property
    def group_size(self) -> int:
        return int(self.index.shape[1])

    @property
    def padding_ratio(self) -> float:
        """Copies over real tokens (0 means no padding)."""
        real = int(self.counts.sum())
        return (int(self.padded.sum()) - real) / max(real, 1)

    @property
    def has_padding(self) -> bool:
        return bool(self.padded.sum() != self.counts.sum())


def equal_size_groups(perm: Tensor, batch: Tensor, group_size: int, num_samples: int | None = None) -> FlatGroups:
    """Cuts the sorted tokens ``perm`` into groups of ``group_size`` tokens that never span samples.

    Args:
        perm: (M,) sort permutation whose samples are contiguous and in increasing order.
        batch: (M,) sample index of every token (unsorted order).
        group_size: tokens per group ``G``.
        num_samples: number of samples (default: ``batch.max() + 1``).
    """
    if group_size < 1:
        raise SstkitError(f"group_size must be >= 1, got {group_size}")
    device = perm.device
    num_samples = num_samples or (int(batch.max()) + 1 if len(batch) else 0)
    counts = torch.bincount(batch, minlength=num_samples)
    padded = (counts + group_size - 1) // group_size * group_size
    starts = torch.cumsum(counts, 0) - counts
    padded_starts = torch.cumsum(padded, 0) - padded
    sample = torch.repeat_interleave(torch.arange(num_samples, device=device), padded)
    local = torch.arange(int(padded.sum()), device=device) - padded_starts[sample]
    # Cyclic copies of the sample's own sorted tokens: works for n < G too (tokens repeat several times).
    source = starts[sample] + local % counts[sample].clamp(min=1)
    real = local < counts[sample]
    return FlatGroups(
        index=perm[source].view(-1, group_size), real=real.view(-1, group_size), counts=counts, padded=padded
    )
