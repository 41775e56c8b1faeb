"""Loading promptable nnU-Net v2 trained-model folders (ours, or the released LesionLocator ones).

An nnU-Net v2 trained-model folder holds ``plans.json``, ``dataset.json`` and ``fold_N/<checkpoint>``;
each checkpoint is a dict with ``network_weights`` (the state dict), ``trainer_name``,
``init_args`` (``configuration`` among them) and optionally ``inference_allowed_mirroring_axes``.
A promptable network has one input channel more than the dataset's image channels: the prompt.

The released LesionLocator checkpoint is accepted as-is: its root (``LesionLocatorCheckpoint``)
or its ``LesionLocatorSeg`` folder, which hold one such folder per prompt type,
``point_optimized`` and ``bbox_optimized``.

Checkpoints are read with ``torch.load(weights_only=True)``: no code in the file runs. nnU-Net's
training log inside the checkpoint holds numpy scalars, so the numpy scalar and dtype classes (and
nothing else) are allow-listed. The network class named in ``plans.json`` must come from
``dynamic_network_architectures`` and its ops from ``torch.nn``.
"""

from __future__ import annotations

import copy
import json
import logging
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from lesionlocator.core.errors import InputError

log = logging.getLogger(__name__)

OFFICIAL_SEG_FOLDER = "LesionLocatorSeg"
OFFICIAL_MODELS = {"point": "point_optimized", "box": "bbox_optimized"}


def _numpy_safe_globals() -> list:
    """The numpy classes nnU-Net checkpoints pickle (scalars in the training log), by every name numpy used."""
    scalar = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
    dtype_classes = {type(np.dtype(t)) for t in (np.float16, np.float32, np.float64, np.int32, np.int64, np.bool_)}
    return [
        scalar,
        (scalar, "numpy.core.multiarray.scalar"),
        (scalar, "numpy._core.multiarray.scalar"),
        np.dtype,
        *sorted(dtype_classes, key=lambda c: c.__name__),
    ]


def load_checkpoint(path: Path) -> dict:
    """``torch.load(weights_only=True)`` of an nnU-Net checkpoint; :class:`InputError` when unreadable."""
    if not path.is_file():
        raise InputError(path, "checkpoint file not found")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(path, f"cannot read checkpoint (truncated or not a weights-only nnU-Net checkpoint: {first[:200]})") from None
    if not isinstance(checkpoint, dict) or "network_weights" not in checkpoint:
        raise InputError(path, "not an nnU-Net checkpoint (no 'network_weights')")
    return checkpoint


