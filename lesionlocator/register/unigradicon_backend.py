"""uniGradICON registration (the foundation model of Tian et al., MICCAI 2024) through its PyPI package.

Needs the optional extra ``lesionlocator[unigradicon]`` (``unigradicon``, ``icon_registration``,
``itk``). Weights come only from the local file ``register.unigradicon_weights`` (the state dict of
the network's ``regis_net``, as released: ``Step_2_final.trch``); the package's own
``get_unigradicon()``, which downloads them when missing, is never called. The network is built
once with ``unigradicon.make_network([1, 1, 175, 175, 175], include_last_step=True)`` and reused
for every pair.

Per pair, like the package's command line:

* intensities: CT is clamped to -1000..1000 HU and scaled to 0..1; MR is clamped to its minimum..99th
  percentile and scaled to 0..1. ``register.unigradicon_modality: auto`` takes an image as CT when
  its 1st percentile is below -500 (air in Hounsfield units), else as MR; each image is decided
  on its own.
* ``icon_registration.itk_wrapper.register_pair(network, moving, fixed)``: each image is resized
  (trilinear) to 175^3 over its own extent; the network returns ``phi_AB`` (A = moving = previous
  session, B = fixed = follow-up), whose ITK form maps world points of B to world points of A, so
  that resampling A with it gives an image close to B: exactly our convention (fixed -> moving).
* the ITK transform (``[to moving world, displacement field in network space, from fixed world]``)
  is converted exactly to a SimpleITK ``CompositeTransform([affine, displacement field])``: the
  affine maps the fixed image's box onto the moving image's box (centre onto centre, extent onto
  extent, as the 175^3 resizing does); the displacement field lies on the 175^3 network grid placed
  over the fixed image (world mm, LPS), and is zero outside it, where the transform is the affine.

Instance optimisation (``unigradicon_instance_optimization``, ``unigradicon_finetune_steps``
gradient steps per pair) is off by default and refused on CPU unless
``unigradicon_force_cpu_instance_optimization``: measured on 2 CPU cores, one registration (forward
pass at 175^3) takes 24-49 s and ~3.8 GB (bench/bench_unigradicon.py; the first call of a process
also loads itk's modules, ~15 s); one instance-optimisation step ~135 s and 12.6 GB.

The transform written for one pair holds a 175^3 field: ~129 MB as ``.h5`` (HDF5 files also hold
their write time, so reruns differ in those bytes only) and ~310 MB as text ``.tfm`` (byte-identical
on rerun, ~2 s to write and ~5 s to read).

On CPU a rerun with the same inputs, weights and thread count writes a byte-identical transform
(deterministic algorithms are switched on for the call, and the random draws of the ICON loss,
which do not affect the transform, are seeded).
"""

from __future__ import annotations

import contextlib
import io
import logging
import pickle
import time
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import numpy as np
import SimpleITK as sitk
import torch

from lesionlocator.core.config import RegisterConfig
from lesionlocator.core.devices import resolve_device
from lesionlocator.core.errors import InputError
from lesionlocator.register.api import RegistrationError

log = logging.getLogger(__name__)

NETWORK_SHAPE = (175, 175, 175)
CT_WINDOW_HU = (-1000.0, 1000.0)
MR_UPPER_QUANTILE = 0.99
CT_AIR_PERCENTILE = 1.0
CT_AIR_LIMIT_HU = -500.0
SEED = 0


def require_extra() -> None:
    """Import the optional packages, or raise an error that says how to install them."""
    try:
        import icon_registration  # noqa: F401
        import itk  # noqa: F401
        import unigradicon  # noqa: F401
    except ImportError as err:
        raise InputError(
            "register.backend",
            f"the uniGradICON backends need the optional extra: pip install 'lesionlocator[unigradicon]' ({err})",
        ) from None


