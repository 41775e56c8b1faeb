"""Image and table I/O with geometry preserved and atomic writes.

Frames used throughout the package:

* **voxel index** ``(z, y, x)``: an index into the numpy array that ``sitk.GetArrayFromImage``
  returns (SimpleITK's own index order is the reverse, ``(x, y, z)``).
* **world mm (LPS)**: physical coordinates ``(x, y, z)`` in millimetres in the DICOM/ITK patient
  frame (x to the patient's left, y to posterior, z to superior).

Every write goes to a temporary file in the target folder and is renamed into place, so a killed
job never leaves a truncated file under the final name.
"""

from __future__ import annotations

import contextlib
import glob
import gzip
import json
import logging
import os
import re
import shutil
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import psutil
import SimpleITK as sitk

from lesionlocator.core.errors import InputError

if TYPE_CHECKING:
    import pyarrow as pa
    from nibabel.nifti1 import Nifti1Header

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")


def image_suffix(path: str | Path) -> str | None:
    """The image suffix of ``path`` (``.nii.gz``, ``.nrrd``, ...) or None if it is not an image file."""
    name = Path(path).name.lower()
    for suffix in IMAGE_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return None


def is_dicom_file(path: Path) -> bool:
    """True when ``path`` is a file with the DICOM preamble (``DICM`` at byte 128)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def is_dicom_dir(path: Path) -> bool:
    """True when ``path`` is a folder that holds at least one DICOM file."""
    return path.is_dir() and any(is_dicom_file(p) for p in sorted(path.iterdir()) if p.is_file())


@dataclass(frozen=True)
class Geometry:
    """The physical grid of a 3D image, in SimpleITK order.

    ``size`` and ``spacing`` are ``(x, y, z)``; ``origin`` is the world position (mm, LPS) of voxel
    ``(0, 0, 0)``; ``direction`` is the row-major 3x3 matrix whose columns are the image axes in LPS.
    """

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image) -> "Geometry":
        return cls(
            size=tuple(int(s) for s in image.GetSize()),
            spacing=tuple(float(s) for s in image.GetSpacing()),
            origin=tuple(float(o) for o in image.GetOrigin()),
            direction=tuple(float(d) for d in image.GetDirection()),
        )

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        """Array shape as ``sitk.GetArrayFromImage`` returns it."""
        return self.size[::-1]

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    def index_to_world(self, index_zyx: np.ndarray) -> np.ndarray:
        """Continuous voxel indices ``(..., 3)`` in (z, y, x) order to world mm (LPS, x y z)."""
        ijk = np.asarray(index_zyx, dtype=float)[..., ::-1]
        scaled = ijk * np.asarray(self.spacing)
        return scaled @ self.direction_matrix.T + np.asarray(self.origin)

    def world_to_index(self, world_xyz: np.ndarray) -> np.ndarray:
        """World mm (LPS) ``(..., 3)`` to continuous voxel indices in (z, y, x) order."""
        offset = np.asarray(world_xyz, dtype=float) - np.asarray(self.origin)
        ijk = (offset @ np.linalg.inv(self.direction_matrix).T) / np.asarray(self.spacing)
        return ijk[..., ::-1]

    def contains_index(self, index_zyx: np.ndarray, tolerance: float = 0.5) -> np.ndarray:
        """Whether continuous indices (z, y, x) lie inside the image (voxel centres +/- tolerance)."""
        idx = np.asarray(index_zyx, dtype=float)
        upper = np.asarray(self.shape_zyx, dtype=float) - 1 + tolerance
        return np.all((idx >= -tolerance) & (idx <= upper), axis=-1)

    def voxel_volume_ml(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0

    def to_dict(self) -> dict:
        return {
            "size": list(self.size),
            "spacing": list(self.spacing),
            "origin": list(self.origin),
            "direction": list(self.direction),
        }


def same_geometry(a: Geometry, b: Geometry, tolerance: float = 1e-4) -> bool:
    """Equal size, and spacing/origin/direction equal within ``tolerance`` (mm, or unitless)."""
    return (
        a.size == b.size
        and np.allclose(a.spacing, b.spacing, atol=tolerance)
        and np.allclose(a.origin, b.origin, atol=tolerance)
        and np.allclose(a.direction, b.direction, atol=tolerance)
    )


def geometry_difference(a: Geometry, b: Geometry, tolerance: float = 1e-4) -> str | None:
    """A sentence saying how two geometries differ, or None when they are the same."""
    for name in ("size", "spacing", "origin", "direction"):
        va, vb = getattr(a, name), getattr(b, name)
        if name == "size":
            if va != vb:
                return f"size {list(va)} differs from {list(vb)}"
        elif not np.allclose(va, vb, atol=tolerance):
            fmt = lambda v: "[" + ", ".join(f"{x:.4g}" for x in v) + "]"  # noqa: E731
            return f"{name} {fmt(va)} differs from {fmt(vb)}"
    return None


def _check_image(image: sitk.Image, path: Path) -> sitk.Image:
    if image.GetDimension() != 3:
        raise InputError(path, f"expected a 3D image, got {image.GetDimension()}D of size {list(image.GetSize())}")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(path, f"expected a scalar image, got {image.GetNumberOfComponentsPerPixel()} components per voxel")
    if min(image.GetSize()) < 1 or np.prod(image.GetSize()) == 0:
        raise InputError(path, f"image is empty (size {list(image.GetSize())})")
    if min(image.GetSpacing()) <= 0:
        raise InputError(path, f"non-positive voxel spacing {list(image.GetSpacing())}")
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    if not np.allclose(direction @ direction.T, np.eye(3), atol=1e-3):
        raise InputError(path, "direction matrix is not orthonormal")
    return image


def dicom_series_files(folder: Path) -> list[str]:
    series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series_ids:
        raise InputError(folder, "folder holds no readable DICOM series")
    if len(series_ids) > 1:
        raise InputError(folder, f"folder holds {len(series_ids)} DICOM series ({', '.join(series_ids)}); keep one series per folder")
    files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_ids[0]))
    if len(files) < 2:
        raise InputError(folder, f"DICOM series has {len(files)} slice(s); a 3D series needs at least 2")
    return files


#: How far (a fraction of the slice spacing) a DICOM slice may lie off the uniform grid the series
#: reader builds: scanners round positions (a GE oblique series here: gaps 6.958-7.071 mm around a
#: 7.0005 mm mean, every slice within 0.06 mm of its place); a missing or doubled slice is half a
#: spacing off or more.
SLICE_POSITION_TOLERANCE = 0.1


def _check_slice_positions(folder: Path, image: sitk.Image) -> None:
    """A missing or duplicated slice: a slice position along the slice normal further than
    :data:`SLICE_POSITION_TOLERANCE` of the mean gap from the uniform grid the image is built on."""
    positions = []
    reader = sitk.ImageFileReader()
    for name in dicom_series_files(folder):
        reader.SetFileName(name)
        reader.ReadImageInformation()
        if not reader.HasMetaDataKey("0020|0032"):
            return
        positions.append([float(v) for v in reader.GetMetaData("0020|0032").split("\\")])
    normal = np.asarray(image.GetDirection()).reshape(3, 3)[:, 2]
    along = np.sort(np.asarray(positions) @ normal)
    gaps = np.diff(along)
    if not gaps.size:
        return
    spacing = (along[-1] - along[0]) / gaps.size
    off_grid = np.abs(along - (along[0] + spacing * np.arange(along.size))).max()
    if gaps.min() <= 1e-3 or off_grid > SLICE_POSITION_TOLERANCE * spacing:
        raise InputError(
            folder,
            f"DICOM slices are unevenly spaced (gaps {gaps.min():.3f}..{gaps.max():.3f} mm, a slice {off_grid:.2f} mm off "
            f"the {spacing:.3f} mm grid): a slice is missing or duplicated",
        )


_NIFTI_FLOAT_TYPES = {16: np.float32, 64: np.float64}


def available_memory_bytes(cgroup: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Memory this process may still allocate: the system's available memory (psutil; on Linux
    ``MemAvailable`` of /proc/meminfo), lowered to the cgroup (v2) limit minus current use when one
    is set (a SLURM job or a container). None when unknown."""
    try:
        available = int(psutil.virtual_memory().available)
    except (OSError, RuntimeError):
        available = None
    try:
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            room = max(int(limit) - int((cgroup / "memory.current").read_text()), 0)
            available = room if available is None else min(available, room)
    except (OSError, ValueError):
        pass
    return available


