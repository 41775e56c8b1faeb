"""Prompt encoding into the network's extra input channel, in the preprocessed voxel grid.

nnU-Net preprocessing takes the input array (z, y, x) through three steps, each exactly invertible
on continuous voxel indices:

1. **transpose** by the plans' ``transpose_forward`` (network axis ``i`` = input axis ``transpose[i]``);
2. **crop** to the non-zero bounding box (``crop_start`` in the transposed frame);
3. **resample** ``crop_shape`` -> ``net_shape`` with voxel centres aligned as in nnU-Net's resampling
   (``align_corners=False``): ``net = (crop + 0.5) * net_shape / crop_shape - 0.5``.

:class:`GridMap` holds these and maps points both ways. The encodings follow the released
LesionLocator models: a point becomes a ball (radius 5 network voxels, centred on the nearest
network voxel, every voxel within ``radius + 0.5`` included, as ``skimage.morphology.ball(5,
strict_radius=False)``); a box becomes the network voxels whose centres lie inside the box's
outer faces, dilated by one voxel; a mask is resampled by nearest neighbour.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lesionlocator.segment.api import Prompt


@dataclass(frozen=True)
class GridMap:
    """Input voxel index (z, y, x) <-> network grid index, through transpose, crop and resampling."""

    transpose: tuple[int, int, int]
    crop_start: tuple[int, int, int]
    crop_shape: tuple[int, int, int]
    net_shape: tuple[int, int, int]

    @property
    def scale(self) -> np.ndarray:
        """Network voxels per cropped input voxel, per network axis."""
        return np.asarray(self.net_shape, float) / np.asarray(self.crop_shape, float)

    @property
    def inverse_transpose(self) -> tuple[int, int, int]:
        return tuple(int(i) for i in np.argsort(self.transpose))

    def to_net(self, index_zyx: np.ndarray) -> np.ndarray:
        """Continuous input indices ``(..., 3)`` (z, y, x) -> continuous network indices."""
        t = np.asarray(index_zyx, float)[..., list(self.transpose)]
        return (t - np.asarray(self.crop_start) + 0.5) * self.scale - 0.5

    def to_input(self, net_index: np.ndarray) -> np.ndarray:
        """Continuous network indices ``(..., 3)`` -> continuous input indices (z, y, x)."""
        crop = (np.asarray(net_index, float) + 0.5) / self.scale - 0.5 + np.asarray(self.crop_start)
        return crop[..., list(self.inverse_transpose)]

    def input_shape_transposed(self, input_shape_zyx) -> tuple[int, int, int]:
        return tuple(int(input_shape_zyx[i]) for i in self.transpose)


@dataclass
class EncodedPrompt:
    """A binary prompt channel stored sparsely: ``array`` sits at ``offset`` of the network grid."""

    offset: np.ndarray  # int (3,)
    array: np.ndarray  # bool

    @property
    def lo(self) -> np.ndarray:
        return self.offset

    @property
    def hi(self) -> np.ndarray:
        """Exclusive upper corner."""
        return self.offset + np.asarray(self.array.shape)

    def crop(self, start: np.ndarray, size: np.ndarray) -> np.ndarray:
        """The channel inside the window ``[start, start + size)`` of the network grid (float32)."""
        out = np.zeros(tuple(int(s) for s in size), dtype=np.float32)
        a = np.maximum(self.lo, start)
        b = np.minimum(self.hi, start + size)
        if np.all(b > a):
            src = tuple(slice(int(x - o), int(y - o)) for x, y, o in zip(a, b, self.offset))
            dst = tuple(slice(int(x - s), int(y - s)) for x, y, s in zip(a, b, start))
            out[dst] = self.array[src]
        return out


def _clip_region(lo: np.ndarray, hi: np.ndarray, shape: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lo = np.clip(lo, 0, shape - 1).astype(int)
    hi = np.clip(hi, 0, shape - 1).astype(int)
    return lo, np.maximum(hi, lo)


def encode_point(net_point: np.ndarray, net_shape, radius: float) -> EncodedPrompt:
    shape = np.asarray(net_shape)
    centre = np.clip(np.round(net_point), 0, shape - 1).astype(int)
    r = int(np.ceil(radius))
    lo, hi = _clip_region(centre - r, centre + r, shape)
    grids = np.ogrid[tuple(slice(a, b + 1) for a, b in zip(lo, hi))]
    dist2 = sum((g - c) ** 2 for g, c in zip(grids, centre))
    return EncodedPrompt(offset=lo, array=dist2 <= (radius + 0.5) ** 2)


def encode_box(grid: GridMap, box_zyx, dilation: int = 1) -> EncodedPrompt:
    """Network voxels whose centres lie within the inclusive input box's outer faces, then dilated."""
    lo_in = np.asarray(box_zyx[0], float) - 0.5
    hi_in = np.asarray(box_zyx[1], float) + 0.5
    a, b = grid.to_net(lo_in), grid.to_net(hi_in)
    lo_net, hi_net = np.minimum(a, b), np.maximum(a, b)
    lo = np.ceil(lo_net - 1e-6).astype(int)
    hi = np.floor(hi_net + 1e-6).astype(int)
    centre = np.round((lo_net + hi_net) / 2).astype(int)
    # A box thinner than a network voxel still covers the voxel nearest to its centre.
    lo, hi = np.minimum(lo, centre), np.maximum(hi, centre)
    shape = np.asarray(grid.net_shape)
    lo, hi = _clip_region(lo - dilation, hi + dilation, shape)
    return EncodedPrompt(offset=lo, array=np.ones(tuple(hi - lo + 1), dtype=bool))


def encode_mask(grid: GridMap, mask_zyx: np.ndarray) -> EncodedPrompt:
    """Nearest-neighbour resampling of the input mask onto the network grid (its bounding box only)."""
    where = np.argwhere(mask_zyx)
    if len(where) == 0:
        return EncodedPrompt(offset=np.zeros(3, int), array=np.zeros((0, 0, 0), dtype=bool))
    lo_in, hi_in = where.min(0) - 0.5, where.max(0) + 0.5
    a, b = grid.to_net(lo_in), grid.to_net(hi_in)
    shape = np.asarray(grid.net_shape)
    lo, hi = _clip_region(np.floor(np.minimum(a, b)).astype(int), np.ceil(np.maximum(a, b)).astype(int), shape)
    transposed = np.transpose(mask_zyx, grid.transpose)
    axes = []
    for axis in range(3):
        net_idx = np.arange(lo[axis], hi[axis] + 1)
        src = np.round((net_idx + 0.5) / grid.scale[axis] - 0.5 + grid.crop_start[axis]).astype(int)
        axes.append(np.clip(src, 0, transposed.shape[axis] - 1))
    array = transposed[np.ix_(*axes)]
    if not array.any():  # thinner than a network voxel: keep its most central voxel
        centre = np.clip(np.round(grid.to_net(where.mean(0))), lo, hi).astype(int) - lo
        array[tuple(centre)] = True
    return EncodedPrompt(offset=lo, array=array)


def encode_prompt(
    prompt: Prompt, grid: GridMap, point_radius: float = 5.0, mask_as_box: bool = False
) -> EncodedPrompt:
    """The prompt channel of ``prompt`` on the network grid of ``grid``."""
    if prompt.kind == "point":
        return encode_point(grid.to_net(np.asarray(prompt.point, float)), grid.net_shape, point_radius)
    if prompt.kind == "box":
        return encode_box(grid, prompt.box)
    if mask_as_box:
        lo, hi = prompt.extent()
        return encode_box(grid, (lo, hi))
    return encode_mask(grid, prompt.mask)
