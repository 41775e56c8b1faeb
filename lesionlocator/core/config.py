"""The study configuration: pydantic models are the single source of truth.

``config/config.yaml`` (the defaults, with each field's description as a comment) and
``workflow/schemas/config.schema.json`` are generated from these models by
``lesionlocator config --write`` and a test fails when they drift.

Relative paths are resolved against the working directory (the repository root for Snakemake).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lesionlocator.core.errors import ConfigError

SCHEMA_VERSION = 1
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG_PATH = REPO_ROOT / "config" / "config.yaml"
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.json"
BUNDLED_MODEL = REPO_ROOT / "models" / "lesionlocator_small"


class StrictModel(BaseModel):
    """Unknown keys are errors; every float is finite (``.inf`` and ``.nan`` are errors naming the
    key); instances are immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class CohortConfig(StrictModel):
    """Where the cohort comes from."""

    root: Path | None = Field(
        None,
        description="Root of a BIDS-like cohort (sub-<patient>/ses-<session>/). "
        "Leave root and table empty to build and use the synthetic demo cohort.",
    )
    table: Path | None = Field(
        None, description="A cohort.tsv listing explicit paths (alternative to root)."
    )
    verify_pixels: bool = Field(
        True,
        description="Read every image fully at ingest (catches truncated files before any "
        "expensive job); false reads headers only.",
    )
    strict: bool = Field(
        False,
        description="Refuse a cohort holding folders or files whose names look like patients or sessions but "
        "are not sub-<label>/ses-<label> (Sub-P002, sub_P003, ses_03, Ses-04): an error listing them all. "
        "False ignores them with a warning that lists them.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> "CohortConfig":
        if self.root is not None and self.table is not None:
            raise ValueError("give either root or table, not both")
        for name in ("root", "table"):
            value = getattr(self, name)
            if value is not None and not Path(value).exists():
                raise ValueError(f"{name}: path does not exist: {value}")
        return self

    @property
    def is_synthetic(self) -> bool:
        return self.root is None and self.table is None


class RegisterConfig(StrictModel):
    """Registration of each follow-up scan to the previous one, and prompt propagation."""

    backend: Literal["simpleitk", "unigradicon", "lesionlocator_track"] = Field(
        "simpleitk",
        description="Registration backend: simpleitk (CPU, rigid/affine/BSpline), unigradicon (the uniGradICON "
        "foundation model; needs the extra lesionlocator[unigradicon] and local weights) or lesionlocator_track "
        "(the registration network of the released LesionLocatorTrack checkpoint; same extra, track_checkpoint).",
    )
    grid_spacing_mm: float = Field(
        4.0, gt=0, description="Both images are resampled onto a coarse isotropic grid of this spacing (mm) for speed."
    )
    rigid: bool = Field(True, description="Run a rigid stage after the initial alignment.")
    affine: bool = Field(True, description="Run an affine stage after the rigid stage.")
    deformable: bool = Field(True, description="Run a deformable BSpline stage after the linear stages.")
    z_search_mm: float = Field(
        120.0,
        ge=0,
        description="Half-range (mm) of the exhaustive search along z for the initial alignment, "
        "for sessions whose field of view differs in z; 0 disables the search.",
    )
    iterations: int = Field(100, ge=1, description="Optimizer iterations per pyramid level of the linear stages.")
    deformable_iterations: int = Field(40, ge=1, description="Optimizer iterations per pyramid level of the BSpline stage.")
    shrink_factors: list[int] = Field(
        [4, 2, 1], min_length=1, description="Pyramid shrink factors of the linear stages (on the coarse grid)."
    )
    smoothing_sigmas: list[float] = Field(
        [2.0, 1.0, 0.0], min_length=1, description="Gaussian smoothing (voxels of the coarse grid) per pyramid level."
    )
    deformable_samples: int = Field(
        10000,
        ge=100,
        description="Metric samples drawn inside the follow-up's body at each level of the BSpline stage, whatever the "
        "scan's size (each sample costs in proportion to the control points; bench/bench_register_tre.py).",
    )
    deformable_evaluations: int = Field(
        30,
        ge=1,
        description="At most this many metric evaluations (line-search steps included) per level of the BSpline stage; "
        "the stage's time is about this times the cost of one evaluation.",
    )
    deformable_shrink_factors: list[int] = Field(
        [2], min_length=1, description="Pyramid shrink factors of the BSpline stage (on the coarse grid)."
    )
    bspline_spacing_mm: float = Field(
        60.0,
        gt=0,
        description="Spacing (mm) of the BSpline control-point mesh of the deformable stage; the mesh covers the "
        "bounding box of the follow-up's body grown by one mesh spacing (within the scan), not its whole field of view.",
    )
    sampling_percentage: float = Field(
        0.2,
        gt=0,
        le=1,
        description="Fraction of coarse-grid voxels sampled by the Mattes mutual-information metric of the "
        "initial search and the linear stages (the BSpline stage draws deformable_samples).",
    )
    seed: int = Field(42, ge=0, description="Seed of the metric sampling (same seed and threads: byte-identical transforms).")
    threads: int = Field(
        1,
        ge=1,
        description="Threads used by SimpleITK during registration; only 1 gives byte-identical transforms on "
        "rerun (more threads sum the metric in varying order, changing the last digits).",
    )
    min_overlap: float = Field(
        0.3,
        ge=0,
        le=1,
        description="Registration fails when less than this fraction of the follow-up's body maps inside the previous scan.",
    )
    min_similarity: float = Field(
        0.6,
        ge=-1,
        le=1,
        description="Registration quality check, after any backend: a pair whose follow-up and registered previous "
        "scan correlate less than this (normalised cross-correlation on a 4 mm grid, inside the follow-up's body "
        "where both scans show it) fails that patient, naming both files and the figure; every pair's figure goes "
        "to <session>/to_previous.json and the cohort table 'registration'. Measured (bench/bench_registration_quality.py): "
        "same anatomy 0.82-0.98 (21 pairs: synthetic CT and MR cohorts, the registration tests' pairs), another "
        "body region 0.19-0.47 (8 pairs cut from the real CT). Assumes both sessions have the same modality; "
        "-1 disables the check.",
    )
    min_fraction_inside: float = Field(
        0.25,
        ge=0,
        le=1,
        description="A propagated prompt whose mask has less than this fraction inside the follow-up is marked "
        "out_of_fov; a lesion cut by the field of view but mostly visible is still segmented (its visible part).",
    )
    unigradicon_weights: Path | None = Field(
        None, description="Local uniGradICON weights file (state dict); required when backend is unigradicon."
    )
    unigradicon_instance_optimization: bool = Field(
        False,
        description="Run uniGradICON instance optimisation (unigradicon_finetune_steps gradient steps per pair); "
        "refused on CPU unless unigradicon_force_cpu_instance_optimization (one step takes minutes and ~13 GB there).",
    )
    unigradicon_finetune_steps: int = Field(
        50, ge=1, description="Instance-optimisation steps per pair when unigradicon_instance_optimization is on."
    )
    unigradicon_force_cpu_instance_optimization: bool = Field(
        False, description="Allow uniGradICON instance optimisation on CPU despite its cost."
    )
    unigradicon_modality: Literal["auto", "ct", "mr"] = Field(
        "auto",
        description="Intensity preprocessing of the unigradicon backend: ct (clamp -1000..1000 HU, scale to 0..1), "
        "mr (clamp min..99th percentile, scale to 0..1) or auto (ct when the 1st percentile is below -500, "
        "i.e. the image holds air in Hounsfield units).",
    )
    track_checkpoint: Path | None = Field(
        None,
        description="Released LesionLocatorTrack folder (or the LesionLocatorCheckpoint root holding it); required "
        "when backend is lesionlocator_track.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Device of the unigradicon and lesionlocator_track backends: auto picks cuda when available."
    )

    @model_validator(mode="after")
    def _consistent(self) -> "RegisterConfig":
        if len(self.shrink_factors) != len(self.smoothing_sigmas):
            raise ValueError(
                f"shrink_factors ({len(self.shrink_factors)} levels) and smoothing_sigmas "
                f"({len(self.smoothing_sigmas)} levels) must have the same length"
            )
        if any(f < 1 for f in self.shrink_factors + self.deformable_shrink_factors):
            raise ValueError("shrink factors must be >= 1")
        if self.backend == "unigradicon":
            if self.unigradicon_weights is None:
                raise ValueError("unigradicon_weights: required when backend is unigradicon (weights are never downloaded)")
            if not Path(self.unigradicon_weights).is_file():
                raise ValueError(f"unigradicon_weights: file does not exist: {self.unigradicon_weights}")
        if self.backend == "lesionlocator_track":
            if self.track_checkpoint is None:
                raise ValueError(
                    "track_checkpoint: required when backend is lesionlocator_track (weights are never downloaded at "
                    "run time; `lesionlocator weights fetch` installs the released checkpoint)"
                )
            if not Path(self.track_checkpoint).is_dir():
                raise ValueError(f"track_checkpoint: folder does not exist: {self.track_checkpoint}")
        return self


class SegmentConfig(StrictModel):
    """Promptable lesion segmentation: the classical baseline or an nnU-Net-format network."""

    segmenter: Literal["classical", "nnunet"] = Field(
        "nnunet",
        description="nnunet (the default): a promptable nnU-Net v2 network, segment.checkpoint, or the bundled "
        "CPU-sized model models/lesionlocator_small when that is null (it beats the classical segmenter on held-out "
        "CT and MR for every prompt type, see its MODEL_CARD.md); classical: prompt-driven intensity model and "
        "random-walker refinement on the scan's own grid, needs no weights.",
    )
    fallback: Literal["classical", "none"] = Field(
        "classical",
        description="With segmenter nnunet: a lesion whose prompt is not empty but whose network mask is (a "
        "follow-up lesion of a few voxels can stay below the network's threshold, which tracking would call "
        "vanished) is segmented again by the classical segmenter (classical_* settings), its voxels kept where "
        "no other lesion is; none keeps the empty mask.",
    )
    checkpoint: Path | None = Field(
        None,
        description="nnU-Net trained-model folder (plans.json, dataset.json, fold_N/), or the released "
        "LesionLocatorCheckpoint (or its LesionLocatorSeg/) folder; null: the bundled model "
        "models/lesionlocator_small (see its MODEL_CARD.md).",
    )
    checkpoint_name: str = Field("checkpoint_final.pth", description="Checkpoint file name inside each fold folder.")
    folds: list[int | Literal["all"]] | None = Field(
        None, description="Folds to ensemble (logits averaged); empty (null) uses every fold found."
    )
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        "auto", description="Device of the network: auto picks cuda when available, else cpu."
    )
    cpu_threads: int | None = Field(
        1,
        ge=1,
        description="Torch CPU threads of a segmentation or tracking job (null: torch's default, every core). 1 is "
        "fastest here: with oneDNN convolutions a lesion's 8 mirrored forward passes take 0.43 CPU-s on 1 thread "
        "and 1.97 on 2 (bench/bench_segment.py --segmenter timing), and the realistic CT patient's tracking job "
        "took 33 CPU-s / 35 s on 1 thread against 48 / 51 s on 2 (bench/bench_patient.py); the workflow runs one "
        "such job per core.",
    )
    point_radius: float = Field(
        5.0,
        gt=0,
        description="Radius (network voxels) of the ball that encodes a point prompt (the released models use 5); "
        "a model trained here records its own radius in lesionlocator.json, which takes precedence.",
    )
    mask_prompt_encoding: Literal["auto", "mask", "box"] = Field(
        "auto",
        description="How a mask prompt enters the network: the mask itself, or its bounding box. auto: its "
        "bounding box into the box model for the released LesionLocatorSeg pair (trained with points and boxes "
        "only; the released tools turn a mask into box prompts too), the mask itself for a single trained-model "
        "folder (the bundled model, trained with mask prompts) and for a LesionLocatorTrack UNet.",
    )
    box_margin_mm: float | None = Field(
        0.0,
        ge=0,
        description="A box prompt bounds its lesion: the network's mask is cut to the box's voxels grown by "
        "this margin (mm) on every side (the classical segmenter keeps to the box too); null keeps the "
        "network's mask as it is, which may reach past the box.",
    )
    fine_zoom: float = Field(
        2.0,
        ge=1,
        le=4,
        description="A small lesion is segmented again on a grid this many times finer than the network's "
        "(a window of the scan around it, resampled from the scan's own voxels): the network sees it as large as "
        "one fine_zoom times its size, inside the range it was trained on. Never finer than the scan's own finest "
        "spacing (a scan on the network's grid gets no fine pass; below 1.25 times none either). 1 turns it off.",
    )
    fine_below_voxels: float = Field(
        8.0,
        ge=0,
        description="Which lesions fine_zoom applies to: those whose extent (the longest side of a box prompt, "
        "of a mask prompt's bounding box, or for a point prompt of the network's first mask) is at most this many "
        "voxels of the network's grid (its coarsest spacing; the bundled model's 3 mm: 24 mm). A point whose first "
        "mask is empty is tried on the fine grid too.",
    )
    mirroring: bool = Field(True, description="Mirroring test-time augmentation (up to 8 forward passes per patch).")
    step_size: float = Field(
        0.5, gt=0, le=1, description="Sliding-window step as a fraction of the patch size (lesions larger than a patch)."
    )
    per_lesion_masks: bool = Field(False, description="Also write one binary mask file per lesion.")
    classical_margin_mm: float = Field(
        10.0, ge=0, description="Classical segmenter: margin (mm) around a box or mask prompt searched for the lesion."
    )
    classical_point_radius_mm: float = Field(
        40.0, gt=0, description="Classical segmenter: largest lesion radius (mm) searched around a point prompt."
    )
    classical_smoothing_mm: float = Field(
        1.0, ge=0, description="Classical segmenter: Gaussian smoothing (mm) before the intensity model."
    )
    classical_beta: float = Field(
        130.0, gt=0, description="Classical segmenter: random-walker edge weight (higher follows edges more strictly)."
    )

    @property
    def model_folder(self) -> Path | None:
        """The network's folder: ``checkpoint``, or the bundled model when it is null (None for classical)."""
        if self.segmenter != "nnunet":
            return None
        return Path(self.checkpoint) if self.checkpoint is not None else BUNDLED_MODEL

    @model_validator(mode="after")
    def _checkpoint_when_nnunet(self) -> "SegmentConfig":
        if self.segmenter == "nnunet" and not self.model_folder.is_dir():
            what = "folder does not exist" if self.checkpoint is not None else "the bundled model is missing"
            raise ValueError(f"checkpoint: {what}: {self.model_folder} (weights are never downloaded at run time; "
                             "`lesionlocator weights fetch` installs the released checkpoint)")
        return self


