"""The classical promptable segmenter: no weights, the baseline every learned model must beat.

For each prompt, inside a region of interest around it:

1. the image is smoothed (Gaussian, ``classical_smoothing_mm``);
2. an intensity model is estimated from the prompt: lesion = a robust Gaussian fitted to the
   prompt's core (a box's central ellipsoid, a point's small neighbourhood, a mask's interior);
   background = the intensity histogram of a shell around the prompt (outside the box, outside the
   dilated mask, or the whole search sphere of a point);
3. a shape prior (an ellipsoid inscribed in the box, the distance to the previous mask, the
   distance to the point) and the two likelihoods give a posterior per voxel;
4. confident voxels become seeds of a random walker (``skimage.segmentation.random_walker``) on
   the smoothed intensities, which places the boundary on edges between the seeds;
5. the component touching the prompt core is kept, holes filled.

The random walker's foreground probability is the lesion's probability (used for overlaps and the
score). Units: millimetres for the parameters, voxel indices (z, y, x) for the prompts.
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from lesionlocator.core.config import SegmentConfig
from lesionlocator.core.regions import label_components, shell_around
from lesionlocator.segment.api import LesionPrediction, Prompt, SegmentationResult, check_prompts, combine_predictions

log = logging.getLogger(__name__)


def _gauss_logpdf(x: np.ndarray, mu: float, sd: float) -> np.ndarray:
    return -0.5 * ((x - mu) / sd) ** 2 - np.log(sd)


def _robust_stats(values: np.ndarray, min_sd: float) -> tuple[float, float]:
    mu = float(np.median(values))
    sd = float(1.4826 * np.median(np.abs(values - mu)))
    return mu, max(sd, min_sd)


def _hist_logpdf(samples: np.ndarray, x: np.ndarray, bandwidth: float) -> np.ndarray:
    """Log density of ``x`` under a smoothed histogram of ``samples``."""
    lo, hi = float(min(samples.min(), x.min())) - 4 * bandwidth, float(max(samples.max(), x.max())) + 4 * bandwidth
    bins = int(np.clip((hi - lo) / (bandwidth / 2), 16, 4096))
    hist, edges = np.histogram(samples, bins=bins, range=(lo, hi), density=True)
    hist = ndimage.gaussian_filter1d(hist, sigma=2.0, mode="constant") + 1e-6 / (hi - lo)
    idx = np.clip(np.searchsorted(edges, x) - 1, 0, bins - 1)
    return np.log(hist[idx])


class ClassicalSegmenter:
    """Prompt-driven intensity model + random-walker refinement (CPU, deterministic)."""

    def __init__(self, config: SegmentConfig):
        """The classical segmenter with the ``classical_*`` settings of ``config`` (the rest is unused)."""
        self.config = config
        self.seconds_per_lesion: list[float] = []

    # -- regions of interest ------------------------------------------------------------------
    def _roi(self, lo: np.ndarray, hi: np.ndarray, margin_vox: np.ndarray, shape) -> tuple[slice, slice, slice]:
        a = np.floor(lo - margin_vox).astype(int)
        b = np.ceil(hi + margin_vox).astype(int) + 1
        a = np.clip(a, 0, np.asarray(shape) - 1)
        b = np.clip(b, a + 1, np.asarray(shape))
        return tuple(slice(int(x), int(y)) for x, y in zip(a, b))

    def _smooth(self, roi: np.ndarray, spacing: np.ndarray) -> np.ndarray:
        smoothing_mm = self.config.classical_smoothing_mm
        if smoothing_mm <= 0:
            return roi.astype(np.float32)
        return ndimage.gaussian_filter(roi.astype(np.float32), sigma=smoothing_mm / spacing, mode="nearest")

    # -- per prompt kind: core (lesion sample), shell (background sample), prior ---------------
    def _box_model(self, prompt: Prompt, shape, spacing):
        lo, hi = (np.asarray(c, float) for c in prompt.box)
        margin = np.maximum(self.config.classical_margin_mm / spacing, 2.0)
        sl = self._roi(lo, hi, margin, shape)
        offset = np.array([s.start for s in sl])
        grids = np.ogrid[tuple(slice(0, s.stop - s.start) for s in sl)]
        centre = (lo + hi) / 2 - offset
        half = (hi - lo) / 2 + 0.5
        d = np.sqrt(sum(((g - c) / h) ** 2 for g, c, h in zip(grids, centre, half)))
        inside_box = np.ones(d.shape, bool)
        for axis, g in enumerate(grids):
            inside_box &= (g >= lo[axis] - offset[axis] - 0.5) & (g <= hi[axis] - offset[axis] + 0.5)
        core = d <= 0.5
        outside = ~ndimage.binary_dilation(inside_box, iterations=1)
        prior = 1.0 / (1.0 + np.exp((d - 1.0) * 6.0))
        prior = np.where(inside_box, prior, 0.0)
        return sl, core, outside, prior

    def _point_model(self, prompt: Prompt, shape, spacing):
        p = np.asarray(prompt.point, float)
        radius_mm = self.config.classical_point_radius_mm
        radius = radius_mm / spacing
        sl = self._roi(p, p, radius, shape)
        offset = np.array([s.start for s in sl])
        grids = np.ogrid[tuple(slice(0, s.stop - s.start) for s in sl)]
        dist_mm = np.sqrt(sum(((g - (c - o)) * sp) ** 2 for g, c, o, sp in zip(grids, p, offset, spacing)))
        # The core is measured with the finest spacing: with the coarsest (10 mm slices) it would
        # reach far beyond a small lesion in-plane and sample the background as 'lesion'.
        core = dist_mm <= max(1.5 * spacing.min(), 4.0)
        outside = dist_mm >= radius_mm
        # Weak prior: lesions are compact around the click.
        prior = 0.5 / (1.0 + np.exp((dist_mm - 0.6 * radius_mm) / (0.1 * radius_mm)))
        return sl, core, outside, prior

    def _mask_model(self, prompt: Prompt, shape, spacing):
        lo, hi = prompt.extent()
        size_mm = (hi - lo + 1) * spacing
        margin_mm = max(self.config.classical_margin_mm, 0.5 * float(np.median(size_mm)))
        sl = self._roi(lo, hi, np.maximum(margin_mm / spacing, 2.0), shape)
        mask = prompt.mask[sl]
        inside_mm = ndimage.distance_transform_edt(mask, sampling=spacing)
        outside_mm = ndimage.distance_transform_edt(~mask, sampling=spacing)
        signed = np.where(mask, -inside_mm, outside_mm)  # negative inside
        radius = max(float(inside_mm.max()), spacing.min())
        core = inside_mm >= 0.5 * radius
        if core.sum() < 4:
            core = mask
        outside = outside_mm > 0.5 * margin_mm
        prior = 1.0 / (1.0 + np.exp(signed / max(0.3 * radius, spacing.min())))
        return sl, core, outside, prior

    # -- the segmentation of one lesion ------------------------------------------------------
    def predict_lesion(self, array: np.ndarray, spacing: np.ndarray, prompt: Prompt) -> LesionPrediction | None:
        """One lesion; a mask prompt (the previous session's mask) follows growth beyond its margin.

        A grown lesion reaches the background shell around its previous mask; the prediction then
        becomes the mask prompt of another pass, at most ``MAX_GROWTH_PASSES`` times.
        """
        first = prediction = self._predict_once(array, spacing, prompt)
        grew = False
        for _ in range(self.MAX_GROWTH_PASSES):
            if prompt.kind != "mask" or prediction is None or not self._reaches_shell(prediction, prompt, array.shape, spacing):
                break
            grown = np.zeros(array.shape, dtype=bool)
            grown[prediction.slices] = prediction.mask
            prompt = Prompt(prompt.lesion_id, "mask", mask=grown)
            prediction = self._predict_once(array, spacing, prompt)
            grew = True
        if grew and prediction is not None:
            # Keep the growth only for a lesion that stands out from its new surroundings: where the
            # lesion has faded into the tissue (vanished), the walker spreads over the organ instead.
            final = np.zeros(array.shape, dtype=bool)
            final[prediction.slices] = prediction.mask
            if not final.any() or self._contrast_to_noise(array, spacing, final) < self.MIN_GROWTH_CONTRAST:
                return first
        return prediction

    MAX_GROWTH_PASSES = 3
    MIN_GROWTH_CONTRAST = 1.5

    def _contrast_to_noise(self, array: np.ndarray, spacing: np.ndarray, mask: np.ndarray) -> float:
        """|median inside - median of a 2-6 mm shell| over the shell's robust spread."""
        region = shell_around(mask, spacing)
        if region is None or region[2].sum() < 8:
            return np.inf
        sl, local, shell = region
        image = self._smooth(array[sl], spacing)
        inner, ring = image[local], image[shell]
        spread = 1.4826 * float(np.median(np.abs(ring - np.median(ring)))) or 1.0
        return abs(float(np.median(inner)) - float(np.median(ring))) / spread

    def _reaches_shell(self, prediction: LesionPrediction, prompt: Prompt, shape, spacing) -> bool:
        """Whether the predicted mask grew up to the background seeds of its mask prompt."""
        sl, _, outside, _ = self._mask_model(prompt, shape, spacing)
        full = np.zeros(shape, dtype=bool)
        full[prediction.slices] = prediction.mask
        local = full[sl]
        grown = local.sum() > 1.1 * prompt.mask[sl].sum()
        touching = ndimage.binary_dilation(local, iterations=1) & outside
        return bool(grown and touching.sum() >= max(3, 0.02 * local.sum()))

    def _predict_once(self, array: np.ndarray, spacing: np.ndarray, prompt: Prompt) -> LesionPrediction | None:
        from skimage.segmentation import random_walker

        if prompt.kind == "mask" and not prompt.mask.any():
            return None
        model = {"box": self._box_model, "point": self._point_model, "mask": self._mask_model}[prompt.kind]
        sl, core, outside, prior = model(prompt, array.shape, spacing)
        image = self._smooth(array[sl], spacing)
        core_values = image[core]
        bg_values = image[outside]
        if bg_values.size < 16:
            bg_values = image[~core]
        if core_values.size == 0 or bg_values.size == 0:
            return None
        bg_mu, bg_sd = _robust_stats(bg_values, 1.0)
        mu, sd = _robust_stats(core_values, max(5.0, 0.05 * bg_sd))
        bandwidth = max(sd / 2, 2.0)
        log_fg = _gauss_logpdf(image, mu, sd)
        log_bg = _hist_logpdf(bg_values, image.ravel(), bandwidth).reshape(image.shape)
        with np.errstate(divide="ignore"):
            log_prior = np.log(np.clip(prior, 1e-6, 1 - 1e-6)) - np.log(np.clip(1 - prior, 1e-6, 1))
        posterior = 1.0 / (1.0 + np.exp(-np.clip(log_fg - log_bg + log_prior, -50, 50)))

        seeds = np.zeros(image.shape, dtype=np.int32)
        seeds[(posterior < 0.05) | outside] = 2
        fg_seed = core & (posterior > 0.5)
        if not fg_seed.any():
            fg_seed = core & (np.abs(image - mu) <= np.abs(image[core] - mu).min() + 1e-3)
        seeds[fg_seed] = 1
        if not (seeds == 2).any():
            return None
        unknown = seeds == 0
        if unknown.any():
            scale = max(abs(mu - bg_mu), 2.0 * sd)
            data = (image - mu) / scale
            with warnings.catch_warnings():  # slightly out-of-range probabilities are clipped below
                warnings.simplefilter("ignore", UserWarning)
                prob = random_walker(
                    data, seeds, beta=self.config.classical_beta, mode="cg_j", tol=1e-3, prob_tol=0.05,
                    spacing=tuple(spacing / spacing.min()), return_full_prob=True,
                )[0].clip(0, 1).astype(np.float32)
            # Blend with the posterior so voxels the walker reaches only weakly follow the intensity model.
            prob = 0.5 * prob + 0.5 * posterior.astype(np.float32)
            prob[seeds == 1] = np.maximum(prob[seeds == 1], 0.5 + 0.5 * posterior[seeds == 1])
            prob[seeds == 2] = np.minimum(prob[seeds == 2], 0.5 * posterior[seeds == 2])
        else:
            prob = (seeds == 1).astype(np.float32)
        mask = prob > 0.5
        labelled, n = label_components(mask, connectivity=6)
        if n > 1:
            hits = np.bincount(labelled[fg_seed & mask], minlength=n + 1)
            hits[0] = 0
            keep = int(np.argmax(hits)) if hits.max() > 0 else int(np.argmax(np.bincount(labelled.ravel())[1:]) + 1)
            mask = labelled == keep
        mask = ndimage.binary_fill_holes(mask)
        prob = np.where(mask, np.maximum(prob, 0.5 + 1e-3), np.minimum(prob, 0.5)).astype(np.float32)
        return LesionPrediction(lesion_id=int(prompt.lesion_id), slices=sl, probability=prob)

    def segment(self, image: sitk.Image, prompts: Sequence[Prompt]) -> SegmentationResult:
        array = sitk.GetArrayFromImage(image)
        prompts = check_prompts(prompts, array.shape)
        spacing = np.asarray(image.GetSpacing(), float)[::-1]
        predictions = []
        for prompt in prompts:
            t0 = time.perf_counter()
            pred = self.predict_lesion(array, spacing, prompt)
            if pred is not None:
                predictions.append(pred)
            self.seconds_per_lesion.append(time.perf_counter() - t0)
        return combine_predictions(array.shape, predictions, [p.lesion_id for p in prompts])