def read_model_json(path: Path) -> dict:
    """A trained-model folder's plans.json or dataset.json; :class:`InputError` when missing or not JSON."""
    if not path.is_file():
        raise InputError(path, "file not found (an nnU-Net trained-model folder needs plans.json and dataset.json)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(path, f"not valid JSON ({err.msg} at line {err.lineno})") from None


def find_folds(folder: Path, checkpoint_name: str) -> list[int | str]:
    folds: list[int | str] = []
    for sub in sorted(folder.glob("fold_*")):
        if (sub / checkpoint_name).is_file():
            suffix = sub.name.removeprefix("fold_")
            folds.append(int(suffix) if suffix.isdigit() else suffix)
    return sorted(folds, key=lambda f: (isinstance(f, str), str(f).zfill(4)))


def check_model_files(folder: Path, folds: Sequence[int | str] | None, checkpoint_name: str) -> None:
    """Raise :class:`InputError` naming the first file a trained-model folder lacks: a checkpoint
    ``fold_N/<checkpoint_name>`` at all (``folds`` None), ``plans.json``, ``dataset.json``, then each
    wanted fold's checkpoint. Checks files only; the weights are read when a model is loaded."""
    wanted = folds or find_folds(folder, checkpoint_name)
    if not wanted:
        raise InputError(folder, f"no fold_*/{checkpoint_name} found")
    for name in ("plans.json", "dataset.json"):
        if not (folder / name).is_file():
            raise InputError(folder / name, "file not found (an nnU-Net trained-model folder needs it)")
    for fold in wanted:
        if not (folder / f"fold_{fold}" / checkpoint_name).is_file():
            raise InputError(folder / f"fold_{fold}" / checkpoint_name, "checkpoint file not found")


def resolve_model_folders(checkpoint: Path) -> dict[str, Path]:
    """Prompt kind ("point", "box", or "any") -> trained-model folder.

    ``checkpoint`` is an nnU-Net trained-model folder (used for every prompt kind), or the released
    LesionLocator checkpoint root or its ``LesionLocatorSeg`` folder.
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir():
        raise InputError(checkpoint, "checkpoint folder not found")
    if (checkpoint / "plans.json").exists():
        return {"any": checkpoint}
    seg = checkpoint / OFFICIAL_SEG_FOLDER if (checkpoint / OFFICIAL_SEG_FOLDER).is_dir() else checkpoint
    found = {kind: seg / name for kind, name in OFFICIAL_MODELS.items() if (seg / name).is_dir()}
    if not found:
        raise InputError(
            checkpoint,
            "not an nnU-Net trained-model folder (no plans.json) nor a LesionLocator checkpoint "
            f"(no {OFFICIAL_SEG_FOLDER}/point_optimized or bbox_optimized)",
        )
    return found


def _first_conv_in_channels(state: dict) -> int | None:
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and value.ndim == 5 and "encoder" in key:
            return int(value.shape[1])
    for value in state.values():
        if isinstance(value, torch.Tensor) and value.ndim == 5:
            return int(value.shape[1])
    return None


def check_architecture(arch: dict, source: Path) -> None:
    name = str(arch.get("network_class_name", ""))
    if not name.startswith("dynamic_network_architectures."):
        raise InputError(source, f"network class {name!r} is not from dynamic_network_architectures (refused)")
    kwargs = arch.get("arch_kwargs", {})
    for key in arch.get("_kw_requires_import", []):
        value = kwargs.get(key)
        if value is not None and not str(value).startswith("torch.nn."):
            raise InputError(source, f"architecture option {key}={value!r} is not a torch.nn class (refused)")


class OneDNNConv3d(torch.nn.Conv3d):
    """A ``Conv3d`` that takes oneDNN's convolution (``aten::mkldnn_convolution``) for float32 CPU inputs
    at any batch size, and ``Conv3d``'s own path otherwise (GPU, other dtypes, padding modes, autograd).

    torch 2.14 sends a CPU batch of 1 to ``aten::slow_conv3d_forward`` (im2col + GEMM) for all but the
    largest layers and only batches above 1 to oneDNN: at batch 1, 84% of the bundled model's forward
    time (0.16 CPU s per 32^3 patch, 1 thread) was that slow path; through oneDNN the same forward takes
    0.045 CPU s. It is the very kernel torch itself picks for a batch above 1, so a batch of mirrored
    copies gives the same numbers either way.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type != "cpu" or x.dtype != torch.float32 or self.padding_mode != "zeros"
                or isinstance(self.padding, str) or (torch.is_grad_enabled() and x.requires_grad)):
            return super().forward(x)
        return torch.ops.aten.mkldnn_convolution(x, self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups)


def use_onednn_convolutions(network: torch.nn.Module) -> int:
    """Make every plain ``Conv3d`` of ``network`` a :class:`OneDNNConv3d` (in place; weights, state-dict
    keys and outputs' meaning unchanged). Returns how many; 0 when torch has no oneDNN."""
    if not torch.backends.mkldnn.is_available():
        return 0
    converted = 0
    for module in network.modules():
        if type(module) is torch.nn.Conv3d:
            module.__class__ = OneDNNConv3d
            converted += 1
    return converted


MODEL_SIDECAR = "lesionlocator.json"  # written by `lesionlocator train` next to plans.json: settings, trainer


@dataclass
class LoadedModel:
    """One trained-model folder, loaded: one network per fold (on CPU until moved)."""

    folder: Path
    plans: dict
    dataset_json: dict
    configuration: str
    networks: list[torch.nn.Module]  # one per fold, in eval mode
    folds: list[int | str]
    mirror_axes: tuple[int, ...] | None
    trainer_name: str
    plans_manager: object = field(repr=False)
    configuration_manager: object = field(repr=False)
    num_image_channels: int = 1
    point_radius: float | None = None  # from lesionlocator.json (models trained here); None: the engine's setting

    @property
    def patch_size(self) -> tuple[int, int, int]:
        return tuple(int(p) for p in self.configuration_manager.patch_size)


