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

Here :func:`build_track_registration` gives a :class:`~lesionlocator.register.Registration`
running that ``reg_net`` through the uniGradICON backend with the nnU-Net normalisation of the
folder's plans (the whole image is normalised and resized to 175^3; nnU-Net's crop to the non-zero
region and resampling to the target spacing are left out, as the 175^3 resize replaces them). With
several folds, the registration network of the first fold is used. The checkpoint is read, and its
UNet served, by :mod:`lesionlocator.segment.official` (``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import numpy as np

from lesionlocator.core.config import RegisterConfig
from lesionlocator.core.errors import InputError
from lesionlocator.segment.model import read_model_json
from lesionlocator.segment.official import CHECKPOINT_NAME, TrackCheckpoint, read_track_checkpoint

log = logging.getLogger(__name__)

_NORMALIZERS = ("CTNormalization", "ZScoreNormalization", "NoNormalization", "RescaleTo01Normalization")


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


