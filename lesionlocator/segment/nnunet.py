"""Promptable nnU-Net v2 inference: preprocessing from the plans, prompt-focused patches, back-mapping.

Per scan and model, the image is preprocessed once as nnU-Net does (transpose, crop to non-zero,
normalisation per the plans' scheme, resampling to the target spacing). Per lesion, the prompt is
encoded as the second input channel; when the prompt fits in a patch, one patch centred on it is
predicted, otherwise sliding windows (Gaussian-weighted) over the prompt's extent only. Mirroring
TTA and fold ensembling average logits. The foreground probability is mapped back onto the input
voxel grid by linear interpolation (exactly inverting the resampling); voxels no patch covered are
background. A box prompt bounds its lesion: the probability outside the box (grown by
``box_margin_mm``; None keeps the network's output as it is) is set to zero, as the classical
segmenter does.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage

from lesionlocator.core.config import SegmentConfig
from lesionlocator.core.devices import resolve_device
from lesionlocator.core.errors import InputError
from lesionlocator.core.io import Geometry
from lesionlocator.core.regions import nonzero_box
from lesionlocator.segment.api import LesionPrediction, Prompt, SegmentationResult, check_prompts, combine_predictions
from lesionlocator.segment.encode import GridMap, encode_prompt
from lesionlocator.segment.model import LoadedModel, check_model_files, load_model, resolve_model_folders, use_onednn_convolutions

log = logging.getLogger(__name__)


@dataclass
class Preprocessed:
    data: np.ndarray  # float32 (net_z, net_y, net_x), normalised, on the network grid
    grid: GridMap
    # the normalised image before resampling (transposed, cropped input grid) and its spacing (mm, same
    # axes): what a fine window (:func:`fine_window`) is resampled from; None when not kept
    normalised: np.ndarray | None = None
    spacing: tuple[float, ...] = ()


@dataclass
class InferenceStats:
    """Where the time went (seconds), for benchmarks."""

    preprocess: float = 0.0
    forward: float = 0.0
    preprocess_cpu: float = 0.0  # CPU seconds of this process (all threads) for the same steps
    forward_cpu: float = 0.0
    total: float = 0.0
    patches: int = 0
    forwards: int = 0  # patch copies through a network (fold x mirror); a batch of mirrored copies counts each
    fine: int = 0  # lesions segmented on the fine grid (segment.fine_zoom)
    lesions: int = 0
    by_lesion: list[float] = field(default_factory=list)


_NORMALIZERS = ("CTNormalization", "ZScoreNormalization", "NoNormalization", "RescaleTo01Normalization",
                "BodyZScoreNormalization")


def nonzero_crop(data: np.ndarray, with_mask: bool) -> tuple[np.ndarray, np.ndarray | None, tuple[int, ...]]:
    """nnU-Net's ``crop_to_nonzero`` of ``data`` (c, z, y, x): the bounding box of its non-zero voxels, and,
    only when ``with_mask``, its ``seg`` (0 inside the hole-filled non-zero mask, -1 outside).

    The box of the non-zero voxels is that of nnU-Net's hole-filled mask (a hole lies inside it), and
    filling holes in the crop gives nnU-Net's mask there (no hole reaches the box's faces): no fill of
    the whole volume (1.4 s for a 512 x 512 x 168 CT) when the normalisation does not use the mask.
    """
    from scipy.ndimage import binary_fill_holes

    nonzero = np.any(data != 0, axis=0)
    box = nonzero_box(nonzero)
    if box is None:
        return data, (np.zeros(data.shape, dtype=np.int8) if with_mask else None), (0, 0, 0)
    data = data[(slice(None), *box)]
    seg = None
    if with_mask:
        seg = np.where(binary_fill_holes(nonzero[box]), np.int8(0), np.int8(-1))[None]
    return data, seg, tuple(b.start for b in box)


def preprocess(model: LoadedModel, array_zyx: np.ndarray, spacing_zyx: Sequence[float], keep_normalised: bool = False) -> Preprocessed:
    """nnU-Net preprocessing of one single-channel image (z, y, x) for ``model``.

    As nnU-Net does it (transpose, crop to non-zero, normalisation, resampling to the target spacing),
    with its default data resampling computed as per-axis matrix products
    (:func:`~lesionlocator.segment.resampling.resample_like_nnunet`) and the non-zero mask filled only
    when the normalisation uses it. ``keep_normalised``: also keep the normalised image before
    resampling, for :func:`fine_window`.
    """
    from nnunetv2.preprocessing.normalization import default_normalization_schemes as schemes
    from nnunetv2.preprocessing.resampling.default_resampling import compute_new_shape

    import lesionlocator.segment.normalization  # noqa: F401 (registers BodyZScoreNormalization with nnU-Net)

    pm, cm = model.plans_manager, model.configuration_manager
    transpose = tuple(int(t) for t in pm.transpose_forward)
    data = np.ascontiguousarray(np.transpose(array_zyx, transpose), dtype=np.float32)[None]
    spacing = [float(spacing_zyx[t]) for t in transpose]
    use_mask = bool(cm.use_mask_for_norm[0])
    data, seg, crop_start = nonzero_crop(data, with_mask=use_mask)
    crop_shape = tuple(int(s) for s in data.shape[1:])
    target = list(cm.spacing)
    new_shape = tuple(int(s) for s in compute_new_shape(crop_shape, spacing, target))
    scheme = cm.normalization_schemes[0]
    if scheme not in _NORMALIZERS:
        raise InputError(model.folder / "plans.json", f"unsupported normalisation scheme {scheme!r}")
    normalizer = getattr(schemes, scheme)(
        use_mask_for_norm=use_mask,
        intensityproperties=pm.foreground_intensity_properties_per_channel.get("0", {}),
    )
    data = np.ascontiguousarray(data)  # our own copy already; normalisers may work in place
    data[0] = normalizer.run(data[0], seg[0] if seg is not None else None)
    normalised = data[0] if keep_normalised else None
    data = _resample(model, data, new_shape, spacing, target)
    grid = GridMap(transpose=transpose, crop_start=crop_start, crop_shape=crop_shape, net_shape=new_shape)
    return Preprocessed(data=np.ascontiguousarray(data[0], dtype=np.float32), grid=grid, normalised=normalised, spacing=tuple(spacing))


def _resample(model: LoadedModel, data: np.ndarray, new_shape, spacing, target) -> np.ndarray:
    """nnU-Net's data resampling of the plans (``data``: (1, z, y, x) in the transposed frame)."""
    from lesionlocator.segment.resampling import is_nnunet_data_resampling, resample_like_nnunet

    if tuple(new_shape) == tuple(data.shape[1:]):
        return data
    resample = model.configuration_manager.resampling_fn_data
    if FAST_RESAMPLING and is_nnunet_data_resampling(resample):
        return resample_like_nnunet(data, new_shape, spacing, target, **resample.keywords)
    return resample(data, new_shape, spacing, target)