# -- intensities -------------------------------------------------------------------------------
def guess_modality(array: np.ndarray) -> Literal["ct", "mr"]:
    """``ct`` when the 1st percentile lies below -500 (air in HU), else ``mr``."""
    return "ct" if float(np.percentile(array, CT_AIR_PERCENTILE)) < CT_AIR_LIMIT_HU else "mr"


def normalize_ct(array: np.ndarray) -> np.ndarray:
    """CT as the package feeds it: clamped to -1000..1000 HU, scaled to 0..1 (float32)."""
    lo, hi = CT_WINDOW_HU
    return ((np.clip(array.astype(np.float32), lo, hi) - lo) / (hi - lo)).astype(np.float32)


def normalize_mr(array: np.ndarray) -> np.ndarray:
    """MR as the package feeds it: clamped to min..99th percentile (its k-th value rule), scaled to 0..1."""
    flat = array.astype(np.float32).ravel()
    k = max(1, min(int(MR_UPPER_QUANTILE * flat.size), flat.size))
    lo, hi = float(flat.min()), float(np.partition(flat, k - 1)[k - 1])
    if hi <= lo:
        raise RegistrationError("image intensities are constant below their 99th percentile: nothing to register")
    return ((np.clip(array.astype(np.float32), lo, hi) - lo) / (hi - lo)).astype(np.float32)


def modality_normalizer(setting: str) -> Callable[[np.ndarray], tuple[np.ndarray, str]]:
    """The normaliser for ``register.unigradicon_modality`` (auto decides per image)."""

    def normalize(array: np.ndarray) -> tuple[np.ndarray, str]:
        modality = guess_modality(array) if setting == "auto" else setting
        return (normalize_ct(array) if modality == "ct" else normalize_mr(array)), modality

    return normalize


