"""resolve_device: auto falls back to the CPU; an unavailable device is an error naming the config key."""

from __future__ import annotations

import pytest
import torch

from lesionlocator.core.devices import resolve_device
from lesionlocator.core.errors import InputError


def test_auto_is_cuda_only_when_available():
    assert resolve_device("auto", "segment.device").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu", "segment.device") == torch.device("cpu")


@pytest.mark.parametrize("key", ["segment.device", "register.device", "train.device"])
def test_missing_cuda_names_the_key(monkeypatch, key):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match="no CUDA device") as err:
        resolve_device("cuda", key)
    assert str(err.value.path) == key
    assert resolve_device("auto", key) == torch.device("cpu")