def fine_window(model: LoadedModel, pre: Preprocessed, lo_zyx: np.ndarray, hi_zyx: np.ndarray, zoom: float) -> Preprocessed:
    """A region of the scan preprocessed on a grid ``zoom`` times finer than the model's: the voxels
    ``lo_zyx``..``hi_zyx`` (input indices, inclusive) grown by one patch of that finer grid on every
    side, cut from the normalised image ``pre`` kept (normalised over the whole scan, as the coarse
    grid) and resampled as nnU-Net resamples, to the plans' spacing divided by ``zoom``. The network
    then sees a small lesion as large as one ``zoom`` times its size."""
    from nnunetv2.preprocessing.resampling.default_resampling import compute_new_shape

    grid = pre.grid
    target = [float(s) / zoom for s in model.configuration_manager.spacing]
    reach = np.asarray(model.patch_size, float) * np.asarray(target) / np.asarray(pre.spacing)  # one fine patch, in input voxels
    lo_t = np.asarray(lo_zyx, float)[list(grid.transpose)] - np.asarray(grid.crop_start)
    hi_t = np.asarray(hi_zyx, float)[list(grid.transpose)] - np.asarray(grid.crop_start)
    shape = np.asarray(pre.normalised.shape)
    start = np.clip(np.floor(lo_t - reach), 0, shape - 1).astype(int)
    stop = np.clip(np.ceil(hi_t + reach) + 1, start + 1, shape).astype(int)
    region = pre.normalised[tuple(slice(a, b) for a, b in zip(start, stop))]
    new_shape = tuple(int(s) for s in compute_new_shape(region.shape, list(pre.spacing), target))
    data = _resample(model, np.ascontiguousarray(region)[None], new_shape, list(pre.spacing), target)
    fine = GridMap(transpose=grid.transpose, crop_start=tuple(int(c + a) for c, a in zip(grid.crop_start, start)),
                   crop_shape=tuple(int(v) for v in region.shape), net_shape=new_shape)  # fmt: skip
    return Preprocessed(data=np.ascontiguousarray(data[0], dtype=np.float32), grid=fine)