# -- weights and network -----------------------------------------------------------------------
def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """``torch.load(weights_only=True)`` of a weights file; :class:`InputError` naming it when unusable."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "weights file not found (uniGradICON weights are never downloaded)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(path, f"cannot read weights (truncated or not a weights-only torch file: {first[:200]})") from None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(path, "not a state dict (a dict of tensors, as torch.save(net.regis_net.state_dict()) writes)")
    return state


def build_network(state: dict[str, torch.Tensor], source: str | Path, shape: tuple[int, int, int] = NETWORK_SHAPE):
    """The uniGradICON network (``GradientICONSparse``) with ``state`` loaded into its ``regis_net``.

    ``state`` is the ``regis_net`` state dict; a whole-network state dict (keys ``regis_net.*``) is
    accepted too. Weights that do not fit raise :class:`InputError` naming ``source``.
    """
    require_extra()
    import icon_registration as icon
    import unigradicon

    if any(k.startswith("regis_net.") for k in state):
        state = {k.removeprefix("regis_net."): v for k, v in state.items() if k.startswith("regis_net.")}
    # Older icon_registration versions saved the identity maps (now rebuilt from the shape).
    state = {k: v for k, v in state.items() if not k.endswith("identity_map")}
    network = unigradicon.make_network([1, 1, *shape], include_last_step=True, loss_fn=icon.LNCC(sigma=5))
    try:
        network.regis_net.load_state_dict(state)
    except RuntimeError as err:
        lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
        detail = " ".join(lines[1:3]) if len(lines) > 1 else (lines[0] if lines else "")
        raise InputError(source, f"weights do not fit the uniGradICON network ({detail[:300]})") from None
    return network.eval()


# -- images and transforms ---------------------------------------------------------------------
def to_itk(array_zyx: np.ndarray, like: sitk.Image):
    """A float32 ITK image of ``array_zyx`` with the geometry of ``like``."""
    import itk

    image = itk.image_from_array(np.ascontiguousarray(array_zyx, dtype=np.float32))
    image.SetOrigin([float(v) for v in like.GetOrigin()])
    image.SetSpacing([float(v) for v in like.GetSpacing()])
    image.SetDirection(itk.matrix_from_array(np.asarray(like.GetDirection(), dtype=np.float64).reshape(3, 3)))
    return image


def _matrix_offset(transform) -> tuple[np.ndarray, np.ndarray]:
    import itk

    return np.asarray(itk.array_from_matrix(transform.GetMatrix()), dtype=np.float64), np.asarray(
        transform.GetOffset(), dtype=np.float64
    )


def itk_to_sitk_transform(composite) -> sitk.CompositeTransform:
    """The ITK transform of ``icon_registration.itk_wrapper`` as an equal SimpleITK transform.

    ``composite`` is ``[to_moving (affine), field (DisplacementFieldTransform in network space),
    from_fixed (affine)]`` (applied last to first): T(x) = to_moving(p + u(p)) with p = from_fixed(x).
    Returned: ``CompositeTransform([L, D])`` with L = to_moving o from_fixed and D the field on the
    network grid mapped into fixed world space, with vectors d = from_fixed^-1 u (so that
    L(x + d(x)) = T(x)); both in world mm (LPS).
    """
    import itk

    if composite.GetNumberOfTransforms() != 3:
        raise ValueError(f"expected the 3-part transform of icon_registration, got {composite.GetNumberOfTransforms()} parts")
    to_moving, field_transform, from_fixed = (itk.down_cast(composite.GetNthTransform(i)) for i in range(3))
    if field_transform.GetNameOfClass() != "DisplacementFieldTransform":
        raise ValueError(f"expected a DisplacementFieldTransform in the middle, got {field_transform.GetNameOfClass()}")
    m_to, o_to = _matrix_offset(to_moving)
    m_from, o_from = _matrix_offset(from_fixed)
    m_from_inv = np.linalg.inv(m_from)

    linear = sitk.AffineTransform(3)
    linear.SetMatrix((m_to @ m_from).ravel().tolist())
    linear.SetTranslation((m_to @ o_from + o_to).tolist())

    field = field_transform.GetDisplacementField()
    u = np.asarray(itk.array_from_image(field), dtype=np.float64)  # (k, j, i, 3), vectors (x, y, z)
    f_origin = np.asarray(field.GetOrigin(), dtype=np.float64)
    f_spacing = np.asarray(field.GetSpacing(), dtype=np.float64)
    f_direction = np.asarray(itk.array_from_matrix(field.GetDirection()), dtype=np.float64)
    grid = m_from_inv @ f_direction @ np.diag(f_spacing)  # network index -> fixed world (linear part)
    spacing = np.linalg.norm(grid, axis=0)
    direction = grid / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-6):
        raise ValueError("the network grid is not an orthogonal grid in fixed world space")
    origin = m_from_inv @ (f_origin - o_from)
    vectors = u @ m_from_inv.T
    image = sitk.GetImageFromArray(np.ascontiguousarray(vectors), isVector=True)
    image.SetOrigin(origin.tolist())
    image.SetSpacing(spacing.tolist())
    image.SetDirection(direction.ravel().tolist())
    return sitk.CompositeTransform([linear, sitk.DisplacementFieldTransform(image)])


@contextlib.contextmanager
def deterministic(device: torch.device, seed: int = SEED) -> Iterator[None]:
    """Deterministic algorithms and a seeded, forked RNG for the duration of one registration."""
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    devices = [device.index or 0] if device.type == "cuda" else []
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


class UniGradICONRegistration:
    """uniGradICON registration, built once (network loaded once), run on many pairs.

    ``network`` and ``normalize`` replace the uniGradICON weights file and the package's intensity
    preprocessing (the LesionLocatorTrack backend passes its own); ``normalize`` maps a (z, y, x)
    array to ``(network input, modality name)``.
    """

    def __init__(
        self,
        config: RegisterConfig,
        *,
        network: Any = None,
        normalize: Callable[[np.ndarray], tuple[np.ndarray, str]] | None = None,
        name: str = "unigradicon",
    ):
        require_extra()
        self.config = config
        self.name = name
        self.device = resolve_device(config.device, "register.device")
        self.finetune_steps: int | None = None
        if config.unigradicon_instance_optimization:
            if self.device.type == "cpu" and not config.unigradicon_force_cpu_instance_optimization:
                raise InputError(
                    "register.unigradicon_instance_optimization",
                    "refused on CPU: one step takes ~2 min and ~13 GB at 175^3 (set "
                    "unigradicon_force_cpu_instance_optimization to run it anyway, or use a GPU)",
                )
            self.finetune_steps = int(config.unigradicon_finetune_steps)
        if network is None:
            if config.unigradicon_weights is None:
                raise InputError("register.unigradicon_weights", "required by the unigradicon backend")
            network = build_network(load_state_dict(config.unigradicon_weights), config.unigradicon_weights)
        self.network = network.eval()
        self.normalize = normalize or modality_normalizer(config.unigradicon_modality)
        self.network_shape = tuple(int(s) for s in network.identity_map.shape[2:])
        self.last_report: dict = {}

    def _network_input(self, image: sitk.Image):
        array = sitk.GetArrayFromImage(image)
        if float(array.max()) == float(array.min()):
            raise RegistrationError("image is constant: nothing to register")
        values, modality = self.normalize(array)
        if float(values.max()) == float(values.min()):
            raise RegistrationError(f"image is constant after {modality} normalisation: nothing to register")
        return to_itk(values, image), modality

    def _check_overlap(self, transform: sitk.Transform, fixed: sitk.Image, moving: sitk.Image) -> float:
        from lesionlocator.register.sitk_backend import SimpleITKRegistration, body_mask, coarse_image

        fixed_c = coarse_image(fixed, self.config.grid_spacing_mm)
        moving_c = coarse_image(moving, self.config.grid_spacing_mm)
        return SimpleITKRegistration.overlap_fraction(transform, body_mask(fixed_c), moving_c)

    def register(self, fixed: sitk.Image, moving: sitk.Image) -> sitk.Transform:
        """The transform from ``fixed`` (follow-up) world points to ``moving`` (previous) world points."""
        import icon_registration.config as icon_config
        from icon_registration.itk_wrapper import register_pair

        start = time.perf_counter()
        fixed_itk, fixed_modality = self._network_input(fixed)
        moving_itk, moving_modality = self._network_input(moving)
        icon_config.device = self.device  # register_pair moves the network and inputs there
        printed = io.StringIO()
        grad = torch.enable_grad() if self.finetune_steps else torch.no_grad()
        with deterministic(self.device), grad, contextlib.redirect_stdout(printed):
            phi_ab, _ = register_pair(self.network, moving_itk, fixed_itk, finetune_steps=self.finetune_steps)
        for line in printed.getvalue().splitlines():
            log.debug("icon_registration: %s", line)
        transform = itk_to_sitk_transform(phi_ab)
        # The same check as the SimpleITK backend (body masks on the coarse grid); off when min_overlap is 0.
        overlap = self._check_overlap(transform, fixed, moving) if self.config.min_overlap > 0 else None
        self.last_report = {
            "network": self.name,
            "network_shape": list(self.network_shape),
            "modality": {"fixed": fixed_modality, "moving": moving_modality},
            "instance_optimization_steps": self.finetune_steps or 0,
            "device": self.device.type,
            "overlap": None if overlap is None else round(overlap, 4),
        }
        if overlap is not None and overlap < self.config.min_overlap:
            raise RegistrationError(
                f"only {overlap:.0%} of the follow-up body maps inside the previous scan after registration "
                f"(min_overlap {self.config.min_overlap:.0%}): the scans do not cover the same anatomy"
            )
        log.info("%s registration done in %.1f s on %s (overlap %s)", self.name, time.perf_counter() - start, self.device, self.last_report["overlap"])
        return transform