def format_bytes(n: float) -> str:
    """``n`` bytes as a short human figure (``1.5 GiB``, ``420 B``)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def estimate_image_bytes(path: str | Path) -> tuple[int, int, int]:
    """``(bytes, voxels, bytes per voxel)`` the voxels of an image file or DICOM folder take in memory,
    from its header only (for DICOM: the first slice's header times the number of files)."""
    path = Path(path)
    reader = sitk.ImageFileReader()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and is_dicom_file(p))
        if not files:
            return 0, 0, 0
        reader.SetFileName(str(files[0]))
        n_files = len(files)
    else:
        reader.SetFileName(str(path))
        n_files = 1
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return 0, 0, 0  # unreadable header: the reader reports it with its own message
    voxels = int(np.prod([int(s) for s in reader.GetSize()], dtype=np.float64)) * n_files
    component = sitk.Image([1] * reader.GetDimension(), reader.GetPixelID()).GetSizeOfPixelComponent()
    per_voxel = component * reader.GetNumberOfComponents()
    return voxels * per_voxel, voxels, per_voxel


def check_memory(path: str | Path) -> None:
    """Raise :class:`InputError` before loading when the image's voxels need more memory than is
    available (both figures in the message); does nothing when either figure is unknown."""
    needed, voxels, per_voxel = estimate_image_bytes(path)
    available = available_memory_bytes()
    if needed and available is not None and needed > available:
        raise InputError(
            path,
            f"image too large to load: its voxels need {format_bytes(needed)} ({voxels:,} voxels x {per_voxel} bytes, "
            f"from the header) but only {format_bytes(available)} of memory are available (MemAvailable / cgroup "
            "limit); run it where more memory is free (raise mem_mb of the rule) or crop/resample the scan",
        )


