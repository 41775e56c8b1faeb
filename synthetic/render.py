"""Render one lesion across all sessions of a synthetic cohort (axial and coronal, GT contour).

    python -m synthetic.render COHORT_DIR [--patient P001] [--lesion ID] -o strip.png

Images are reoriented to LPS for display (patient's left on the image right, anterior up in axial
views, superior up in coronal views); panels are cut around the lesion in mm, so sessions with
different spacing compare directly.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import SimpleITK as sitk  # noqa: E402

from lesionlocator.core.errors import InputError  # noqa: E402
from lesionlocator.core.io import Geometry, atomic_path, read_image  # noqa: E402

log = logging.getLogger(__name__)
GT_TABLE = Path("derivatives") / "groundtruth" / "groundtruth.parquet"


def _panel(ax, plane: np.ndarray, mask: np.ndarray, extent, window, title: str, origin: str) -> None:
    ax.imshow(plane, cmap="gray", vmin=window[0], vmax=window[1], extent=extent, origin=origin, interpolation="bilinear")
    if mask.any():
        ax.contour(mask.astype(float), levels=[0.5], colors="red", linewidths=0.8, extent=extent, origin=origin)
    ax.set_title(title, fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])


def _crop(array: np.ndarray, centre: np.ndarray, half: np.ndarray) -> tuple[np.ndarray, list[slice]]:
    """Crop a 2D array around ``centre`` (row, col) padding with the minimum value."""
    lo = np.round(centre - half).astype(int)
    hi = np.round(centre + half).astype(int) + 1
    pad = [(max(-lo[i], 0), max(hi[i] - array.shape[i], 0)) for i in range(2)]
    padded = np.pad(array, pad, constant_values=array.min())
    return padded[lo[0] + pad[0][0]: hi[0] + pad[0][0], lo[1] + pad[1][0]: hi[1] + pad[1][0]]


def render_lesion_strip(
    cohort: str | Path, out_png: str | Path, patient: str | None = None, lesion_id: int | None = None,
    field_mm: float = 100.0, dpi: int = 110,
) -> Path:
    """Write a PNG with one column per session (rows: axial, coronal) of one lesion, cut
    ``field_mm`` wide around it, its ground-truth contour in red. Defaults: the first patient and
    its largest baseline lesion."""
    cohort = Path(cohort)
    table_path = cohort / GT_TABLE
    if not table_path.is_file():
        raise InputError(table_path, "ground-truth table not found (is this a synthetic cohort?)")
    table = pd.read_parquet(table_path)
    patient = patient or sorted(table.patient.unique())[0]
    rows = table[table.patient == patient]
    if rows.empty:
        raise InputError(table_path, f"patient {patient!r} not in the ground truth")
    if lesion_id is None:
        baseline = rows[rows.session_index == 0]
        lesion_id = int(baseline.sort_values("volume_ml").iloc[-1].lesion_id)
    rows = rows[rows.lesion_id == lesion_id].sort_values("session_index")
    if rows.empty:
        raise InputError(table_path, f"lesion {lesion_id} of patient {patient} not in the ground truth")
    site = rows.iloc[0].site
    modality = rows.iloc[0].modality
    fig, axes = plt.subplots(2, len(rows), figsize=(1.9 * len(rows), 4.0), squeeze=False)
    for column, row in enumerate(rows.itertuples()):
        image = sitk.DICOMOrient(read_image(cohort / f"sub-{patient}" / f"ses-{row.session}" / "image.nii.gz"), "LPS")
        labels = sitk.DICOMOrient(
            read_image(cohort / "derivatives" / "groundtruth" / f"sub-{patient}" / f"ses-{row.session}" / "lesions.nii.gz"), "LPS"
        )
        geometry = Geometry.of(image)
        array = sitk.GetArrayFromImage(image).astype(np.float32)
        mask = sitk.GetArrayFromImage(labels) == lesion_id
        if mask.any():
            centre = np.argwhere(mask).mean(axis=0)
        else:
            centre = geometry.world_to_index([row.centroid_x, row.centroid_y, row.centroid_z])
        centre = np.clip(np.round(centre), 0, np.asarray(array.shape) - 1).astype(int)
        sz, sy, sx = geometry.spacing[::-1]
        half = field_mm / 2
        axial = _crop(array[centre[0]], centre[1:], np.array([half / sy, half / sx]))
        axial_mask = _crop(mask[centre[0]].astype(np.uint8), centre[1:], np.array([half / sy, half / sx]))
        coronal = _crop(array[:, centre[1]], centre[[0, 2]], np.array([half / sz, half / sx]))
        coronal_mask = _crop(mask[:, centre[1]].astype(np.uint8), centre[[0, 2]], np.array([half / sz, half / sx]))
        if modality == "CT":
            window = (-1000, 300) if site == "lung" else (-160, 240)
        else:
            window = tuple(np.percentile(axial, [1, 99.5]))
        extent = [-half, half, -half, half]
        title = f"ses-{row.session} {row.status}\n{row.volume_ml:.2f} ml"
        _panel(axes[0, column], axial, axial_mask, extent, window, title, "upper")
        _panel(axes[1, column], coronal, coronal_mask, extent, window, "coronal", "lower")
    fig.suptitle(f"{patient} lesion {lesion_id} ({modality}, {site})", fontsize=8)
    fig.tight_layout()
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return out_png


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cohort", help="synthetic cohort folder (with derivatives/groundtruth/)")
    parser.add_argument("-o", "--output", required=True, help="PNG file to write")
    parser.add_argument("--patient", help="patient label (default: the first)")
    parser.add_argument("--lesion", type=int, help="lesion id (default: the largest at baseline)")
    parser.add_argument("--field-mm", type=float, default=100.0, help="width of each panel, mm")
    args = parser.parse_args(argv)
    render_lesion_strip(args.cohort, args.output, args.patient, args.lesion, args.field_mm)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
