"""Bad-input files on disk for the reliability matrix, and the check that nothing was left behind."""

from __future__ import annotations

import builtins
import contextlib
import errno
import json
import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest import mock

import numpy as np
import SimpleITK as sitk

from tests.helpers import EMBEDDED_REAL, OBLIQUE_DIRECTION, make_image, write_session

BLOB_CENTRE_ZYX = (6, 8, 10)


def blob_image(
    shape_zyx=(12, 16, 20), spacing=(0.8, 1.1, 2.5), direction=OBLIQUE_DIRECTION, dtype=np.int16,
    centre_zyx=BLOB_CENTRE_ZYX, radii_zyx=(2.5, 3.5, 3.5),
) -> sitk.Image:
    """A noisy background with one bright ellipsoidal blob (radii in voxels) around ``centre_zyx``."""
    rng = np.random.default_rng(7)
    grid = np.indices(shape_zyx)
    blob = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre_zyx, radii_zyx)) <= 1
    array = (100 + rng.normal(0, 5, shape_zyx) + 200 * blob).astype(dtype)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin((-12.5, 40.0, 7.25))
    image.SetDirection(direction)
    return image


def point_prompt(image: sitk.Image, index_zyx=BLOB_CENTRE_ZYX, lesion_id: int = 3) -> dict:
    """A world-frame prompts.json dict with one point at a voxel index (z, y, x) of ``image``."""
    world = image.TransformContinuousIndexToPhysicalPoint([float(i) for i in index_zyx[::-1]])
    return {"frame": "world", "lesions": [{"id": lesion_id, "point": list(world)}]}


def one_session_cohort(root: Path, image: sitk.Image | None = None, prompts: dict | None = "default", name: str = "image.nii.gz") -> Path:
    """``root/sub-A1/ses-1/<name>`` (+ ``prompts.json``); returns the image path."""
    image = image if image is not None else blob_image()
    path = write_session(root, "A1", "1", image, name=name)
    if prompts == "default":
        prompts = point_prompt(image)
    if prompts is not None:
        (path.parent / "prompts.json").write_text(json.dumps(prompts))
    return path


def empty_session(root: Path, patient: str = "A1", session: str = "1") -> Path:
    folder = root / f"sub-{patient}" / f"ses-{session}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def mask_like(image: sitk.Image, array: np.ndarray, dtype=np.uint32) -> sitk.Image:
    mask = sitk.GetImageFromArray(array.astype(dtype))
    mask.CopyInformation(image)
    return mask


def nifti_with_huge_header(path: Path) -> Path:
    """An uncompressed NIfTI whose header claims 32000^3 float32 voxels (~119 TiB); the file is tiny."""
    sitk.WriteImage(make_image(shape_zyx=(2, 2, 2), dtype=np.float32), str(path))
    data = bytearray(path.read_bytes())
    assert struct.unpack("<i", bytes(data[:4]))[0] == 348
    data[40:56] = struct.pack("<8h", 3, 32000, 32000, 32000, 1, 1, 1, 1)
    path.write_bytes(bytes(data))
    return path


def nifti_with_sheared_sform(path: Path) -> Path:
    """A NIfTI whose sform has sheared (non-orthogonal) axes. (SimpleITK cannot write one: its writer
    orthogonalises the direction, so the header is patched.)"""
    sitk.WriteImage(blob_image(direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)), str(path))
    data = bytearray(path.read_bytes())
    srow = np.asarray(struct.unpack("<12f", bytes(data[280:328]))).reshape(3, 4)
    srow[0, 1] = 0.5  # x grows with the y index: shear
    data[280:328] = struct.pack("<12f", *srow.ravel())
    path.write_bytes(bytes(data))
    return path


def flip_middle_bytes(path: Path, n: int = 64) -> Path:
    """Invert ``n`` bytes in the middle of a file (a damaged copy: the size is unchanged)."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + n] = bytes(b ^ 0xFF for b in data[middle : middle + n])
    path.write_bytes(bytes(data))
    return path


@contextlib.contextmanager
def permission_denied(module: object, name: str, refused: Callable[[Path], bool]) -> Iterator[None]:
    """While active, ``module.name(path, ...)`` raises ``PermissionError`` (EACCES) for every path
    ``refused`` selects, as the kernel does for a user without the permission. Tests run as root,
    whom chmod does not stop, so this is how a non-root user's permission error is reproduced."""
    original = getattr(module, name)

    def guarded(path, *args, **kwargs):
        if isinstance(path, (str, bytes, os.PathLike)) and refused(Path(os.fsdecode(path))):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))
        return original(path, *args, **kwargs)

    with mock.patch.object(module, name, guarded):
        yield


@contextlib.contextmanager
def unreadable_folder(folder: Path) -> Iterator[None]:
    """Listing ``folder`` (``os.listdir`` or ``os.scandir``) fails with EACCES (``chmod 000`` for a
    non-root user)."""
    with permission_denied(os, "listdir", lambda p: p == folder), permission_denied(os, "scandir", lambda p: p == folder):
        yield


def unreadable_file(path: Path):
    """Opening ``path`` fails with EACCES (``chmod 000`` for a non-root user)."""
    return permission_denied(builtins, "open", lambda p: p == path)


def read_only_folder(folder: Path):
    """Creating a file in ``folder`` fails with EACCES (``chmod 555`` for a non-root user)."""
    return permission_denied(os, "open", lambda p: p.parent == folder)


def copy_dicom(files: list[Path], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        (folder / f.name).write_bytes(f.read_bytes())
    return folder


def dicom_files() -> list[Path]:
    return sorted((EMBEDDED_REAL / "example_ct_dicom").iterdir())


def leftovers(folder: Path) -> list[str]:
    """Every file under ``folder`` (an output folder that a failed call must leave empty)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def partial_files(folder: Path) -> list[str]:
    """Temporary files of interrupted atomic writes (``.<name>.<random>.part<suffix>``)."""
    return sorted(str(p) for p in folder.rglob(".*.part*")) if folder.exists() else []
