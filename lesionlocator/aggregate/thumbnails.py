"""Lesion thumbnails for the cohort report: the axial slice through a lesion at each session, with its mask's outline.

A thumbnail is a crop of ``2 x`` :data:`lesionlocator.core.regions.VIEW_HALF_WIDTH_MM` (the tracker's
QC figures' field) around the lesion's centroid on the axial slice (array axis 0 of a SimpleITK array, which is (z, y, x)) through it, windowed to the crop's 1st-99th
percentile, downsampled to ``THUMBNAIL_PX`` pixels square and drawn in grey with the lesion's mask
outline in red (two pixels at thumbnail resolution, one each side of the mask's boundary: lossy WebP
stores colour at half resolution, and keeps a third of a one-pixel red line red), in radiological view (anterior up, the
patient's left on the right; axis-aligned directions assumed). Where the lesion has no voxels at a session
(vanished, out of the field of view, lost), the slice is the one through its nearest known centroid
(the last before, else the first after) and there is no outline. Images are lossy WebP (Chromium,
Firefox and Safari decode it), about 1-2 kB each, returned base64-encoded for ``data:`` URIs.

Nothing is segmented again: the label maps are the tracker's (``lesions.nii.gz``, candidates included;
``candidates.nii.gz`` when a candidate is missing there).
"""

from __future__ import annotations

import base64
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import SimpleITK as sitk
from PIL import Image
from scipy import ndimage

from lesionlocator.core.errors import InputError
from lesionlocator.core.io import Geometry, read_image
from lesionlocator.core.regions import VIEW_HALF_WIDTH_MM

log = logging.getLogger(__name__)

THUMBNAIL_PX = 80
WEBP_QUALITY = 60
OUTLINE_RGB = (255, 40, 40)


@dataclass(frozen=True)
class Thumbnail:
    """One lesion-session thumbnail: base64 WebP, or None with ``note`` saying why there is none."""

    webp_base64: str | None
    note: str = ""
    outlined: bool = False


def _read(path: Path) -> tuple[np.ndarray, Geometry] | None:
    """The (z, y, x) array and geometry of a NIfTI/NRRD/MHA file or a DICOM series folder; None (logged)
    when it cannot be read. Files are read by SimpleITK directly: they passed the project's checks at ingest."""
    try:
        image = read_image(path, check_finite=False) if path.is_dir() else sitk.ReadImage(str(path))
    except (RuntimeError, InputError) as err:
        log.warning("thumbnails: cannot read %s (%s)", path, str(err).strip().splitlines()[-1] if str(err).strip() else err)
        return None
    return sitk.GetArrayFromImage(image), Geometry.of(image)


def render_thumbnail(
    image: np.ndarray, geometry: Geometry, world_xyz: np.ndarray, label_maps: Sequence[np.ndarray] = (), lesion_id: int | None = None,
    px: int = THUMBNAIL_PX,
) -> Thumbnail:
    """The thumbnail of the axial slice through ``world_xyz`` (LPS mm) of ``image`` ((z, y, x) array),
    with the outline of label ``lesion_id`` in the first of ``label_maps`` (arrays of the image's
    shape) that has it on that slice (none when ``lesion_id`` is None)."""
    index = np.round(geometry.world_to_index(np.asarray(world_xyz, float))).astype(int)
    if not geometry.contains_index(index):
        return Thumbnail(None, "outside the field of view")
    spacing = np.asarray(geometry.spacing)[::-1]  # (z, y, x) mm
    half = np.maximum(np.ceil(VIEW_HALF_WIDTH_MM / spacing).astype(int), 1)
    z = int(np.clip(index[0], 0, image.shape[0] - 1))
    y0, x0 = index[1] - half[1], index[2] - half[2]
    rows, cols = 2 * half[1] + 1, 2 * half[2] + 1
    # the crop stays centred on the lesion near an edge: outside the image is filled with the window's floor
    ys, xs = slice(max(y0, 0), min(y0 + rows, image.shape[1])), slice(max(x0, 0), min(x0 + cols, image.shape[2]))
    target = (slice(ys.start - y0, ys.stop - y0), slice(xs.start - x0, xs.stop - x0))
    plane = np.full((rows, cols), np.nan)
    plane[target] = image[z, ys, xs]
    values = plane[np.isfinite(plane)]
    lo, hi = np.percentile(values, [1, 99]) if values.size else (0.0, 1.0)
    grey = np.clip((np.nan_to_num(plane, nan=lo) - lo) / max(hi - lo, 1e-6), 0, 1)
    picture = Image.fromarray((grey * 255).astype(np.uint8)).resize((px, px), Image.Resampling.BILINEAR).convert("RGB")
    outlined = False
    for label_map in label_maps if lesion_id is not None else ():
        cut = np.zeros((rows, cols), np.uint8)
        cut[target] = label_map[z, ys, xs] == np.uint32(lesion_id)
        if not cut.any():
            continue
        coverage = np.asarray(Image.fromarray(cut * 255).resize((px, px), Image.Resampling.BOX))
        small = coverage >= 96
        if not small.any():  # smaller than a thumbnail pixel: its most covered pixel
            small = coverage == coverage.max()
        pixels = np.asarray(picture).copy()
        pixels[ndimage.binary_dilation(small) & ~ndimage.binary_erosion(small)] = OUTLINE_RGB
        picture, outlined = Image.fromarray(pixels), True
        break
    # radiological view: anterior (-y, LPS) up, the patient's left (+x) on the viewer's right
    direction = geometry.direction_matrix
    if direction[1, 1] < 0:
        picture = picture.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    if direction[0, 0] < 0:
        picture = picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    buffer = io.BytesIO()
    picture.save(buffer, format="WEBP", quality=WEBP_QUALITY, method=4)
    return Thumbnail(base64.b64encode(buffer.getvalue()).decode("ascii"), outlined=outlined)