def _nifti1_header(block: bytes) -> Nifti1Header | None:
    """The NIfTI-1 header in the first 348 bytes of a file, in the byte order whose ``sizeof_hdr``
    reads 348; None for NIfTI-2 or not NIfTI."""
    from nibabel.nifti1 import Nifti1Header  # 0.4 s to import: only when a NIfTI file is read

    for endianness in ("<", ">"):
        header = Nifti1Header(block, endianness=endianness, check=False)
        if int(header["sizeof_hdr"]) == 348:
            return header
    return None


def _check_nifti_sform(path: Path, header: Nifti1Header) -> None:
    """ITK silently replaces a sheared (non-orthogonal) NIfTI sform by the qform or the nearest
    rotation, which moves every world coordinate: refuse such a file instead."""
    if int(header["sform_code"]) <= 0:
        return
    rows = header.get_sform()[:3, :3]
    norms = np.linalg.norm(rows, axis=0)
    if np.any(norms <= 0):
        raise InputError(path, "NIfTI sform has a zero-length axis")
    axes = rows / norms
    if not np.allclose(axes.T @ axes, np.eye(3), atol=1e-3):
        raise InputError(
            path,
            "direction matrix is not orthonormal (the NIfTI sform axes are sheared; ITK would silently "
            "use the qform or the nearest rotation instead, moving every world coordinate): resample the scan "
            "to an orthogonal grid",
        )


