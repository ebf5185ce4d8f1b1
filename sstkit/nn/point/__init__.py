"""Point-cloud layers (no Lightning): voxelisation, serialisation, FlatFormer, Swin3D (cRSE), KNN, sparse conv.

Point clouds are batched by concatenation with Pointcept offsets (no padding). The pure-PyTorch paths run
everywhere; the sparse conv uses spconv when it imports and CUDA is present (``pip install sstkit[point-cuda]``).
"""

from sstkit.nn.point.crse import ContextualRelativeAttention, scatter_softmax
from sstkit.nn.point.flat_attention import FlatAttention, FlatFormerLayer, sincos_position_encoding
from sstkit.nn.point.flatformer import FlatFormerBackbone, FlatFormerEncoder
from sstkit.nn.point.grouping import FlatGroups, equal_size_groups
from sstkit.nn.point.knn import KNNDownsample, KNNUpsample, knn
from sstkit.nn.point.pointnet import PointNetBackbone
from sstkit.nn.point.serialization import (
                                           ORDERS,
                                           flat_window_orders,
                                           lexicographic_key,
                                           snake_rank,
                                           window_index,
                                           window_order,
)
from sstkit.nn.point.sparse_conv import SparseConv3d, neighbour_map, sparse_conv3d, spconv_available
from sstkit.nn.point.swin3d import SWIN3D_PRESETS, Swin3DBackbone
from sstkit.nn.point.voxelize import Voxels, batch_to_offset, offset_to_batch, scatter_max, scatter_mean, voxelize
from sstkit.nn.point.windows import PackedWindows, pack_windows, pad_windows, window_pairs

__all__ = [
    "ORDERS", "SWIN3D_PRESETS", "ContextualRelativeAttention", "FlatAttention", "FlatFormerBackbone",
    "FlatFormerEncoder", "FlatFormerLayer", "FlatGroups", "KNNDownsample", "KNNUpsample", "PackedWindows",
    "PointNetBackbone", "SparseConv3d", "Swin3DBackbone", "Voxels", "batch_to_offset", "equal_size_groups",
    "flat_window_orders", "knn", "lexicographic_key", "neighbour_map", "offset_to_batch", "pack_windows",
    "pad_windows", "scatter_max", "scatter_mean", "scatter_softmax", "sincos_position_encoding", "snake_rank",
    "sparse_conv3d", "spconv_available", "window_index", "window_order", "window_pairs", "voxelize",
]
