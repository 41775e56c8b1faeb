"""The registration interface that every backend implements, and its error.

Direction convention (ITK): a transform maps world points (mm, LPS) of the FIXED image (the
follow-up) to the MOVING image (the previous session); see :mod:`lesionlocator.register.base`.
"""

from __future__ import annotations

from typing import Protocol

import SimpleITK as sitk

from lesionlocator.core.errors import LesionLocatorError


class RegistrationError(LesionLocatorError):
    """A pair of images that cannot be registered (no body found, no overlap after alignment)."""


class Registration(Protocol):
    """A registration backend: built once from the config, run on many image pairs."""

    def register(self, fixed: sitk.Image, moving: sitk.Image) -> sitk.Transform:
        """The transform mapping world points (mm, LPS) of ``fixed`` to those of ``moving``."""
        ...
