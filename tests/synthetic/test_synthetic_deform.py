"""Deformation fields: Jacobian computation, invertibility of mass effect and repositioning."""

from __future__ import annotations

import numpy as np

from lesionlocator.core.io import Geometry
from synthetic import deform
from tests.helpers import OBLIQUE_DIRECTION


def _geometry(size=(30, 26, 20), spacing=(2.0, 2.5, 4.0)) -> Geometry:
    return Geometry(size, spacing, (-30.0, 12.0, 5.0), OBLIQUE_DIRECTION)


def test_jacobian_of_a_linear_field_is_exact_with_oblique_direction():
    geometry = _geometry()
    matrix = np.array([[0.1, -0.05, 0.02], [0.03, -0.2, 0.0], [0.0, 0.04, 0.15]])
    points = deform.grid_points(geometry)
    field = points @ matrix.T  # displacement = A x in world mm
    det = deform.jacobian_determinant(field, geometry)
    assert np.allclose(det, np.linalg.det(np.eye(3) + matrix), atol=1e-6)


def _ball(geometry: Geometry, centre_index, radius_mm):
    points = deform.grid_points(geometry)
    centre = geometry.index_to_world(np.asarray(centre_index, dtype=float))
    return (np.linalg.norm(points - centre, axis=-1) <= radius_mm).astype(float)


def test_mass_effect_pushes_outward_and_stays_invertible():
    geometry = _geometry()
    soft = _ball(geometry, (10, 13, 15), 12.0)
    full = tuple(slice(0, n) for n in geometry.shape_zyx)
    # a strong growth (radius +15 mm with a short reach) would fold without the safeguard
    field = deform.mass_effect_field([(soft, full, 15.0, 4.0)], geometry)
    det = deform.jacobian_determinant(field, geometry)
    assert det.min() >= deform.MIN_JACOBIAN > 0
    assert np.linalg.norm(field, axis=-1).max() > 2.0  # still a real displacement
    # backward field: just outside the lesion it points to the centre (tissue came from closer in)
    centre = geometry.index_to_world(np.array([10.0, 13.0, 15.0]))
    outside = geometry.index_to_world(np.array([10.0, 13.0, 23.0]))
    index = (10, 13, 23)
    assert np.dot(field[index], centre - outside) > 0


def test_shrinking_lesion_pulls_tissue_inward():
    geometry = _geometry()
    soft = _ball(geometry, (10, 13, 15), 10.0)
    full = tuple(slice(0, n) for n in geometry.shape_zyx)
    field = deform.mass_effect_field([(soft, full, -5.0, 8.0)], geometry)
    centre = geometry.index_to_world(np.array([10.0, 13.0, 15.0]))
    outside = geometry.index_to_world(np.array([10.0, 13.0, 21.0]))
    assert np.dot(field[10, 13, 21], centre - outside) < 0
    assert deform.jacobian_determinant(field, geometry).min() > 0


def test_repositioning_is_smooth_and_invertible_even_when_strong():
    geometry = _geometry(size=(60, 50, 40))
    rng = np.random.default_rng(3)
    transform = deform.repositioning(geometry, rng, rotation_deg=10, translation_mm=20, nonrigid_mm=40, grid_mm=30)
    field = deform.displacement_of(transform, geometry)
    det = deform.jacobian_determinant(field, geometry)
    assert det.min() > 0
    assert np.abs(field).max() > 5  # it does move things
    # the point inversion used to place lesions is accurate
    target = geometry.index_to_world(np.array([20.0, 25.0, 30.0]))
    x = deform.invert_point(transform, target)
    assert np.allclose(transform.TransformPoint(tuple(x)), target, atol=1e-2)


def test_zero_magnitudes_give_identity():
    geometry = _geometry()
    transform = deform.repositioning(geometry, np.random.default_rng(0), 0, 0, 0, 80)
    assert np.abs(deform.displacement_of(transform, geometry)).max() < 1e-9
