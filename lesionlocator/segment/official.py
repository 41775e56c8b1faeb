"""The released ``LesionLocatorTrack`` checkpoint: reading it, and its UNet as a segment-engine model.

The format is described in :mod:`lesionlocator.register.official_track`, which serves the same
checkpoint's registration network. Here :func:`read_track_checkpoint` reads every fold (safe load)
and splits each state dict into its ``reg_net.*`` and ``unet.*`` parts, and
:class:`TrackUNetSegmenter` serves the ``unet.*`` weights as a segment-engine model (``LoadedModel``,
every fold), selected when ``segment.checkpoint`` points at a ``LesionLocatorTrack`` folder.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from lesionlocator.core.errors import InputError
from lesionlocator.segment.model import (
    LoadedModel,
    build_fold_networks,
    check_architecture,
    find_folds,
    load_checkpoint,
    read_model_json,
)
from lesionlocator.segment.nnunet import NnUNetSegmenter

log = logging.getLogger(__name__)

TRACK_FOLDER = "LesionLocatorTrack"
REG_PREFIX = "reg_net."
UNET_PREFIX = "unet."
PATCH_KEY = "unet_patch_size"
CHECKPOINT_NAME = "checkpoint_final.pth"


def resolve_track_folder(path: str | Path) -> Path:
    """The ``LesionLocatorTrack`` folder: ``path`` itself, or ``path/LesionLocatorTrack`` (the checkpoint root)."""
    path = Path(path)
    if (path / "plans.json").is_file():
        return path
    if (path / TRACK_FOLDER / "plans.json").is_file():
        return path / TRACK_FOLDER
    raise InputError(path, f"not a {TRACK_FOLDER} folder (no plans.json) nor a checkpoint root holding one")


def is_track_checkpoint(path: str | Path | None) -> bool:
    """True for a ``LesionLocatorTrack`` trained-model folder (by its released name, with a plans.json)."""
    return path is not None and Path(path).name == TRACK_FOLDER and (Path(path) / "plans.json").is_file()


@dataclass
class TrackCheckpoint:
    """The state dicts of one ``LesionLocatorTrack`` folder, split per network, one entry per fold."""

    folder: Path
    folds: list[int | str]
    reg_states: list[dict[str, torch.Tensor]]
    unet_states: list[dict[str, torch.Tensor]]
    unet_patch_size: tuple[int, ...]
    configuration: str
    trainer_name: str
    mirror_axes: tuple[int, ...] | None


def split_state(state: dict, source: Path) -> tuple[dict, dict, tuple[int, ...]]:
    """``(reg_net state, unet state, unet_patch_size)`` of a tracking network's state dict (prefixes removed)."""
    reg = {k.removeprefix(REG_PREFIX): v for k, v in state.items() if k.startswith(REG_PREFIX)}
    unet = {k.removeprefix(UNET_PREFIX): v for k, v in state.items() if k.startswith(UNET_PREFIX)}
    missing = [name for name, part in ((REG_PREFIX + "*", reg), (UNET_PREFIX + "*", unet)) if not part]
    if PATCH_KEY not in state:
        missing.append(PATCH_KEY)
    if missing:
        raise InputError(source, f"not a {TRACK_FOLDER} checkpoint (no {', '.join(missing)} in network_weights)")
    other = sorted(k for k in state if not k.startswith((REG_PREFIX, UNET_PREFIX)) and k != PATCH_KEY)
    if other:
        log.warning("%s: ignoring %d unexpected key(s) in network_weights, e.g. %s", source, len(other), other[0])
    patch = tuple(int(v) for v in torch.as_tensor(state[PATCH_KEY]).flatten().tolist())
    return reg, unet, patch


