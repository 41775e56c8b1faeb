"""``evaluate-model``: Dice per prompt type of trained models and the classical segmenter, side by side.

Held-out data are nnU-Net raw datasets (``imagesTr``/``labelsTr`` or ``imagesTs``/``labelsTs``),
e.g. the synthetic generator's export with a seed other than the training cohort's. Every lesion
(a 26-connected component of equal label) of every case is prompted three ways, in the case's own
voxel frame (z, y, x):

* ``point``: the lesion's most interior voxel (the engine's :func:`interior_point`, as a reader's
  click near the middle);
* ``box``: the lesion's tight bounding box (inclusive voxel corners); ``box_grow`` moves every
  face outwards (> 0) or inwards (< 0, never past the middle of the extent) by that many voxels, to
  measure how a model responds to loose or tight boxes;
* ``mask``: the lesion mask perturbed like a previous time point's mask propagated by a good
  registration (:data:`EVAL_MASK_NOISE`: dilated/eroded by up to 1 voxel, warped by up to 1
  voxel, shifted by up to 1 voxel; seeded). Training uses stronger noise (twice these levels).

Each row also has ``prompt_dice``: the Dice of the prompt itself (the box filled, or the mask)
with the lesion, the score of "copy the prompt" (NaN for points).

All lesions of a case are segmented in one call per prompt type (as the pipeline does), and each
lesion's Dice is computed against its own ground truth. The modality of a case comes from the
dataset's ``cases.json`` (written by the synthetic export), else from a ``ct_``/``mr_`` part of
the case identifier, else from the dataset's channel name (``dataset.json``).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Callable, Mapping, Sequence

import cc3d
import numpy as np
import pandas as pd
import pyarrow as pa
import SimpleITK as sitk

from lesionlocator.core.config import PromptNoise, SegmentConfig
from lesionlocator.core.errors import InputError
from lesionlocator.core.io import read_image, write_parquet
from lesionlocator.core.regions import dice
from lesionlocator.train.simulate import move_box_faces, simulate_mask

log = logging.getLogger(__name__)

PROMPT_TYPES = ("point", "box", "mask")
EVAL_MASK_NOISE = PromptNoise(mask_morph=1, mask_warp=1.0, mask_shift=1)


def dataset_cases(folder: Path) -> list[tuple[str, Path, Path, str]]:
    """(case id, image path, label path, modality) of every labelled case of an nnU-Net raw dataset."""
    folder = Path(folder)
    meta_path = folder / "dataset.json"
    if not meta_path.is_file():
        raise InputError(meta_path, "file not found (a held-out cohort is an nnU-Net raw dataset folder)")
    meta = json.loads(meta_path.read_text())
    ending = meta.get("file_ending", ".nii.gz")
    channels = meta.get("channel_names", {})
    default_modality = _modality_name(str(channels.get("0", "unknown")))
    index = json.loads((folder / "cases.json").read_text()) if (folder / "cases.json").is_file() else {}
    cases = []
    for images, labels in (("imagesTs", "labelsTs"), ("imagesTr", "labelsTr")):
        for label in sorted((folder / labels).glob("*" + ending)):
            case = label.name[: -len(ending)]
            image = folder / images / f"{case}_0000{ending}"
            if not image.is_file():
                raise InputError(image, f"image of labelled case {case} not found")
            listed = index.get(case, {}).get("modality") if isinstance(index.get(case), dict) else None
            modality = _modality_name(listed) if listed else (_case_modality(case) or default_modality)
            cases.append((case, image, label, modality))
        if cases:
            break
    if not cases:
        raise InputError(folder, "no labelled cases (labelsTs/ or labelsTr/)")
    return cases


def _modality_name(name: str) -> str:
    low = name.lower()
    if low == "ct":
        return "CT"
    if low in ("mr", "mri", "t1", "t2", "flair", "t1w", "t2w"):
        return "MR"
    return name


def _case_modality(case: str) -> str | None:
    match = re.search(r"(?:^|_)(ct|mr)(?:_|$)", case.lower())
    return match.group(1).upper() if match else None


def lesion_prompts(labels: np.ndarray, rng: np.random.Generator, params: PromptNoise = EVAL_MASK_NOISE,
                   box_grow: int = 0):
    """Per lesion: (id, mask, {"point": Prompt, "box": Prompt, "mask": Prompt}) in voxel frame (z, y, x).

    The box is the tight bounding box with each face moved ``box_grow`` voxels outwards (clipped to
    the image; a negative value moves faces inwards, at most to the middle of the extent).
    """
    from lesionlocator.segment.api import Prompt
    from lesionlocator.segment.prompting import interior_point

    components = cc3d.connected_components(np.ascontiguousarray(labels).astype(np.uint32), connectivity=26)
    out = []
    for lesion_id in range(1, int(components.max()) + 1):
        mask = components == lesion_id
        if not mask.any():
            continue
        where = np.argwhere(mask)
        box_lo, box_hi = move_box_faces(where.min(0), where.max(0), box_grow, box_grow, labels.shape)
        box = (tuple(map(float, box_lo)), tuple(map(float, box_hi)))
        prompts = {
            "point": Prompt(lesion_id, "point", point=tuple(map(float, interior_point(mask)))),
            "box": Prompt(lesion_id, "box", box=box),
            "mask": Prompt(lesion_id, "mask", mask=simulate_mask(mask, rng, params.mask_morph, params.mask_warp,
                                                                 params.mask_shift)),
        }
        out.append((lesion_id, mask, prompts))
    return out


def classical_segmenter():
    """The engine's classical segmenter with the config's default settings."""
    from lesionlocator.segment.session import build_segmenter

    return build_segmenter(SegmentConfig(segmenter="classical"))


def model_segmenter(folder: Path, device: str = "cpu", mirroring: bool = False, box_margin_mm: float | None = 0.0,
                    fine_zoom: float | None = None):  # fmt: skip
    """The engine's nnU-Net segmenter for a trained-model folder (the other settings, ``fine_zoom`` when
    None among them: ``segment``'s defaults)."""
    from lesionlocator.segment.nnunet import NnUNetSegmenter

    fine = {} if fine_zoom is None else {"fine_zoom": fine_zoom}
    return NnUNetSegmenter(SegmentConfig(checkpoint=Path(folder), device=device, mirroring=mirroring,
                                         box_margin_mm=box_margin_mm, **fine))


