"""The registration interface, transform files and the per-pair entry point.

Direction convention (ITK): a registration transform maps points of the FIXED image (the
follow-up, session t+1) to the MOVING image (the previous session t), in world mm (LPS). Resampling
a previous-session image or mask onto the follow-up grid uses the transform as it is; mapping a
previous-session *point* into the follow-up needs its inverse (see :mod:`lesionlocator.track.propagate`).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from lesionlocator.core.config import RegisterConfig
from lesionlocator.core.errors import InputError
from lesionlocator.core.io import Geometry, atomic_path, read_image, same_geometry, write_json
from lesionlocator.register.api import Registration, RegistrationError
from lesionlocator.register.quality import RegistrationQuality, registration_quality

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


def quality_record_path(transform_path: str | Path) -> Path:
    """The pair's JSON record beside its transform (``to_previous.json`` beside ``to_previous.tfm``)."""
    return Path(transform_path).with_suffix(".json")


def check_quality(quality: RegistrationQuality, min_similarity: float) -> None:
    """Raise :class:`RegistrationError` when ``quality`` is below ``register.min_similarity``."""
    if quality.similarity is None:
        raise RegistrationError(
            f"registration quality unknown: after registration the scans share only {quality.shared_ml:g} mL of the "
            f"follow-up's body ({quality.shared_fraction:.0%}); the scans do not show the same anatomy"
        )
    if quality.similarity < min_similarity:
        raise RegistrationError(
            f"registration quality too low: normalised cross-correlation {quality.similarity:.2f} < "
            f"register.min_similarity {min_similarity:.2f}, on the {quality.shared_fraction:.0%} of the follow-up's body "
            "that both scans show; the scans do not show the same anatomy, or the registration failed"
        )


def same_scan(a: sitk.Image, b: sitk.Image) -> bool:
    """True when two images hold the same voxel values on the same grid (geometry within 1e-6)."""
    if a.GetSize() != b.GetSize() or a.GetPixelID() != b.GetPixelID():
        return False
    if not same_geometry(Geometry.of(a), Geometry.of(b), tolerance=1e-6):
        return False
    return bool(np.array_equal(sitk.GetArrayViewFromImage(a), sitk.GetArrayViewFromImage(b)))


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

    The written transform maps follow-up world points to previous-session world points. Its quality
    (:mod:`lesionlocator.register.quality`) is checked against ``config.min_similarity``: a pair
    below it (or one the backend cannot register) raises :class:`InputError` naming both files and
    the figure, and no transform is written. An existing transform file is reused as it is: every
    transform is written atomically, so a file under the final name is always complete (one that
    cannot be read is recomputed). ``report_path``, when given, receives the pair's record, also when
    it fails: the transform file (relative to the record), the quality figures (``similarity``, ``shared_fraction``, ``shared_ml``, ``min_similarity``,
    ``passed``, ``error``) and the backend's (overlap, metric values); no timings, so that a rerun
    writes the same bytes.
    """
    output = Path(output_transform_path)
    _check_suffix(output)
    reused = None
    if output.is_file():
        try:
            reused = load_transform(output)
            log.info("reusing existing transform %s", output)
        except InputError:
            log.warning("existing transform %s cannot be read; registering again", output)
        if reused is not None and (report_path is None or Path(report_path).is_file()):
            return output
    fixed = read_image(fixed_path)
    moving = read_image(moving_path)
    # every path relative to the record (beside it), so that a results folder moved or rebuilt elsewhere
    # holds the same bytes (the scans of the demo cohort lie inside the results folder)
    where = Path(report_path).parent if report_path is not None else Path.cwd()
    record: dict = {"fixed": os.path.relpath(fixed_path, where), "moving": os.path.relpath(moving_path, where),
                    "backend": config.backend, "transform": None,
                    "min_similarity": config.min_similarity, "similarity": None, "passed": False, "error": None}  # fmt: skip
    start = time.perf_counter()
    try:
        if reused is None and same_scan(fixed, moving):
            # the very same voxels on the very same grid: any optimiser would only add its sampling drift
            # (a 0.2 % scale moves a small lesion's mask by a voxel layer), so the answer is the identity
            transform = sitk.CompositeTransform([sitk.AffineTransform(3)])
            record["identical_scans"] = True
            log.info("%s and %s hold the same scan: identity transform", fixed_path, moving_path)
        elif reused is None:
            registration = registration or build_registration(config)
            transform = registration.register(fixed, moving)
            record.update(getattr(registration, "last_report", {}) or {})  # the backend's figures of this pair
        else:
            transform = reused  # its record was missing: checked like a new one
        quality = registration_quality(fixed, moving, transform)
        record.update(quality.as_dict())
        check_quality(quality, config.min_similarity)
    except RegistrationError as err:
        record["error"] = str(err)
        if report_path is not None:
            write_json(record, report_path)
        raise InputError(fixed_path, f"cannot register to {moving_path}: {err}") from None
    seconds = time.perf_counter() - start
    if reused is None:
        save_transform(transform, output)
    if report_path is not None:
        record.update(transform=os.path.relpath(output, where), passed=True)
        write_json(record, report_path)
    log.info("registered %s -> %s in %.1f s (similarity %.2f)", fixed_path, moving_path, seconds, quality.similarity)
    return output
