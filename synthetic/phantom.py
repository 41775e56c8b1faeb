"""A procedural CT-like body phantom (seeded): body ellipse with fat rim, organs, lungs, spine.

Organ labels use TotalSegmentator v2 class ids (spleen 1, kidneys 2/3, liver 5, lungs 10/14) so
the default ``organ_label_ids`` of :class:`~lesionlocator.core.config.SyntheticConfig` apply.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

PHANTOM_LABELS = {"spleen": 1, "kidney_right": 2, "kidney_left": 3, "liver": 5, "lung_left": 10, "lung_right": 14}


def make_phantom(
    size_xyz: tuple[int, int, int] = (160, 128, 96),
    rng: np.random.Generator | None = None,
    field_of_view_mm: tuple[float, float, float] = (420.0, 340.0, 300.0),
) -> tuple[sitk.Image, np.ndarray]:
    """A phantom CT (float32, HU) of ``size_xyz`` voxels spanning ``field_of_view_mm``, and its
    organ label map (uint8, array order z, y, x, same grid).

    The grid has an LPS-flipped direction (-1, -1, 1) like many scanners' NIfTI exports; the body
    is centred, thorax (lungs) in the upper half of z, abdomen (liver, spleen, kidneys) below.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    nx, ny, nz = size_xyz
    spacing = np.asarray(field_of_view_mm, dtype=float) / np.asarray(size_xyz)
    # normalised coordinates in [-1, 1] per axis (x left-right, y anterior-posterior, z foot-head)
    jitter = 1.0 + 0.05 * rng.uniform(-1, 1, 4)
    z = np.linspace(-1, 1, nz, dtype=np.float32)[:, None, None]
    y = np.linspace(-1, 1, ny, dtype=np.float32)[None, :, None]
    x = np.linspace(-1, 1, nx, dtype=np.float32)[None, None, :]

    def ellipsoid(cx, cy, cz, rx, ry, rz):
        return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 + ((z - cz) / rz) ** 2 <= 1.0

    body_r = ((x / (0.85 * jitter[0])) ** 2 + (y / (0.8 * jitter[1])) ** 2)  # elliptic cylinder
    body = np.broadcast_to(body_r <= 1.0, (nz, ny, nx))
    muscle = np.broadcast_to(body_r <= 0.8, (nz, ny, nx))
    image = np.full((nz, ny, nx), -1000.0, dtype=np.float32)
    image[body] = -100.0  # subcutaneous fat
    image[muscle] = 45.0  # soft tissue / muscle
    labels = np.zeros((nz, ny, nx), dtype=np.uint8)
    lung_z = 0.45 * jitter[2]
    # with direction (-1, -1, 1), a small array index x is the patient's left, a small y posterior
    for name, cx in (("lung_right", 0.38), ("lung_left", -0.38)):
        lung = ellipsoid(cx * jitter[3], 0.05, lung_z, 0.3, 0.5, 0.5)
        image[lung] = -850.0
        labels[lung] = PHANTOM_LABELS[name]
    organs = (
        ("liver", (0.3, 0.1, -0.15, 0.42, 0.45, 0.3), 60.0),
        ("spleen", (-0.45, -0.15, -0.1, 0.16, 0.22, 0.2), 50.0),
        ("kidney_right", (0.28, -0.45, -0.45, 0.12, 0.14, 0.22), 35.0),
        ("kidney_left", (-0.28, -0.45, -0.42, 0.12, 0.14, 0.22), 35.0),
    )
    for name, (cx, cy, cz, rx, ry, rz), value in organs:
        organ = ellipsoid(cx, cy, cz, rx * jitter[0], ry * jitter[1], rz * jitter[2])
        image[organ] = value
        labels[organ] = PHANTOM_LABELS[name]
    spine = np.broadcast_to(((x / 0.08) ** 2 + ((y + 0.6) / 0.1) ** 2) <= 1.0, (nz, ny, nx))
    image[spine] = 600.0
    # tissue texture: smooth noise on a coarse grid (cheap at any size), plus fine noise
    coarse = rng.normal(0.0, 12.0, size=(max(nz // 8, 2), max(ny // 8, 2), max(nx // 8, 2))).astype(np.float32)
    texture = ndimage.zoom(coarse, np.asarray(image.shape) / np.asarray(coarse.shape), order=1)
    image += texture[: image.shape[0], : image.shape[1], : image.shape[2]] * body
    sitk_image = sitk.GetImageFromArray(image)
    sitk_image.SetSpacing(tuple(float(s) for s in spacing))
    sitk_image.SetDirection((-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))
    extent = spacing * (np.asarray(size_xyz) - 1)
    sitk_image.SetOrigin((float(extent[0] / 2), float(extent[1] / 2), float(-extent[2] / 2)))
    return sitk_image, labels
