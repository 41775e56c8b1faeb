"""Tiny seeded volumes with anisotropic spacing and a rotated direction for the metrics tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from lesionlocator.core.io import Geometry, image_from_array, write_image


def rotation_z(degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    return np.array([[np.cos(t), -np.sin(t), 0.0], [np.sin(t), np.cos(t), 0.0], [0.0, 0.0, 1.0]])


def oblique_geometry(size=(64, 56, 24), spacing=(0.8, 0.9, 2.5), degrees=30.0) -> Geometry:
    """A grid whose axes are rotated about z and tilted, with anisotropic spacing."""
    tilt = np.array([[1, 0, 0], [0, np.cos(0.2), -np.sin(0.2)], [0, np.sin(0.2), np.cos(0.2)]])
    direction = rotation_z(degrees) @ tilt
    return Geometry(size=size, spacing=spacing, origin=(-12.0, 30.0, 7.5), direction=tuple(direction.ravel()))


def ellipsoid(geometry: Geometry, centre_index, semi_axes_mm, in_plane_degrees: float = 0.0) -> np.ndarray:
    """Boolean (z, y, x) mask of an ellipsoid whose axes are the image axes rotated in the slice plane."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in geometry.shape_zyx], indexing="ij"), axis=-1)
    offset = geometry.index_to_world(index) - geometry.index_to_world(np.asarray(centre_index, dtype=float))
    d = geometry.direction_matrix
    t = np.deg2rad(in_plane_degrees)
    axes = [np.cos(t) * d[:, 0] + np.sin(t) * d[:, 1], -np.sin(t) * d[:, 0] + np.cos(t) * d[:, 1], d[:, 2]]
    return sum(((offset @ a) / s) ** 2 for a, s in zip(axes, semi_axes_mm)) <= 1.0


def write_labels(array: np.ndarray, geometry: Geometry, path: Path) -> Path:
    return write_image(image_from_array(array.astype(np.uint32), geometry), path)


def write_scan(array: np.ndarray, geometry: Geometry, path: Path) -> Path:
    return write_image(image_from_array(array.astype(np.float32), geometry), path)


def make_patient(folder: Path, geometry: Geometry, seed: int = 0, growth=(1.0, 0.6, 1.3)) -> list[tuple[str, Path, Path]]:
    """Three sessions of two lesions (IDs 3 and 11) that shrink and regrow, with a CT-like image."""
    rng = np.random.default_rng(seed)
    sessions = []
    for index, factor in enumerate(growth):
        labels = np.zeros(geometry.shape_zyx, dtype=np.uint32)
        labels[ellipsoid(geometry, (12, 20, 20), (9 * factor, 6 * factor, 6 * factor))] = 3
        labels[ellipsoid(geometry, (12, 38, 44), (6 * factor, 4 * factor, 5 * factor))] = 11
        image = rng.normal(0, 5, geometry.shape_zyx) + 40.0 * (labels > 0)
        name = f"ses-{index:02d}"
        sessions.append((name, write_scan(image, geometry, folder / f"{name}_ct.nii.gz"),
                         write_labels(labels, geometry, folder / f"{name}_labels.nii.gz")))  # fmt: skip
    return sessions


def read_array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
