"""The suite reads nothing beside the clone: a user's clone has only what the repository holds."""

from __future__ import annotations

import pytest

from tests.conftest import ReadOutsideRepository, _sibling_of_the_clone
from tests.helpers import REPO


def test_a_read_beside_the_clone_fails_the_test():
    beside = REPO.parent / "a-sibling-folder" / "anything.nii.gz"
    if _sibling_of_the_clone(beside) is None:
        pytest.skip(f"the clone sits in {REPO.parent} (the file-system root or the temporary folder): the guard is off")
    with pytest.raises(ReadOutsideRepository, match="read outside the repository"):
        open(beside, "rb")  # noqa: SIM115
    with pytest.raises(ReadOutsideRepository):
        open(REPO / ".." / "a-sibling-folder" / "x")  # noqa: SIM115