#: The least zoom worth a fine pass (a grid barely finer than the network's changes nothing).
MIN_FINE_ZOOM = 1.25

FAST_RESAMPLING = True
"""nnU-Net's default data resampling as per-axis matrix products (False: nnU-Net's own function; the
tests compare both)."""


def patch_starts(lo: np.ndarray, hi: np.ndarray, shape: np.ndarray, patch: np.ndarray, step: float) -> list[np.ndarray]:
    """Patch corners covering the prompt's extent ``[lo, hi)`` of the network grid.

    Per axis: one patch centred on the extent when it fits, otherwise windows at most
    ``step * patch`` apart spanning it. Patches stay inside the image where the image is at least
    a patch long, and are centred on it (zero-padded) where it is shorter.
    """
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

    per_axis = []
    for a in range(3):
        if shape[a] <= patch[a]:
            per_axis.append([-((patch[a] - shape[a]) // 2)])
            continue
        extent = hi[a] - lo[a]
        if extent <= patch[a]:
            start = int(np.round((lo[a] + hi[a]) / 2 - patch[a] / 2))
            per_axis.append([int(np.clip(start, 0, shape[a] - patch[a]))])
        else:
            steps = compute_steps_for_sliding_window((int(extent),), (int(patch[a]),), step)[0]
            per_axis.append([int(lo[a] + s) for s in steps])
    return [np.array(c) for c in itertools.product(*per_axis)]


def window(array: np.ndarray, start: np.ndarray, size: np.ndarray) -> np.ndarray:
    """``array[start:start+size]`` with zeros where the window leaves the array."""
    out = np.zeros(tuple(int(s) for s in size), dtype=np.float32)
    a = np.maximum(start, 0)
    b = np.minimum(start + size, array.shape)
    if np.all(b > a):
        out[tuple(slice(int(x - s), int(y - s)) for x, y, s in zip(a, b, start))] = array[
            tuple(slice(int(x), int(y)) for x, y in zip(a, b))
        ]
    return out


def cut_to_box(pred: LesionPrediction, box, margin_vox) -> LesionPrediction:
    """``pred`` with zero probability outside the voxel box ``box`` ((z, y, x) min and max voxel
    centres, inclusive) grown by ``margin_vox`` voxels per axis (0.5: the box's own voxels)."""
    lo = np.asarray(box[0], float) - margin_vox
    hi = np.asarray(box[1], float) + margin_vox
    inside = np.ones(pred.probability.shape, bool)
    for axis, sl in enumerate(pred.slices):
        index = np.arange(sl.start, sl.start + pred.probability.shape[axis])
        keep = (index >= lo[axis] - 1e-6) & (index <= hi[axis] + 1e-6)
        inside &= keep.reshape([-1 if a == axis else 1 for a in range(3)])
    return replace(pred, probability=np.where(inside, pred.probability, 0.0).astype(np.float32))


class NnUNetSegmenter:
    """A promptable nnU-Net v2 model (or the released point/box pair), loaded once, reused per scan."""

    def __init__(self, config: SegmentConfig):
        """The network of ``config.model_folder`` with the ``segment`` settings of ``config`` (folds,
        checkpoint name, device, prompt encoding, mirroring, step size, box cut, CPU threads)."""
        if config.model_folder is None:
            raise ValueError(f"segment.segmenter is {config.segmenter!r}: no network to load")
        self.config = config
        self.device = resolve_device(config.device, "segment.device")
        if config.cpu_threads:
            torch.set_num_threads(config.cpu_threads)
        self.folders = resolve_model_folders(config.model_folder)
        self.folds = list(config.folds) if config.folds else None
        self.checkpoint_name = config.checkpoint_name
        for folder in self.folders.values():  # fail before any work when files are missing
            check_model_files(folder, self.folds, self.checkpoint_name)
        self._models: dict[Path, LoadedModel] = {}
        # the released point/box pair never saw a mask prompt: a mask goes to the box model as its box
        encoding = config.mask_prompt_encoding
        self.mask_as_box = encoding == "box" or (encoding == "auto" and "any" not in self.folders)
        self._preprocessed: tuple[tuple, dict[Path, Preprocessed]] | None = None  # the last scan's, by model
        self.stats = InferenceStats()
        if "any" in self.folders:
            self._model_for("box")  # a single model: load it now

    # -- models -----------------------------------------------------------------------------
    def _folder_for(self, kind: str) -> Path:
        if "any" in self.folders:
            return self.folders["any"]
        wanted = "point" if kind == "point" else "box"
        if wanted in self.folders:
            return self.folders[wanted]
        other = next(iter(self.folders.values()))
        log.warning("no %s-optimised model in the checkpoint; using %s for %s prompts", wanted, other, kind)
        return other

    def _model_for(self, kind: str) -> LoadedModel:
        folder = self._folder_for(kind)
        if folder not in self._models:
            model = self._load(folder)
            model.networks = [self._place(net) for net in model.networks]
            self._models[folder] = model
        return self._models[folder]

    def _load(self, folder: Path) -> LoadedModel:
        """The trained-model folder's networks (every wanted fold), on the CPU."""
        return load_model(folder, self.folds, self.checkpoint_name)

    def _place(self, network: torch.nn.Module) -> torch.nn.Module:
        """``network`` on the segmenter's device; on the CPU its convolutions take oneDNN at batch 1 too
        (:class:`~lesionlocator.segment.model.OneDNNConv3d`) unless ``ONEDNN_ON_CPU`` is False."""
        network = network.to(self.device)
        if self.device.type == "cpu" and ONEDNN_ON_CPU:
            use_onednn_convolutions(network)
        return network

    # -- inference --------------------------------------------------------------------------
    @torch.inference_mode()
    def _forward(self, model: LoadedModel, x: torch.Tensor) -> torch.Tensor:
        """Fold-averaged (and mirror-averaged) logits of one patch batch ``x`` (1, 2, *patch).

        The mirrored copies of the patch go through each network stacked as one batch (each copy
        flipped, one forward, each output flipped back), in chunks of at most ``mirror_batch(patch)``
        copies so that memory stays bounded; outputs are summed in a fixed order (deterministic).
        """
        axes = [a + 2 for a in (model.mirror_axes or ())] if self.config.mirroring else []
        combos = [()] + [c for n in range(1, len(axes) + 1) for c in itertools.combinations(axes, n)]
        chunk = mirror_batch(tuple(x.shape[2:]))
        total = None
        autocast = torch.autocast("cuda") if self.device.type == "cuda" else contextlib.nullcontext()
        with autocast:
            for net in model.networks:
                for first in range(0, len(combos), chunk):
                    group = combos[first:first + chunk]
                    batch = torch.cat([torch.flip(x, combo) if combo else x for combo in group])
                    out = net(batch)
                    for i, combo in enumerate(group):
                        oi = out[i:i + 1].float()
                        oi = torch.flip(oi, combo) if combo else oi
                        total = oi if total is None else total + oi
                    self.stats.forwards += len(group)
        return total / (len(model.networks) * len(combos))

    def predict_lesion(self, model: LoadedModel, pre: Preprocessed, prompt: Prompt, input_shape) -> LesionPrediction | None:
        """The foreground probability of one lesion on the input grid (None for an empty prompt)."""
        if prompt.kind == "mask" and not prompt.mask.any():
            return None
        radius = model.point_radius or self.config.point_radius  # a model trained here says how it saw points
        encoded = encode_prompt(prompt, pre.grid, radius, mask_as_box=self.mask_as_box)
        if encoded.array.size == 0 or not encoded.array.any():
            return None
        patch = np.asarray(model.patch_size)
        shape = np.asarray(pre.data.shape)
        starts = patch_starts(encoded.lo, encoded.hi, shape, patch, self.config.step_size)
        roi_lo = np.min(starts, axis=0)
        roi_hi = np.max(starts, axis=0) + patch
        logits = None
        weight = np.zeros(tuple(roi_hi - roi_lo), dtype=np.float32)
        gaussian = _gaussian(tuple(int(p) for p in patch)) if len(starts) > 1 else np.ones(tuple(patch), np.float32)
        for start in starts:
            x = np.stack([window(pre.data, start, patch), encoded.crop(start, patch)])[None]
            t0, cpu0 = time.perf_counter(), time.process_time()
            out = self._forward(model, torch.from_numpy(x).to(self.device))[0]
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            self.stats.forward += time.perf_counter() - t0
            self.stats.forward_cpu += time.process_time() - cpu0
            self.stats.patches += 1
            out = out.cpu().numpy()
            if logits is None:
                logits = np.zeros((out.shape[0], *weight.shape), dtype=np.float32)
            sl = tuple(slice(int(s - r), int(s - r + p)) for s, r, p in zip(start, roi_lo, patch))
            logits[(slice(None), *sl)] += out * gaussian
            weight[sl] += gaussian
        logits /= weight
        # Keep the part of the ROI inside the image.
        a, b = np.maximum(roi_lo, 0), np.minimum(roi_hi, shape)
        inner = tuple(slice(int(x - r), int(y - r)) for x, y, r in zip(a, b, roi_lo))
        probability = _foreground_probability(model, logits[(slice(None), *inner)])
        return self._to_input_grid(prompt.lesion_id, probability, a, pre.grid, input_shape)

    @staticmethod
    def _to_input_grid(lesion_id: int, prob_net: np.ndarray, net_lo: np.ndarray, grid: GridMap, input_shape) -> LesionPrediction:
        """Linear interpolation of a network-grid probability block onto the input voxels it covers."""
        scale = grid.scale
        net_hi = net_lo + np.asarray(prob_net.shape)
        shape_t = np.asarray(grid.input_shape_transposed(input_shape))
        crop = np.asarray(grid.crop_start)
        # Input voxels (transposed frame) whose network coordinate lies within the block's extent.
        first = np.ceil((net_lo - 0.5 + 0.5) / scale - 0.5 + crop - 1e-6).astype(int)
        last = np.floor((net_hi - 1 + 0.5 + 0.5) / scale - 0.5 + crop + 1e-6).astype(int)
        first = np.clip(first, crop, crop + np.asarray(grid.crop_shape) - 1)
        last = np.clip(last, first, np.minimum(crop + np.asarray(grid.crop_shape), shape_t) - 1)
        out_shape = tuple(int(v) for v in last - first + 1)
        offset = (first - crop + 0.5) * scale - 0.5 - net_lo
        prob_t = ndimage.affine_transform(
            prob_net.astype(np.float32), scale, offset=offset, output_shape=out_shape, order=1, mode="nearest"
        )
        inverse = grid.inverse_transpose
        probability = np.ascontiguousarray(np.transpose(prob_t, inverse))
        lo_in = first[list(inverse)]
        slices = tuple(slice(int(lo), int(lo) + n) for lo, n in zip(lo_in, probability.shape))
        return LesionPrediction(lesion_id=int(lesion_id), slices=slices, probability=probability)

    def _fine_zoom(self, model: LoadedModel, spacing_zyx: Sequence[float]) -> float:
        """How much finer than the model's grid a small lesion of this scan is segmented:
        ``segment.fine_zoom``, but never finer than the scan's own finest voxel spacing (a scan already
        on the model's grid gains nothing from interpolation: 1, no fine pass)."""
        zoom = min(self.config.fine_zoom, max(float(s) for s in model.configuration_manager.spacing) / min(spacing_zyx))
        return zoom if zoom >= MIN_FINE_ZOOM else 1.0

    def _fine(self, region, spacing_zyx: Sequence[float], model: LoadedModel, zoom: float) -> bool:
        """Whether a lesion in the inclusive voxel box ``region`` (lo, hi; None: not known yet) is segmented
        on the fine grid: its longest side is ``segment.fine_below_voxels`` of the model's coarsest spacing or less."""
        if region is None or zoom <= 1:
            return False
        limit = self.config.fine_below_voxels * max(float(s) for s in model.configuration_manager.spacing)
        return _extent_mm(*region, spacing_zyx) <= limit

    def _preprocessed_cache(self, image: sitk.Image, array: np.ndarray) -> dict[Path, Preprocessed]:
        """The preprocessed scans (by model folder) of the last scan segmented, when ``image`` is that scan
        again (same geometry and voxels, by a BLAKE2 digest), else a new empty cache: a tracking job
        segments one follow-up several times (tracked lesions, retries, new-lesion candidates), and
        preprocessing a 512 x 512 x 168 scan costs more than its lesions' forward passes."""
        key = (Geometry.of(image), array.dtype.str, hashlib.blake2b(np.ascontiguousarray(array).data, digest_size=16).digest())
        if self._preprocessed is None or self._preprocessed[0] != key:
            self._preprocessed = (key, {})
        return self._preprocessed[1]

    def segment(self, image: sitk.Image, prompts: Sequence[Prompt]) -> SegmentationResult:
        t_start = time.perf_counter()
        predictions = self.predictions(image, prompts)  # checks the prompts
        result = combine_predictions(tuple(reversed(image.GetSize())), predictions, [p.lesion_id for p in prompts])
        self.stats.total += time.perf_counter() - t_start
        return result

    def predictions(self, image: sitk.Image, prompts: Sequence[Prompt]) -> list[LesionPrediction]:
        """Each lesion's foreground probability on the input grid (z, y, x), before the lesions are
        combined into one label map: a box prompt's cut to its box included, empty prompts left out."""
        array = sitk.GetArrayFromImage(image)
        prompts = check_prompts(prompts, array.shape)
        spacing_zyx = tuple(image.GetSpacing())[::-1]
        cache = self._preprocessed_cache(image, array)
        predictions = []
        for prompt in prompts:
            t_lesion = time.perf_counter()
            model = self._model_for(prompt.kind)
            if model.folder not in cache:
                t0, cpu0 = time.perf_counter(), time.process_time()
                cache[model.folder] = preprocess(model, array, spacing_zyx, keep_normalised=self.config.fine_zoom > 1)
                self.stats.preprocess += time.perf_counter() - t0
                self.stats.preprocess_cpu += time.process_time() - cpu0
            pre = cache[model.folder]
            zoom = self._fine_zoom(model, spacing_zyx)
            # the lesion's box: the prompt's, or for a point its first mask's (the point itself when empty)
            region = None if prompt.kind == "point" else prompt.extent()
            pred = None if self._fine(region, spacing_zyx, model, zoom) else self.predict_lesion(model, pre, prompt, array.shape)
            if prompt.kind == "point":
                region = _mask_extent(pred) or prompt.extent()
            if self._fine(region, spacing_zyx, model, zoom):
                fine = fine_window(model, pre, *region, zoom)
                pred = self.predict_lesion(model, fine, prompt, array.shape)
                self.stats.fine += 1
            if pred is not None:
                margin_mm = self.config.box_margin_mm
                if prompt.kind == "box" and margin_mm is not None:
                    pred = cut_to_box(pred, prompt.box, 0.5 + margin_mm / np.asarray(spacing_zyx))
                predictions.append(pred)
            self.stats.lesions += 1
            self.stats.by_lesion.append(time.perf_counter() - t_lesion)
            log.debug("lesion %d: %.2f s", prompt.lesion_id, time.perf_counter() - t_lesion)
        return predictions


def _extent_mm(lo_zyx, hi_zyx, spacing_zyx) -> float:
    """The longest side (mm) of the inclusive voxel box ``lo``..``hi`` (z, y, x)."""
    return float(np.max((np.asarray(hi_zyx, float) - np.asarray(lo_zyx, float) + 1) * np.asarray(spacing_zyx, float)))


def _mask_extent(pred: LesionPrediction | None) -> tuple[np.ndarray, np.ndarray] | None:
    """The inclusive input-voxel box (z, y, x) of a prediction's mask (probability > 0.5); None when empty."""
    box = None if pred is None else nonzero_box(pred.probability > 0.5)
    if box is None:
        return None
    offset = np.asarray([s.start for s in pred.slices])
    return offset + np.asarray([b.start for b in box]), offset + np.asarray([b.stop for b in box]) - 1


def _foreground_probability(model: LoadedModel, logits: np.ndarray) -> np.ndarray:
    label_manager = model.plans_manager.get_label_manager(model.dataset_json)
    t = torch.from_numpy(logits)
    if label_manager.has_regions:
        return torch.sigmoid(t[0]).numpy()
    return (1.0 - torch.softmax(t, 0)[0]).numpy()


ONEDNN_ON_CPU = True
"""CPU networks run their 3D convolutions through oneDNN at every batch size (False: torch's own
choice, ``slow_conv3d`` at batch 1; the tests compare both)."""

MIRROR_BATCH_VOXELS = 2 * 48**3
"""Most input voxels one forward pass stacks. On the CPU the gain of a batch was torch's oneDNN
convolution, which it picks for any batch above 1 but at batch 1 only for large layers: a 32^3
patch's 8 mirrored copies took 0.37 s in batches of 2-8 against 1.37 s one at a time (1 thread),
while a 64^3 patch, already on oneDNN, gained nothing and a batch of 8 adds 0.7 GB. With
``ONEDNN_ON_CPU`` a batch of 1 takes oneDNN too and a 32^3 copy costs about the same CPU time alone
or in a batch of 8 (0.045 against 0.048 s); batches are kept so that TTA logits stay as they were."""


def mirror_batch(patch: Sequence[int]) -> int:
    """How many mirrored copies of a ``patch``-shaped input one forward pass takes: the largest power
    of two (1 to 8) whose copies stay within ``MIRROR_BATCH_VOXELS``."""
    fit = MIRROR_BATCH_VOXELS // int(np.prod(patch))
    return next((n for n in (8, 4, 2) if n <= fit), 1)


_GAUSSIANS: dict[tuple[int, ...], np.ndarray] = {}


def _gaussian(patch: tuple[int, ...]) -> np.ndarray:
    if patch not in _GAUSSIANS:
        from nnunetv2.inference.sliding_window_prediction import compute_gaussian

        _GAUSSIANS[patch] = compute_gaussian(patch, sigma_scale=1.0 / 8, value_scaling_factor=10, dtype=torch.float32, device=torch.device("cpu")).numpy()
    return _GAUSSIANS[patch]
