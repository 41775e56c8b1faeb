"""Shared fixtures (helpers live in tests/helpers.py)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest
import SimpleITK as sitk

from lesionlocator.core.io import Geometry
from tests.helpers import REPO, make_image, write_prompts_json, write_session
from tests.lesion_builders import oblique_geometry


class ReadOutsideRepository(OSError):
    """A test (or the code under test) opened a file beside the clone, which a user's clone lacks."""


# Beside the clone but not the project's inputs: the Python that runs the tests (a virtualenv next to
# the clone) and the temporary folder, when the clone itself sits in it.
_ALLOWED_BESIDE = [Path(p).resolve() for p in {sys.prefix, sys.exec_prefix, sys.base_prefix}]
if Path(tempfile.gettempdir()).resolve().is_relative_to(REPO.parent):
    _ALLOWED_BESIDE.append(Path(tempfile.gettempdir()).resolve())


def _sibling_of_the_clone(path: object) -> str | None:
    """``path`` resolved, when it lies beside the repository (under its parent, not inside it)."""
    if not isinstance(path, (str, bytes, Path)) or REPO.parent == Path(REPO.anchor):
        return None
    try:
        resolved = Path(os.fsdecode(path)).resolve()
    except (OSError, ValueError):
        return None
    if not resolved.is_relative_to(REPO.parent) or resolved.is_relative_to(REPO):
        return None
    if any(resolved.is_relative_to(allowed) for allowed in _ALLOWED_BESIDE):
        return None
    return str(resolved)


def _refuse_reads_beside_the_clone(event: str, args: tuple) -> None:
    """Audit hook: every Python-level open/listing of a path beside the clone (a data folder on a
    developer's machine) fails the test that made it. CI also runs the suite from a copy of the
    clone in an empty folder (.ci/run), which catches reads from compiled code too."""
    if event in ("open", "os.listdir", "os.scandir") and args:
        outside = _sibling_of_the_clone(args[0])
        if outside is not None:
            raise ReadOutsideRepository(f"{outside}: read outside the repository; a user's clone has no such file")


sys.addaudithook(_refuse_reads_beside_the_clone)


@pytest.fixture
def small_image() -> sitk.Image:
    return make_image()


@pytest.fixture
def tiny_cohort(tmp_path) -> Path:
    """Two patients, three sessions each (labels chosen so natural order matters), prompts at baseline."""
    root = tmp_path / "cohort"
    for p, patient in enumerate(["A1", "B2"]):
        for s, session in enumerate(["2", "10", "1"]):
            write_session(root, patient, session, make_image(seed=10 * p + s))
        centre = make_image().TransformContinuousIndexToPhysicalPoint((10.0, 8.0, 6.0))
        write_prompts_json(
            root / f"sub-{patient}" / "ses-1" / "prompts.json",
            {"frame": "world", "lesions": [{"id": 3, "point": list(centre)}]},
        )
    return root


@pytest.fixture
def geometry() -> Geometry:
    """A 64 x 56 x 24 grid, anisotropic spacing, rotated 30 degrees about z (lesion-table tests)."""
    return oblique_geometry()

