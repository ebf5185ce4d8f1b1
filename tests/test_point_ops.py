"""Point-cloud ops: sort orders, equal-size grouping, flat attention, cRSE attention, sparse conv, KNN, spconv."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from sstkit.errors import SstkitError
from sstkit.nn.point import (
    ORDERS,
    ContextualRelativeAttention,
    FlatAttention,
    SparseConv3d,
    equal_size_groups,
    flat_window_orders,
    knn,
    lexicographic_key,
    neighbour_map,
    pack_windows,
    pad_windows,
    snake_rank,
    sparse_conv3d,
    spconv_available,
    voxelize,
    window_index,
    window_order,
    window_pairs,
)

torch.set_num_threads(1)


def _voxels(n: int = 600, samples: int = 2, extent: int = 20, dims: int = 3, seed: int = 0):
    """Unique random voxels (grid, batch) of several samples."""
    g = torch.Generator().manual_seed(seed)
    grid = torch.randint(0, extent, (n, dims), generator=g)
    batch = torch.randint(0, samples, (n,), generator=g)
    key = lexicographic_key([batch] + [grid[:, a] for a in range(dims)], [samples] + [extent] * dims)
    rows = torch.tensor(sorted({int(k): i for i, k in enumerate(key.tolist())}.values()))
    return grid[rows], batch[rows]


def test_lexicographic_key_sorts_like_tuples_and_refuses_overflow() -> None:
    cols = [torch.randint(0, 5, (200,)) for _ in range(3)]
    key = lexicographic_key(cols, [5, 5, 5])
    tuples = sorted(range(200), key=lambda i: (cols[0][i], cols[1][i], cols[2][i]))
    assert key[tuples].diff().ge(0).all()
    with pytest.raises(SstkitError, match="int64"):
        lexicographic_key(cols, [2**40, 2**30, 5])


def test_snake_rank_walks_adjacent_cells() -> None:
    a, b, c = torch.meshgrid(torch.arange(3), torch.arange(4), torch.arange(5), indexing="ij")
    rank = snake_rank([a.flatten(), b.flatten(), c.flatten()], [3, 4, 5])
    cells = torch.stack([a.flatten(), b.flatten(), c.flatten()], 1)[torch.argsort(rank)]
    assert sorted(rank.tolist()) == list(range(60))
    assert (cells.diff(dim=0).abs().sum(1) == 1).all()  # every step moves to a face neighbour


@pytest.mark.parametrize("dims", [2, 3])
def test_each_order_is_a_permutation_and_windows_are_contiguous(dims: int) -> None:
    grid, batch = _voxels(dims=dims)
    window = (4,) * dims
    orders = flat_window_orders(grid, batch, window)
    assert set(orders) == set(ORDERS)
    for perm in orders.values():
        assert torch.equal(torch.sort(perm).values, torch.arange(len(grid)))
        assert batch[perm].diff().ge(0).all()  # samples in order, never interleaved
    for name, shifted in (("x", False), ("y", False), ("x_shift", True)):
        ids = window_index(grid, batch, window, shifted)[orders[name]]
        runs = torch.unique_consecutive(ids)
        assert len(runs) == len(torch.unique(ids)), f"{name}: a window is split in the sorted order"


def test_shifted_order_uses_shifted_windows() -> None:
    grid, batch = _voxels()
    same = window_index(grid, batch, (4, 4, 4), False).unsqueeze(0) == window_index(grid, batch, (4, 4, 4), True)
    assert not same.all()


@pytest.mark.parametrize("counts", [[37, 5, 0, 64], [3], [1, 2]])
def test_grouping_pads_within_samples(counts: list[int]) -> None:
    size = 16
    batch = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    perm = torch.randperm(len(batch))
    perm = perm[torch.argsort(batch[perm], stable=True)]
    groups = equal_size_groups(perm, batch, size)
    assert groups.index.shape[1] == size
    for s, n in enumerate(counts):
        assert 0 <= int(groups.padded[s]) - n <= size - 1
    for row, real in zip(groups.index, groups.real):
        assert len(torch.unique(batch[row])) == 1  # no group spans two samples
        assert real.any()
    real_tokens = groups.index[groups.real]
    assert torch.equal(torch.sort(real_tokens).values, torch.arange(len(batch)))  # each token once


def test_flat_attention_with_one_group_equals_full_attention() -> None:
    torch.manual_seed(0)
    n, c = 23, 16
    attn = FlatAttention(c, heads=4).eval()
    x, pe = torch.randn(n, c), torch.randn(n, c)
    batch = torch.zeros(n, dtype=torch.long)
    groups = equal_size_groups(torch.arange(n), batch, group_size=32)  # G >= N: padding copies are masked
    out = torch.empty(n, c)
    got = attn(x[groups.index], pe[groups.index], groups.real)
    out[groups.index[groups.real]] = got[groups.real]
    q, k = attn.qk(x + pe).chunk(2, -1)
    v = attn.v(x)
    heads = [t.view(n, 4, -1).transpose(0, 1) for t in (q, k, v)]
    full = attn.out(F.softmax(heads[0] @ heads[1].transpose(1, 2) / 2.0, -1).matmul(heads[2]).transpose(0, 1)
                    .reshape(n, c))
    torch.testing.assert_close(out, full, atol=1e-5, rtol=1e-5)


def _naive_crse(attn: ContextualRelativeAttention, x, signals, query, key):
    m, c = x.shape
    q, k, v = attn.qkv(x).view(m, 3, attn.heads, attn.head_dim).unbind(1)
    q = q * attn.head_dim**-0.5
    out = torch.zeros(m, attn.heads, attn.head_dim)
    for i in range(m):
        js = key[query == i].tolist()
        logits, values = [], []
        for j in js:
            tq = torch.zeros(attn.heads, attn.head_dim)
            tk, tv = tq.clone(), tq.clone()
            for s in range(attn.num_signals):
                b = math.floor(float(signals[i, s] - signals[j, s]) * float(attn.quant[s])) + int(attn.length[s])
                b = min(max(b, 0), 2 * int(attn.length[s]) - 1)
                tq, tk, tv = tq + attn.table_q[s, b], tk + attn.table_k[s, b], tv + attn.table_v[s, b]
            logits.append((q[i] * k[j]).sum(-1) + (q[i] * tq).sum(-1) + (k[j] * tk).sum(-1))
            values.append(v[j] + tv)
        weight = torch.softmax(torch.stack(logits), 0)
        out[i] = (weight.unsqueeze(-1) * torch.stack(values)).sum(0)
    return attn.proj(out.reshape(m, c))


@pytest.mark.parametrize("signals", ["XYZ", "XYZ_RGB_NORM", None])
def test_crse_attention_equals_per_pair_reference(signals: str | None) -> None:
    torch.manual_seed(0)
    grid, batch = _voxels(n=60, samples=2, extent=6)
    attn = ContextualRelativeAttention(16, heads=2, window_size=3, signals=signals)
    if attn.num_signals:
        for table in (attn.table_q, attn.table_k, attn.table_v):
            table.data.normal_()  # large tables so that a wrong bin would show
    x = torch.randn(len(grid), 16)
    sig = torch.cat([grid.float() + torch.rand(len(grid), 3), torch.rand(len(grid), 6) * 2 - 1], 1)
    query, key = window_pairs(pack_windows(grid, batch, 3, shift=1))
    torch.testing.assert_close(attn(x, sig, query, key), _naive_crse(attn, x, sig, query, key),
                               atol=1e-4, rtol=1e-4)


def test_window_packing_has_no_padding() -> None:
    grid, batch = _voxels()
    packed = pack_windows(grid, batch, 5)
    assert int(packed.counts.sum()) == len(grid)
    query, key = window_pairs(packed)
    assert len(query) == int((packed.counts**2).sum())
    assert torch.equal(packed.window[query], packed.window[key])
    index, valid = pad_windows(packed, 125)
    assert int(valid.sum()) == len(grid) and index.shape == (packed.num_windows, 125)


def test_sparse_conv_equals_dense_conv3d() -> None:
    torch.manual_seed(0)
    coord = torch.rand(400, 3) * 2.0
    batch = torch.zeros(400, dtype=torch.long)
    vox = voxelize(coord, batch, 0.2)
    conv = SparseConv3d(4, 5, 3, backend="torch")
    feat = torch.randn(vox.num_voxels, 4)
    sparse = conv(feat, vox.grid, vox.batch)
    shape = (vox.grid.max(0).values + 1).tolist()
    dense_in = torch.zeros(1, 4, *shape)
    dense_in[0, :, vox.grid[:, 0], vox.grid[:, 1], vox.grid[:, 2]] = feat.t()
    weight = conv.weight.view(3, 3, 3, 4, 5).permute(4, 3, 0, 1, 2)
    dense = F.conv3d(dense_in, weight, conv.bias, padding=1)[0][:, vox.grid[:, 0], vox.grid[:, 1], vox.grid[:, 2]]
    torch.testing.assert_close(sparse, dense.t(), atol=1e-5, rtol=1e-5)


def test_neighbour_map_never_crosses_samples() -> None:
    grid = torch.tensor([[0, 0, 0], [0, 0, 1], [0, 0, 0]])
    batch = torch.tensor([0, 0, 1])
    nbrs = neighbour_map(grid, batch, 3)
    assert set(nbrs[2].tolist()) == {-1, 2}
    assert 1 in nbrs[0].tolist() and 2 not in nbrs[0].tolist()
    assert torch.equal(sparse_conv3d(torch.ones(3, 1), nbrs, torch.ones(27, 1, 1)).flatten(), torch.tensor([2., 2., 1.]))


def test_knn_within_samples_and_short_samples() -> None:
    ref = torch.tensor([[0.0, 0, 0], [1, 0, 0], [5, 0, 0], [0.1, 0, 0]])
    ref_batch = torch.tensor([0, 0, 0, 1])
    index, dist = knn(torch.tensor([[0.0, 0, 0], [0.0, 0, 0]]), ref, torch.tensor([0, 1]), ref_batch, k=2)
    assert index[0].tolist() == [0, 1] and index[1].tolist() == [3, 3]  # sample 1 has one point: repeated
    assert dist[1].tolist() == pytest.approx([0.1, 0.1])


def test_sparse_conv_backend_selection() -> None:
    conv = SparseConv3d(2, 3, backend="torch")
    assert conv.backend == "torch"
    if not spconv_available():
        assert SparseConv3d(2, 3).backend == "torch"  # auto falls back without spconv or CUDA
        with pytest.raises(SstkitError, match="spconv"):
            SparseConv3d(2, 3, backend="spconv")
    with pytest.raises(SstkitError, match="backend"):
        SparseConv3d(2, 3, backend="cuda")


@pytest.mark.slow
@pytest.mark.skipif(not spconv_available(), reason="spconv and CUDA are not available")
def test_spconv_backend_matches_torch_backend_on_cuda() -> None:
    torch.manual_seed(0)
    cin, cout, device = 4, 8, "cuda"
    fast = SparseConv3d(cin, cout, backend="spconv").to(device).eval()
    # Read spconv's kernel off by impulses (independent of its weight layout): a zero centre voxel and one
    # neighbour at offset o carrying e_c give y_centre = b + W_o[c]; offsets enumerate x-major as in the torch backend.
    centre, zero = torch.tensor([[2, 2, 2]], device=device), torch.zeros(1, dtype=torch.long, device=device)
    with torch.no_grad():
        bias = fast(torch.zeros(1, cin, device=device), centre, zero)[0]
        weight = torch.zeros(27, cin, cout, device=device)
        for o, offset in enumerate(itertools.product(range(-1, 2), repeat=3)):
            for c in range(cin):
                impulse = torch.zeros(2, cin, device=device)
                impulse[1, c] = 1.0
                if offset == (0, 0, 0):
                    weight[o, c] = fast(impulse[1:], centre, zero)[0] - bias
                else:
                    grid = torch.cat([centre, centre + torch.tensor([offset], device=device)])
                    weight[o, c] = fast(impulse, grid, zero.repeat(2))[0] - bias
        reference = SparseConv3d(cin, cout, backend="torch").to(device)
        reference.weight.copy_(weight)
        reference.bias.copy_(bias)
        # Two samples of a few thousand points: the neighbour maps of both backends must agree voxel by voxel.
        coord = torch.rand(4000, 3, device=device) * 2
        vox = voxelize(coord, torch.randint(0, 2, (4000,), device=device), 0.1)
        feat = torch.randn(vox.num_voxels, cin, device=device)
        out, expected = fast(feat, vox.grid, vox.batch), reference(feat, vox.grid, vox.batch)
    assert out.shape == (vox.num_voxels, cout)
    # Loose enough for TF32 kernels; a wrong neighbour or kernel offset is off by O(1).
    torch.testing.assert_close(out, expected, atol=1e-2, rtol=1e-2)


def test_window_order_rejects_unknown_order() -> None:
    grid, batch = _voxels()
    with pytest.raises(SstkitError, match="order"):
        window_order(grid, batch, (4, 4), "z")
