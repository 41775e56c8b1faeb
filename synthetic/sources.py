"""Source scans for the generator: real scans without lesions, nnU-Net raw datasets with lesions,
and the procedural phantom.

A :class:`SourceScan` is lesion-free anatomy on its own grid (existing lesions of an nnU-Net source
are inpainted and kept separately as an instance mask), a body mask and one boolean mask per lesion
site (``liver``, ``lung``, ... and ``body``: soft tissue anywhere inside the body).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import cc3d
import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from lesionlocator.core.config import SyntheticConfig
from lesionlocator.core.errors import InputError
from lesionlocator.core.io import IMAGE_SUFFIXES, Geometry, geometry_difference, image_suffix, is_dicom_dir, read_image
from synthetic.phantom import make_phantom

log = logging.getLogger(__name__)

DEFAULT_PHANTOM_SIZE = (160, 128, 96)
LUNG_MIN_ML = 250.0
LABEL_FIT = 0.7  # minimum fraction of labelled voxels that must look like their organ


@dataclass
class SourceScan:
    """Lesion-free anatomy and where lesions may go; arrays are (z, y, x) on ``image``'s grid."""

    name: str
    modality: str  # "CT" or "MR"
    image: sitk.Image  # float32 anatomy (existing lesions inpainted)
    body: np.ndarray  # bool
    sites: dict[str, np.ndarray]  # bool mask per site, "body" included
    lesions: np.ndarray | None = None  # uint32 instance mask of existing lesions (nnU-Net sources)
    original: np.ndarray | None = None  # float32 image with the existing lesions (their appearance)
    path: str = ""
    _array: np.ndarray | None = field(default=None, repr=False)

    @property
    def geometry(self) -> Geometry:
        return Geometry.of(self.image)

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = sitk.GetArrayFromImage(self.image)
        return self._array


@dataclass(frozen=True)
class SourceSpec:
    """One entry of ``synthetic.sources`` after expansion (an nnU-Net dataset gives one per case)."""

    kind: str  # "ct", "mr", "nnunet", "phantom"
    image: Path | None = None
    label: Path | None = None
    modality: str = "CT"
    phantom_size: tuple[int, int, int] = DEFAULT_PHANTOM_SIZE
    instance: int = 0  # phantoms: one distinct body per patient

    @property
    def name(self) -> str:
        if self.kind == "phantom":
            return "phantom:{}x{}x{}".format(*self.phantom_size)
        return str(self.image)


def body_mask(array: np.ndarray, modality: str) -> np.ndarray:
    """The body (largest connected foreground, holes such as the lungs filled slice by slice)."""
    if modality == "CT":
        foreground = array > -500
    else:
        smooth = ndimage.uniform_filter(array.astype(np.float32), 3)
        foreground = smooth > 0.1 * float(np.percentile(array, 99))
    if not foreground.any():
        return foreground
    foreground = cc3d.largest_k(foreground, k=1, connectivity=6) > 0
    filled = np.empty_like(foreground)
    for z in range(foreground.shape[0]):
        filled[z] = ndimage.binary_fill_holes(foreground[z])
    return filled


def _ct_lungs(array: np.ndarray, body: np.ndarray, voxel_ml: float) -> np.ndarray:
    """Large air-filled regions inside the body: the lungs (bowel gas is small and excluded)."""
    air = (array < -400) & body
    labels = cc3d.connected_components(air, connectivity=6)
    counts = np.bincount(labels.ravel())
    keep = np.flatnonzero(counts * voxel_ml >= LUNG_MIN_ML)
    keep = keep[keep > 0]
    return np.isin(labels, keep)


def _organ_sites(
    organs: np.ndarray, config: SyntheticConfig, label_path: Path | None, check: bool
) -> dict[str, np.ndarray]:
    """One mask per organ site from a label map; with ``check``, an organ site that is wanted
    (weight > 0) but has none of its label ids in the map is an error naming the file."""
    present = set(np.unique(organs).tolist()) - {0}
    sites = {}
    for organ, ids in config.organ_label_ids.items():
        if not set(ids) & present:
            if check and config.site_weights.get(organ, 0) > 0:
                raise InputError(
                    label_path,
                    f"organ {organ!r} (synthetic.organ_label_ids: {ids}) has none of its label ids in this label map "
                    f"(ids present: {sorted(present)[:30]}); fix synthetic.organ_label_ids or set its site weight to 0",
                )
            continue
        sites[organ] = np.isin(organs, ids)
    return sites


