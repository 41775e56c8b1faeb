"""Test helpers: tiny seeded volumes with anisotropic spacing and a non-identity direction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parent.parent
EMBEDDED_REAL = REPO / "data" / "real"

# A rotation about z by 30 degrees combined with a flip of y: orthonormal, not identity.
_c, _s = np.cos(np.pi / 6), np.sin(np.pi / 6)
OBLIQUE_DIRECTION = tuple((np.array([[_c, -_s, 0], [_s, _c, 0], [0, 0, 1]]) @ np.diag([1, -1, 1])).ravel())


def make_image(
    shape_zyx=(12, 16, 20),
    spacing=(0.8, 1.1, 2.5),
    origin=(-12.5, 40.0, 7.25),
    direction=OBLIQUE_DIRECTION,
    seed: int = 0,
    dtype=np.int16,
) -> sitk.Image:
    """A seeded random volume; ``spacing``/``origin`` are (x, y, z) as SimpleITK takes them."""
    rng = np.random.default_rng(seed)
    array = rng.integers(-1000, 1000, size=shape_zyx).astype(dtype)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    return image


def write_session(root: Path, patient: str, session: str, image: sitk.Image, name: str = "image.nii.gz") -> Path:
    folder = root / f"sub-{patient}" / f"ses-{session}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    sitk.WriteImage(image, str(path))
    return path


def write_prompts_json(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    return path


