import json

import pytest
import yaml

from lesionlocator.core import config as cfg
from lesionlocator.core.errors import ConfigError


def test_defaults_are_valid_and_files_are_in_sync():
    """config/config.yaml and the JSON schema are generated from the models; fail on drift."""
    assert cfg.DEFAULT_CONFIG_PATH.read_text() == cfg.default_config_yaml(), "run `lesionlocator config --write`"
    assert cfg.SCHEMA_PATH.read_text() == cfg.json_schema(), "run `lesionlocator config --write`"
    loaded = cfg.load_config()
    assert loaded == cfg.StudyConfig()


def test_every_field_has_a_description():
    def walk(model, prefix=""):
        for name, field in model.model_fields.items():
            assert field.description, f"{prefix}{name} has no description"
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, cfg.BaseModel):
                walk(annotation, f"{prefix}{name}.")

    walk(cfg.StudyConfig)


def test_schema_forbids_unknown_keys():
    schema = json.loads(cfg.json_schema())
    assert schema["additionalProperties"] is False
    for definition in schema.get("$defs", {}).values():
        if definition.get("type") == "object":
            assert definition.get("additionalProperties") is False


@pytest.mark.parametrize(
    "data, key, problem",
    [
        ({"cohort": {"rooot": "x"}}, "cohort.rooot", "unknown key"),
        ({"results": "x"}, "results", "unknown key"),
        ({"cohort": {"verify_pixels": "maybe"}}, "cohort.verify_pixels", "boolean"),
        ({"schema_version": 2}, "schema_version", "1"),
        ({"cohort": {"root": "/does/not/exist"}}, "cohort", "path does not exist"),
    ],
)
def test_bad_config_names_key_and_problem(data, key, problem):
    with pytest.raises(ConfigError) as err:
        cfg.validate_config(data, source="study.yaml")
    message = str(err.value)
    assert "study.yaml" in message
    assert f"  {key}:" in message
    assert problem in message


def test_root_and_table_exclusive(tmp_path):
    with pytest.raises(ConfigError, match="either root or table"):
        cfg.validate_config({"cohort": {"root": str(tmp_path), "table": str(tmp_path)}})


def test_load_config_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n- not a mapping\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        cfg.load_config(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("cohort: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot read config"):
        cfg.load_config(broken)


def test_config_round_trips_through_yaml(tmp_path):
    data = cfg.config_to_dict(cfg.StudyConfig(cohort=cfg.CohortConfig(root=tmp_path)))
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    assert cfg.load_config(path).cohort.root == tmp_path


@pytest.mark.parametrize("path", sorted(cfg.DEFAULT_CONFIG_PATH.parent.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    """Every config under config/ (the training recipes the model card quotes) loads against the model."""
    loaded = cfg.load_config(path)
    assert isinstance(loaded, cfg.StudyConfig)
