"""``nnUNetTrainerLesionLocator``: nnU-Net v2's trainer with one extra, simulated prompt channel.

Plans, preprocessing, data loading, augmentation, loss, optimiser and the checkpoint format are
nnU-Net's own. What differs:

* the network is built with ``num_input_channels + 1`` inputs (image channels, then the prompt);
* after augmentation, every sample of a batch gets one lesion picked from its (augmented) ground
  truth, a simulated prompt of a kind drawn from the configured mix, and a target reduced to that
  lesion alone, at every deep-supervision scale (downsampled like nnU-Net does, nearest-exact);
* a patch without any lesion gets an empty prompt channel and an empty target ("no prompt, no
  lesion"); foreground oversampling keeps these rare;
* with ``augmentation="light"`` nnU-Net's intensity degradations (Gaussian noise, Gaussian blur,
  simulated low resolution, gamma) are left out of its training transforms; spatial transforms,
  mirroring, brightness and contrast stay. At 3 mm a small lesion differs from its surroundings by a
  few tenths of a standard deviation: the degradations erase it in a good share of the patches, where
  only the prompt is left to learn from.

The saved ``trainer_name`` is this class's name; :func:`build_network_architecture` is a static
method, so an engine that finds this class (``lesionlocator.train.trainer``) rebuilds the network
exactly as nnU-Net's predictor does.
"""

from __future__ import annotations

import logging
import time
from typing import Mapping

import numpy as np
import torch
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from torch.nn.functional import interpolate

from lesionlocator.core.config import PromptNoise
from lesionlocator.core.progress import Progress
from lesionlocator.train.simulate import encode_prompt, sample_kind, simulate_prompt

PROMPT_CHANNELS = 1
log = logging.getLogger(__name__)
LIGHT_AUGMENTATION_DROPS = ("GaussianNoiseTransform", "GaussianBlurTransform", "SimulateLowResolutionTransform",
                            "GammaTransform")


