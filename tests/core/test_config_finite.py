"""Every float of the config is finite: ``.inf`` or ``.nan`` (YAML) is an error naming the key."""

from __future__ import annotations

import math
import typing

import pytest
import yaml
from pydantic import BaseModel

from lesionlocator.core.config import StrictModel, StudyConfig, validate_config
from lesionlocator.core.errors import ConfigError


def _float_values(annotation) -> list:
    """A non-finite value of the shape of ``annotation``, or none when it holds no float."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is float:
        return [math.inf]
    if origin in (list, tuple) and float in args:
        return [[math.inf] * (len(args) if origin is tuple else 1)]
    if origin is dict and args and args[-1] is float:
        return [{"a": math.inf}]
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        return [value for arg in args for value in _float_values(arg)][:1]
    return []


def _float_fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, object]]:
    """(dotted key, non-finite value) of every float-valued field of ``model`` and its sections."""
    found = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found += _float_fields(annotation, f"{prefix}{name}.")
            continue
        found += [(f"{prefix}{name}", value) for value in _float_values(annotation)]
    return found


FLOAT_FIELDS = _float_fields(StudyConfig)


def _nested(key: str, value) -> dict:
    data: dict = {}
    *sections, last = key.split(".")
    node = data
    for section in sections:
        node = node.setdefault(section, {})
    node[last] = value
    return data


def test_every_section_is_a_strict_model_and_floats_are_found():
    assert all(issubclass(StudyConfig.model_fields[name].annotation, StrictModel) for name in ("metrics", "track", "register"))
    assert len(FLOAT_FIELDS) > 20
    assert "metrics.pd_pct" in dict(FLOAT_FIELDS)


@pytest.mark.parametrize("key, value", FLOAT_FIELDS, ids=[key for key, _ in FLOAT_FIELDS])
def test_a_non_finite_float_is_refused_naming_its_key(key, value):
    with pytest.raises(ConfigError) as err:
        validate_config(_nested(key, value))
    assert f"  {key}" in str(err.value)
    assert "finite" in str(err.value)


@pytest.mark.parametrize("text", ["metrics: {pd_pct: .inf}", "metrics: {pd_pct: .nan}", "metrics: {pr_pct: -.inf}"])
def test_yaml_inf_and_nan_are_refused(text):
    key = "metrics." + text.split("{")[1].split(":")[0]
    with pytest.raises(ConfigError, match=rf"{key}: Input should be a finite number"):
        validate_config(yaml.safe_load(text))


def test_finite_floats_still_pass():
    assert validate_config({"metrics": {"pd_pct": 25.0}}).metrics.pd_pct == 25.0
