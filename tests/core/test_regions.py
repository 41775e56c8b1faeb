"""Region helpers: one Dice for every stage."""

from __future__ import annotations

import numpy as np
import pytest

from lesionlocator.core.regions import dice, dice_of_counts


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
