"""Arrow schemas derived from pydantic row models."""

from __future__ import annotations

import pyarrow as pa
import pytest
from pydantic import BaseModel, Field

from lesionlocator.core.schema import arrow_schema
from lesionlocator.ingest.cohort import MANIFEST_SCHEMA


class _Row(BaseModel):
    name: str
    count: int = Field(json_schema_extra={"arrow": "int32"})
    score: float | None = None
    flag: bool = False
    xyz: list[float] = Field(min_length=3, max_length=3)
    tags: list[str] = []


def test_types_follow_the_annotations():
    assert arrow_schema(_Row) == pa.schema(
        [("name", pa.string()), ("count", pa.int32()), ("score", pa.float64()), ("flag", pa.bool_()),
         ("xyz", pa.list_(pa.float64(), 3)), ("tags", pa.list_(pa.string()))]
    )


def test_an_unmapped_annotation_is_refused():
    class Odd(BaseModel):
        when: complex

    with pytest.raises(TypeError, match="when: no Arrow type"):
        arrow_schema(Odd)


def test_the_manifest_keeps_its_columns():
    """The manifest's columns, in order (read_manifest compares schemas: a change needs a new ingest)."""
    assert MANIFEST_SCHEMA == pa.schema(
        [("patient", pa.string()), ("session", pa.string()), ("session_index", pa.int32()), ("is_baseline", pa.bool_()),
         ("acq_time", pa.string()), ("image", pa.string()), ("image_format", pa.string()),
         ("size", pa.list_(pa.int64(), 3)), ("spacing", pa.list_(pa.float64(), 3)), ("origin", pa.list_(pa.float64(), 3)),
         ("direction", pa.list_(pa.float64(), 9)), ("prompts", pa.string()), ("n_prompts", pa.int32()),
         ("prompt_mask", pa.string()), ("groundtruth", pa.string()), ("fingerprint", pa.string()),
         ("image_sha256", pa.string()), ("prompts_sha256", pa.string())]
    )