class SyntheticConfig(StrictModel):
    """The synthetic longitudinal cohort generator (``synthetic/``, ``lesionlocator synthesize``)."""

    seed: int = Field(0, ge=0, description="Random seed: the same seed and config give byte-identical output.")
    n_patients: int = Field(3, ge=1, le=9999, description="Number of patients (P001, P002, ...).")
    n_sessions: int = Field(3, ge=1, le=99, description="Sessions per patient, baseline included (01, 02, ...).")
    interval_days: int = Field(90, ge=1, description="Days between consecutive sessions (acq_time in sessions.tsv).")
    start_date: str = Field("2021-01-04", description="ISO date of every patient's baseline.")
    sources: list[str] = Field(
        ["ct:data/real/example_ct.nii.gz", "mr:data/real/example_mr_sm.nii.gz"],
        min_length=1,
        description="Source scans, used round-robin over patients: 'ct:PATH' or 'mr:PATH' (a scan without "
        "lesions, lesions are inserted; PATH a scan file, a DICOM series folder, or a folder of such scans, "
        "each of them a source, in name order, files named *_seg*, *_label* or *_mask* left out), 'nnunet:FOLDER' (an nnU-Net raw dataset whose labelsTr hold lesions "
        "to progress; binary masks are split into connected components) or 'phantom' / 'phantom:XxYxZ' "
        "(procedural body phantom, default 160x128x96 voxels).",
    )
    organ_labels: dict[str, str] = Field(
        {"data/real/example_ct.nii.gz": "data/real/example_seg.nii.gz"},
        description="Organ label map per source image (TotalSegmentator v2 class ids), keyed by the image's "
        "path as given in sources (a scan of a folder source: FOLDER/NAME); resampled "
        "nearest-neighbour onto the source in physical space.",
    )
    organ_label_ids: dict[str, list[int]] = Field(
        {"liver": [5], "lung": [10, 11, 12, 13, 14], "kidney": [2, 3], "spleen": [1]},
        description="Label ids of each organ site in the organ label maps.",
    )
    site_weights: dict[str, float] = Field(
        {"liver": 3.0, "lung": 3.0, "kidney": 1.0, "spleen": 1.0, "body": 2.0},
        description="Relative frequency of lesion sites; 'body' is soft tissue anywhere inside the body. "
        "Sites missing from a source are skipped (CT lungs are also found by thresholding).",
    )
    lesions_per_patient: tuple[int, int] = Field(
        (2, 4), description="Range (min, max) of lesions inserted at baseline per patient."
    )
    diameter_mm: tuple[float, float] = Field(
        (14.0, 40.0), description="Range (min, max) of the longest diameter of baseline lesions, mm."
    )
    new_lesion_diameter_mm: tuple[float, float] = Field(
        (8.0, 18.0), description="Range (min, max) of the longest diameter of a new lesion when it first appears, mm."
    )
    growth_mean: float = Field(
        0.1, description="Mean per-interval change of log lesion diameter (0.1 = about +10% per interval)."
    )
    growth_sd: float = Field(0.25, ge=0, description="Spread between lesions of the per-interval log-diameter change.")
    anisotropy_sd: float = Field(
        0.1, ge=0, description="Spread of per-axis deviations of growth (anisotropic growth), log scale."
    )
    p_vanish: float = Field(
        0.15, ge=0, le=1, description="Probability that a lesion shows a complete response (vanishes) at a follow-up."
    )
    p_new: float = Field(
        0.3, ge=0, le=1, description="Probability, per follow-up session and patient, that a new lesion appears."
    )
    p_split: float = Field(
        0.0, ge=0, le=1, description="Probability that an inserted baseline lesion splits: it is drawn as two lobes "
        "joined by a bridge that is gone from a follow-up on, so from then on its mask is two separated parts with "
        "the same lesion id (ground truth 'split'). Replaces the lesion's growth, p_vanish and p_shrink draws; "
        "0 disables.",
    )
    p_merge: float = Field(
        0.0, ge=0, le=1, description="Probability, per patient, that a pair of extra baseline lesions is placed a "
        "few mm apart and grows towards each other into contact at a follow-up (ground truth 'merged' for both "
        "while their masks touch, 26-connectivity); 0 disables.",
    )
    p_shrink: float = Field(
        0.0, ge=0, le=1, description="Probability that a baseline lesion responds without vanishing: its volume "
        "falls steadily to shrink_volume_fraction of its baseline volume at the last session and it stays visible. "
        "Drawn with p_split (one draw: p_split + p_shrink <= 1); replaces the lesion's growth and p_vanish draws; "
        "0 disables.",
    )
    shrink_volume_fraction: tuple[float, float] = Field(
        (0.3, 0.5), description="Range (min, max) of a shrinking lesion's (p_shrink) volume at the last session, "
        "as a fraction of its baseline volume."
    )
    p_fov_cut: float = Field(
        0.0, ge=0, le=1, description="Probability, per follow-up session, that its z range is cut short at one end "
        "so that one visible lesion lies wholly outside the field of view (ground truth 'out_of_fov'), on top of "
        "the random crop of fov_z_crop. The cut that removes the fewest slices is taken, keeping at least 40% of "
        "the slices (and 8); a session where no lesion can be left out so is not cut. 0 disables.",
    )
    margin_mm: float = Field(
        5.0, ge=0, description="Minimum gap between lesions, and between a lesion and the body surface, mm."
    )
    mass_effect: float = Field(
        1.0, ge=0, le=2, description="Strength of tissue displacement by lesion growth (0 disables, 1 pushes the "
        "surrounding tissue by the change of radius)."
    )
    mass_effect_sigma_mm: float = Field(
        10.0, gt=0, description="Reach of the tissue displacement around a lesion (Gaussian sigma), mm."
    )
    rotation_deg: float = Field(3.0, ge=0, le=45, description="Maximum repositioning rotation per axis between sessions, degrees.")
    translation_mm: float = Field(10.0, ge=0, description="Maximum repositioning translation per axis between sessions, mm.")
    nonrigid_mm: float = Field(
        3.0, ge=0, description="Typical amplitude of the smooth non-rigid deformation between sessions, mm."
    )
    nonrigid_grid_mm: float = Field(
        80.0, gt=0, description="Control-point spacing of the smooth non-rigid deformation, mm."
    )
    fov_z_crop: float = Field(
        0.1, ge=0, lt=0.45, description="Maximum fraction of the z extent cropped at each end in a follow-up "
        "(lesions near the ends can fall outside the field of view)."
    )
    spacing_jitter: float = Field(
        0.15, ge=0, lt=0.9, description="Maximum relative change of the voxel spacing in a follow-up (in-plane and z drawn separately)."
    )
    ct_noise_hu: float = Field(8.0, ge=0, description="CT: standard deviation of added noise per session, HU.")
    ct_shift_hu: float = Field(8.0, ge=0, description="CT: maximum global intensity shift per session, HU.")
    mr_noise: float = Field(0.02, ge=0, description="MR: noise standard deviation relative to the 99th percentile intensity.")
    mr_gain: float = Field(0.15, ge=0, lt=1, description="MR: maximum relative global gain change per session.")
    mr_bias: float = Field(0.15, ge=0, lt=1, description="MR: maximum strength of the smooth multiplicative bias field per session.")
    output: Path = Field(Path("results/synthetic"), description="Folder that receives the generated cohort.")

    @model_validator(mode="after")
    def _consistent(self) -> "SyntheticConfig":
        from datetime import date

        for name in ("lesions_per_patient", "diameter_mm", "new_lesion_diameter_mm"):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"{name}: min {low} > max {high}")
        if self.p_split + self.p_shrink > 1:
            raise ValueError(f"p_split + p_shrink: at most 1 (one draw per lesion; got {self.p_split} + {self.p_shrink})")
        low, high = self.shrink_volume_fraction
        if not 0 < low <= high < 1:
            raise ValueError(f"shrink_volume_fraction: need 0 < min <= max < 1 (got {low}..{high})")
        if self.lesions_per_patient[0] < 1:
            raise ValueError(f"lesions_per_patient: at least 1 baseline lesion is needed (got {self.lesions_per_patient[0]})")
        for name in ("diameter_mm", "new_lesion_diameter_mm"):
            low, high = getattr(self, name)
            if low < 2 or high > 250:
                raise ValueError(f"{name}: diameters must lie in 2..250 mm (got {low}..{high})")
        try:
            date.fromisoformat(self.start_date)
        except ValueError:
            raise ValueError(f"start_date: {self.start_date!r} is not an ISO date (YYYY-MM-DD)") from None
        for spec in self.sources:
            kind = spec.split(":", 1)[0]
            if kind not in ("ct", "mr", "nnunet", "phantom"):
                raise ValueError(f"sources: {spec!r} must start with ct:, mr:, nnunet: or be phantom[:XxYxZ]")
            if kind != "phantom" and ":" not in spec:
                raise ValueError(f"sources: {spec!r} needs a path after '{kind}:'")
        unknown = set(self.site_weights) - set(self.organ_label_ids) - {"body"}
        if unknown:
            raise ValueError(f"site_weights: site(s) {sorted(unknown)} are neither 'body' nor a key of organ_label_ids")
        if any(w < 0 for w in self.site_weights.values()) or sum(self.site_weights.values()) <= 0:
            raise ValueError("site_weights: weights must be >= 0 with a positive sum")
        return self


