"""Anchors: a box carried by its centre at its own size, the consistency checks, and outgrowth read
from the image beyond the box's faces."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from lesionlocator.core.io import Geometry
from lesionlocator.segment.api import Prompt
from lesionlocator.track import anchors
from lesionlocator.track.propagate import Propagated, propagate_box
from tests.helpers import OBLIQUE_DIRECTION

GEOMETRY = Geometry(size=(40, 36, 24), spacing=(1.0, 1.5, 2.5), origin=(3.0, -7.0, 11.0), direction=OBLIQUE_DIRECTION)
BOX = Prompt(1, "box", box=((8.2, 10.0, 12.5), (14.7, 20.0, 22.0)))


def test_a_box_is_the_same_under_the_identity_and_keeps_its_size_under_rotation():
    same = propagate_box(BOX, sitk.Euler3DTransform(), GEOMETRY, GEOMETRY)
    assert isinstance(same, Propagated) and same.prompt.box == BOX.box
    centre = GEOMETRY.index_to_world(np.array([11.45, 15.0, 17.25]))
    turned = sitk.Euler3DTransform(centre.tolist(), 0.0, 0.0, np.deg2rad(10.0), (4.0, -2.0, 1.0))
    moved = propagate_box(BOX, turned, GEOMETRY, GEOMETRY)
    size = lambda box: np.asarray(box[1]) - np.asarray(box[0])  # noqa: E731
    np.testing.assert_allclose(size(moved.prompt.box), size(BOX.box), atol=1e-6)  # not the box around the rotated box
    expected = GEOMETRY.world_to_index(np.asarray(turned.GetInverse().TransformPoint(centre.tolist())))
    np.testing.assert_allclose((np.asarray(moved.prompt.box[0]) + moved.prompt.box[1]) / 2, expected, atol=1e-3)


def _ball(centre, radius):
    z, y, x = np.indices((24, 36, 40))
    return (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius**2


def test_inconsistency_empty_and_far():
    previous = _ball((11, 15, 17), 3)
    assert anchors.inconsistency(previous, previous, GEOMETRY, 15.0, 1) is None
    assert "empty" in anchors.inconsistency(np.zeros_like(previous), previous, GEOMETRY, 15.0, 1)
    assert "mm from the lesion's last mask" in anchors.inconsistency(_ball((11, 15, 36), 3), previous, GEOMETRY, 5.0, 1)
    assert anchors.inconsistency(previous, None, GEOMETRY, 15.0, 1) is None  # never observed: nothing to check


def test_outgrowth_is_read_beyond_the_faces():
    box = ((8.0, 11.0, 13.0), (14.0, 19.0, 21.0))
    inside = _ball((11, 15, 17), 3.5)
    image = np.where(inside, 100.0, 0.0)
    grown = _ball((11, 15, 17), 6.5)
    grown_image = np.where(grown, 100.0, 0.0)
    cut = np.zeros_like(grown)
    lo, hi = np.ceil(box[0]).astype(int), np.floor(box[1]).astype(int)
    cut[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1] = grown[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1]
    before = anchors.beyond_faces(image, inside, box) / 100.0
    now = anchors.beyond_faces(grown_image, cut, box) / 100.0
    assert np.nan_to_num(before, nan=0.0).max() < 0.5  # within its box, the lesion's surroundings lie beyond
    assert anchors.outgrown_faces(now, before).any()  # cut by the box: the lesion continues beyond
    assert not anchors.outgrown_faces(before, before).any()
