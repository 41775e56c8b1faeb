"""The torch device a config asks for: one rule for segmentation, registration and training."""

from __future__ import annotations

import torch

from lesionlocator.core.errors import InputError


def resolve_device(name: str, key: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; an unavailable explicit device is an error naming ``key``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError(key, "cuda requested but no CUDA device is available")
    if name == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise InputError(key, "mps requested but not available")
    return torch.device(name)