def _scan_nifti_voxels(path: Path, handle, check_finite: bool) -> None:
    """Read the NIfTI-1 header and voxel bytes from ``handle``: every voxel the header announces
    must be present, and float voxels must be finite. NIfTI-2 (or not NIfTI) is left to ITK."""
    block = handle.read(348)
    if len(block) < 348:
        if block[:4] in (struct.pack("<i", 348), struct.pack(">i", 348)):
            raise InputError(path, "file is truncated (incomplete NIfTI header)")
        return  # not NIfTI-1: ITK says what it is
    header = _nifti1_header(block)
    if header is None:
        return
    _check_nifti_sform(path, header)
    dims = [int(d) for d in header["dim"]]
    datatype, bitpix = int(header["datatype"]), int(header["bitpix"])
    vox_offset = int(header["vox_offset"])
    endian = header.endianness
    n_voxels = int(np.prod([max(d, 1) for d in dims[1 : 1 + max(dims[0], 1)]]))
    expected = n_voxels * bitpix // 8
    handle.read(max(vox_offset - 348, 0))
    dtype = _NIFTI_FLOAT_TYPES.get(datatype) if check_finite else None
    got, bad = 0, 0
    item = bitpix // 8 or 1
    while got < expected:
        block = handle.read(min(_CHUNK_BYTES // item * item, expected - got))
        if not block:
            break
        got += len(block)
        if dtype is not None:
            values = np.frombuffer(block[: len(block) - len(block) % item], dtype=np.dtype(dtype).newbyteorder(endian))
            bad += int((~np.isfinite(values)).sum())
    if got < expected:
        raise InputError(path, f"file is truncated: {got} of {expected} voxel bytes present")
    if bad:
        raise InputError(path, f"image holds {bad} NaN/Inf voxel(s)")


_CHUNK_BYTES = 1 << 24  # streamed in 16 MiB blocks: memory stays bounded whatever the image size


def _check_nifti_payload(path: Path, check_finite: bool) -> None:
    """Checks ITK's NIfTI reader skips: a truncated file reads as zeros, NaN reads as 0, and ITK
    stops once it has the voxel bytes, so a corrupted ``.nii.gz`` (gzip's CRC-32 and length in the
    trailer fail) reads as garbage voxels.

    Streams the (possibly gzipped) file once, to its end: the payload must hold every voxel the
    header announces, float payloads must be finite, and a gzip stream must pass its CRC-32 and
    length checks. Only NIfTI-1 headers are inspected; the gzip check applies to any gzipped file.
    """
    try:
        with open(path, "rb") as handle:
            compressed = handle.read(2) == b"\x1f\x8b"  # ITK (zlib's gzread) reads a plain file named .gz as is
        with (gzip.open if compressed else open)(path, "rb") as handle:
            _scan_nifti_voxels(path, handle, check_finite)
            while compressed and handle.read(_CHUNK_BYTES):
                pass  # to the end: gzip verifies the trailer's CRC-32 and length there
    except EOFError:
        raise InputError(path, "file is truncated (the gzip data ends before its end marker)") from None
    except (gzip.BadGzipFile, zlib.error) as err:
        raise InputError(path, f"corrupt gzip data: {err} (the file is damaged; copy it again from its source)") from None
    except OSError as err:
        raise InputError(path, f"cannot read the file ({err.strerror or err})") from None


def _metaimage_payload(path: Path) -> tuple[Path, int, int] | None:
    """``(data file, offset, zlib wbits)`` of a compressed MetaImage (``CompressedData = True``);
    None when it is not compressed or its data lie in several files (left to ITK)."""
    fields: dict[str, str] = {}
    offset = 0
    with open(path, "rb") as handle:
        for raw in handle:
            offset += len(raw)
            key, _, value = raw.decode("latin-1").partition("=")
            fields[key.strip().lower()] = value.strip()
            if key.strip().lower() == "elementdatafile":
                break
            if offset > 1 << 16:
                return None  # no header this long: not a MetaImage ITK could read
    if fields.get("compresseddata", "").lower() != "true":
        return None
    data_file = fields.get("elementdatafile", "")
    if data_file.upper() == "LOCAL":
        return path, offset, 15
    if not data_file or data_file.upper().startswith("LIST") or "%" in data_file or " " in data_file:
        return None
    return path.parent / data_file, 0, 15


def _nrrd_payload(path: Path) -> tuple[Path, int, int] | None:
    """``(data file, offset, zlib wbits)`` of a gzip-encoded NRRD; None for other encodings, line
    skips, or data in several files (left to ITK)."""
    fields: dict[str, str] = {}
    offset = 0
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle):
            offset += len(raw)
            line = raw.decode("latin-1").rstrip("\r\n")
            if number == 0 or line.startswith("#") or ":=" in line:
                continue
            if not line:
                break
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
            if offset > 1 << 16:
                return None
    if fields.get("encoding", "").lower() not in ("gzip", "gz"):
        return None
    if int(fields.get("line skip", fields.get("lineskip", "0")) or 0) != 0:
        return None
    data_file = fields.get("data file", fields.get("datafile", ""))
    if not data_file:
        return path, offset, 31
    if data_file.upper().startswith("LIST") or " " in data_file:
        return None
    return path.parent / data_file, 0, 31


def _check_compressed_payload(path: Path, image: sitk.Image) -> None:
    """A compressed ``.mha``/``.mhd``/``.nrrd`` must decompress whole and pass its checksum (zlib's
    Adler-32, gzip's CRC-32): ITK stops once it has the voxel bytes, so it reads a damaged stream as
    garbage voxels without an error. Streams the data once (memory bounded)."""
    locate = _nrrd_payload if image_suffix(path) == ".nrrd" else _metaimage_payload
    try:
        payload = locate(path)
        if payload is None:
            return
        data_file, offset, wbits = payload
        expected = image.GetNumberOfPixels() * image.GetNumberOfComponentsPerPixel() * image.GetSizeOfPixelComponent()
        got = 0
        with open(data_file, "rb") as handle:
            handle.seek(offset)
            stream = zlib.decompressobj(wbits)
            while block := handle.read(_CHUNK_BYTES):
                while block:
                    got += len(stream.decompress(block, _CHUNK_BYTES))
                    block = stream.unconsumed_tail
                if stream.eof:
                    break
        if not stream.eof:
            raise InputError(data_file, "file is truncated or corrupt (the compressed data end before their end marker)")
    except zlib.error as err:
        kind = "gzip" if wbits == 31 else "zlib"
        raise InputError(data_file, f"corrupt {kind} data: {err} (the file is damaged; copy it again from its source)") from None
    except (OSError, ValueError) as err:
        raise InputError(path, f"cannot read the compressed data ({getattr(err, 'strerror', None) or err})") from None
    if got < expected:
        raise InputError(data_file, f"file is truncated: {got} of {expected} voxel bytes present")


def check_readable(path: Path) -> None:
    """Raise :class:`InputError` saying why ``path`` cannot be read: it does not exist, it is an empty
    file, or opening (listing, for a folder) fails, with the system's reason (ITK would report an
    unreadable file as "does not exist")."""
    try:
        if path.is_dir():
            os.listdir(path)
            return
        with open(path, "rb") as handle:
            if not handle.read(1):
                raise InputError(path, "file is empty (0 bytes)")
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except OSError as err:
        what = "folder" if _is_dir(path) else "file"
        raise InputError(path, f"cannot read the {what} ({err.strerror or err})") from None


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


#: Plausible voxel spacing of a medical scan, mm: outside it the header's units or values are wrong
#: (a spacing 10x too large makes registration search a volume 1000x too large).
SPACING_RANGE_MM = (0.1, 20.0)
#: Fewest voxels along any axis of a 3D scan: registration and segmentation need a volume, not a slice.
MIN_AXIS_VOXELS = 4


def check_plausible_geometry(geometry: Geometry, path: str | Path) -> None:
    """Raise :class:`InputError` naming the axis and value when a scan's voxel spacing lies outside
    :data:`SPACING_RANGE_MM` or it has fewer than :data:`MIN_AXIS_VOXELS` voxels along an axis."""
    low, high = SPACING_RANGE_MM
    for axis, size, spacing in zip("xyz", geometry.size, geometry.spacing):
        if not low <= spacing <= high:
            raise InputError(
                path,
                f"implausible voxel spacing {spacing:g} mm on axis {axis} (spacing {[round(s, 6) for s in geometry.spacing]} "
                f"mm, x y z; a scan's spacing lies within {low:g}-{high:g} mm): check the header's spacing and units",
            )
        if size < MIN_AXIS_VOXELS:
            raise InputError(
                path,
                f"only {size} voxel(s) on axis {axis} (size {list(geometry.size)}, x y z): a 3D scan needs at least "
                f"{MIN_AXIS_VOXELS} on every axis (a single slice cannot be registered or tracked)",
            )


def read_image(path: str | Path, *, check_finite: bool = True) -> sitk.Image:
    """Read a 3D scalar image from a NIfTI/NRRD/MHA file or a DICOM series folder.

    Geometry (spacing, origin, direction) is kept exactly as stored. Raises :class:`InputError`
    naming the file when it cannot be read (and why), is truncated, fails its compression checksum
    (gzip CRC-32 of ``.nii.gz``, zlib/gzip of compressed ``.mha``/``.nrrd``; the whole stream is read),
    is not 3D, holds NaN/Inf voxels, has a non-orthonormal direction, or needs more memory than is
    available (checked from the header, before loading).
    """
    path = Path(path)
    check_readable(path)
    check_memory(path)
    if path.is_file() and image_suffix(path) in (".nii", ".nii.gz"):
        _check_nifti_payload(path, check_finite)  # first: ITK's message for a damaged .nii.gz is "no ImageIO"
    try:
        if path.is_dir():
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(dicom_series_files(path))
            reader.MetaDataDictionaryArrayUpdateOn()
            image = reader.Execute()
        else:
            if image_suffix(path) is None and not is_dicom_file(path):
                raise InputError(path, f"not a supported image file (expected one of {', '.join(IMAGE_SUFFIXES)} or a DICOM series folder)")
            image = sitk.ReadImage(str(path))
    except InputError:
        raise
    except RuntimeError as err:
        first_line = str(err).strip().splitlines()[-1] if str(err).strip() else "unknown error"
        raise InputError(path, f"cannot read image ({first_line})") from None
    _check_image(image, path)
    if path.is_dir():
        _check_slice_positions(path, image)
    elif image_suffix(path) in (".nrrd", ".mha", ".mhd"):
        _check_compressed_payload(path, image)
    if check_finite and image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        array = sitk.GetArrayViewFromImage(image)
        if not np.isfinite(array).all():
            raise InputError(path, f"image holds {int((~np.isfinite(array)).sum())} NaN/Inf voxel(s)")
    return image


def read_geometry(path: str | Path) -> Geometry:
    """The geometry of an image file or DICOM series, reading headers only (no voxel data)."""
    path = Path(path)
    check_readable(path)
    if path.is_dir():
        files = dicom_series_files(path)
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)
        try:
            # The series geometry needs every slice position; reading is the reliable way.
            image = reader.Execute()
        except RuntimeError as err:
            raise InputError(path, f"cannot read DICOM series ({str(err).strip().splitlines()[-1]})") from None
        return Geometry.of(_check_image(image, path))
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise InputError(path, f"cannot read image header ({str(err).strip().splitlines()[-1]})") from None
    if reader.GetDimension() != 3:
        raise InputError(path, f"expected a 3D image, got {reader.GetDimension()}D of size {list(reader.GetSize())}")
    return Geometry(
        size=tuple(int(s) for s in reader.GetSize()),
        spacing=tuple(float(s) for s in reader.GetSpacing()),
        origin=tuple(float(o) for o in reader.GetOrigin()),
        direction=tuple(float(d) for d in reader.GetDirection()),
    )


