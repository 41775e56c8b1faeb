# Shared helpers. The config is validated once through the pydantic model (a bad config stops the
# run here, before any job, naming the key). The cohort is planned at parse time — patients and
# their sessions in time order — without opening an image; patients are batched into shards.
from pathlib import Path

from lesionlocator.core.config import BUNDLED_MODEL, validate_config
from lesionlocator.core.layout import ResultsLayout
from lesionlocator.ingest.plan import cohort_has_groundtruth, cohort_plan
from lesionlocator.core.shards import shard_patients
from lesionlocator.pipeline import upstream_stages
from lesionlocator.stage_keys import config_slice, weight_files

CFG = validate_config(config, source="the Snakemake config")
LAYOUT = ResultsLayout(Path(CFG.results_dir))
LOGS = LAYOUT.root / "logs"
BENCH = LAYOUT.root / "benchmarks"
ENV = "../envs/lesionlocator.yaml"

PLAN = cohort_plan(CFG)  # {patient: [session, ...]} in time order
SHARDS = shard_patients(list(PLAN), CFG.workflow.shard_size)
N_SESSIONS = [max(len(PLAN[p]) for p in shard) for shard in SHARDS]
HAS_GROUNDTRUTH = (
    cohort_has_groundtruth(CFG) if CFG.workflow.evaluate == "auto" else CFG.workflow.evaluate == "always"
)
# A GPU is requested for a network on cuda, or on auto unless it is the CPU-sized bundled model.
SEGMENT_GPU = int(
    CFG.segment.segmenter == "nnunet"
    and (
        CFG.segment.device == "cuda"
        or (CFG.segment.device == "auto" and CFG.segment.model_folder.resolve() != BUNDLED_MODEL.resolve())
    )
)
REGISTER_GPU = 1 if CFG.register.backend != "simpleitk" and CFG.register.device in ("cuda", "auto") else 0


def cohort_input():
    """What ingest reads: the BIDS-like root, the cohort table, or the synthetic cohort folder."""
    if CFG.cohort.table is not None:
        return {"table": str(CFG.cohort.table)}
    if CFG.cohort.root is not None:
        return {"root": str(CFG.cohort.root)}
    return {"root": str(LAYOUT.synthetic_cohort)}


def shard_report(stage, shard, t=None):
    """Report path of a shard job; shard and t are numbers, or the wildcard patterns."""
    as_number = lambda v: int(v) if isinstance(v, int) or str(v).isdigit() else v  # noqa: E731
    return str(LAYOUT.shard_report(stage, as_number(shard), None if t is None else as_number(t)))


def upstream_reports(stage):
    """Input function: the shard reports of every stage before ``stage`` ("track", "measure" or
    "evaluate") in the same shard, latest first (lesionlocator.pipeline.upstream_stages): the job skips
    a patient that failed there, carrying its first failure as the reason."""

    def reports(wildcards):
        if stage == "track":
            chain = upstream_stages(int(wildcards.t), through_track=False)
        else:
            chain = upstream_stages(N_SESSIONS[int(wildcards.shard)] - 1)
        return [shard_report(name, wildcards.shard, t) for name, t in chain]

    return reports


def shard_list(shard):
    return SHARDS[int(shard)]


def final_reports():
    reports = [shard_report("measure", k) for k in range(len(SHARDS))]
    if HAS_GROUNDTRUTH:
        reports += [shard_report("evaluate", k) for k in range(len(SHARDS))]
    return reports


def final_outputs():
    return [LAYOUT.report, LAYOUT.run_manifest]


def stage_config(stage):
    """The config fields a stage reads (lesionlocator.stage_keys.STAGES), as its job's params:
    changing a field it does not read does not rerun it."""
    return config_slice(CFG, stage)


def stage_weights(stage):
    """The files of the model weights a stage loads (none for the classical segmenter or SimpleITK)."""
    return [str(path) for path in weight_files(CFG, stage)]


TRAIN_GPU = 1 if CFG.train.device in ("cuda", "auto") else 0


def training_dataset():
    """train.dataset when given, else the nnU-Net export of the synthetic cohort."""
    if CFG.train.dataset is not None:
        return str(CFG.train.dataset)
    return str(LAYOUT.root / "train" / "nnunet_raw")