class PromptNoise(StrictModel):
    """How simulated box and mask prompts deviate from the lesion (network voxels): what training draws
    from, and what ``evaluate-model`` scores against. Part of :class:`TrainConfig` (``train.box_noise``...)."""

    box_noise: float = Field(
        0.15, ge=0, description="Simulated box prompts: each face moves outwards by up to this fraction of the "
        "lesion's extent (at least one voxel).",
    )
    box_shrink: float = Field(
        0.0, ge=0, lt=0.5, description="Simulated box prompts: each face may also move inwards, by up to this "
        "fraction of the lesion's extent (0: boxes always contain the lesion, so the network learns to expect it "
        "inside the faces; > 0: a tight box is the middle of the noise, as drawn boxes and ground-truth boxes are).",
    )
    mask_morph: int = Field(
        2, ge=0, description="Simulated mask prompts (a previous time point's mask): dilated or eroded by up to "
        "this many network voxels (growth or shrinkage between sessions).",
    )
    mask_warp: float = Field(
        1.5, ge=0, description="Simulated mask prompts: smooth random warp of up to this many network voxels "
        "(registration error in the mask's shape).",
    )
    mask_shift: int = Field(
        2, ge=0, description="Simulated mask prompts: shifted by up to this many network voxels per axis "
        "(registration error in the mask's position).",
    )


