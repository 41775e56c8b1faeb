"""Rerun keys of the per-patient stages: what each stage reads, declared once.

A patient's stage is recomputed when, and only when, its key changes (:func:`lesionlocator.core.shards.run_shard`
skips a patient whose recorded key is unchanged). A key holds exactly:

* the **config fields** the stage reads (:data:`STAGES`: dotted paths; a section name means all of it);
  the same declaration gives the Snakemake rule its ``params`` (:func:`config_slice`), so a change to a
  field no stage job reads (a RECIST threshold) reruns only the aggregation; the :data:`RUNTIME`
  fields (time budgets) are in every job's params and in no key;
* the **files** it reads: the upstream keys (which hash the manifest's per-session file fingerprints)
  and the **model weights** it loads (every file of the checkpoint);
* the **version of its own code**: the SHA-256 of its entry modules' source and of every package module
  they import (:func:`lesionlocator.core.hashing.code_sha256`), plus ``pipeline.py`` that runs it, and the
  versions of the libraries that compute its numbers.

A test walks ``pipeline.py`` and fails when a stage reads a config field it does not declare here.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from lesionlocator.core.config import StudyConfig
from lesionlocator.core.hashing import code_sha256, file_sha256, files_of, json_sha256, package_versions, weights_sha256

ALL = "*"  # every field of the config
_PIPELINE = Path(__file__).with_name("pipeline.py")  # the module that runs the stages (read, not imported)


@dataclass(frozen=True)
class StageInputs:
    """What one stage reads besides its upstream results."""

    config: tuple[str, ...]
    code: tuple[str, ...]
    libraries: tuple[str, ...]


_IMAGING = ("numpy", "scipy", "SimpleITK", "connected-components-3d")
_NETWORK = ("torch", "nnunetv2", "scikit-image")

STAGES: dict[str, StageInputs] = {
    "segment_baseline": StageInputs(
        config=("segment", "track.baseline_prompt", "track.dicom_seg"),
        code=("lesionlocator.segment.session", "lesionlocator.segment.api", "lesionlocator.track.followup", "lesionlocator.core.dicomseg"),
        libraries=_IMAGING + _NETWORK + ("highdicom",),
    ),
    "register": StageInputs(
        config=("register",),
        code=("lesionlocator.register.base",),
        libraries=_IMAGING + ("torch", "unigradicon", "itk"),
    ),
    "track": StageInputs(
        config=("segment", "track", "register.min_fraction_inside"),
        code=("lesionlocator.segment.session", "lesionlocator.track.followup", "lesionlocator.track.qc", "lesionlocator.core.dicomseg"),
        libraries=_IMAGING + _NETWORK + ("highdicom", "matplotlib"),
    ),
    "measure": StageInputs(config=("track.candidate_confirm_score",), code=("lesionlocator.measure.lesions", "lesionlocator.measure.response"),
                           libraries=_IMAGING + ("pandas", "pyarrow")),
    "evaluate": StageInputs(
        config=("metrics.correspondence", "metrics.detection_iou"),
        code=("lesionlocator.evaluate.tracking", "lesionlocator.evaluate.longitudinal"),
        libraries=_IMAGING + ("pandas", "pyarrow"),
    ),
    "aggregate": StageInputs(config=(ALL,), code=("lesionlocator.aggregate.cohort", "lesionlocator.measure.response"), libraries=("pandas", "pyarrow", "dask")),
}

#: Always part of a job's params: the layout of the results.
_ALWAYS = ("schema_version", "results_dir")
#: Part of every job's params but of no rerun key: how long a patient may take changes no result.
RUNTIME = ("workflow.patient_time_budget_s",)


def _fields(full: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    """The nested part of ``full`` named by dotted ``fields``."""
    out: dict[str, Any] = {}
    for field in fields:
        section, _, name = field.partition(".")
        if name:
            out.setdefault(section, {})[name] = full[section][name]
        else:
            out[section] = full[section]
    return out


def _stage_fields(full: dict[str, Any], stage: str, always: tuple[str, ...] = ()) -> dict[str, Any]:
    fields = STAGES[stage].config
    return full if ALL in fields else _fields(full, always + fields)


def config_slice(config: StudyConfig | dict, stage: str) -> dict[str, Any]:
    """The nested part of the config (JSON) that ``stage`` reads, with the results layout: the
    Snakemake rule's ``params`` (a job reruns when they change)."""
    full = config.model_dump(mode="json") if isinstance(config, StudyConfig) else config
    return _stage_fields(full, stage, _ALWAYS + RUNTIME)


def weights_path(config: StudyConfig, stage: str) -> Path | None:
    """The model weights ``stage`` loads: a checkpoint file or a model folder (None when it loads none)."""
    if stage in ("segment_baseline", "track") and config.segment.segmenter == "nnunet":
        return config.segment.model_folder
    if stage == "register" and config.register.backend == "unigradicon":
        return config.register.unigradicon_weights
    if stage == "register" and config.register.backend == "lesionlocator_track":
        return config.register.track_checkpoint
    return None


def weight_files(config: StudyConfig, stage: str) -> list[Path]:
    """Every file of :func:`weights_path` (sorted): a Snakemake job's inputs, so that weights
    replaced in place rerun the job (its patients then rerun by key)."""
    path = weights_path(config, stage)
    return [] if path is None else files_of(path)


@cache  # one job: the code and the libraries do not change while it runs
def code_version(stage: str) -> str:
    """The version of ``stage``'s code: its modules (transitively), ``pipeline.py`` and its libraries."""
    inputs = STAGES[stage]
    return json_sha256(
        {
            "modules": code_sha256(inputs.code),
            "pipeline": file_sha256(_PIPELINE),
            "libraries": package_versions(inputs.libraries),
        }
    )


def stage_key(stage: str, config: StudyConfig, *inputs: object) -> str:
    """The rerun key of one patient's ``stage``: its config fields, weights, code and ``inputs``
    (upstream keys and file fingerprints, JSON-serialisable)."""
    return json_sha256(
        {
            "stage": stage,
            "config": _stage_fields(config.model_dump(mode="json"), stage),
            "weights": weights_sha256(weights_path(config, stage)),
            "code": code_version(stage),
            "inputs": list(inputs),
        }
    )
