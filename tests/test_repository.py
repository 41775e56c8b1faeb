"""The suite reads nothing beside the clone: a user's clone has no ``../shared``."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import ReadOutsideRepository, _sibling_of_the_clone
from tests.helpers import REPO

# Text files of the repository that name a place beside the clone.
_OUTSIDE = ("shared/data", "\"shared\" /", "real-ct/", "REPO.parent /")


def test_a_read_beside_the_clone_fails_the_test():
    beside = REPO.parent / "shared" / "data" / "anything.nii.gz"
    if _sibling_of_the_clone(beside) is None:
        pytest.skip(f"the clone sits in {REPO.parent} (the file-system root or the temporary folder): the guard is off")
    with pytest.raises(ReadOutsideRepository, match="read outside the repository"):
        open(beside, "rb")  # noqa: SIM115
    with pytest.raises(ReadOutsideRepository):
        open(REPO / ".." / "shared" / "x")  # noqa: SIM115


def test_no_tracked_file_points_beside_the_clone():
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
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
