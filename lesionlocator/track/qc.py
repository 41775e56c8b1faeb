"""QC figures of tracked lesions: one PNG strip per lesion across the sessions of a patient.

Each panel is the axial slice (array axis 0) of a session through the lesion's centroid there (or,
when the lesion is not present, through its last known centroid), cropped to ``VIEW_HALF_WIDTH_MM``
around it, with the contour of the lesion's mask and the session, status and volume in the title.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from lesionlocator.core.io import Geometry, atomic_path, read_image
from lesionlocator.core.regions import VIEW_HALF_WIDTH_MM

log = logging.getLogger(__name__)


def _panel(ax, image: sitk.Image, labels: np.ndarray, lesion_id: int, world: np.ndarray, title: str) -> None:
    geometry = Geometry.of(image)
    array = sitk.GetArrayViewFromImage(image)
    index = np.round(geometry.world_to_index(world)).astype(int)
    ax.set_title(title, fontsize=8)
    ax.axis("off")
    if not geometry.contains_index(index):
        ax.text(0.5, 0.5, "outside the\nfield of view", ha="center", va="center", transform=ax.transAxes, fontsize=8)
        return
    spacing = np.asarray(geometry.spacing)[::-1]
    half = np.ceil(VIEW_HALF_WIDTH_MM / spacing).astype(int)
    z = int(np.clip(index[0], 0, array.shape[0] - 1))
    rows = slice(max(index[1] - half[1], 0), min(index[1] + half[1] + 1, array.shape[1]))
    cols = slice(max(index[2] - half[2], 0), min(index[2] + half[2] + 1, array.shape[2]))
    plane = np.asarray(array[z, rows, cols], dtype=float)
    lo, hi = np.percentile(plane, [1, 99]) if plane.size else (0.0, 1.0)
    aspect = spacing[1] / spacing[2]  # rows are y, columns x: square millimetres on screen
    ax.imshow(plane, cmap="gray", vmin=lo, vmax=max(hi, lo + 1e-6), aspect=aspect, interpolation="nearest")
    mask = labels[z, rows, cols] == np.uint32(lesion_id)
    if mask.any():
        ax.contour(mask.astype(float), levels=[0.5], colors="red", linewidths=0.8)


def write_qc_figures(
    images: Sequence[Path], labels: Sequence[Path], rows: Sequence[dict], sessions: Sequence[str], out_dir: Path
) -> list[Path]:
    """One PNG per tracked lesion (``lesion-<id>.png`` in ``out_dir``); returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loaded = [(read_image(i), sitk.GetArrayFromImage(read_image(lab))) for i, lab in zip(images, labels)]
    by_lesion: dict[int, dict[str, dict]] = {}
    for row in rows:
        if not row["is_candidate"]:
            by_lesion.setdefault(int(row["lesion_id"]), {})[row["session"]] = row
    written = []
    for lesion_id in sorted(by_lesion):
        fig, axes = plt.subplots(1, len(sessions), figsize=(2.4 * len(sessions), 2.7), squeeze=False)
        last = None
        for ax, session, (image, label_array) in zip(axes[0], sessions, loaded):
            row = by_lesion[lesion_id].get(session)
            if row is not None and np.isfinite(row["centroid_x"]):
                last = np.array([row["centroid_x"], row["centroid_y"], row["centroid_z"]])
            status = row["status"] if row is not None else "-"
            volume = f"{row['volume_ml']:.2f} mL" if row is not None else ""
            if last is None:
                ax.axis("off")
                ax.set_title(f"ses-{session} {status}", fontsize=8)
                continue
            _panel(ax, image, label_array, lesion_id, last, f"ses-{session} {status}\n{volume}")
        fig.suptitle(f"lesion {lesion_id}", fontsize=9)
        fig.tight_layout()
        path = Path(out_dir) / f"lesion-{lesion_id}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
        plt.close(fig)
        written.append(path)
    log.info("QC figures: %d lesion(s) -> %s", len(written), out_dir)
    return written