class TrainConfig(PromptNoise):
    """Training of the promptable network (nnU-Net v2 trainer with a simulated prompt channel). Its prompt
    noise fields come from :class:`PromptNoise` (listed first)."""

    dataset: Path | None = Field(
        None,
        description="nnU-Net raw dataset folder (DatasetNNN_Name with dataset.json, imagesTr, labelsTr; labels "
        "background 0 and lesion 1), e.g. the export of the synthetic generator; required to train.",
    )
    output_dir: Path = Field(
        Path("results/train"),
        description="Run folder: nnU-Net's raw/preprocessed/results trees and the exported model/ folder.",
    )
    architecture: Literal["small", "nnunet", "resenc_m", "resenc_l"] = Field(
        "small",
        description="small: a CPU-sized PlainConvUNet (patch_size, features_base..features_max); nnunet: nnU-Net's "
        "default plans; resenc_m / resenc_l: nnU-Net's residual-encoder presets (GPU).",
    )
    patch_size: list[int] | None = Field(
        [32, 32, 32], description="Patch size (z, y, x) of the small architecture; other architectures keep the planner's."
    )
    features_base: int = Field(8, ge=1, description="Small architecture: feature maps of the first stage (doubled per stage).")
    features_max: int = Field(64, ge=1, description="Small architecture: cap on the feature maps of a stage.")
    batch_size: int | None = Field(2, ge=1, description="Patches per iteration (null: the planner's).")
    normalization: Literal["body", "zscore", "auto"] = Field(
        "body",
        description="body: per image, clip to the body's 0.5-99.5 intensity percentiles and z-score on the body "
        "(Otsu's threshold finds it; modality-agnostic, for mixed CT+MR cohorts); zscore: nnU-Net's per-image "
        "z-score (a CT's air squeezes soft-tissue contrast); auto: nnU-Net's choice from the channel name "
        "(CT clipping and dataset statistics for CT).",
    )
    epochs: int = Field(20, ge=1, description="Epochs of training.")
    iterations_per_epoch: int = Field(50, ge=1, description="Training iterations per epoch.")
    val_iterations_per_epoch: int = Field(2, ge=1, description="Validation iterations per epoch (online Dice only).")
    time_limit_minutes: float | None = Field(
        None, gt=0, description="Wall-clock budget: after each epoch the epoch count (and the learning-rate "
        "schedule) shrinks to what fits; null trains every epoch.",
    )
    initial_lr: float = Field(1e-2, gt=0, description="Initial learning rate (nnU-Net's poly schedule, SGD).")
    save_every: int = Field(5, ge=1, description="Save a resumable checkpoint every N epochs.")
    prompt_mix: dict[Literal["point", "box", "mask"], float] = Field(
        default_factory=lambda: {"point": 0.4, "box": 0.3, "mask": 0.3},
        description="Weight of each simulated prompt kind (normalised to probabilities).",
    )
    point_radius: float = Field(
        2.0, gt=0, description="Radius (network voxels) of a point prompt's ball; recorded in the model's "
        "lesionlocator.json, which the segmentation engine follows (a ball as large as the lesion lets the "
        "network copy it instead of reading the image).",
    )
    augmentation: Literal["nnunet", "light"] = Field(
        "light",
        description="nnunet: nnU-Net's full training augmentation; light: without its intensity degradations "
        "(noise, blur, simulated low resolution, gamma), which erase small low-contrast lesions at 3 mm.",
    )
    foreground_oversample: float = Field(
        0.9, ge=0, le=1, description="Fraction of patches centred on a lesion voxel (the rest are random)."
    )
    fold: int | Literal["all"] = Field("all", description='nnU-Net fold to train (0-4 of a 5-fold split, or "all" cases).')
    seed: int = Field(0, ge=0, description="Seed of prompt simulation and network initialisation.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Device: auto picks cuda when available, else cpu.")
    num_threads: int | None = Field(None, ge=1, description="Torch CPU threads (null: torch's default).")
    data_workers: int = Field(1, ge=1, description="nnU-Net data-augmentation worker processes (nnUNet_n_proc_DA).")
    resume: bool = Field(False, description="Continue the run in output_dir from its latest checkpoint (nnU-Net's --c).")
    init_from: Path | None = Field(
        None, description="Fine-tune a trained-model folder (such as models/lesionlocator_small): its plans "
        "preprocess the dataset (spacing, patch, network and normalisation; the settings above for them are "
        "ignored) and all its weights start the run, with a fresh optimiser and poly schedule (give a lower "
        "initial_lr). Like nnU-Net's plan transfer with -pretrained_weights.",
    )

    @model_validator(mode="after")
    def _valid_train(self) -> "TrainConfig":
        if self.patch_size is not None and (len(self.patch_size) != 3 or min(self.patch_size) < 8):
            raise ValueError(f"patch_size: give 3 sizes of at least 8 voxels, got {self.patch_size}")
        if self.architecture == "small" and self.patch_size is None:
            raise ValueError("patch_size: required by the small architecture")
        if not any(v > 0 for v in self.prompt_mix.values()) or any(v < 0 for v in self.prompt_mix.values()):
            raise ValueError(f"prompt_mix: weights must be >= 0 with at least one > 0, got {self.prompt_mix}")
        if self.features_max < self.features_base:
            raise ValueError("features_max: must be >= features_base")
        return self

    def prompt_noise(self) -> PromptNoise:
        """The prompt noise part of these settings."""
        return PromptNoise(**self.model_dump(include=set(PromptNoise.model_fields)))