def evaluate_segmenters(
    cohorts: Sequence[Path],
    segmenters: Mapping[str, Callable[[], object]],
    seed: int = 0,
    max_lesions: int | None = None,
    box_grow: int = 0,
) -> pd.DataFrame:
    """One row per cohort x case x lesion x segmenter x prompt type, with the lesion's Dice and the
    segmented voxel count next to the true one (``predicted_voxels`` / ``voxels``: under- or
    over-segmentation), and its size: ``diameter_mm``, the diameter of a ball of the lesion's volume
    (voxels x the case's voxel volume; :func:`size_class` bins it)."""
    rows = []
    built = {name: factory() for name, factory in segmenters.items()}
    for cohort in cohorts:
        cases = dataset_cases(Path(cohort))
        rng = np.random.default_rng(seed)
        n_lesions = 0
        for case, image_path, label_path, modality in cases:
            if max_lesions is not None and n_lesions >= max_lesions:
                break
            image = read_image(image_path)
            labels = sitk.GetArrayFromImage(read_image(label_path))
            voxel_mm3 = float(np.prod(image.GetSpacing()))
            lesions = lesion_prompts(labels, rng, box_grow=box_grow)
            if max_lesions is not None:
                lesions = lesions[: max_lesions - n_lesions]
            n_lesions += len(lesions)
            if not lesions:
                continue
            for kind in PROMPT_TYPES:
                prompts = [p[kind] for _, _, p in lesions]
                for name, segmenter in built.items():
                    result = segmenter.segment(image, prompts)
                    for lesion_id, mask, lesion_prompt in lesions:
                        predicted = result.labels == lesion_id
                        rows.append({
                            "cohort": Path(cohort).name, "modality": modality, "case": case,
                            "lesion": int(lesion_id), "voxels": int(mask.sum()),
                            "diameter_mm": round(equivalent_diameter_mm(int(mask.sum()) * voxel_mm3), 3), "segmenter": name,
                            "prompt": kind, "dice": round(dice(predicted, mask), 6),
                            "prompt_dice": _prompt_dice(lesion_prompt[kind], mask),
                            "predicted_voxels": int(predicted.sum()),
                        })
            log.info("%s %s: %d lesion(s) scored", Path(cohort).name, case, len(lesions))
    columns = ["cohort", "modality", "case", "lesion", "voxels", "diameter_mm", "segmenter", "prompt", "dice", "prompt_dice",
               "predicted_voxels"]
    return pd.DataFrame(rows, columns=columns)


def _prompt_dice(prompt, mask: np.ndarray) -> float:
    """Dice of the prompt region itself with the lesion (NaN for a point)."""
    if prompt.kind == "point":
        return float("nan")
    if prompt.kind == "mask":
        return round(dice(prompt.mask, mask), 6)
    region = np.zeros(mask.shape, bool)
    region[tuple(slice(int(a), int(b) + 1) for a, b in zip(*prompt.box))] = True
    return round(dice(region, mask), 6)


