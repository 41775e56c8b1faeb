"""The registration interface, transform files and the per-pair entry point.

Direction convention (ITK): a registration transform maps points of the FIXED image (the
follow-up, session t+1) to the MOVING image (the previous session t), in world mm (LPS). Resampling
a previous-session image or mask onto the follow-up grid uses the transform as it is; mapping a
previous-session *point* into the follow-up needs its inverse (see :mod:`lesionlocator.track.propagate`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import SimpleITK as sitk

from lesionlocator.core.config import RegisterConfig
from lesionlocator.core.errors import InputError
from lesionlocator.core.io import atomic_path, read_image, write_json
from lesionlocator.register.api import Registration, RegistrationError

log = logging.getLogger(__name__)

TRANSFORM_SUFFIXES = (".tfm", ".txt", ".h5", ".hdf5", ".mat")


def build_registration(config: RegisterConfig) -> Registration:
    """The backend named by ``config.backend``."""
    if config.backend == "simpleitk":
        from lesionlocator.register.sitk_backend import SimpleITKRegistration

        return SimpleITKRegistration(config)
    if config.backend == "unigradicon":
        from lesionlocator.register.unigradicon_backend import UniGradICONRegistration

        return UniGradICONRegistration(config)
    if config.backend == "lesionlocator_track":
        from lesionlocator.register.official_track import build_track_registration

        return build_track_registration(config)
    raise ValueError(f"unknown registration backend {config.backend!r}")


def _check_suffix(path: Path) -> None:
    if not path.name.lower().endswith(TRANSFORM_SUFFIXES):
        raise InputError(path, f"not a transform file name (use one of {', '.join(TRANSFORM_SUFFIXES)})")


def save_transform(transform: sitk.Transform, path: str | Path) -> Path:
    """Write an ITK transform file atomically (``.tfm`` text or ``.h5`` HDF5, by suffix)."""
    path = Path(path)
    _check_suffix(path)
    with atomic_path(path) as tmp:
        sitk.WriteTransform(transform, str(tmp))
    return path


def load_transform(path: str | Path) -> sitk.Transform:
    """Read an ITK transform file; a composite comes back as a ``sitk.CompositeTransform``."""
    path = Path(path)
    _check_suffix(path)
    if not path.is_file():
        raise InputError(path, "transform file not found")
    try:
        transform = sitk.ReadTransform(str(path))
    except RuntimeError as err:
        lines = str(err).strip().splitlines()
        raise InputError(path, f"cannot read transform ({lines[-1] if lines else 'unknown error'})") from None
    if transform.GetName() == "CompositeTransform":
        transform = sitk.CompositeTransform(transform)
    return transform


def register_pair(
    fixed_path: str | Path,
    moving_path: str | Path,
    output_transform_path: str | Path,
    config: RegisterConfig,
    *,
    report_path: str | Path | None = None,
    registration: Registration | None = None,
) -> Path:
    """Register ``fixed_path`` (follow-up) to ``moving_path`` (previous session) and save the transform.

    The written transform maps follow-up world points to previous-session world points. An existing
    transform file is reused as it is: every transform is written atomically, so a file under the
    final name is always complete (one that cannot be read is recomputed). ``report_path``, when
    given, receives a JSON with the backend's figures (overlap, metric values; no timings, so that
    a rerun writes the same bytes).
    """
    output = Path(output_transform_path)
    _check_suffix(output)
    if output.is_file():
        try:
            load_transform(output)
            log.info("reusing existing transform %s", output)
            return output
        except InputError:
            log.warning("existing transform %s cannot be read; registering again", output)
    fixed = read_image(fixed_path)
    moving = read_image(moving_path)
    registration = registration or build_registration(config)
    start = time.perf_counter()
    try:
        transform = registration.register(fixed, moving)
    except RegistrationError as err:
        raise InputError(fixed_path, f"cannot register to {moving_path}: {err}") from None
    seconds = time.perf_counter() - start
    save_transform(transform, output)
    if report_path is not None:
        report = dict(getattr(registration, "last_report", {}) or {})
        report.update(
            fixed=str(fixed_path),
            moving=str(moving_path),
            transform=str(output),
            backend=config.backend,
        )
        write_json(report, report_path)
    log.info("registered %s -> %s in %.1f s", fixed_path, moving_path, seconds)
    return output
