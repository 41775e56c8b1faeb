"""Arrow schemas derived from pydantic row models: a table's columns are written down once.

A row model's fields map to Arrow types by their annotations (``str`` -> string, ``int`` -> int64,
``float`` -> float64, ``bool`` -> bool, ``list[X]`` with equal ``min_length``/``max_length`` -> a
fixed-size list, ``X | None`` -> the type of ``X``); a field narrows its Arrow type with
``json_schema_extra={"arrow": "int32"}``. Every column is nullable, as Parquet readers expect.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path

import pyarrow as pa
from pydantic import BaseModel

_SCALARS = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_(), Path: pa.string()}
_NAMED = {"int32": pa.int32(), "int64": pa.int64(), "float32": pa.float32(), "float64": pa.float64()}


def _without_none(annotation):
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _arrow_type(name: str, field) -> pa.DataType:
    extra = field.json_schema_extra or {}
    annotation = _without_none(field.annotation)
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation)
        lengths = {type(m).__name__: getattr(m, m.__slots__[0]) for m in field.metadata if type(m).__name__ in ("MinLen", "MaxLen")}
        size = lengths["MinLen"] if lengths.get("MinLen") is not None and lengths.get("MinLen") == lengths.get("MaxLen") else -1
        return pa.list_(_NAMED.get(extra.get("arrow")) or _SCALARS[item], size)
    if "arrow" in extra:
        return _NAMED[extra["arrow"]]
    if annotation not in _SCALARS:
        raise TypeError(f"{name}: no Arrow type for {field.annotation!r}; give json_schema_extra={{'arrow': ...}}")
    return _SCALARS[annotation]


def arrow_schema(model: type[BaseModel]) -> pa.Schema:
    """The Arrow schema of ``model``'s rows, columns in field order."""
    return pa.schema([(name, _arrow_type(name, field)) for name, field in model.model_fields.items()])