def build_fold_networks(plans_manager, configuration_manager, dataset_json: dict, input_channels: int,
                        states: Sequence[tuple[Path, dict]]) -> list[torch.nn.Module]:
    """The plans' network (no deep supervision) with each ``(path, state_dict)`` loaded, in eval mode.

    Weights that do not fit the network raise :class:`InputError` naming the checkpoint file.
    """
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    network = get_network_from_plans(
        configuration_manager.network_arch_class_name,
        configuration_manager.network_arch_init_kwargs,
        configuration_manager.network_arch_init_kwargs_req_import,
        input_channels,
        plans_manager.get_label_manager(dataset_json).num_segmentation_heads,
        allow_init=False,
        deep_supervision=False,
    )
    networks = []
    for path, state in states:
        fold_network = network if not networks else copy.deepcopy(network)
        try:
            fold_network.load_state_dict(state)
        except RuntimeError as err:
            raise InputError(path, f"weights do not fit the network of plans.json ({str(err).splitlines()[0][:200]})") from None
        networks.append(fold_network.eval())
    return networks


def load_model(folder: Path, folds: Sequence[int | str] | None = None, checkpoint_name: str = "checkpoint_final.pth") -> LoadedModel:
    """Load a trained-model folder (every fold's weights; the network built once from the plans).

    Raises :class:`InputError` naming the file for a missing plans/dataset/checkpoint, a truncated
    checkpoint, a network that does not take image + prompt channels, or weights that do not fit.
    """
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    folder = Path(folder)
    plans = read_model_json(folder / "plans.json")
    dataset_json = read_model_json(folder / "dataset.json")
    channels = dataset_json.get("channel_names", dataset_json.get("modality"))
    if not isinstance(channels, dict) or not channels:
        raise InputError(folder / "dataset.json", "no channel_names")
    if folds is None or len(folds) == 0:
        folds = find_folds(folder, checkpoint_name)
        if not folds:
            raise InputError(folder, f"no fold_*/{checkpoint_name} found")
    checkpoints = [load_checkpoint(folder / f"fold_{f}" / checkpoint_name) for f in folds]
    first = checkpoints[0]
    init_args = first.get("init_args") or {}
    configuration = init_args.get("configuration", "3d_fullres")
    plans_manager = PlansManager(plans)
    if configuration not in plans.get("configurations", {}):
        raise InputError(folder / "plans.json", f"configuration {configuration!r} (from the checkpoint) not in the plans")
    configuration_manager = plans_manager.get_configuration(configuration)
    if len(configuration_manager.patch_size) != 3:
        raise InputError(folder / "plans.json", f"configuration {configuration!r} is not 3D")
    arch = plans["configurations"][configuration].get("architecture")
    if arch is None:
        # Inheriting configurations keep the architecture of their parent.
        arch = {
            "network_class_name": configuration_manager.network_arch_class_name,
            "arch_kwargs": configuration_manager.network_arch_init_kwargs,
            "_kw_requires_import": configuration_manager.network_arch_init_kwargs_req_import,
        }
    check_architecture(arch, folder / "plans.json")

    # Released LesionLocator models list the image channel only; ours may also list the prompt.
    weights_in = _first_conv_in_channels(first["network_weights"])
    n_listed = len(channels)
    if weights_in == n_listed + 1:
        num_image_channels = n_listed
    elif weights_in == n_listed and n_listed >= 2:
        num_image_channels = n_listed - 1
    else:
        raise InputError(
            folder / f"fold_{folds[0]}" / checkpoint_name,
            f"network takes {weights_in} input channel(s); a promptable model needs the image "
            f"channel(s) listed in dataset.json ({n_listed}) plus one prompt channel",
        )
    if num_image_channels != 1:
        raise InputError(folder / "dataset.json", f"{num_image_channels} image channels; only single-channel images are supported")
    networks = build_fold_networks(
        plans_manager, configuration_manager, dataset_json, weights_in,
        [(folder / f"fold_{f}" / checkpoint_name, c["network_weights"]) for f, c in zip(folds, checkpoints)],
    )
    mirror = first.get("inference_allowed_mirroring_axes")
    log.info(
        "loaded %s (%s, folds %s, trainer %s, patch %s)",
        folder, configuration, list(folds), first.get("trainer_name"), list(configuration_manager.patch_size),
    )
    sidecar_path = folder / MODEL_SIDECAR
    sidecar = read_model_json(sidecar_path) if sidecar_path.is_file() else {}
    point_radius = (sidecar.get("settings") or {}).get("point_radius")
    return LoadedModel(
        point_radius=float(point_radius) if point_radius else None,
        folder=folder,
        plans=plans,
        dataset_json=dataset_json,
        configuration=configuration,
        networks=networks,
        folds=list(folds),
        mirror_axes=tuple(int(a) for a in mirror) if mirror is not None else (0, 1, 2),
        trainer_name=str(first.get("trainer_name", "")),
        plans_manager=plans_manager,
        configuration_manager=configuration_manager,
        num_image_channels=num_image_channels,
    )