def _nearest_centroids(lesions: pd.DataFrame) -> pd.DataFrame:
    """Per row, the centroid to slice through: its own where the lesion has voxels, else its lesion's
    last known one before the session, else the first after."""
    rows = lesions.sort_values(["lesion_id", "session_index"]).copy()
    known = rows["voxel_count"] > 0
    for axis in ("x", "y", "z"):
        column = rows[f"centroid_{axis}_mm"].where(known)
        grouped = column.groupby(rows["lesion_id"])
        rows[f"slice_{axis}"] = grouped.ffill().fillna(grouped.bfill())
    return rows


class _LabelMaps:
    """The label maps of a session, each read on first use (the candidate map is rarely needed: the
    lesion map holds the candidates too); a missing or unreadable map, or one off the scan's grid, is skipped."""

    def __init__(self, paths: Sequence[Path | None], shape: tuple[int, ...]):
        self._paths, self._shape, self._read = list(paths), shape, {}

    def __iter__(self):
        for k, path in enumerate(self._paths):
            if k not in self._read:
                read = _read(Path(path)) if path is not None and Path(path).exists() else None
                if read is not None and read[0].shape != self._shape:
                    log.warning("thumbnails: %s is not on the grid of its scan; no outline from it", path)
                    read = None
                self._read[k] = read[0] if read is not None else None
            if self._read[k] is not None:
                yield self._read[k]


def patient_thumbnails(
    lesions: pd.DataFrame,
    images: Mapping[str, Path],
    labels: Mapping[str, Path],
    candidates: Mapping[str, Path] | None = None,
    px: int = THUMBNAIL_PX,
) -> dict[tuple[int, str], Thumbnail]:
    """Thumbnails of every lesion-session of one patient, keyed by (lesion_id, session).

    ``lesions``: the patient's rows of the cohort lesions table (lesion_id, session, session_index,
    voxel_count, centroid_{x,y,z}_mm); ``images``/``labels``/``candidates``: per session, the scan,
    the tracker's lesion label map and its new-lesion candidate map (a missing file gives no outline;
    a missing scan gives no thumbnail). Each scan and label map is read at most once.
    """
    out: dict[tuple[int, str], Thumbnail] = {}
    rows = _nearest_centroids(lesions)
    for session, group in rows.groupby("session", sort=False):
        image_path = images.get(session)
        scan = _read(Path(image_path)) if image_path is not None and Path(image_path).exists() else None
        if scan is None:
            for lesion_id in group["lesion_id"]:
                out[(int(lesion_id), session)] = Thumbnail(None, "scan not available")
            continue
        array, geometry = scan
        maps = _LabelMaps([labels.get(session), (candidates or {}).get(session)], array.shape)
        for row in group[["lesion_id", "voxel_count", "slice_x", "slice_y", "slice_z"]].itertuples(index=False):
            lesion_id = int(row.lesion_id)
            centroid = np.array([row.slice_x, row.slice_y, row.slice_z])
            if not np.isfinite(centroid).all():
                out[(lesion_id, session)] = Thumbnail(None, "no centroid")
                continue
            outline = lesion_id if row.voxel_count > 0 else None
            out[(lesion_id, session)] = render_thumbnail(array, geometry, centroid, maps if outline is not None else (), outline, px)
    return out