#: Upper edges (mm) of the lesion size classes of :func:`size_class`: small, medium, large.
SIZE_EDGES_MM = (10.0, 30.0)
SIZE_CLASSES = ("<=10 mm", "10-30 mm", ">30 mm")


def equivalent_diameter_mm(volume_mm3: float) -> float:
    """The diameter of a ball of ``volume_mm3``."""
    return float((6.0 * volume_mm3 / np.pi) ** (1.0 / 3.0))


def size_class(diameter_mm) -> np.ndarray:
    """:data:`SIZE_CLASSES` of lesion diameters (mm): up to 10 mm, over 10 up to 30, over 30."""
    return np.asarray(SIZE_CLASSES)[np.searchsorted(SIZE_EDGES_MM, np.asarray(diameter_mm, float), side="left")]


def summarize_by_size(table: pd.DataFrame) -> pd.DataFrame:
    """Mean Dice per cohort x modality x segmenter x size class (:func:`size_class` of ``diameter_mm``,
    and ``all``) and prompt type, with lesion counts; empty classes have no row."""
    if table.empty:
        return pd.DataFrame()
    table = table.assign(size=size_class(table["diameter_mm"]))
    table = pd.concat([table, table.assign(size="all")], ignore_index=True)
    keys = ["cohort", "modality", "segmenter", "size"]
    mean = table.pivot_table(index=keys, columns="prompt", values="dice", aggfunc="mean").reindex(columns=list(PROMPT_TYPES))
    count = table[table.prompt == "box"].groupby(keys).size().rename("lesions")
    out = mean.round(4).join(count).reset_index()
    order = {name: k for k, name in enumerate((*SIZE_CLASSES, "all"))}
    return out.sort_values(["cohort", "modality", "segmenter", "size"], key=lambda c: c.map(order) if c.name == "size" else c,
                           ignore_index=True)  # fmt: skip


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Mean Dice per cohort x modality x segmenter (rows) and prompt type (columns), with lesion counts."""
    if table.empty:
        return pd.DataFrame()
    mean = table.pivot_table(index=["cohort", "modality", "segmenter"], columns="prompt", values="dice",
                             aggfunc="mean").reindex(columns=list(PROMPT_TYPES))
    count = table[table.prompt == "box"].groupby(["cohort", "modality", "segmenter"]).size().rename("lesions")
    copy = table.pivot_table(index=["cohort", "modality", "segmenter"], columns="prompt", values="prompt_dice",
                             aggfunc="mean").reindex(columns=["box", "mask"]).add_prefix("copy_")
    return mean.round(4).join(count).join(copy.round(4)).reset_index()


def evaluate_models(
    cohorts: Sequence[Path],
    model: Path | None,
    output: Path,
    seed: int = 0,
    max_lesions: int | None = None,
    classical: bool = True,
    device: str = "cpu",
    models: Mapping[str, Path] | None = None,
    mirroring: bool = False,
    box_margin_mm: float | None = 0.0,
    box_grow: int = 0,
    fine_zoom: float | None = None,
) -> pd.DataFrame:
    """Score ``model`` (and ``models``, by name) and the classical segmenter; write per-lesion Dice.

    ``box_margin_mm`` is the networks' box cut (``segment.box_margin_mm``; None: no cut);
    ``box_grow`` moves the box prompts' faces (voxels; 0: tight boxes); ``fine_zoom``: the networks'
    ``segment.fine_zoom`` (None: the default; 1: small lesions on the network's own grid only).

    Writes ``output`` (Parquet, one row per lesion x segmenter x prompt) and ``<output>.summary.tsv``;
    returns the summary.
    """
    for cohort in cohorts:
        dataset_cases(Path(cohort))  # fail on bad input before any model is loaded
    factories: dict[str, Callable[[], object]] = {}
    named = dict(models or {})
    if model is not None:
        named.setdefault("model", model)
    for name, folder in named.items():
        factories[name] = lambda folder=folder: model_segmenter(folder, device, mirroring, box_margin_mm, fine_zoom)
    if classical:
        factories["classical"] = classical_segmenter
    if not factories:
        raise InputError(output, "nothing to evaluate: give a model or keep the classical segmenter")
    table = evaluate_segmenters(cohorts, factories, seed=seed, max_lesions=max_lesions, box_grow=box_grow)
    write_parquet(pa.Table.from_pandas(table, preserve_index=False), output)
    summary = summarize(table)
    summary_path = Path(str(output) + ".summary.tsv")
    summary.to_csv(summary_path, sep="\t", index=False)
    return summary