def read_track_checkpoint(
    folder: str | Path, folds: Sequence[int | str] | None = None, checkpoint_name: str = CHECKPOINT_NAME
) -> TrackCheckpoint:
    """Read every fold of a ``LesionLocatorTrack`` folder (safe load) and split each state dict."""
    folder = resolve_track_folder(folder)
    folds = list(folds) if folds else find_folds(folder, checkpoint_name)
    if not folds:
        raise InputError(folder, f"no fold_*/{checkpoint_name} found")
    reg_states, unet_states, patches = [], [], []
    first: dict = {}
    for fold in folds:
        path = folder / f"fold_{fold}" / checkpoint_name
        checkpoint = load_checkpoint(path)
        reg, unet, patch = split_state(checkpoint["network_weights"], path)
        reg_states.append(reg)
        unet_states.append(unet)
        patches.append(patch)
        first = first or checkpoint
    if len(set(patches)) != 1:
        raise InputError(folder, f"folds disagree on {PATCH_KEY}: {patches}")
    mirror = first.get("inference_allowed_mirroring_axes")
    return TrackCheckpoint(
        folder=folder,
        folds=list(folds),
        reg_states=reg_states,
        unet_states=unet_states,
        unet_patch_size=patches[0],
        configuration=str((first.get("init_args") or {}).get("configuration", "3d_fullres")),
        trainer_name=str(first.get("trainer_name", "")),
        mirror_axes=tuple(int(a) for a in mirror) if mirror is not None else (0, 1, 2),
    )


def load_track_unet(
    folder: str | Path, folds: Sequence[int | str] | None = None, checkpoint_name: str = CHECKPOINT_NAME,
    checkpoint: TrackCheckpoint | None = None,
) -> LoadedModel:
    """The ``unet.*`` weights of every fold as a :class:`LoadedModel` (network built from plans.json)."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    checkpoint = checkpoint or read_track_checkpoint(folder, folds, checkpoint_name)
    folder = checkpoint.folder
    plans = read_model_json(folder / "plans.json")
    dataset_json = read_model_json(folder / "dataset.json")
    plans_manager = PlansManager(plans)
    if checkpoint.configuration not in plans.get("configurations", {}):
        raise InputError(folder / "plans.json", f"configuration {checkpoint.configuration!r} (from the checkpoint) not in the plans")
    cm = plans_manager.get_configuration(checkpoint.configuration)
    check_architecture(
        {
            "network_class_name": cm.network_arch_class_name,
            "arch_kwargs": cm.network_arch_init_kwargs,
            "_kw_requires_import": cm.network_arch_init_kwargs_req_import,
        },
        folder / "plans.json",
    )
    if tuple(int(p) for p in cm.patch_size) != checkpoint.unet_patch_size:
        log.warning("%s: %s %s differs from the plans' patch size %s; using the plans'", folder,
                    PATCH_KEY, list(checkpoint.unet_patch_size), list(cm.patch_size))
    channels = dataset_json.get("channel_names", dataset_json.get("modality")) or {}
    if len(channels) != 1:
        raise InputError(folder / "dataset.json", f"{len(channels)} image channels; the tracking UNet takes one image channel")
    states = [(folder / f"fold_{fold}" / checkpoint_name, state)
              for fold, state in zip(checkpoint.folds, checkpoint.unet_states)]
    networks = build_fold_networks(plans_manager, cm, dataset_json, 2, states)
    log.info("loaded the tracking UNet of %s (folds %s, patch %s)", folder, checkpoint.folds, list(cm.patch_size))
    return LoadedModel(
        folder=folder, plans=plans, dataset_json=dataset_json, configuration=checkpoint.configuration,
        networks=networks, folds=list(checkpoint.folds), mirror_axes=checkpoint.mirror_axes,
        trainer_name=checkpoint.trainer_name, plans_manager=plans_manager, configuration_manager=cm,
        num_image_channels=1,
    )


class TrackUNetSegmenter(NnUNetSegmenter):
    """The segment engine's nnU-Net segmenter serving the UNet of a ``LesionLocatorTrack`` folder.

    The UNet was trained with the previous session's mask warped onto the follow-up as its prompt:
    use it on follow-ups with mask prompts (``track.prompt_source: previous_mask``). Built like its
    parent, from a ``SegmentConfig`` whose ``model_folder`` is that folder.
    """

    def _load(self, folder: Path) -> LoadedModel:
        return load_track_unet(folder, self.folds, self.checkpoint_name)
