"""The DAG: dry run, lint, config validation before any job, cohort planning."""


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


def _job_inputs(stdout: str, rule: str, output_part: str) -> list[str]:
    """The input list of the dry-run job of ``rule`` whose output contains ``output_part``."""
    for block in stdout.split("\nrule ")[1:]:
        lines = block.splitlines()
        output = next(line for line in lines if line.strip().startswith("output:"))
        if lines[0] == f"{rule}:" and output_part in output:
            inputs = next(line for line in lines if line.strip().startswith("input:"))
            return [part.strip() for part in inputs.split("input:", 1)[1].split(",")]
    raise AssertionError(f"no {rule} job writing {output_part} in the dry run")


def test_later_stages_read_every_upstream_report_of_their_shard(tmp_path):
    """measure and evaluate read the segment, register and track reports of their shard (latest first),
    so a patient that failed anywhere upstream is skipped with its first failure as the reason."""
    config = write_config(tmp_path)
    result = run_snakemake(["-n", "--cores", "1", "--configfile", str(config)], timeout=300)
    assert result.returncode == 0, result.stdout
    shards = tmp_path / "results" / "shards"
    chain = [shards / "track/shard-0000_t2.json", shards / "register/shard-0000_t2.json", shards / "track/shard-0000_t1.json",
             shards / "register/shard-0000_t1.json", shards / "segment_baseline/shard-0000.json"]  # fmt: skip
    for rule, output in [("measure_lesions", "measure/shard-0000.json"), ("evaluate_tracking", "evaluate/shard-0000.json")]:
        assert _job_inputs(result.stdout, rule, output)[1:] == [str(p) for p in chain]
    assert _job_inputs(result.stdout, "track_followup", "track/shard-0000_t2.json")[-4:] == [str(p) for p in chain[1:]]
