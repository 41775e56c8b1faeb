"""Fixtures of the metrics tests (builders live in tests/metrics/builders.py)."""

from __future__ import annotations

import pytest

from lesionlocator.io import Geometry
from tests.metrics.builders import oblique_geometry


@pytest.fixture
def geometry() -> Geometry:
    return oblique_geometry()
