"""Mirroring TTA stacked into batches: the same logits and masks as one mirrored copy at a time."""

from __future__ import annotations

import itertools

import numpy as np
import torch

import lesionlocator.segment.nnunet as nnunet
from lesionlocator.core.config import BUNDLED_MODEL, SegmentConfig
from lesionlocator.segment.api import Prompt
from lesionlocator.segment.nnunet import NnUNetSegmenter, mirror_batch

MIRRORS = [c for n in range(4) for c in itertools.combinations((2, 3, 4), n)]  # 8 flips of (z, y, x)


@torch.inference_mode()
def one_at_a_time(networks, x: torch.Tensor) -> torch.Tensor:
    """The reference: each fold, each mirrored copy alone at batch 1, flipped back, averaged."""
    total = torch.zeros((1, 2, *x.shape[2:]))
    for net in networks:
        for combo in MIRRORS:
            out = net(torch.flip(x, combo) if combo else x)
            total += torch.flip(out, combo) if combo else out
    return total / (len(networks) * len(MIRRORS))


def random_patch(shape=(16, 16, 16), seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    prompt = torch.zeros((1, 1, *shape))
    prompt[..., 4:11, 5:12, 3:9] = 1.0  # an off-centre, asymmetric prompt: every flip sees a different input
    return torch.cat([torch.randn((1, 1, *shape), generator=g), prompt], dim=1)


class BatchSizes(torch.nn.Module):
    """Wraps a network and records the batch size of every forward pass."""

    def __init__(self, net):
        super().__init__()
        self.net, self.sizes = net, []

    def forward(self, x):
        self.sizes.append(int(x.shape[0]))
        return self.net(x)


def test_batched_mirrors_give_the_one_at_a_time_logits(toy_model):
    segmenter = NnUNetSegmenter(SegmentConfig(checkpoint=toy_model, device="cpu", mirroring=True))
    model = segmenter._model_for("box")
    model.networks = [BatchSizes(net) for net in model.networks]
    x = random_patch()
    batched = segmenter._forward(model, x)
    assert [net.sizes for net in model.networks] == [[8], [8]]  # both folds: all 8 copies in one pass
    assert segmenter.stats.forwards == 2 * 8
    reference = one_at_a_time(model.networks, x)
    assert float((batched - reference).abs().max()) <= 1e-4
    # The test can tell: without the flips back the average is far from it.
    with torch.inference_mode():
        unflipped = sum(net(torch.flip(x, c) if c else x) for net in model.networks for c in MIRRORS) / 16
    assert float((unflipped - reference).abs().max()) > 1e-2


def test_mirror_batches_are_bounded_by_the_voxel_budget(toy_model, monkeypatch):
    assert mirror_batch((16, 16, 16)) == 8 and mirror_batch((32, 32, 32)) == 4 and mirror_batch((48, 48, 48)) == 2
    assert mirror_batch((64, 64, 64)) == 1 and mirror_batch((128, 128, 128)) == 1 and mirror_batch((192,) * 3) == 1
    monkeypatch.setattr(nnunet, "MIRROR_BATCH_VOXELS", 3 * 16**3)  # a 16^3 patch now goes 2 copies at a time
    segmenter = NnUNetSegmenter(SegmentConfig(checkpoint=toy_model, folds=[0], device="cpu", mirroring=True))
    model = segmenter._model_for("box")
    model.networks = [BatchSizes(model.networks[0])]
    x = random_patch(seed=1)
    chunked = segmenter._forward(model, x)
    assert model.networks[0].sizes == [2, 2, 2, 2]
    assert float((chunked - one_at_a_time(model.networks, x)).abs().max()) <= 1e-4


def test_bundled_model_masks_do_not_change_with_batched_mirrors(lesion_case, monkeypatch):
    ids = list(lesion_case.boxes)[:3]
    prompts = [Prompt(i, "box", box=lesion_case.boxes[i]) for i in ids[:2]] + [Prompt(ids[2], "point", point=lesion_case.points[ids[2]])]
    config = SegmentConfig(checkpoint=BUNDLED_MODEL, device="cpu", mirroring=True)
    batched = NnUNetSegmenter(config).segment(lesion_case.image, prompts)
    monkeypatch.setattr(nnunet, "MIRROR_BATCH_VOXELS", 1)  # one mirrored copy per forward pass
    sequential = NnUNetSegmenter(config).segment(lesion_case.image, prompts)
    assert all((batched.labels == i).sum() > 10 for i in ids)
    assert np.array_equal(batched.labels, sequential.labels)
    for i in ids:
        assert abs(batched.scores[i] - sequential.scores[i]) <= 1e-4
