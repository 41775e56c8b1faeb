"""Region helpers: one Dice for every stage."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from lesionlocator.core.regions import dice, dice_of_counts, label_components, nonzero_box, nonzero_index


def test_dice_of_masks_and_of_counts_agree():
    a = np.zeros((4, 5, 6), bool)
    b = np.zeros_like(a)
    a[:2, :3, :4] = True  # 24 voxels
    b[1:3, :3, :4] = True  # 24 voxels, 12 shared
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(a, b) == dice_of_counts(12, 24, 24)
    assert dice(a, a) == 1.0 and dice(a, ~a) == 0.0


def test_dice_of_two_empty_regions_is_one():
    empty = np.zeros((3, 3, 3), bool)
    assert dice(empty, empty) == 1.0 and dice_of_counts(0, 0, 0) == 1.0


@pytest.mark.parametrize("connectivity", [6, 26])
def test_components_are_those_of_ndimage_label_numbered_alike(connectivity):
    """The classical segmenter moved from ndimage.label to cc3d: same labels, same numbers (ties pick the lowest)."""
    structure = ndimage.generate_binary_structure(3, 1 if connectivity == 6 else 3)
    rng = np.random.default_rng(connectivity)
    for trial in range(40):
        mask = rng.random(tuple(rng.integers(1, 25, 3))) < rng.uniform(0.1, 0.6)
        if trial % 2:
            mask = np.asfortranarray(mask)  # cc3d alone would number these in Fortran order
        expected, n = ndimage.label(mask, structure=structure)
        labels, count = label_components(mask, connectivity)
        assert count == n and np.array_equal(labels, expected)


def test_nonzero_index_is_argwhere():
    """Same rows in the same order as np.argwhere, for bool and integer masks, empty, edge-touching and
    non-contiguous (strided) ones."""
    rng = np.random.default_rng(4)
    masks = [np.zeros((5, 6, 7), bool), rng.random((9, 11, 13)) > 0.97, (rng.random((8, 8, 8)) > 0.9).astype(np.uint32)]
    masks[0][4, 5, 6] = True
    masks.append(masks[1][::2, :, ::3])
    masks.append(np.zeros((3, 4, 5), np.uint8))
    for mask in masks:
        expected = np.argwhere(mask)
        got = nonzero_index(mask)
        assert got.shape == expected.shape and np.array_equal(got, expected)
        box = nonzero_box(mask)
        assert (box is None) == (expected.size == 0)
        if box is not None:
            assert [(b.start, b.stop) for b in box] == list(zip(expected.min(0), expected.max(0) + 1))