# ``register`` is the natural key of the registration section; it only shadows ``ABCMeta.register``
# at class level (instances return the field), so pydantic's warning about it is silenced.
warnings.filterwarnings("ignore", message='Field name "register" in "StudyConfig" shadows', category=UserWarning)


class TrackConfig(StrictModel):
    """Longitudinal tracking: prompt propagation, autoregressive segmentation, lesion lifecycle."""

    prompt_source: Literal["anchored", "previous_mask", "baseline_prompt"] = Field(
        "anchored",
        description="anchored: each follow-up is segmented from the lesion's anchor (the reader's last prompt for "
        "it, or a box around a new lesion at its first sighting) propagated through the chain of transforms, and "
        "re-prompted from its last mask only when the anchor's mask is inconsistent with it (empty, far away, or "
        "cut by the box where the lesion has outgrown it); a lesion's course then follows the scans, not the "
        "tracker's history. previous_mask: the mask predicted at the previous session is propagated and used as "
        "the prompt (autoregressive, as in LesionLocator; masks drift on unchanged scans); baseline_prompt: the "
        "baseline mask is propagated through the chain of transforms to every session.",
    )
    baseline_prompt: Literal["auto", "mask", "box", "point"] = Field(
        "auto",
        description="Prompt kind used at baseline when a lesion has several: auto takes the mask, then the "
        "box, then the point.",
    )
    min_volume_ml: float = Field(
        0.01, ge=0, description="A lesion whose predicted volume is below this (mL) is reported vanished."
    )
    split_min_fraction: float = Field(
        0.2,
        gt=0,
        le=0.5,
        description="A lesion is reported split when its second-largest connected part holds at least this "
        "fraction of its volume.",
    )
    vanish_contrast_fraction: float = Field(
        0.3,
        ge=0,
        le=1,
        description="A lesion's mask has faded when both its contrast to its surroundings (median inside minus "
        "median of a 2-6 mm shell) and its intensity level (matched to the reference scan: baseline, or a new "
        "lesion's first sighting) fall below this fraction of their reference values (the segmenter outlines "
        "tissue even where the lesion is gone). A faded lesion is vanished only when the second opinion (the "
        "classical segmenter) agrees; when it still finds the lesion, the lesion is uncertain. 0 disables the test.",
    )
    reprompt_margin_mm: float = Field(
        5.0,
        ge=0,
        description="anchored: a lesion re-prompted from its last mask gets a box around that mask (and its anchor "
        "box) grown by this margin (mm) on every side.",
    )
    max_jump_mm: float = Field(
        15.0,
        gt=0,
        description="A lesion whose mask centroid lies further than this (mm) plus half its previous equivalent "
        "diameter from its propagated previous mask (more than registration error explains) is reported lost: "
        "its voxels are cleared and it is flagged for review.",
    )
    max_volume_ratio: float = Field(
        8.0,
        gt=1,
        description="A lesion whose volume changes by more than this factor (up or down) since its last "
        "observation is reported uncertain (mask kept, flagged for review); 8 is a doubling of the diameter.",
    )
    reliable_contrast_sd: float = Field(
        1.0,
        ge=0,
        description="The vanish test speaks only for a lesion whose reference contrast (median inside minus median "
        "of its 2-6 mm shell, at baseline or first sighting) is at least this many robust SDs of the shell; a "
        "lesion that never stood out cannot be called gone by its contrast.",
    )
    candidates: bool = Field(
        True, description="Look for new-lesion candidates at each follow-up (difference to the registered previous scan)."
    )
    candidate_threshold: float = Field(
        3.5,
        gt=0,
        description="Blob response of the change since the previous scan (robust standard deviations at the "
        "lesion's scale, after the misregistration normalisation) that a new-lesion candidate must exceed.",
    )
    candidate_misregistration_mm: float = Field(
        3.0,
        ge=0,
        description="Expected residual misregistration (mm) between a follow-up and the registered previous "
        "scan: changes explained by a shift this large at edges are not reported as new lesions.",
    )
    candidate_confirm_score: float = Field(
        6.0,
        ge=0,
        description="A new-lesion candidate seen again at a later follow-up is a confirmed new lesion (RECIST PD) "
        "only when its score at first sighting reached this; a weaker one stays an equivocal new lesion, flagged, "
        "until a reader confirms it (a lasting artefact is seen again too). 0: every candidate seen again is confirmed.",
    )
    candidate_max: int = Field(
        5, ge=0, description="At most this many new-lesion candidates per follow-up (the highest scores)."
    )
    candidate_exclusion_mm: float = Field(
        10.0,
        ge=0,
        description="A new-lesion candidate whose centre lies within this distance (mm) of a tracked lesion "
        "(now or at the previous session) is not reported.",
    )
    qc_figures: bool = Field(
        False,
        description="Write a QC figure per lesion (PNG strip across sessions: axial slice through the centroid "
        "with the mask's contour) under the patient's qc/ folder.",
    )
    dicom_seg: bool = Field(
        True,
        description="For sessions read from a DICOM series, also write the tracked lesions as DICOM-SEG "
        "(one segment per lesion, the same Tracking UID for the same lesion in every session).",
    )
    candidate_diameter_mm: tuple[float, float] = Field(
        (6.0, 80.0), description="Range (min, max) of the equivalent diameter of a new-lesion candidate, mm."
    )

    @model_validator(mode="after")
    def _ordered(self) -> "TrackConfig":
        lo, hi = self.candidate_diameter_mm
        if not 0 < lo <= hi:
            raise ValueError(f"candidate_diameter_mm must satisfy 0 < min <= max, got {list(self.candidate_diameter_mm)}")
        return self


