"""One scan, end to end: read the image and its prompts, segment every lesion, write the label map.

``segment_session`` is what the Snakemake rule calls; ``build_segmenter`` is called once per job.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from lesionlocator.core.config import SegmentConfig
from lesionlocator.core.errors import InputError
from lesionlocator.core.io import Geometry, image_from_array, read_image, write_image
from lesionlocator.core.prompts import check_prompt_mask_labels, read_prompts
from lesionlocator.segment.api import Prompt, PromptKind, SegmentationResult, Segmenter, check_prompts
from lesionlocator.segment.prompting import prompts_from_file, prompts_from_mask

log = logging.getLogger(__name__)


def build_segmenter(config: SegmentConfig) -> Segmenter:
    """The segmenter the config asks for; build it once per job and reuse it for every scan.

    A network comes wrapped in :class:`~lesionlocator.segment.fallback.WithFallback` (the classical
    segmenter for the lesions it leaves empty) unless ``config.fallback`` is ``none``.
    """
    from lesionlocator.segment.classical import ClassicalSegmenter

    if config.segmenter == "classical":
        return ClassicalSegmenter(config)
    from lesionlocator.segment.nnunet import NnUNetSegmenter
    from lesionlocator.segment.official import TrackUNetSegmenter, is_track_checkpoint

    # A released LesionLocatorTrack folder: its UNet; a missing folder: the config already said so.
    network_class = TrackUNetSegmenter if is_track_checkpoint(config.model_folder) else NnUNetSegmenter
    network = network_class(config)
    if config.fallback == "none":
        return network
    from lesionlocator.segment.fallback import WithFallback

    return WithFallback(network, ClassicalSegmenter(config))


@dataclass
class SessionOutput:
    labels_path: Path
    result: SegmentationResult
    lesion_paths: dict[int, Path] = field(default_factory=dict)


def load_session_prompts(
    image: sitk.Image,
    prompts_json: str | Path | None = None,
    prompt_mask: str | Path | None = None,
    kinds: Sequence[PromptKind] = ("box", "point"),
    mask_kind: PromptKind = "mask",
) -> list[Prompt]:
    """Every prompt of a session, in the image's voxel frame, validated against it."""
    geometry = Geometry.of(image)
    prompts: list[Prompt] = []
    if prompts_json is not None:
        prompt_file = read_prompts(prompts_json)
        try:
            prompts += prompts_from_file(prompt_file, geometry, kinds=kinds)
        except ValueError as err:
            raise InputError(prompts_json, str(err)) from None
    if prompt_mask is not None:
        mask_image = read_image(prompt_mask)
        check_prompt_mask_labels(sitk.GetArrayViewFromImage(mask_image), prompt_mask)
        prompts += prompts_from_mask(mask_image, geometry, kind=mask_kind, source=prompt_mask)
    if prompts_json is None and prompt_mask is None:
        raise InputError("prompts", "give a prompt file, a prompt mask, or both")
    source = " + ".join(str(p) for p in (prompts_json, prompt_mask) if p is not None)
    return check_prompts(prompts, geometry.shape_zyx, source=source)


def segment_session(
    image_path: str | Path,
    prompts_json: str | Path | None = None,
    prompt_mask: str | Path | None = None,
    config: SegmentConfig | None = None,
    output_path: str | Path = "labels.nii.gz",
    per_lesion_dir: str | Path | None = None,
    segmenter: Segmenter | None = None,
    kinds: Sequence[PromptKind] = ("box", "point"),
    mask_kind: PromptKind = "mask",
) -> SessionOutput:
    """Segment every prompted lesion of one scan; write a uint32 instance map with the image's geometry.

    Inputs are validated before the segmenter is built or run (bad input -> :class:`InputError`,
    nothing written). ``per_lesion_dir`` (or ``config.per_lesion_masks``, next to the output)
    also receives ``lesion_<id>.nii.gz`` binary masks.
    """
    config = config or SegmentConfig()
    image = read_image(image_path)
    prompts = load_session_prompts(image, prompts_json, prompt_mask, kinds=kinds, mask_kind=mask_kind)
    if segmenter is None:
        segmenter = build_segmenter(config)
    result = segmenter.segment(image, prompts)
    if result.labels.shape != tuple(Geometry.of(image).shape_zyx):
        raise RuntimeError(f"segmenter returned shape {result.labels.shape} for an image of {Geometry.of(image).shape_zyx}")
    output_path = Path(output_path)
    lesion_paths: dict[int, Path] = {}
    if per_lesion_dir is None and config.per_lesion_masks:
        per_lesion_dir = output_path.parent / (output_path.name.split(".")[0] + "_lesions")
    if per_lesion_dir is not None:
        for lesion_id in sorted(result.scores):
            mask = result.lesion_mask(lesion_id).astype(np.uint8)
            lesion_paths[lesion_id] = write_image(image_from_array(mask, image), Path(per_lesion_dir) / f"lesion_{lesion_id}.nii.gz")
    write_image(result.to_image(image), output_path)
    found = sum(1 for v in result.volumes_voxels().values() if v > 0)
    log.info("%s: %d of %d lesion(s) segmented -> %s", image_path, found, len(prompts), output_path)
    return SessionOutput(labels_path=output_path, result=result, lesion_paths=lesion_paths)
