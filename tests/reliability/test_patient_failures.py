"""Pipeline-level reliability: a patient whose follow-up shows another body region fails alone (with
the registration's message in run.json and the report), a patient with only a baseline is segmented
and measured with no follow-up job, and both run in the same shard as the workflow runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import SimpleITK as sitk

from lesionlocator import pipeline
from lesionlocator.aggregate.report import report_cohort
from lesionlocator.core.config import validate_config
from lesionlocator.core.errors import InputError
from lesionlocator.core.layout import ResultsLayout
from lesionlocator.core.shards import failure_table
from lesionlocator.ingest.cohort import ingest_cohort
from lesionlocator.pipeline import (
    aggregate_results,
    measure_shard,
    register_shard,
    segment_baseline_shard,
    track_shard,
    upstream_stages,
)
from tests.helpers import EMBEDDED_REAL, write_session
from tests.reliability.builders import blob_image, partial_files, point_prompt

pytestmark = pytest.mark.slow


def _cohort(root: Path) -> None:
    ct = sitk.ReadImage(str(EMBEDDED_REAL / "example_ct.nii.gz"))
    # A1: the baseline is a 12-slice slab; the follow-up is the whole scan (another, much longer region)
    slab = ct[:, :, 50:62]
    baseline = write_session(root, "A1", "base", slab)
    (baseline.parent / "prompts.json").write_text(json.dumps(point_prompt(slab, index_zyx=(6, 50, 61))))
    write_session(root, "A1", "fu", ct)
    (root / "sub-A1" / "sub-A1_sessions.tsv").write_text("session_id\tacq_time\nses-base\t2021-01-04\nses-fu\t2021-04-06\n")
    # B2: only a baseline
    mr = sitk.ReadImage(str(EMBEDDED_REAL / "example_mr_sm.nii.gz"))
    only = write_session(root, "B2", "1", mr)
    (only.parent / "prompts.json").write_text(json.dumps(point_prompt(mr, index_zyx=(10, 45, 58))))


def test_failed_patient_is_reported_and_the_others_go_on(tmp_path):
    _cohort(tmp_path / "cohort")
    # linear registration only: the overlap check that fails A1 runs the same, in a third of the time
    config = validate_config({"results_dir": str(tmp_path / "results"), "register": {"affine": False, "deformable": False}})
    layout = ResultsLayout(tmp_path / "results")
    manifest = ingest_cohort(layout.manifest, root=tmp_path / "cohort")
    assert manifest.groupby("patient").size().to_dict() == {"A1": 2, "B2": 1}
    shards = tmp_path / "results" / "shards"
    patients = ["A1", "B2"]  # one shard, as the workflow batches them

    segment = segment_baseline_shard(layout.manifest, patients, config, shards / "segment.json")
    register = register_shard(layout.manifest, patients, 1, config, shards / "register_t1.json")
    track = track_shard(layout.manifest, patients, 1, config, shards / "track_t1.json", [shards / "segment.json", shards / "register_t1.json"])
    measure = measure_shard(layout.manifest, patients, config, shards / "measure.json", [shards / "track_t1.json"])

    assert segment["patients"] == {"A1": {"outcome": "ok", "error": None}, "B2": {"outcome": "ok", "error": None}}
    # registration fails for A1 only, with the registration's message naming both images
    assert set(register["patients"]) == {"A1"}, "a baseline-only patient has no follow-up job"
    error = register["patients"]["A1"]["error"]
    assert register["patients"]["A1"]["outcome"] == "failed"
    assert "InputError" in error and "do not cover the same anatomy" in error
    assert str(tmp_path / "cohort" / "sub-A1" / "ses-fu") in error and "ses-base" in error
    assert not layout.transform("A1", "fu").exists()
    # later stages skip A1 and carry the root cause; B2 is measured at its baseline
    assert track["patients"] == {"A1": {"outcome": "upstream_failed", "error": f"register_t1: {error}"}}
    assert measure["patients"]["A1"]["outcome"] == "upstream_failed"
    assert measure["patients"]["B2"]["outcome"] == "ok"
    measured = pd.read_parquet(layout.measurements("B2"))
    assert measured.session.unique().tolist() == ["1"] and (measured.volume_ml > 0).all()

    aggregate_results(layout.manifest, config, [shards / "measure.json"], layout.cohort_dataset, layout.run_manifest)
    run = json.loads(layout.run_manifest.read_text())
    assert run["failed_patients"] == ["A1"]
    assert run["failures"]["A1"].startswith("register_t1: InputError: ") and "do not cover the same anatomy" in run["failures"]["A1"]
    lesions = pd.read_parquet(layout.cohort_dataset / "lesions")
    assert set(lesions.patient) == {"B2"}

    failures = failure_table([shards / "measure.json"])
    html = report_cohort(layout.cohort_dataset, layout.report, failed_patients=failures).read_text()
    section = html[html.index("Failed patients"):]
    assert "A1" in section and "do not cover the same anatomy" in section
    assert partial_files(tmp_path / "results") == []


def _shard_reports(layout: ResultsLayout, stage_chain) -> list[Path]:
    """The shard-0 report paths of (stage, t) pairs, as the workflow's input functions name them."""
    return [layout.shard_report(stage, 0, t) for stage, t in stage_chain]