class WorkflowConfig(StrictModel):
    """How the Snakemake workflow batches the cohort into jobs."""

    shard_size: int = Field(
        50,
        ge=1,
        description="Patients per job: a GPU job loads its model once per shard; per-patient outputs and "
        "resume stay per patient.",
    )
    evaluate: Literal["auto", "always", "never"] = Field(
        "auto", description="Evaluate against ground truth: auto when the cohort has ground-truth masks."
    )
    patient_time_budget_s: float | None = Field(
        None,
        gt=0,
        description="Most seconds one patient may take in one stage job (registering a pair, segmenting a "
        "session, ...): a patient over it fails with 'exceeded its time budget of N s in <stage>' and the job "
        "goes on with the next patient (a bad header must not block a shard). null: derived from the voxels of "
        "the images the stage reads for that patient, 5 s per million voxels and at least 600 s (a 512x512x300 "
        "CT pair: 787 s); raise it for nnU-Net on CPU.",
    )


class MetricsConfig(StrictModel):
    """Measurements, RECIST 1.1 / volumetric response, evaluation against ground truth, cohort tables."""

    min_measurable_mm: float = Field(10.0, gt=0, description="RECIST 1.1: smallest longest diameter (mm) of a measurable (target) lesion.")
    max_targets: int = Field(5, ge=1, description="RECIST 1.1: most target lesions per patient.")
    max_targets_per_organ: int = Field(2, ge=1, description="RECIST 1.1: most target lesions per organ (applied only where the organ is known).")
    pr_pct: float = Field(-30.0, lt=0, description="RECIST 1.1: partial response at this change (%) of the sum of diameters from baseline.")
    pd_pct: float = Field(20.0, gt=0, description="RECIST 1.1: progression at this increase (%) of the sum of diameters over the nadir.")
    pd_min_increase_mm: float = Field(5.0, ge=0, description="RECIST 1.1: progression also needs this absolute increase (mm) over the nadir.")
    volume_pr_pct: float = Field(-65.0, lt=0, description="Volumetric partial response at this change (%) of target volume from baseline (sphere equivalent of -30 % diameter).")
    volume_pd_pct: float = Field(73.0, gt=0, description="Volumetric progression at this increase (%) of target volume over the nadir (sphere equivalent of +20 % diameter).")
    cpm_radius_mm: float = Field(25.0, gt=0, description="Radius r (mm) of CPM@r and Dice@r in the evaluation.")
    detection_iou: float = Field(0.1, ge=0, lt=1, description="Detection: a predicted and a true lesion match when their IoU exceeds this value.")
    correspondence: Literal["id", "overlap"] = Field(
        "id", description="Which prediction a true lesion is compared with: id (same lesion ID, as tracked) or overlap (the detection match)."
    )
    files_per_partition: int = Field(
        2000, ge=1, description="Per-patient tables read per dask partition when the cohort tables are assembled (about 60 MB of memory per 1000 files)."
    )