class nnUNetTrainerLesionLocator(nnUNetTrainer):  # noqa: N801 (nnU-Net finds trainers by this name pattern)
    """Promptable nnU-Net trainer; set the run's settings with :meth:`configure` before training."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.prompt_mix: dict[str, float] = {"point": 1 / 3, "box": 1 / 3, "mask": 1 / 3}
        self.simulation = PromptNoise()
        self.oversample_foreground_percent = 1.0
        self.num_val_iterations_per_epoch = 5
        self.point_radius = 5.0
        self.time_limit_s: float | None = None
        self.augmentation = "nnunet"
        self._rng = np.random.default_rng(0)
        self._val_seed = 1

    def configure(
        self,
        *,
        epochs: int,
        iterations_per_epoch: int,
        val_iterations_per_epoch: int,
        prompt_mix: Mapping[str, float],
        foreground_oversample: float,
        seed: int,
        initial_lr: float | None = None,
        save_every: int | None = None,
        simulation: PromptNoise | None = None,
        point_radius: float = 5.0,
        time_limit_s: float | None = None,
        augmentation: str = "nnunet",
    ) -> None:
        """Training length, prompt mix and seed (call before :meth:`initialize`)."""
        self.num_epochs = int(epochs)
        self.num_iterations_per_epoch = int(iterations_per_epoch)
        self.num_val_iterations_per_epoch = int(val_iterations_per_epoch)
        self.prompt_mix = dict(prompt_mix)
        self.oversample_foreground_percent = float(foreground_oversample)
        if initial_lr is not None:
            self.initial_lr = float(initial_lr)
        if save_every is not None:
            self.save_every = int(save_every)
        if simulation is not None:
            self.simulation = simulation
        self.point_radius = float(point_radius)
        self.time_limit_s = time_limit_s
        if augmentation not in ("nnunet", "light"):
            raise ValueError(f"augmentation: use nnunet or light, got {augmentation!r}")
        self.augmentation = augmentation
        self._rng = np.random.default_rng(seed)
        self._val_seed = seed + 1
        self.print_to_log_file(
            f"LesionLocator prompts: mix {self.prompt_mix}, simulation {self.simulation.model_dump()}, seed {seed}, "
            f"augmentation {augmentation}"
        )

    @staticmethod
    def build_network_architecture(plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True):
        """nnU-Net's network for these plans, with ``PROMPT_CHANNELS`` more input channels."""
        return nnUNetTrainer.build_network_architecture(
            plans_manager, configuration_manager, num_input_channels + PROMPT_CHANNELS,
            num_output_channels, enable_deep_supervision,
        )

    def get_training_transforms(self, *args, **kwargs):
        """nnU-Net's training transforms, without its intensity degradations when augmentation is light."""
        composed = nnUNetTrainer.get_training_transforms(*args, **kwargs)
        if self.augmentation != "light":
            return composed
        kept = [t for t in composed.transforms
                if type(getattr(t, "transform", t)).__name__ not in LIGHT_AUGMENTATION_DROPS]
        return ComposeTransforms(kept)

    def plot_network_architecture(self) -> None:  # nnU-Net's plot assumes the image channels only
        return

    def add_prompts(self, batch: dict, rng: np.random.Generator) -> dict:
        """``batch`` with a prompt channel appended to ``data`` and ``target`` cut to the prompted lesion."""
        data, target = batch["data"], batch["target"]
        targets = target if isinstance(target, list) else [target]
        full = targets[0]
        seg = full[:, 0].cpu().numpy()
        shape = tuple(seg.shape[1:])
        prompt = np.zeros((seg.shape[0], PROMPT_CHANNELS, *shape), dtype=np.float32)
        chosen = np.zeros(seg.shape, dtype=np.float32)
        for b in range(seg.shape[0]):
            kind = sample_kind(self.prompt_mix, rng)
            simulated = simulate_prompt(np.where(seg[b] > 0, seg[b], 0), kind, rng, self.simulation)
            if simulated is None:
                continue
            prompt[b, 0] = encode_prompt(simulated, shape, self.point_radius)
            chosen[b] = simulated.target
        chosen_t = torch.from_numpy(chosen)[:, None]
        new_targets = []
        for t in targets:
            scaled = chosen_t if t.shape[2:] == chosen_t.shape[2:] else interpolate(
                chosen_t, size=tuple(t.shape[2:]), mode="nearest-exact")
            new_targets.append(scaled.to(t.dtype))
        data = torch.cat([data, torch.from_numpy(prompt).to(data.dtype)], dim=1)
        return {**batch, "data": data, "target": new_targets if isinstance(target, list) else new_targets[0]}

    def load_initial_weights(self, weights: Mapping[str, torch.Tensor], source) -> None:
        """Start from another run's network weights, every layer (fine-tuning on the same task; the
        optimiser, epoch count and logs start afresh). :class:`InputError` names ``source`` when they do not fit."""
        from lesionlocator.core.errors import InputError

        if not self.was_initialized:
            self.initialize()
        network = self.network.module if self.is_ddp else self.network
        network = getattr(network, "_orig_mod", network)  # torch.compile wrapper (GPU)
        try:
            network.load_state_dict(weights)
        except RuntimeError as err:
            raise InputError(source, f"weights do not fit this run's network ({str(err).splitlines()[0][:200]})") from None

    def train_step(self, batch: dict) -> dict:
        return super().train_step(self.add_prompts(batch, self._rng))

    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        self._val_rng = np.random.default_rng(self._val_seed)

    def validation_step(self, batch: dict) -> dict:
        return super().validation_step(self.add_prompts(batch, self._val_rng))

    def run_training(self) -> None:
        """nnU-Net's epoch loop, except that the epoch count may shrink to fit ``time_limit_s``."""
        self.on_train_start()
        first_epoch, started = self.current_epoch, time.perf_counter()
        # a log line per epoch for the job's log; no bar: nnU-Net prints its own epoch lines to the console
        with Progress("train", self.num_epochs, unit="epoch", logger=log, interval_s=0.0, bar=False,
                      initial=first_epoch) as progress:
            while self.current_epoch < self.num_epochs:
                self.on_epoch_start()
                self.on_train_epoch_start()
                train_outputs = [self.train_step(next(self.dataloader_train)) for _ in range(self.num_iterations_per_epoch)]
                self.on_train_epoch_end(train_outputs)
                with torch.no_grad():
                    self.on_validation_epoch_start()
                    val_outputs = [self.validation_step(next(self.dataloader_val))
                                   for _ in range(self.num_val_iterations_per_epoch)]
                    self.on_validation_epoch_end(val_outputs)
                self.on_epoch_end()
                self._fit_time_budget(first_epoch, time.perf_counter() - started)
                progress.set_total(self.num_epochs)
                progress.advance(self._epoch_note())
        self.on_train_end()

    def _epoch_note(self) -> str:
        """The last epoch's losses and mean pseudo Dice, from nnU-Net's logger."""
        value = self.logger.get_value
        return (f"train loss {value('train_losses', step=-1):.4f}, val loss {value('val_losses', step=-1):.4f}, "
                f"pseudo Dice {value('mean_fg_dice', step=-1):.4f}")

    def _fit_time_budget(self, first_epoch: int, elapsed: float) -> None:
        """Set ``num_epochs`` (and the poly LR schedule with it) to what fits the time budget.

        Re-estimated after every epoch from the mean epoch time so far, never above the configured
        epoch count nor below the epochs already done (a slow start on a shared machine is
        recovered when it speeds up).
        """
        if not self.time_limit_s or self.current_epoch <= first_epoch:
            return
        if not hasattr(self, "_configured_epochs"):
            self._configured_epochs = self.num_epochs
        per_epoch = elapsed / (self.current_epoch - first_epoch)
        fits = self.current_epoch + int(max(0.0, self.time_limit_s - elapsed) // per_epoch)
        target = max(self.current_epoch, min(self._configured_epochs, fits))
        if target != self.num_epochs:
            self.print_to_log_file(f"time budget {self.time_limit_s:.0f} s: {per_epoch:.1f} s/epoch so far, "
                                   f"training {target} epochs (configured {self._configured_epochs})")
            self.num_epochs = target
            self.lr_scheduler.max_steps = target
