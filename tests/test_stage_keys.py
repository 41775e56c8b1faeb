"""Rerun keys: each stage's key holds exactly the config fields it reads, its weights and its code."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

import lesionlocator.pipeline as pipeline
from lesionlocator.core.config import BUNDLED_MODEL, validate_config
from lesionlocator.core.hashing import code_sha256, files_sha256, json_sha256, module_closure
from lesionlocator.stage_keys import ALL, RUNTIME, STAGES, config_slice, stage_key

STAGE_FUNCTIONS = {
    "segment_baseline_shard": "segment_baseline",
    "register_shard": "register",
    "track_shard": "track",
    "measure_shard": "measure",
    "evaluate_shard": "evaluate",
    "aggregate_results": "aggregate",
}


def _keys(config) -> dict[str, str]:
    return {stage: stage_key(stage, config, "upstream") for stage in STAGES}


def _changed(before: dict, after: dict) -> set[str]:
    return {stage for stage in before if before[stage] != after[stage]}


def test_a_recist_threshold_changes_only_the_aggregation():
    before, after = validate_config({}), validate_config({"metrics": {"pd_pct": 25.0, "min_measurable_mm": 12.0}})
    assert _changed(_keys(before), _keys(after)) == {"aggregate"}
    assert {s for s in STAGES if config_slice(before, s) != config_slice(after, s)} == {"aggregate"}


@pytest.mark.parametrize(
    "change, stages",
    [
        ({"track": {"dicom_seg": False}}, {"segment_baseline", "track", "aggregate"}),
        ({"track": {"baseline_prompt": "mask"}}, {"segment_baseline", "track", "aggregate"}),
        ({"track": {"min_volume_ml": 0.5}}, {"track", "aggregate"}),
        ({"segment": {"mirroring": False}}, {"segment_baseline", "track", "aggregate"}),
        ({"register": {"iterations": 7}}, {"register", "aggregate"}),
        ({"register": {"min_fraction_inside": 0.3}}, {"register", "track", "aggregate"}),
        ({"metrics": {"detection_iou": 0.3}}, {"evaluate", "aggregate"}),
    ],
)
def test_each_config_field_changes_the_keys_of_the_stages_that_read_it(change, stages):
    assert _changed(_keys(validate_config({})), _keys(validate_config(change))) == stages


def test_a_time_budget_is_in_every_jobs_params_and_in_no_key():
    before, after = validate_config({}), validate_config({"workflow": {"patient_time_budget_s": 60}})
    assert _changed(_keys(before), _keys(after)) == {"aggregate"}  # aggregate's key holds the whole config
    for stage in STAGES:
        assert config_slice(after, stage)["workflow"]["patient_time_budget_s"] == 60
        assert validate_config(config_slice(after, stage)).workflow.patient_time_budget_s == 60


def test_weights_are_part_of_the_segmentation_and_tracking_keys(tmp_path):
    model = tmp_path / "model"
    shutil.copytree(BUNDLED_MODEL, model)
    before = _keys(validate_config({"segment": {"checkpoint": str(model)}}))
    checkpoint = next(model.rglob("checkpoint_final.pth"))
    checkpoint.write_bytes(checkpoint.read_bytes() + b"\0")  # other weights, same path
    after = _keys(validate_config({"segment": {"checkpoint": str(model)}}))
    assert _changed(before, after) == {"segment_baseline", "track"}
    # the classical segmenter loads no weights
    classical = validate_config({"segment": {"segmenter": "classical", "checkpoint": str(model)}})
    assert stage_key("segment_baseline", classical) == stage_key("segment_baseline", classical)


def test_code_version_follows_the_modules_a_stage_imports():
    # measure does not import the network; segmentation does; nothing imports the CLI
    assert "lesionlocator.segment.nnunet" in module_closure(STAGES["segment_baseline"].code)
    assert "lesionlocator.segment.nnunet" not in module_closure(STAGES["measure"].code)
    assert "lesionlocator.measure.response" not in module_closure(STAGES["track"].code)
    for stage in STAGES:
        assert "lesionlocator.cli" not in module_closure(STAGES[stage].code)


def test_code_hash_changes_with_the_source(tmp_path, monkeypatch):
    import lesionlocator.core.hashing as hashing

    root = tmp_path / "lesionlocator"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "sub" / "__init__.py").write_text("")
    (root / "a.py").write_text("from lesionlocator.sub import b\n")
    (root / "sub" / "b.py").write_text("def f():\n    from lesionlocator import c\n")
    (root / "c.py").write_text("X = 1\n")
    (root / "d.py").write_text("Y = 1\n")
    monkeypatch.setattr(hashing, "_ROOT", root)
    assert hashing.module_closure(["lesionlocator.a"]) == [
        "lesionlocator", "lesionlocator.a", "lesionlocator.c", "lesionlocator.sub", "lesionlocator.sub.b",
    ]
    first = hashing.code_sha256.__wrapped__(("lesionlocator.a",))
    (root / "d.py").write_text("Y = 2\n")  # not imported: same version
    assert hashing.code_sha256.__wrapped__(("lesionlocator.a",)) == first
    (root / "c.py").write_text("X = 2\n")  # imported inside a function of an imported module
    assert hashing.code_sha256.__wrapped__(("lesionlocator.a",)) != first


def test_hashes_are_stable_and_sensitive(tmp_path):
    assert json_sha256({"a": 1, "b": 2}) == json_sha256({"b": 2, "a": 1})
    assert json_sha256({"a": 1}) != json_sha256({"a": 2})
    a = tmp_path / "a.bin"
    a.write_bytes(b"x")
    assert files_sha256([a, None]) != files_sha256([a]) != files_sha256([None])
    assert code_sha256(STAGES["measure"].code) == code_sha256(STAGES["measure"].code)


# --- every config field a stage reads is declared -------------------------------------------------


def _config_reads(function: ast.FunctionDef, functions: dict[str, ast.FunctionDef], seen: set[str]) -> set[str]:
    """Dotted config fields read in ``function`` (a bare ``config`` handed to code outside pipeline.py:
    ``*``), following the helpers of pipeline.py it hands ``config`` to."""
    reads: set[str] = set()
    parents = {child: node for node in ast.walk(function) for child in ast.iter_child_nodes(node)}
    for node in ast.walk(function):
        if not (isinstance(node, ast.Name) and node.id == "config"):
            continue
        parent = parents.get(node)
        if isinstance(parent, ast.Attribute):
            grand = parents.get(parent)  # config.section.field (a method of a section reads all of it)
            reads.add(f"{parent.attr}.{grand.attr}" if isinstance(grand, ast.Attribute) else parent.attr)
            continue
        call = parent if isinstance(parent, ast.Call) else None
        callee = call.func.id if call is not None and isinstance(call.func, ast.Name) else None
        if callee == "stage_key":
            continue
        if callee in functions and callee not in seen:
            reads |= _config_reads(functions[callee], functions, seen | {callee})
        elif callee not in functions:
            reads.add(ALL)
    return reads


def _covered(read: str, declared: tuple[str, ...]) -> bool:
    section = read.split(".")[0]
    return ALL in declared or read in declared or section in declared or section in ("results_dir", "schema_version") or read in RUNTIME


def test_every_config_field_a_stage_reads_is_in_its_key():
    tree = ast.parse(Path(pipeline.__file__).read_text())
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert set(STAGE_FUNCTIONS) <= set(functions)
    for name, stage in STAGE_FUNCTIONS.items():
        reads = _config_reads(functions[name], functions, {name})
        undeclared = {r for r in reads if not _covered(r, STAGES[stage].config)}
        assert not undeclared, f"{name} reads {sorted(undeclared)}, not declared for {stage} in stage_keys.STAGES"


def test_the_field_walk_finds_a_read_outside_the_declaration():
    source = "def segment_baseline_shard(config):\n    x = config.metrics.pd_pct\n    _helper(config)\n\ndef _helper(config):\n    return config.register.iterations\n"
    functions = {n.name: n for n in ast.parse(source).body}
    reads = _config_reads(functions["segment_baseline_shard"], functions, {"segment_baseline_shard"})
    assert reads == {"metrics.pd_pct", "register.iterations"}
    assert not _covered("metrics.pd_pct", STAGES["segment_baseline"].config)