class StudyConfig(StrictModel):
    """A whole study: cohort, stages and outputs."""

    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="Version of this config schema.")
    results_dir: Path = Field(Path("results"), description="Folder that receives every output.")
    cohort: CohortConfig = Field(default_factory=CohortConfig, description="Cohort input.")
    workflow: WorkflowConfig = Field(default_factory=WorkflowConfig, description="Batching of the cohort into jobs.")
    track: TrackConfig = Field(default_factory=TrackConfig, description="Longitudinal tracking of the lesions.")
    metrics: MetricsConfig = Field(
        default_factory=MetricsConfig, description="Measurements, response assessment, evaluation and cohort tables."
    )
    synthetic: SyntheticConfig = Field(
        default_factory=SyntheticConfig, description="Synthetic longitudinal cohort generator (demo, training, tests)."
    )
    register: RegisterConfig = Field(
        default_factory=RegisterConfig, description="Registration between sessions and prompt propagation."
    )
    segment: SegmentConfig = Field(
        default_factory=SegmentConfig, description="Promptable lesion segmentation (baseline and follow-up)."
    )
    train: TrainConfig = Field(
        default_factory=TrainConfig, description="Training of the promptable network (lesionlocator train)."
    )


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for item in err.errors():
        key = ".".join(str(p) for p in item["loc"]) or "(top level)"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        elif message.startswith("Value error, "):
            message = message[len("Value error, "):]
        if item["type"] not in ("extra_forbidden", "missing"):
            message += f" (got {item.get('input')!r})"
        lines.append(f"  {key}: {message}")
    return "\n".join(lines)


