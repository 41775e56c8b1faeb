"""The study configuration: pydantic models are the single source of truth.

``config/config.yaml`` (the defaults, with each field's description as a comment) and
``workflow/schemas/config.schema.json`` are generated from these models by
``lesionlocator config --write`` and a test fails when they drift.

Relative paths are resolved against the working directory (the repository root for Snakemake).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lesionlocator.errors import ConfigError

SCHEMA_VERSION = 1
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_PATH = REPO_ROOT / "config" / "config.yaml"
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.json"


class StrictModel(BaseModel):
    """Unknown keys are errors; instances are immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class CohortConfig(StrictModel):
    """Where the cohort comes from."""

    root: Path | None = Field(
        None,
        description="Root of a BIDS-like cohort (sub-<patient>/ses-<session>/). "
        "Leave root and table empty to build and use the synthetic demo cohort.",
    )
    table: Path | None = Field(
        None, description="A cohort.tsv listing explicit paths (alternative to root)."
    )
    verify_pixels: bool = Field(
        True,
        description="Read every image fully at ingest (catches truncated files before any "
        "expensive job); false reads headers only.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> "CohortConfig":
        if self.root is not None and self.table is not None:
            raise ValueError("give either root or table, not both")
        for name in ("root", "table"):
            value = getattr(self, name)
            if value is not None and not Path(value).exists():
                raise ValueError(f"{name}: path does not exist: {value}")
        return self

    @property
    def is_synthetic(self) -> bool:
        return self.root is None and self.table is None


class StudyConfig(StrictModel):
    """A whole study: cohort, stages and outputs."""

    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="Version of this config schema.")
    results_dir: Path = Field(Path("results"), description="Folder that receives every output.")
    cohort: CohortConfig = Field(default_factory=CohortConfig, description="Cohort input.")


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for item in err.errors():
        key = ".".join(str(p) for p in item["loc"]) or "(top level)"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        elif message.startswith("Value error, "):
            message = message[len("Value error, "):]
        if item["type"] not in ("extra_forbidden", "missing"):
            message += f" (got {item.get('input')!r})"
        lines.append(f"  {key}: {message}")
    return "\n".join(lines)


def validate_config(data: dict[str, Any] | None, source: str = "config") -> StudyConfig:
    """Validate a plain dict (as Snakemake's ``config``) into a :class:`StudyConfig`.

    Raises :class:`ConfigError` naming each bad key path and its problem.
    """
    try:
        return StudyConfig.model_validate(data or {})
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def load_config(path: str | Path | None = None) -> StudyConfig:
    """Load and validate a YAML config file (the default config when ``path`` is None)."""
    path = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read config ({err})") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys, got {type(data).__name__}")
    return validate_config(data, source=str(path))


def config_to_dict(config: StudyConfig) -> dict[str, Any]:
    """Plain JSON-compatible dict of a config (paths as strings)."""
    return config.model_dump(mode="json")


def json_schema() -> str:
    """The JSON schema of :class:`StudyConfig`, as written to ``workflow/schemas/``."""
    return json.dumps(StudyConfig.model_json_schema(), indent=2, sort_keys=True) + "\n"


def _yaml_scalar(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _emit(model: type[BaseModel], values: dict[str, Any], indent: int, lines: list[str]) -> None:
    pad = "  " * indent
    for name, field in model.model_fields.items():
        for text in (field.description or "").split(". "):
            if text:
                lines.append(f"{pad}# {text.rstrip('.')}.")
        value = values[name]
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            lines.append(f"{pad}{name}:")
            _emit(annotation, value, indent + 1, lines)
        else:
            lines.append(f"{pad}{name}: {_yaml_scalar(value)}")


def default_config_yaml() -> str:
    """The default config as commented YAML, generated from the models."""
    lines = [
        "# Default study configuration. GENERATED from lesionlocator/config.py by",
        "# `lesionlocator config --write`; do not edit by hand (a test checks it).",
        "",
    ]
    _emit(StudyConfig, config_to_dict(StudyConfig()), 0, lines)
    return "\n".join(lines) + "\n"


def write_generated_files() -> list[Path]:
    """Regenerate ``config/config.yaml`` and the JSON schema from the models."""
    from lesionlocator.io import atomic_path

    written = []
    for path, text in ((DEFAULT_CONFIG_PATH, default_config_yaml()), (SCHEMA_PATH, json_schema())):
        with atomic_path(path) as tmp:
            tmp.write_text(text)
        written.append(path)
    return written
