"""The DAG: dry run, lint, config validation before any job, cohort planning."""

from pathlib import Path

from lesionlocator.core.config import StudyConfig, SyntheticConfig
from lesionlocator.ingest.plan import cohort_plan
from tests.workflow.conftest import run_snakemake, write_config


def test_dry_run_of_the_default_config(tmp_path):
    result = run_snakemake(["-n", "--cores", "1", "--quiet", "rules", "--config", f"results_dir={tmp_path}"], timeout=300)
    assert result.returncode == 0, result.stdout
    for rule in ("synthesize_cohort", "ingest_cohort", "segment_baseline", "register_pair", "track_followup",
                 "measure_lesions", "evaluate_tracking", "aggregate_cohort", "report_cohort"):
        assert rule in result.stdout


def test_lint_is_clean():
    result = run_snakemake(["--lint"], timeout=300)
    assert result.returncode == 0, result.stdout
    assert "Congratulations, your workflow is in a good condition!" in result.stdout


def test_bad_config_stops_before_any_job(tmp_path):
    config = write_config(tmp_path, {"track": {"min_volume_ml": -1}, "cohort": {"rooot": "x"}})
    result = run_snakemake(["--cores", "1", "--configfile", str(config)], timeout=300)
    assert result.returncode != 0
    assert "cohort.rooot: unknown key" in result.stdout
    assert "track.min_volume_ml: Input should be greater than or equal to 0" in result.stdout
    assert not (tmp_path / "results").exists()


def test_shards_and_sessions_in_the_dry_run(tmp_path):
    config = write_config(tmp_path, {"workflow": {"shard_size": 1}})
    result = run_snakemake(["-n", "--cores", "1", "--configfile", str(config)], timeout=300)
    assert result.returncode == 0, result.stdout
    # 2 shards x 2 follow-ups of register/track, 2 segment, 2 measure, 2 evaluate
    assert "shard-0001_t2.json" in result.stdout
    assert "shard-0002" not in result.stdout


def test_plan_of_the_synthetic_cohort_matches_the_generator(tmp_path):
    from synthetic.cohort import generate_cohort

    synthetic = SyntheticConfig(n_patients=2, n_sessions=2, sources=["phantom:48x40x24"], seed=5)
    truth = generate_cohort(synthetic, tmp_path / "cohort")
    plan = cohort_plan(StudyConfig(synthetic=synthetic))
    generated = {p: sorted(g.session.unique()) for p, g in truth.groupby("patient")}
    assert plan == generated
    assert cohort_plan(StudyConfig(cohort={"root": tmp_path / "cohort"})) == plan
