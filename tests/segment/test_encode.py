"""Prompt mapping through transpose/crop/resampling, and the prompt-channel encodings."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from skimage.morphology import ball

from lesionlocator.core.io import Geometry
from lesionlocator.segment.api import Prompt
from lesionlocator.segment.encode import GridMap, encode_box, encode_mask, encode_point, encode_prompt
from lesionlocator.segment.model import load_model
from lesionlocator.segment.nnunet import preprocess
from tests.helpers import make_image
from tests.segment.toy_model import toy_plans, write_toy_model


def test_grid_map_round_trip_and_centres():
    grid = GridMap(transpose=(2, 0, 1), crop_start=(3, 1, 2), crop_shape=(10, 20, 30), net_shape=(25, 10, 60))
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 30, size=(50, 3))
    np.testing.assert_allclose(grid.to_input(grid.to_net(points)), points, atol=1e-9)
    # The outer voxel edges of the cropped block map onto the outer edges of the network grid.
    lo_edge = np.array([1, 2, 3], float) - 0.5  # (z, y, x) of the crop's first voxel, minus half a voxel
    np.testing.assert_allclose(grid.to_net(lo_edge), [-0.5] * 3)
    hi_edge = np.array([1 + 20, 2 + 30, 3 + 10], float) - 0.5
    np.testing.assert_allclose(grid.to_net(hi_edge), np.array(grid.net_shape) - 0.5)


def test_world_point_maps_to_the_same_physical_position_in_the_network_grid(tmp_path):
    """world mm -> input voxel -> network voxel -> physical position on the network grid: identity."""
    plans = toy_plans(spacing_zyx=(1.25, 0.6, 0.9), transpose_forward=(0, 2, 1))
    model = load_model(write_toy_model(tmp_path / "m", plans=plans))
    image = make_image(shape_zyx=(12, 16, 20), spacing=(0.8, 1.1, 2.5))
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    array[:2] = 0  # a zero border is cropped away
    array[:, :, -3:] = 0
    pre = preprocess(model, array, image.GetSpacing()[::-1])
    assert pre.grid.crop_start[0] == 2 and pre.grid.crop_shape[2] == 16 - 0  # transposed: net axis 2 = input y
    geometry = Geometry.of(image)
    world = geometry.index_to_world(np.array([5.3, 7.1, 9.8]))
    net = pre.grid.to_net(geometry.world_to_index(world))
    # Physical position of a network index: net spacing along net axes, origin at the crop's first edge.
    spacing_t = np.asarray(image.GetSpacing()[::-1])[list(pre.grid.transpose)]
    net_spacing = spacing_t / pre.grid.scale
    position_t = (net + 0.5) * net_spacing - 0.5 * spacing_t + np.asarray(pre.grid.crop_start) * spacing_t
    index_back = position_t / spacing_t
    np.testing.assert_allclose(index_back[list(pre.grid.inverse_transpose)], [5.3, 7.1, 9.8], atol=1e-9)
    np.testing.assert_allclose(geometry.index_to_world(pre.grid.to_input(net)), world, atol=1e-9)
    assert pre.data.shape == tuple(pre.grid.net_shape)


def test_point_ball_matches_released_encoding():
    encoded = encode_point(np.array([20.2, 19.6, 20.0]), (40, 40, 40), radius=5)
    expected = ball(5, strict_radius=False).astype(bool)
    assert encoded.array.shape == expected.shape
    assert np.array_equal(encoded.array, expected)
    assert tuple(encoded.offset) == (15, 15, 15)


def test_point_ball_is_clipped_at_the_border():
    encoded = encode_point(np.array([0.0, 1.0, 39.0]), (40, 40, 40), radius=5)
    assert encoded.array.any() and np.all(encoded.hi <= 40) and np.all(encoded.lo >= 0)


def test_box_is_filled_and_dilated_by_one_voxel():
    grid = GridMap((0, 1, 2), (0, 0, 0), (20, 20, 20), (40, 20, 10))  # z upsampled x2, x downsampled x2
    encoded = encode_box(grid, ((4, 5, 6), (7, 9, 11)))
    # z: input voxels 4..7 cover edges 3.5..7.5 -> network centres 8..15, +-1 -> 7..16
    assert encoded.lo[0] == 7 and encoded.hi[0] == 17
    assert encoded.lo[1] == 4 and encoded.hi[1] == 11
    assert encoded.lo[2] == 2 and encoded.hi[2] == 7
    assert encoded.array.all()


def test_zero_extent_box_still_covers_a_voxel():
    grid = GridMap((0, 1, 2), (0, 0, 0), (20, 20, 20), (10, 10, 10))
    encoded = encode_box(grid, ((5, 5, 5), (5, 5, 5)))
    assert encoded.array.all() and np.all(np.asarray(encoded.array.shape) >= 1)


def test_mask_encoding_nearest_neighbour():
    grid = GridMap((0, 1, 2), (0, 0, 0), (10, 10, 10), (20, 20, 20))
    mask = np.zeros((10, 10, 10), bool)
    mask[3:6, 4:7, 2:5] = True
    encoded = encode_mask(grid, mask)
    assert int(encoded.array.sum()) == mask.sum() * 8
    full = encoded.crop(np.zeros(3, int), np.array([20, 20, 20]))
    assert full[6:12, 8:14, 4:10].all() and full.sum() == encoded.array.sum()


def test_mask_prompt_can_be_encoded_as_its_box():
    grid = GridMap((0, 1, 2), (0, 0, 0), (10, 10, 10), (10, 10, 10))
    mask = np.zeros((10, 10, 10), bool)
    mask[3, 4, 5] = mask[6, 7, 8] = True
    encoded = encode_prompt(Prompt(1, "mask", mask=mask), grid, mask_as_box=True)
    assert encoded.array.all() and tuple(encoded.lo) == (2, 3, 4) and tuple(encoded.hi) == (8, 9, 10)
