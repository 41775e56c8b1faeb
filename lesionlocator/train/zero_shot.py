"""Zero-shot check of a model: synthetic lesions in real scans it never saw, scored per source, lesion
size and prompt type next to the classical segmenter (``bench/bench_zero_shot.py``, the model card's
zero-shot table).

The bundled model was trained on lesions inserted into two real scans (``data/real/example_ct.nii.gz``
and ``example_mr_sm.nii.gz``). The sources here are other scans (:data:`SOURCES`; ``data/unseen/SOURCE.md``):
another body's CT, and head MRs of contrasts and slice thicknesses absent from training. Each source
gives two cohorts (:data:`COHORTS`: 10-60 mm and 4-12 mm longest diameter), exported as nnU-Net raw
datasets and scored with :func:`lesionlocator.train.evaluate_model.evaluate_models` (the network
alone, no TTA), then summarised per source and pooled per modality by lesion size
(:func:`~lesionlocator.train.evaluate_model.summarize_by_size`). Deterministic on the CPU.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lesionlocator.core.config import BUNDLED_MODEL, REPO_ROOT, SyntheticConfig

#: The card's table of these figures (checked by tests/train/test_bundled_model.py).
CARD_TABLE = BUNDLED_MODEL / "zero_shot_scores.tsv"
#: (dataset id, name, source entry, seed, largest longest diameter in mm): scans the bundled model never
#: saw in training. The unseen CT is 20 slices of 2 mm: its lesions stay under 32 mm (no class > 30 mm).
SOURCES = (
    (840, "UnseenCT", "ct:data/real/example_ct_dicom", 3101, 32.0),
    (841, "UnseenMRT1", "mr:data/unseen/mr_t1_head_itk.nii.gz", 3102, 60.0),
    (842, "UnseenMRColin", "mr:data/unseen/mr_t1_head_colin27.nii.gz", 3103, 60.0),
    (843, "UnseenMRPD", "mr:data/unseen/mr_pd_head_oblique.nii.gz", 3104, 60.0),
)
PATIENTS = 12
#: Two cohorts per source: lesions from 10 mm longest diameter up to the source's largest (1-3 per
#: patient), and small ones of 4-12 mm (2-4 per patient, in half as many patients), so that every
#: size class has lesions. (name suffix, smallest diameter, largest or None for the source's, lesions per
#: patient, share of PATIENTS, offset of seed and dataset id)
COHORTS = (("", 10.0, None, (1, 3), 1.0, 0), ("Small", 4.0, 12.0, (2, 4), 0.5, 10))
#: The pooled rows of each modality over all the unseen sources.
POOLED = "all unseen"


def unseen_datasets(work: Path, patients: int = PATIENTS, sources=SOURCES) -> list[Path]:
    """Generate and export the held-out datasets of every unseen source scan under ``work``."""
    from lesionlocator.train.data import generate_dataset

    datasets = []
    for dataset_id, name, entry, seed, largest in sources:
        kind, _, path = entry.partition(":")
        for suffix, low, high, count, share, offset in COHORTS:
            config = SyntheticConfig(sources=[f"{kind}:{REPO_ROOT / path}"], organ_labels={}, diameter_mm=(low, high or largest),
                                     lesions_per_patient=count, margin_mm=3.0)  # fmt: skip
            datasets += generate_dataset(seed + offset, max(1, round(patients * share)), 1, work / f"cohort_{name}{suffix}", work,
                                         dataset_id + offset, name + suffix, config=config)  # fmt: skip
    return datasets


def source_name(cohort: str) -> str:
    """The source a cohort was made from: ``Dataset850_UnseenCTSmall`` -> ``UnseenCT``."""
    return cohort.split("_", 1)[-1].removesuffix("Small")


def zero_shot_scores(work: Path, patients: int = PATIENTS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-lesion table, summary by source and size, plus each modality pooled over the sources as
    :data:`POOLED`) of the bundled model and the classical segmenter."""
    from lesionlocator.train.evaluate_model import evaluate_models, summarize_by_size

    datasets = unseen_datasets(work, patients)
    evaluate_models(datasets, None, work / "zero_shot.parquet", seed=0, models={"lesionlocator_small": BUNDLED_MODEL})
    table = pd.read_parquet(work / "zero_shot.parquet")
    by_source = table.assign(cohort=table["cohort"].map(source_name))
    summary = summarize_by_size(pd.concat([by_source.assign(cohort=POOLED), by_source], ignore_index=True))
    return table, summary.sort_values("cohort", key=lambda c: c.ne(POOLED), kind="stable", ignore_index=True)
