"""The suite reads nothing beside the clone: a user's clone has no ``../shared``."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import ReadOutsideRepository
from tests.helpers import REPO

# Text files of the repository that name a place beside the clone.
_OUTSIDE = ("shared/data", "\"shared\" /", "real-ct/", "REPO.parent /")


def test_a_read_beside_the_clone_fails_the_test():
    if REPO.parent == type(REPO)(REPO.anchor):
        pytest.skip("the clone sits at the file-system root: nothing is beside it")
    with pytest.raises(ReadOutsideRepository, match="read outside the repository"):
        open(REPO.parent / "shared" / "data" / "anything.nii.gz", "rb")  # noqa: SIM115
    with pytest.raises(ReadOutsideRepository):
        open(REPO / ".." / "shared" / "x")  # noqa: SIM115


def test_no_tracked_file_points_beside_the_clone():
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    offenders = []
    for name in tracked:
        if not name.endswith((".py", ".smk", ".sh", ".yaml", ".toml", "Makefile", "Snakefile", "run")):
            continue
        if name == "tests/test_repository.py":
            continue
        text = (REPO / name).read_text(errors="replace")
        offenders += [f"{name}: {needle}" for needle in _OUTSIDE if needle in text]
    assert offenders == []
