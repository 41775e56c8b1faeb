"""Training and held-out data: synthetic longitudinal cohorts exported to nnU-Net raw layout.

A thin layer over the generator (:func:`synthetic.cohort.generate_cohort`) and its export
(:func:`synthetic.nnunet_export.export_nnunet`): every patient x session becomes one case with a
binary lesion label (the trainer separates lesions as connected components), and ``cases.json``
records each case's modality (used by ``evaluate-model``).

``layout="combined"`` gives one dataset with CT and MR cases and channel name ``zscore`` (not
nnU-Net's CT scheme; ``train.normalization``, ``body`` by default, sets the scheme of training);
``"per-modality"`` gives one dataset per modality (channel ``CT`` or ``MR``), for zero-shot
experiments (train on one modality, test on the other).
"""

from __future__ import annotations

from pathlib import Path


def export_dataset(cohort: Path, out_dir: Path, dataset_id: int, name: str, layout: str = "combined") -> list[Path]:
    """nnU-Net raw dataset folder(s) ``out_dir/DatasetNNN_<name>[CT|MR]`` from a synthetic cohort."""
    from synthetic.nnunet_export import export_nnunet

    return export_nnunet(cohort, out_dir, dataset_id=dataset_id, name=name, layout=layout, overwrite=True)


def generate_dataset(seed: int, n_patients: int, n_sessions: int, cohort_dir: Path, out_dir: Path,
                     dataset_id: int, name: str, layout: str = "combined", config=None, workers: int = 1) -> list[Path]:
    """Generate a synthetic cohort and export it. ``config``: a :class:`SyntheticConfig` whose sources
    and lesion settings to use (default: the default one, the real CT and MR of ``data/real``); seed
    and sizes come from the arguments. ``workers``: processes that render patients."""
    from lesionlocator.core.config import SyntheticConfig
    from synthetic.cohort import generate_cohort

    base = config if config is not None else SyntheticConfig()
    settings = base.model_copy(update={"seed": seed, "n_patients": n_patients, "n_sessions": n_sessions})
    generate_cohort(SyntheticConfig.model_validate(settings.model_dump()), cohort_dir, workers=workers)
    return export_dataset(Path(cohort_dir), Path(out_dir), dataset_id, name, layout)