def _resample_labels(labels: sitk.Image, image: sitk.Image, label_path: Path) -> np.ndarray:
    """Organ labels brought onto ``image``'s grid by nearest-neighbour resampling in physical space."""
    resampled = sitk.Resample(labels, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, labels.GetPixelID())
    return sitk.GetArrayFromImage(resampled)


def _label_agreement(ct: np.ndarray, organs: np.ndarray, lung_ids: list[int]) -> float:
    """How well labels fit a CT: the fraction of labelled voxels that look like their organ (lungs:
    air; any other label: within 60 HU of that label's median, i.e. a homogeneous organ)."""
    total = good = 0
    values_all = ct[organs > 0]
    ids_all = organs[organs > 0]
    for label in np.unique(ids_all):
        values = values_all[ids_all == label]
        if values.size < 50:
            continue
        if label in lung_ids:
            good += int((values < -400).sum())
        else:
            good += int((np.abs(values - np.median(values)) < 60).sum())
        total += values.size
    return good / total if total else 0.0


def _shifted(labels: sitk.Image, image: sitk.Image, shift: int, label_path: Path) -> np.ndarray:
    """Labels moved by ``shift`` slices along their own slice axis, on the image grid."""
    direction = np.asarray(labels.GetDirection()).reshape(3, 3)
    moved = sitk.Image(labels)
    moved.SetOrigin(tuple((np.asarray(labels.GetOrigin()) + shift * labels.GetSpacing()[2] * direction[:, 2]).tolist()))
    return _resample_labels(moved, image, label_path)


def _align_labels(labels: sitk.Image, image: sitk.Image, ct: np.ndarray, label_path: Path, lung_ids: list[int]) -> np.ndarray:
    """Organ labels on the CT grid, checked against the CT's intensities.

    A label map cut from a longer scan sometimes keeps the original scan's origin (the cut slices
    sit elsewhere in physical space; the embedded example_seg.nii.gz is such a case). When the
    labels do not fit the CT where the headers put them, the map is searched along its slice axis
    for the offset where they fit, and used there with a warning; if none fits, it is rejected.
    """
    organs = _resample_labels(labels, image, label_path)
    score = _label_agreement(ct, organs, lung_ids) if organs.any() else 0.0
    if score >= LABEL_FIT:
        return organs
    n_labelled = int((sitk.GetArrayViewFromImage(labels) > 0).sum())
    reach = int(np.ceil((image.GetSpacing()[2] * image.GetSize()[2]) / labels.GetSpacing()[2])) + labels.GetSize()[2]

    def fit(shift: int) -> float:
        candidate = _shifted(labels, image, shift, label_path)
        if (candidate > 0).sum() < 0.8 * n_labelled:
            return -1.0
        return _label_agreement(ct, candidate, lung_ids)

    coarse = {shift: fit(shift) for shift in range(-reach, reach + 1, 4)}
    centre = max(coarse, key=lambda s: (coarse[s], -abs(s)))
    fine = {shift: fit(shift) for shift in range(centre - 3, centre + 4)}
    best = max(fine, key=lambda s: (fine[s], -abs(s)))
    if fine[best] < LABEL_FIT:
        raise InputError(
            label_path,
            f"organ label map does not fit its source image: only {100 * score:.0f}% of labelled voxels look like "
            f"their organ where the headers place them, and no slice offset reaches {100 * LABEL_FIT:.0f}% "
            f"(best {100 * fine[best]:.0f}%)",
        )
    log.warning(
        "%s: organ labels do not fit the image where the header places them (%.0f%% fit); using them shifted by "
        "%d slice(s) = %.1f mm along the slice axis (%.0f%% fit)",
        label_path, 100 * score, best, best * labels.GetSpacing()[2], 100 * fine[best],
    )
    return _shifted(labels, image, best, label_path)


