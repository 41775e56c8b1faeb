"""Plan, preprocess, train and export a promptable nnU-Net, all inside one run folder.

A run folder holds nnU-Net's three trees (``nnUNet_raw``, ``nnUNet_preprocessed``,
``nnUNet_results``) and the exported ``model/`` folder. nnU-Net's path variables are set for the
duration of the run only (:func:`nnunet_paths`), never globally.

Normalisation (``TrainConfig.normalization``): nnU-Net picks one scheme per input channel from
``dataset.json``'s channel name (``CT`` -> CT clipping + dataset statistics, anything else ->
per-image z-score). A cohort that mixes CT and MR in one channel cannot be served by the CT scheme.
The default ``body`` uses :class:`~lesionlocator.segment.normalization.BodyZScoreNormalization` (per
image: clip to the body's 0.5-99.5 percentiles, z-score on the body; modality-agnostic, and CT
soft-tissue contrast stays as large as with nnU-Net's CT scheme); ``zscore`` forces nnU-Net's
per-image z-score (a CT's air then squeezes soft-tissue contrast); ``auto`` keeps nnU-Net's choice.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from lesionlocator.core.devices import resolve_device
from lesionlocator.core.errors import InputError
from lesionlocator.core.hashing import file_sha256
from lesionlocator.core.io import atomic_directory
from lesionlocator.core.progress import bar_wanted
from lesionlocator.segment.model import MODEL_SIDECAR, find_folds, load_checkpoint, read_model_json
from lesionlocator.segment.normalization import PREPROCESSOR_NAME, SCHEME_NAME

log = logging.getLogger(__name__)

CONFIGURATION = "3d_fullres"
TRAINER_MODULE = "lesionlocator.train.trainer"
TRAINER_NAME = "nnUNetTrainerLesionLocator"
PLANNERS = {
    "small": ("ExperimentPlanner", "nnUNetPlans"),
    "nnunet": ("ExperimentPlanner", "nnUNetPlans"),
    "resenc_m": ("nnUNetPlannerResEncM", "nnUNetResEncUNetMPlans"),
    "resenc_l": ("nnUNetPlannerResEncL", "nnUNetResEncUNetLPlans"),
}
_DATASET_NAME = re.compile(r"^Dataset(\d{3})_[A-Za-z0-9_\-]+$")
NORMALIZATION_SCHEMES = {"body": SCHEME_NAME, "zscore": "ZScoreNormalization"}


@contextlib.contextmanager
def nnunet_paths(run_dir: Path, data_workers: int = 1) -> Iterator[dict[str, Path]]:
    """Point nnU-Net's path variables (and its augmentation worker count) at ``run_dir`` for a while."""
    paths = {name: run_dir / name for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    values = {**{k: str(v) for k, v in paths.items()}, "nnUNet_n_proc_DA": str(max(1, data_workers))}
    saved = {k: os.environ.get(k) for k in values}
    for path in paths.values():
        path.mkdir(parents=True, exist_ok=True)
    os.environ.update(values)
    try:
        yield paths
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def check_dataset(dataset: Path) -> tuple[int, str, dict]:
    """Validate an nnU-Net raw dataset folder for promptable training: (id, name, dataset.json).

    Requires the ``DatasetNNN_Name`` folder name, a ``dataset.json`` with ``channel_names``, and
    labels ``{"background": 0, <lesion>: 1}`` (one lesion class; lesions are told apart as
    connected components).
    """
    dataset = Path(dataset)
    if not dataset.is_dir():
        raise InputError(dataset, "nnU-Net raw dataset folder not found")
    match = _DATASET_NAME.match(dataset.name)
    if not match:
        raise InputError(dataset, "folder name must follow nnU-Net's DatasetNNN_Name pattern (e.g. Dataset501_Lesions)")
    meta_path = dataset / "dataset.json"
    if not meta_path.is_file():
        raise InputError(meta_path, "file not found (an nnU-Net raw dataset needs dataset.json)")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(meta_path, f"not valid JSON ({err})") from None
    labels = meta.get("labels", {})
    if sorted(labels.values()) != [0, 1] or labels.get("background") != 0:
        raise InputError(meta_path, f'labels must be {{"background": 0, "<lesion>": 1}}, got {labels}')
    if not meta.get("channel_names"):
        raise InputError(meta_path, "channel_names is missing or empty")
    cases = sorted((dataset / "labelsTr").glob("*" + meta.get("file_ending", ".nii.gz")))
    if not cases:
        raise InputError(dataset / "labelsTr", "no training labels found")
    return int(match.group(1)), dataset.name, meta


def small_architecture(configuration: dict, patch_size: tuple[int, int, int], base: int, maximum: int,
                       batch_size: int) -> dict:
    """A 3d_fullres configuration shrunk for CPU training: ``patch_size``, ``base``..``maximum`` features.

    The topology (stages, strides, kernel sizes) comes from nnU-Net's own rule
    (``get_pool_and_conv_props``) for the configuration's spacing and the new patch size.
    """
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

    spacing = configuration["spacing"]
    _, pools, kernels, patch, _ = get_pool_and_conv_props(spacing, list(patch_size), 4, 999999)
    n_stages = len(pools)
    arch = dict(configuration["architecture"]["arch_kwargs"])
    arch.update(
        n_stages=n_stages,
        features_per_stage=[min(maximum, base * 2**i) for i in range(n_stages)],
        kernel_sizes=[list(k) for k in kernels],
        strides=[list(s) for s in pools],
        n_conv_per_stage=[2] * n_stages,
        n_conv_per_stage_decoder=[2] * (n_stages - 1),
    )
    new = dict(configuration)
    new["architecture"] = {**configuration["architecture"], "arch_kwargs": arch}
    new["patch_size"] = [int(p) for p in patch]
    new["batch_size"] = int(batch_size)
    return new


@dataclass
class InitialModel:
    """A trained-model folder that starts a fine-tuning run: its plans and one fold's network weights."""

    folder: Path
    plans: dict
    checkpoint: Path
    weights: dict


def read_initial_model(folder: Path, fold: int | str, dataset_meta: dict, dataset: Path) -> InitialModel:
    """Check that the trained-model ``folder`` can start a run on ``dataset`` (same image channels and
    labels) and read its plans and weights (fold ``fold`` if it has it, else its first fold)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "train.init_from: trained-model folder not found")
    plans = read_model_json(folder / "plans.json")
    model_meta = read_model_json(folder / "dataset.json")
    if CONFIGURATION not in plans.get("configurations", {}):
        raise InputError(folder / "plans.json", f"no {CONFIGURATION} configuration to fine-tune")
    for key in ("channel_names", "labels"):
        if len(model_meta.get(key, {})) != len(dataset_meta.get(key, {})):
            raise InputError(dataset / "dataset.json", f"{key} {dataset_meta.get(key)} do not match the "
                             f"initial model's {model_meta.get(key)} ({folder / 'dataset.json'})")
    folds = find_folds(folder, "checkpoint_final.pth")
    if not folds:
        raise InputError(folder, "no fold_*/checkpoint_final.pth to start from")
    chosen = fold if fold in folds else folds[0]
    checkpoint = folder / f"fold_{chosen}" / "checkpoint_final.pth"
    return InitialModel(folder, plans, checkpoint, load_checkpoint(checkpoint)["network_weights"])


def _plan_and_preprocess(settings, dataset_id: int, dataset_name: str, plans_path: Path, workers: int,
                         initial: InitialModel | None = None) -> None:
    """Fingerprint, plan and preprocess the dataset. Plans come from nnU-Net's planner adjusted by
    ``settings``, or with ``initial`` from that model (nnU-Net's plan transfer), so that its weights
    fit and see images prepared as in its own training."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, preprocess_dataset

    extract_fingerprints([dataset_id], num_processes=workers, check_dataset_integrity=True, verbose=False,
                         show_progress_bar=bar_wanted())
    plans = _transferred_plans(initial, dataset_name, plans_path) if initial else _planned(settings, dataset_id, plans_path)
    plans_path.write_text(json.dumps(plans, indent=2))
    conf = plans["configurations"][CONFIGURATION]
    log.info("plans%s: patch %s, features %s, batch %s, normalisation %s", f" of {initial.folder}" if initial else "",
             conf["patch_size"], conf["architecture"]["arch_kwargs"]["features_per_stage"], conf["batch_size"],
             conf["normalization_schemes"])
    preprocess_dataset(dataset_id, plans["plans_name"], configurations=(CONFIGURATION,), num_processes=(workers,),
                       show_progress_bar=bar_wanted())


def _planned(settings, dataset_id: int, plans_path: Path) -> dict:
    """nnU-Net's plans for the dataset (its planner writes ``plans_path``), reduced to 3d_fullres and
    adjusted to ``settings`` (normalisation; small architecture or batch size)."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import plan_experiments

    plan_experiments([dataset_id], PLANNERS[settings.architecture][0])
    plans = json.loads(plans_path.read_text())
    conf = plans["configurations"][CONFIGURATION]
    if settings.normalization in NORMALIZATION_SCHEMES:
        n_channels = len(conf["normalization_schemes"])
        conf["normalization_schemes"] = [NORMALIZATION_SCHEMES[settings.normalization]] * n_channels
        conf["use_mask_for_norm"] = [False] * n_channels
        conf["preprocessor_name"] = PREPROCESSOR_NAME
    if settings.architecture == "small":
        conf = small_architecture(conf, tuple(settings.patch_size), settings.features_base,
                                  settings.features_max, settings.batch_size)
    else:
        if settings.patch_size is not None:
            log.warning("patch_size is only used by the small architecture; %s keeps the planner's", settings.architecture)
        conf["batch_size"] = int(settings.batch_size) if settings.batch_size else conf["batch_size"]
    plans["configurations"] = {CONFIGURATION: conf}
    return plans


def _transferred_plans(initial: InitialModel, dataset_name: str, plans_path: Path) -> dict:
    """The initial model's plans for this dataset; copies dataset.json beside them, as nnU-Net's planner does."""
    shutil.copyfile(Path(os.environ["nnUNet_raw"]) / dataset_name / "dataset.json", plans_path.parent / "dataset.json")
    return {**initial.plans, "dataset_name": dataset_name,
            "configurations": {CONFIGURATION: initial.plans["configurations"][CONFIGURATION]}}


def train_model(settings, dataset: Path, run_dir: Path) -> Path:
    """Train a promptable model on an nnU-Net raw ``dataset``; returns the exported model folder.

    ``settings`` is a :class:`lesionlocator.core.config.TrainConfig`. With ``settings.resume`` the run
    continues from the run folder's checkpoint (nnU-Net's ``--c``; ``checkpoint_final.pth``, else
    ``checkpoint_latest.pth``): an interrupted run goes on from its last saved epoch; a finished
    run that reached its configured epochs is only re-exported, one that a time budget stopped
    earlier goes on towards them (its poly learning rate restarts from where that epoch falls on
    the longer schedule). With ``settings.init_from`` (a trained-model folder) the run fine-tunes
    that model: the dataset is preprocessed with its plans and training starts from its weights.
    """
    from lesionlocator.train.trainer import nnUNetTrainerLesionLocator

    dataset = Path(dataset).resolve()
    run_dir = Path(run_dir).resolve()
    dataset_id, dataset_name, meta = check_dataset(dataset)
    device = resolve_device(settings.device, "train.device")
    if settings.num_threads:
        torch.set_num_threads(settings.num_threads)
    initial = read_initial_model(settings.init_from, settings.fold, meta, dataset) if settings.init_from else None
    plans_name = initial.plans["plans_name"] if initial else PLANNERS[settings.architecture][1]
    started = time.perf_counter()
    with nnunet_paths(run_dir, settings.data_workers) as paths:
        link = paths["nnUNet_raw"] / dataset_name
        if link.is_symlink() or link.exists():
            if link.resolve() != dataset:
                raise InputError(run_dir, f"run folder was made for {link.resolve()}, not {dataset}; use a new output folder")
        else:
            link.symlink_to(dataset, target_is_directory=True)
        pre = paths["nnUNet_preprocessed"] / dataset_name
        plans_path = pre / f"{plans_name}.json"
        ready = (pre / "dataset.json").is_file() and plans_path.is_file() and any(pre.glob(f"*_{CONFIGURATION}"))
        if not (settings.resume and ready):
            if pre.exists():
                shutil.rmtree(pre)
            _plan_and_preprocess(settings, dataset_id, dataset_name, plans_path, settings.data_workers, initial)
        plans = json.loads(plans_path.read_text())
        dataset_json = json.loads((pre / "dataset.json").read_text())
        fold = settings.fold if settings.fold == "all" else int(settings.fold)
        out = paths["nnUNet_results"] / dataset_name / f"{TRAINER_NAME}__{plans_name}__{CONFIGURATION}" / f"fold_{fold}"
        if not settings.resume and out.exists():
            shutil.rmtree(out)
        trainer = nnUNetTrainerLesionLocator(plans | {"continue_training": bool(settings.resume)},
                                             CONFIGURATION, fold, dataset_json, device)
        trainer.configure(
            epochs=settings.epochs, iterations_per_epoch=settings.iterations_per_epoch,
            val_iterations_per_epoch=settings.val_iterations_per_epoch, prompt_mix=settings.prompt_mix,
            foreground_oversample=settings.foreground_oversample, seed=settings.seed,
            initial_lr=settings.initial_lr, save_every=settings.save_every,
            point_radius=settings.point_radius, augmentation=settings.augmentation,
            simulation=settings.prompt_noise(),
            time_limit_s=settings.time_limit_minutes * 60 if settings.time_limit_minutes else None,
        )
        _seed_everything(settings.seed)
        resumed = False
        if settings.resume:
            for name in ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth"):
                if (out / name).is_file():
                    log.info("resuming from %s", out / name)
                    trainer.load_checkpoint(str(out / name))
                    resumed = True
                    break
        if initial and not resumed:
            log.info("starting from the weights of %s", initial.checkpoint)
            trainer.load_initial_weights(initial.weights, initial.checkpoint)
        trainer.run_training()
        seconds = time.perf_counter() - started
        model_dir = export_model(Path(trainer.output_folder_base), run_dir / "model", settings, seconds,
                                 initial.checkpoint if initial else None)
    log.info("trained in %.0f s -> %s", seconds, model_dir)
    return model_dir


def _seed_everything(seed: int) -> None:
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def export_model(trained: Path, target: Path, settings, seconds: float,
                 initial_checkpoint: Path | None = None) -> Path:
    """Copy a trained-model folder to ``target`` with slim checkpoints (no optimiser state).

    The result is a standard nnU-Net v2 trained-model folder (plans.json, dataset.json,
    fold_N/checkpoint_final.pth) plus ``lesionlocator.json`` naming the trainer module and the
    prompt channel. A fine-tuned model also records the checkpoint it started from with its SHA-256,
    so its lineage can be checked after the starting folder has moved or gone.
    """
    with atomic_directory(target) as staging:
        for name in ("plans.json", "dataset.json", "dataset_fingerprint.json"):
            if (trained / name).is_file():
                shutil.copyfile(trained / name, staging / name)
        folds = sorted(p for p in trained.glob("fold_*") if (p / "checkpoint_final.pth").is_file())
        if not folds:
            raise InputError(trained, "no fold_*/checkpoint_final.pth: training did not finish")
        for fold in folds:
            checkpoint = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
            checkpoint["optimizer_state"] = None
            checkpoint["grad_scaler_state"] = None
            checkpoint["init_args"] = {**checkpoint["init_args"], "device": torch.device("cpu")}
            (staging / fold.name).mkdir()
            torch.save(checkpoint, staging / fold.name / "checkpoint_final.pth")
            for log_file in ("progress.png",):
                if (fold / log_file).is_file():
                    shutil.copyfile(fold / log_file, staging / fold.name / log_file)
        sidecar = {
            "trainer_name": TRAINER_NAME,
            "trainer_module": TRAINER_MODULE,
            "prompt_channels": 1,
            "prompt_channel_index": "last (after the image channels)",
            "configuration": CONFIGURATION,
            "settings": settings.model_dump(mode="json"),
            "training_seconds": round(seconds, 1),
            "torch": torch.__version__,
        }
        if initial_checkpoint is not None:
            sidecar["init_checkpoint"] = {"path": str(initial_checkpoint), "sha256": file_sha256(initial_checkpoint)}
        (staging / MODEL_SIDECAR).write_text(json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
    return target
