"""oneDNN convolutions at batch 1 on the CPU: the plain path's logits and masks, without ``slow_conv3d``."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

import lesionlocator.segment.nnunet as nnunet
from lesionlocator.core.config import BUNDLED_MODEL, SegmentConfig
from lesionlocator.segment.model import OneDNNConv3d, load_model, use_onednn_convolutions
from lesionlocator.segment.nnunet import NnUNetSegmenter
from tests.segment.compare import assert_same_masks, mixed_prompts

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")


def kernels(network, x: torch.Tensor) -> set[str]:
    """The aten operators one forward pass of ``network`` on ``x`` runs."""
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        network(x)
    return {event.key for event in prof.key_averages()}


def patch(shape=(32, 32, 32), seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    prompt = torch.zeros((1, 1, *shape))
    prompt[..., 10:20, 12:22, 8:18] = 1.0
    return torch.cat([torch.randn((1, 1, *shape), generator=g), prompt], dim=1)


def test_onednn_network_gives_the_plain_logits_without_slow_conv3d():
    plain = load_model(BUNDLED_MODEL).networks[0]
    fast = copy.deepcopy(plain)
    assert use_onednn_convolutions(fast) == sum(type(m) is torch.nn.Conv3d for m in plain.modules()) > 0
    assert fast.state_dict().keys() == plain.state_dict().keys()
    x = patch()
    assert "aten::slow_conv3d_forward" in kernels(plain, x)  # what the fast path is for: torch's batch-1 choice
    used = kernels(fast, x)
    assert "aten::slow_conv3d_forward" not in used and "aten::mkldnn_convolution" in used
    with torch.inference_mode():
        reference, out = plain(x), fast(x)
        assert float((out - reference).abs().max()) <= 1e-3 * float(reference.abs().max())
        assert torch.equal(out, fast(x))  # same input, same threads: the same bytes
        # The comparison can tell: a shifted input (one voxel along x) is far from the reference.
        assert float((fast(torch.roll(x, 1, dims=4)) - reference).abs().max()) > 1e-2 * float(reference.abs().max())


def test_onednn_conv_falls_back_off_the_cpu_path():
    conv = torch.nn.Conv3d(2, 3, 3, padding=1, padding_mode="reflect")
    use_onednn_convolutions(conv)
    assert isinstance(conv, OneDNNConv3d)
    x = patch((8, 8, 8))
    with torch.inference_mode():
        assert "aten::mkldnn_convolution" not in kernels(conv, x)  # reflect padding: Conv3d's own path
    y = conv(x.requires_grad_())  # training: autograd through Conv3d's own path
    y.sum().backward()
    assert x.grad is not None


def test_toy_resenc_logits_unchanged_by_onednn(toy_model, monkeypatch):
    config = SegmentConfig(checkpoint=toy_model, device="cpu", mirroring=False)
    x = patch((16, 16, 16), seed=2)
    fast = NnUNetSegmenter(config)
    fast_model = fast._model_for("box")
    assert all(isinstance(m, OneDNNConv3d) for net in fast_model.networks for m in net.modules() if isinstance(m, torch.nn.Conv3d))
    monkeypatch.setattr(nnunet, "ONEDNN_ON_CPU", False)
    plain = NnUNetSegmenter(config)
    plain_model = plain._model_for("box")
    assert not any(isinstance(m, OneDNNConv3d) for net in plain_model.networks for m in net.modules())
    reference = plain._forward(plain_model, x)
    assert float((fast._forward(fast_model, x) - reference).abs().max()) <= 1e-4 * max(1.0, float(reference.abs().max()))


@pytest.mark.parametrize("mirroring", [False, True])
def test_bundled_model_masks_unchanged_by_onednn(lesion_case, monkeypatch, mirroring):
    ids, prompts = mixed_prompts(lesion_case)
    config = SegmentConfig(checkpoint=BUNDLED_MODEL, device="cpu", mirroring=mirroring, fallback="none")
    fast = NnUNetSegmenter(config).segment(lesion_case.image, prompts)
    monkeypatch.setattr(nnunet, "ONEDNN_ON_CPU", False)
    plain = NnUNetSegmenter(config).segment(lesion_case.image, prompts)
    assert_same_masks(fast, plain, ids)