def _finish_sites(scan_array: np.ndarray, modality: str, body: np.ndarray, sites: dict, voxel_ml: float, labelled: bool) -> dict:
    """Add CT lungs found by thresholding (only without an organ label map: large bowel gas would
    pass for lung) and the soft-tissue ``body`` site."""
    organ_union = np.zeros_like(body)
    for mask in sites.values():
        organ_union |= mask
    if modality == "CT":
        if not labelled:
            lungs = _ct_lungs(scan_array, body, voxel_ml)
            if lungs.any():
                sites["lung"] = lungs
            organ_union |= lungs
        soft = body & (scan_array > -150) & (scan_array < 150) & ~organ_union
    else:
        soft = body & ~organ_union
    sites["body"] = soft
    return {name: mask & body for name, mask in sites.items() if mask.any()}


def expand_sources(config: SyntheticConfig) -> list[SourceSpec]:
    """The ``sources`` entries as a flat list (one per scan), files checked to exist."""
    specs: list[SourceSpec] = []
    for entry in config.sources:
        kind, _, rest = entry.partition(":")
        if kind == "phantom":
            size = DEFAULT_PHANTOM_SIZE
            if rest:
                try:
                    size = tuple(int(v) for v in rest.lower().split("x"))
                    assert len(size) == 3 and min(size) >= 16
                except (ValueError, AssertionError):
                    raise InputError(Path("synthetic.sources"), f"{entry!r}: phantom size must be XxYxZ, each >= 16") from None
            specs.append(SourceSpec("phantom", phantom_size=size))
        elif kind in ("ct", "mr"):
            path = Path(rest)
            if not path.exists():
                raise InputError(path, f"source scan not found (synthetic.sources entry {entry!r})")
            for scan in folder_scans(path) if path.is_dir() and not is_dicom_dir(path) else [path]:
                key = rest if scan == path else str(scan)
                label = config.organ_labels.get(key)
                if label is not None and not Path(label).exists():
                    raise InputError(Path(label), f"organ label map not found (synthetic.organ_labels entry for {key})")
                specs.append(SourceSpec(kind, image=scan, label=Path(label) if label else None, modality=kind.upper()))
        else:
            specs.extend(nnunet_cases(Path(rest)))
    return specs


def folder_scans(folder: Path) -> list[Path]:
    """The scans of a folder of sources, in name order: every image file (:data:`IMAGE_SUFFIXES`) and
    every subfolder that holds a DICOM series; a file named like an organ label map (``*_seg*``,
    ``*_labels*``, ``*_mask*``) is not a scan."""
    scans = []
    for path in sorted(folder.iterdir()):
        if path.is_dir():
            if is_dicom_dir(path):
                scans.append(path)
        elif image_suffix(path) is not None and not any(tag in path.name.lower() for tag in _LABEL_TAGS):
            scans.append(path)
    if not scans:
        raise InputError(folder, f"folder of sources holds no scan (image files {', '.join(IMAGE_SUFFIXES)} or DICOM series folders)")
    return scans


_LABEL_TAGS = ("_seg", "_label", "_mask")


def nnunet_cases(folder: Path) -> list[SourceSpec]:
    """The cases of an nnU-Net raw dataset (single channel), with the modality from dataset.json."""
    dataset_json = folder / "dataset.json"
    if not dataset_json.is_file():
        raise InputError(folder, "not an nnU-Net raw dataset (no dataset.json)")
    try:
        meta = json.loads(dataset_json.read_text())
    except json.JSONDecodeError as err:
        raise InputError(dataset_json, f"not valid JSON ({err.msg})") from None
    channels = meta.get("channel_names") or meta.get("modality") or {}
    if len(channels) != 1:
        raise InputError(dataset_json, f"needs exactly one channel, found {len(channels)} in channel_names")
    modality = "CT" if str(next(iter(channels.values()))).lower() == "ct" else "MR"
    ending = meta.get("file_ending", ".nii.gz")
    images = sorted((folder / "imagesTr").glob(f"*_0000{ending}"))
    if not images:
        raise InputError(folder / "imagesTr", f"no *_0000{ending} images")
    specs = []
    for image in images:
        case = image.name[: -len(f"_0000{ending}")]
        label = folder / "labelsTr" / f"{case}{ending}"
        if not label.is_file():
            raise InputError(label, f"label file of case {case} not found")
        specs.append(SourceSpec("nnunet", image=image, label=label, modality=modality))
    return specs