def remove_stale_parts(path: Path, suffix: str | None = None) -> list[Path]:
    """Delete the temporary files an earlier writer of ``path`` left when it was killed mid-write.

    Every output has one writer at a time (one job per output), so a temporary file of the same
    target found when writing starts belongs to a dead writer. Returns the files removed.
    """
    path = Path(path)
    suffix = suffix if suffix is not None else (image_suffix(path) or "".join(path.suffixes) or ".tmp")
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.[A-Za-z0-9_]+\.part{re.escape(suffix)}$")
    removed = []
    if path.parent.is_dir():
        for stale in path.parent.glob(f".{glob.escape(path.name)}.*.part*"):
            if pattern.match(stale.name) and stale.is_file():
                stale.unlink(missing_ok=True)
                removed.append(stale)
                log.warning("removed %s, left by a writer of %s that was interrupted", stale.name, path)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` (same suffix); on success rename it onto ``path``.

    On any exception the temporary file is removed and ``path`` is left untouched. A writer killed
    with SIGKILL cannot clean up: its temporary file (``.<name>.<random>.part<suffix>``, never read by
    any step) is removed by the next write of the same ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = image_suffix(path) or "".join(path.suffixes) or ".tmp"
    remove_stale_parts(path, suffix)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".part{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():
            tmp.chmod(0o666 & ~_umask())  # mkstemp creates 0600; results are shared like any file the user writes
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def remove_stale_part_dirs(path: Path) -> list[Path]:
    """Delete the temporary folders (``.<name>.<random>.part``) an earlier :func:`atomic_directory`
    of ``path`` left when it was killed mid-build (one writer per output). Returns the folders removed."""
    path = Path(path)
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.[A-Za-z0-9_]+\.part$")
    removed = []
    if path.parent.is_dir():
        for stale in path.parent.glob(f".{glob.escape(path.name)}.*.part"):
            if pattern.match(stale.name) and stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
                removed.append(stale)
                log.warning("removed %s, left by a build of %s that was interrupted", stale.name, path)
    return removed


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``path``; on success it replaces ``path``.

    The folder is built under a hidden sibling name and renamed into place, so readers never see a
    half-built folder and a failed build leaves ``path`` as it was (the temporary folder is removed).
    A previous ``path`` is moved aside first and deleted once the new one is in place. The new
    folder gets the permissions ``mkdir`` gives (0777 less the umask; mkdtemp makes 0700, which
    colleagues cannot read). A build killed with SIGKILL leaves ``.<name>.<random>.part``, removed
    by the next build of the same ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_part_dirs(path)
    work = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
    try:
        yield work
        work.chmod(0o777 & ~_umask())
        if not path.exists() and not path.is_symlink():
            os.replace(work, path)
            return
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
        os.replace(path, old / path.name)
        try:
            os.replace(work, path)
        except BaseException:
            os.replace(old / path.name, path)
            shutil.rmtree(old, ignore_errors=True)
            raise
        shutil.rmtree(old, ignore_errors=True)  # what is left is removed by the next build
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def write_image(image: sitk.Image, path: str | Path, *, compress: bool = True) -> Path:
    """Write ``image`` atomically; the format follows the suffix (``.nii.gz``, ``.nrrd``, ``.mha``)."""
    path = Path(path)
    if image_suffix(path) is None:
        raise InputError(path, f"cannot write an image with this suffix (use one of {', '.join(IMAGE_SUFFIXES)})")
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=compress)
    return path


def write_json(data: object, path: str | Path) -> Path:
    """Write ``data`` as sorted, indented JSON atomically (byte-identical for equal data)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return Path(path)


def write_parquet(table, path: str | Path) -> Path:
    """Write a ``pyarrow.Table`` atomically, deterministically (no timestamps in the file)."""
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return Path(path)


#: Layout of per-patient tables: a few hundred rows per file, where compression, dictionaries and
#: column statistics save nothing and cost most of the time of reading 10,000 such files. Without the
#: stored Arrow schema (``store_schema``): their plain types read back the same from the Parquet
#: schema, and decoding it cost a seventh of opening such a file.
PATIENT_FILE_OPTIONS = dict(compression="none", use_dictionary=False, write_statistics=False, store_schema=False)


#: Suffix of a per-patient table kept in Arrow's IPC file format: a table only the pipeline reads
#: back (no footer to decode, no column readers to set up: about a tenth of the CPU time of opening
#: a small Parquet file, which dominates assembling a cohort from 10,000s of them).
ARROW_SUFFIX = ".arrow"


def patient_table_format(path: str | Path) -> str:
    """The format of a per-patient table by its name, as ``pyarrow.dataset`` names it: ``"ipc"`` for
    :data:`ARROW_SUFFIX`, else ``"parquet"``."""
    return "ipc" if str(path).endswith(ARROW_SUFFIX) else "parquet"


def write_patient_table(table: pa.Table, path: str | Path) -> Path:
    """Write a small per-patient table atomically and deterministically: Parquet (see
    PATIENT_FILE_OPTIONS), or Arrow IPC when ``path`` ends with :data:`ARROW_SUFFIX`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        if patient_table_format(path) == "ipc":
            with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table)
        else:
            pq.write_table(table, tmp, **PATIENT_FILE_OPTIONS)
    return Path(path)


def read_patient_table(path: str | Path) -> pa.Table:
    """A per-patient table written by :func:`write_patient_table` (Parquet or Arrow IPC, by suffix):
    the file read into memory in one go, then parsed there by one single-threaded reader."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with pa.OSFile(str(path)) as source:
        contents = source.read_buffer()
    if patient_table_format(path) == "ipc":
        return pa.ipc.open_file(contents).read_all()
    return pq.ParquetFile(pa.BufferReader(contents)).read(use_threads=False)


def image_from_array(array: np.ndarray, reference: sitk.Image | Geometry) -> sitk.Image:
    """A SimpleITK image of ``array`` (z, y, x) with the geometry of ``reference``."""
    image = sitk.GetImageFromArray(array)
    geometry = reference if isinstance(reference, Geometry) else Geometry.of(reference)
    if tuple(image.GetSize()) != geometry.size:
        raise ValueError(f"array shape {array.shape} does not match reference size {geometry.size} (x, y, z)")
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    return image
