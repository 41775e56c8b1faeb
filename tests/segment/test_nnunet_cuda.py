"""The engine on a CUDA GPU gives the CPU's masks (skipped where torch sees no GPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lesionlocator.core.config import BUNDLED_MODEL, SegmentConfig
from lesionlocator.core.regions import dice
from lesionlocator.segment.api import Prompt
from lesionlocator.segment.nnunet import NnUNetSegmenter

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("kind", ["point", "box"])
def test_bundled_model_on_cuda_gives_the_cpu_masks(lesion_case, kind):
    """Mixed precision on the GPU moves a few boundary voxels at most; geometry and ids are the CPU's."""
    prompts = [Prompt(i, "box", box=b) if kind == "box" else Prompt(i, "point", point=lesion_case.points[i])
               for i, b in lesion_case.boxes.items()]
    configs = {device: SegmentConfig(checkpoint=BUNDLED_MODEL, device=device, mirroring=False) for device in ("cpu", "cuda")}
    results = {device: NnUNetSegmenter(config).segment(lesion_case.image, prompts) for device, config in configs.items()}
    cpu, gpu = results["cpu"], results["cuda"]
    assert gpu.labels.dtype == cpu.labels.dtype and gpu.labels.shape == cpu.labels.shape
    assert set(np.unique(gpu.labels)) == set(np.unique(cpu.labels))
    for i in lesion_case.boxes:
        assert dice(gpu.labels == i, cpu.labels == i) > 0.98, i
        assert abs(gpu.scores[i] - cpu.scores[i]) < 0.01, i