def test_a_patient_failed_at_segmentation_is_reported_with_that_reason(tmp_path, monkeypatch):
    """A1 (2 sessions) fails its baseline segmentation, and its registration fails too; B2 (3 sessions)
    is fine. The last tracking job (t2) does not hold A1, yet measure skips it as failed upstream, and
    run.json and the report name the first failure (segment_baseline), not a missing tracking table."""
    root = tmp_path / "cohort"
    centre = (16, 24, 24)
    image = blob_image(shape_zyx=(32, 48, 48), spacing=(1.0, 1.0, 1.5), centre_zyx=centre, radii_zyx=(5, 6, 6))
    for patient, sessions in [("A1", ["1", "2"]), ("B2", ["1", "2", "3"])]:
        for session in sessions:
            write_session(root, patient, session, image)
        (root / f"sub-{patient}" / "ses-1" / "prompts.json").write_text(json.dumps(point_prompt(image, index_zyx=centre)))

    def check_prompts(prompts, shape_zyx, source="prompts"):
        if "sub-A1" in source:
            raise InputError(source, "prompt mask label -1 is not a lesion ID (IDs are positive integers)")
        return real_check_prompts(prompts, shape_zyx, source=source)

    def register_pair(fixed, moving, *args, **kwargs):
        if "sub-A1" in str(fixed):
            raise InputError(fixed, "registration failed as well")
        return real_register_pair(fixed, moving, *args, **kwargs)

    real_check_prompts, real_register_pair = pipeline.check_prompts, pipeline.register_pair
    monkeypatch.setattr(pipeline, "check_prompts", check_prompts)
    monkeypatch.setattr(pipeline, "register_pair", register_pair)

    config = validate_config({"results_dir": str(tmp_path / "results"), "segment": {"segmenter": "classical"},
                              "register": {"affine": False, "deformable": False}})  # fmt: skip
    layout = ResultsLayout(tmp_path / "results")
    ingest_cohort(layout.manifest, root=root)
    patients = ["A1", "B2"]  # one shard, as the workflow batches them
    report = lambda stage, t=None: layout.shard_report(stage, 0, t)

    segment_baseline_shard(layout.manifest, patients, config, report("segment_baseline"))
    for t in (1, 2):
        register_shard(layout.manifest, patients, t, config, report("register", t))
        track_shard(layout.manifest, patients, t, config, report("track", t),
                    _shard_reports(layout, upstream_stages(t, through_track=False)))  # fmt: skip
    track_t2 = json.loads(report("track", 2).read_text())
    assert set(track_t2["patients"]) == {"B2"}, "A1 has no session t2: the last tracking job does not hold it"
    measure = measure_shard(layout.manifest, patients, config, report("measure"), _shard_reports(layout, upstream_stages(2)))

    reason = measure["patients"]["A1"]
    assert reason["outcome"] == "upstream_failed"
    assert reason["error"].startswith("segment_baseline: InputError: ") and "prompt mask label -1" in reason["error"]
    assert measure["patients"]["B2"] == {"outcome": "ok", "error": None}

    aggregate_results(layout.manifest, config, [report("measure")], layout.cohort_dataset, layout.run_manifest)
    run = json.loads(layout.run_manifest.read_text())
    assert run["failed_patients"] == ["A1"]
    assert run["failures"]["A1"] == reason["error"]
    html = report_cohort(layout.cohort_dataset, layout.report, failed_patients=failure_table([report("measure")])).read_text()
    section = html[html.index("Failed patients"):]
    assert "segment_baseline: InputError" in section and "tracking.parquet" not in section