def _instances(labels: np.ndarray) -> np.ndarray:
    """A binary mask becomes connected components; otherwise each value is one lesion."""
    if labels.max() <= 1:
        return cc3d.connected_components(labels > 0, connectivity=26).astype(np.uint32)
    values = np.unique(labels)
    values = values[values > 0]
    relabelled = np.zeros(labels.shape, dtype=np.uint32)
    for new_id, value in enumerate(values, start=1):
        relabelled[labels == value] = new_id
    return relabelled


def _inpaint(array: np.ndarray, lesions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Replace each lesion by the median of a shell around it plus mild smooth noise."""
    healthy = array.copy()
    for box_id, box in enumerate(ndimage.find_objects(lesions), start=1):
        if box is None:
            continue
        pad = tuple(slice(max(s.start - 3, 0), s.stop + 3) for s in box)
        local = lesions[pad] == box_id
        shell = ndimage.binary_dilation(local, iterations=2) & ~(lesions[pad] > 0)
        values = array[pad][shell]
        if values.size == 0:
            continue
        median, spread = float(np.median(values)), float(np.std(values))
        noise = ndimage.gaussian_filter(rng.normal(0, 1, local.shape), 1.0)
        noise *= 0.5 * spread / max(float(noise.std()), 1e-6)
        healthy[pad][local] = (median + noise)[local]
    return healthy


def load_source(spec: SourceSpec, config: SyntheticConfig, rng: np.random.Generator) -> SourceScan:
    """Read (or build) one source scan; every file problem is an :class:`InputError` naming it."""
    if spec.kind == "phantom":
        image, organs = make_phantom(spec.phantom_size, rng)
        array = sitk.GetArrayFromImage(image)
        body = body_mask(array, "CT")
        sites = _organ_sites(organs, config, None, check=False)
        sites = _finish_sites(array, "CT", body, sites, Geometry.of(image).voxel_volume_ml(), labelled=True)
        return SourceScan(spec.name, "CT", image, body, sites, path=spec.name)

    image = sitk.Cast(read_image(spec.image), sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(image)
    geometry = Geometry.of(image)
    body = body_mask(array, spec.modality)
    if body.sum() * geometry.voxel_volume_ml() < 1.0:
        raise InputError(spec.image, "no body found in the source scan (nothing above the foreground threshold)")
    sites: dict[str, np.ndarray] = {}
    lesions = original = None
    if spec.kind == "nnunet":
        label_image = read_image(spec.label)
        difference = geometry_difference(Geometry.of(label_image), geometry, tolerance=1e-3)
        if difference:
            raise InputError(spec.label, f"label geometry differs from its image {spec.image.name}: {difference}")
        lesions = _instances(sitk.GetArrayFromImage(label_image).astype(np.int64))
        if not lesions.any():
            raise InputError(spec.label, "label map holds no lesion (all background)")
        original = array
        array = _inpaint(array, lesions, rng)
        image = sitk.GetImageFromArray(array)
        image.CopyInformation(label_image)
    elif spec.label is not None:
        organs_image = read_image(spec.label)
        if spec.modality == "CT":
            organs = _align_labels(organs_image, image, array, spec.label, config.organ_label_ids.get("lung", []))
        else:
            organs = _resample_labels(organs_image, image, spec.label)
        if not organs.any():
            raise InputError(spec.label, "organ label map does not overlap its source image in physical space")
        sites = _organ_sites(organs, config, spec.label, check=True)
    sites = _finish_sites(array, spec.modality, body, sites, geometry.voxel_volume_ml(), labelled=spec.label is not None)
    return SourceScan(spec.name, spec.modality, image, body, sites, lesions=lesions, original=original, path=str(spec.image))