def validate_config(data: dict[str, Any] | None, source: str = "config") -> StudyConfig:
    """Validate a plain dict (as Snakemake's ``config``) into a :class:`StudyConfig`.

    Raises :class:`ConfigError` naming each bad key path and its problem.
    """
    try:
        return StudyConfig.model_validate(data or {})
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def load_config(path: str | Path | None = None) -> StudyConfig:
    """Load and validate a YAML config file (the default config when ``path`` is None)."""
    path = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read config ({err})") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys, got {type(data).__name__}")
    return validate_config(data, source=str(path))


def config_to_dict(config: StudyConfig) -> dict[str, Any]:
    """Plain JSON-compatible dict of a config (paths as strings)."""
    return config.model_dump(mode="json")


def json_schema() -> str:
    """The JSON schema of :class:`StudyConfig`, as written to ``workflow/schemas/``."""
    return json.dumps(StudyConfig.model_json_schema(), indent=2, sort_keys=True) + "\n"


def _yaml_scalar(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _emit(model: type[BaseModel], values: dict[str, Any], indent: int, lines: list[str]) -> None:
    pad = "  " * indent
    for name, field in model.model_fields.items():
        for text in (field.description or "").split(". "):
            if text:
                lines.append(f"{pad}# {text.rstrip('.')}.")
        value = values[name]
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            lines.append(f"{pad}{name}:")
            _emit(annotation, value, indent + 1, lines)
        else:
            lines.append(f"{pad}{name}: {_yaml_scalar(value)}")


def default_config_yaml() -> str:
    """The default config as commented YAML, generated from the models."""
    lines = [
        "# Default study configuration. GENERATED from lesionlocator/core/config.py by",
        "# `lesionlocator config --write`; do not edit by hand (a test checks it).",
        "",
    ]
    _emit(StudyConfig, config_to_dict(StudyConfig()), 0, lines)
    return "\n".join(lines) + "\n"


def write_generated_files() -> list[Path]:
    """Regenerate ``config/config.yaml`` and the JSON schema from the models."""
    from lesionlocator.core.io import atomic_path

    written = []
    for path, text in ((DEFAULT_CONFIG_PATH, default_config_yaml()), (SCHEMA_PATH, json_schema())):
        with atomic_path(path) as tmp:
            tmp.write_text(text)
        written.append(path)
    return written
