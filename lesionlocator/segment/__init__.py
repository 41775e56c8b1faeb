"""Promptable 3D lesion segmentation: points, boxes or masks in, one instance label map per scan out.

``build_segmenter(config)`` once per job (the classical baseline, or an nnU-Net v2 / released
LesionLocator checkpoint), then ``segmenter.segment(image, prompts)`` per scan, or
``segment_session`` for files on disk.
"""

from lesionlocator.segment.api import Prompt, SegmentationResult, Segmenter, check_prompts
from lesionlocator.segment.prompting import prompts_from_file, prompts_from_label_array, prompts_from_mask
from lesionlocator.segment.session import SessionOutput, build_segmenter, segment_session

__all__ = [
    "Prompt",
    "SegmentationResult",
    "Segmenter",
    "SessionOutput",
    "build_segmenter",
    "check_prompts",
    "prompts_from_file",
    "prompts_from_label_array",
    "prompts_from_mask",
    "segment_session",
]
