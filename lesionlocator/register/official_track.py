"""The released ``LesionLocatorTrack`` checkpoint as a backend pair: its registration network and its UNet.

The format (facts of the released checkpoint and of the LesionLocator code that wrote it):

* ``LesionLocatorTrack/`` (inside ``LesionLocatorCheckpoint/``, next to ``LesionLocatorSeg/``) is an
  nnU-Net v2 trained-model folder: ``plans.json``, ``dataset.json``, ``fold_N/checkpoint_final.pth``;
  the checkpoint is a dict with ``network_weights``, ``trainer_name`` (``LesionLocatorTrainerTrack``),
  ``init_args`` (``configuration``) and ``inference_allowed_mirroring_axes``.
* ``network_weights`` is ONE state dict of the whole tracking network:

  - ``reg_net.*``: a uniGradICON network, ``unigradicon.make_network([1, 1, 175, 175, 175],
    include_last_step=True)``, so ``reg_net.regis_net.*`` (identity maps are not saved);
  - ``unet.*``: the ``ResidualEncoderUNet`` of the plans' configuration, built with the image
    channels plus one (the prompt: the previous mask warped by ``reg_net``), without deep supervision;
  - ``unet_patch_size``: a tensor, the UNet's patch size (z, y, x), the configuration's ``patch_size``.

* During training and in the released inference, ``reg_net`` sees both sessions preprocessed by
  nnU-Net (normalised with the plans' scheme, e.g. ``CTNormalization``: clipped to the foreground
  0.5-99.5 percentiles, minus the mean, over the std), each resized (trilinear) to 175^3 over its
  own extent, with A = the previous session and B = the follow-up (``phi_AB`` warps the previous
  mask onto the follow-up).

Here (a) :func:`build_track_registration` gives a :class:`~lesionlocator.register.Registration`
running that ``reg_net`` through the uniGradICON backend with the nnU-Net normalisation of the
folder's plans (the whole image is normalised and resized to 175^3; nnU-Net's crop to the non-zero
region and resampling to the target spacing are left out, as the 175^3 resize replaces them). With
several folds, the registration network of the first fold is used. (b) :class:`TrackUNetSegmenter`
serves the ``unet.*`` weights as a segment-engine model (``LoadedModel``, every fold), selected when
``segment.checkpoint`` points at a ``LesionLocatorTrack`` folder. Checkpoints are read with
``torch.load(weights_only=True)`` (:func:`lesionlocator.segment.model.load_checkpoint`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from lesionlocator.config import RegisterConfig
from lesionlocator.errors import InputError
from lesionlocator.segment.model import (
    LoadedModel,
    _check_architecture,
    read_model_json,
    build_fold_networks,
    find_folds,
    load_checkpoint,
)
from lesionlocator.segment.nnunet import NnUNetSegmenter

log = logging.getLogger(__name__)

TRACK_FOLDER = "LesionLocatorTrack"
REG_PREFIX = "reg_net."
UNET_PREFIX = "unet."
PATCH_KEY = "unet_patch_size"
CHECKPOINT_NAME = "checkpoint_final.pth"
_NORMALIZERS = ("CTNormalization", "ZScoreNormalization", "NoNormalization", "RescaleTo01Normalization")


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


# -- (a) the registration network ----------------------------------------------------------------
def nnunet_normalizer(folder: Path, configuration: str) -> Callable[[np.ndarray], tuple[np.ndarray, str]]:
    """The plans' normalisation of channel 0 (nnU-Net's own classes), as the tracking network was trained."""
    from nnunetv2.preprocessing.normalization import default_normalization_schemes as schemes
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans_manager = PlansManager(read_model_json(folder / "plans.json"))
    if configuration not in plans_manager.available_configurations:
        raise InputError(folder / "plans.json", f"configuration {configuration!r} (from the checkpoint) not in the plans")
    cm = plans_manager.get_configuration(configuration)
    scheme = cm.normalization_schemes[0]
    if scheme not in _NORMALIZERS:
        raise InputError(folder / "plans.json", f"unsupported normalisation scheme {scheme!r}")
    properties = plans_manager.foreground_intensity_properties_per_channel.get("0", {})
    use_mask = bool(cm.use_mask_for_norm[0])

    def normalize(array: np.ndarray) -> tuple[np.ndarray, str]:
        normalizer = getattr(schemes, scheme)(use_mask_for_norm=use_mask, intensityproperties=properties)
        seg = np.zeros(array.shape, dtype=np.int8)  # "inside the non-zero crop" everywhere: no crop here
        return normalizer.run(array.astype(np.float32), seg).astype(np.float32), f"nnunet:{scheme}"

    return normalize


def build_track_registration(
    config: RegisterConfig,
    checkpoint: TrackCheckpoint | None = None,
    network_shape: tuple[int, int, int] | None = None,
):
    """A Registration (uniGradICON backend) running the ``reg_net`` of ``register.track_checkpoint``.

    ``network_shape`` replaces the 175^3 input of training (for tests only: the network is
    convolutional, so the weights load at any shape, but it was trained at 175^3).
    """
    from lesionlocator.register.unigradicon_backend import (
        NETWORK_SHAPE,
        UniGradICONRegistration,
        build_network,
        require_extra,
    )

    require_extra()
    if checkpoint is None:
        if config.track_checkpoint is None:
            raise InputError("register.track_checkpoint", "required by the lesionlocator_track backend")
        checkpoint = read_track_checkpoint(config.track_checkpoint, folds=None)
    source = checkpoint.folder / f"fold_{checkpoint.folds[0]}" / CHECKPOINT_NAME
    network = build_network(checkpoint.reg_states[0], source, shape=network_shape or NETWORK_SHAPE)
    normalize = nnunet_normalizer(checkpoint.folder, checkpoint.configuration)
    log.info("tracking registration network of %s (fold %s)", checkpoint.folder, checkpoint.folds[0])
    return UniGradICONRegistration(config, network=network, normalize=normalize, name="lesionlocator_track")


# -- (b) the UNet as a segment-engine model ------------------------------------------------------
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
    _check_architecture(
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
    use it on follow-ups with mask prompts (``track.prompt_source: previous_mask``).
    """

    def _model_for(self, kind: str) -> LoadedModel:
        folder = self._folder_for(kind)
        if folder not in self._models:
            model = load_track_unet(folder, self.folds, self.checkpoint_name)
            model.networks = [net.to(self.device) for net in model.networks]
            self._models[folder] = model
        return self._models[folder]
