"""``lesionlocator train`` and ``lesionlocator evaluate-model``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lesionlocator.cli.command import Command, Device, Output
from lesionlocator.core.errors import ConfigError


def _train_settings(args: argparse.Namespace):
    from lesionlocator.core.config import load_config, validate_config

    base = load_config(args.configfile).train if args.configfile else validate_config({}).train
    overrides = {}
    for key in ("dataset", "output_dir", "architecture", "epochs", "iterations_per_epoch", "seed", "device",
                "num_threads", "batch_size", "normalization", "time_limit_minutes", "init_from", "initial_lr",
                "box_noise", "box_shrink", "mask_morph", "mask_warp", "mask_shift"):
        value = getattr(args, key, None)
        if value is not None:
            overrides[key] = value
    if args.patch_size is not None:
        overrides["patch_size"] = args.patch_size
    if args.prompt_mix is not None:
        overrides["prompt_mix"] = json.loads(args.prompt_mix)
    if args.resume:
        overrides["resume"] = True
    try:
        return type(base).model_validate({**base.model_dump(), **overrides})
    except Exception as err:  # pydantic ValidationError
        raise ConfigError(f"invalid train settings: {err}") from None


def _box_margin(text: str) -> float | None:
    """``--box-margin-mm``: a margin in mm (>= 0), or ``none``."""
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a margin in mm (a number >= 0) or 'none'")
    return value


def run_train(args: argparse.Namespace) -> None:
    from lesionlocator.train.run import train_model

    settings = _train_settings(args)
    if settings.dataset is None:
        raise ConfigError("train.dataset: give an nnU-Net raw dataset folder (--dataset or the config)")
    model = train_model(settings, settings.dataset, settings.output_dir)
    print(f"trained model -> {model}")


def run_evaluate(args: argparse.Namespace) -> None:
    from lesionlocator.train.evaluate_model import evaluate_models

    models = {}
    for item in args.model or []:
        name, sep, path = item.partition("=")
        name, path = (name, path) if sep else (f"model{len(models) + 1}" if models else "model", item)
        if name in models:
            raise ConfigError(f"--model: name {name!r} given twice")
        models[name] = Path(path)
    table = evaluate_models(
        [Path(p) for p in args.cohort], model=None, models=models,
        output=Path(args.output), seed=args.seed, max_lesions=args.max_lesions,
        classical=not args.no_classical, device=args.device, mirroring=args.mirroring,
        box_margin_mm=args.box_margin_mm, box_grow=args.box_grow, fine_zoom=args.fine_zoom,
    )
    print(table.to_string(index=False))


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("configfile", nargs="?", help="study config YAML (default: built-in defaults)")
    parser.add_argument("--dataset", help="nnU-Net raw dataset folder (DatasetNNN_Name)")
    parser.add_argument("-o", "--output-dir", dest="output_dir", help="run folder (default: results/train)")
    parser.add_argument("--architecture", choices=["small", "nnunet", "resenc_m", "resenc_l"])
    parser.add_argument("--patch-size", type=int, nargs=3, metavar=("Z", "Y", "X"))
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--iterations-per-epoch", dest="iterations_per_epoch", type=int)
    parser.add_argument("--prompt-mix", help='JSON weights, e.g. \'{"point": 0.4, "box": 0.3, "mask": 0.3}\'')
    parser.add_argument("--box-noise", dest="box_noise", type=float,
                        help="simulated boxes: faces move outwards by up to this fraction of the lesion's extent")
    parser.add_argument("--box-shrink", dest="box_shrink", type=float,
                        help="simulated boxes: faces may move inwards by up to this fraction (0: never)")
    parser.add_argument("--mask-morph", dest="mask_morph", type=int,
                        help="simulated masks: dilated or eroded by up to this many network voxels")
    parser.add_argument("--mask-warp", dest="mask_warp", type=float,
                        help="simulated masks: warped by up to this many network voxels")
    parser.add_argument("--mask-shift", dest="mask_shift", type=int,
                        help="simulated masks: shifted by up to this many network voxels per axis")
    parser.add_argument("--normalization", choices=["body", "zscore", "auto"])
    parser.add_argument("--time-limit-minutes", dest="time_limit_minutes", type=float,
                        help="wall-clock budget; the epoch count shrinks to fit")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--num-threads", dest="num_threads", type=int)
    parser.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")
    parser.add_argument("--init-from", dest="init_from", metavar="MODEL_FOLDER",
                        help="fine-tune: start from this trained-model folder's plans and weights")
    parser.add_argument("--initial-lr", dest="initial_lr", type=float, help="initial learning rate (poly schedule)")


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("cohort", nargs="+", help="held-out nnU-Net raw dataset folder(s)")
    parser.add_argument("--model", action="append", metavar="[NAME=]FOLDER",
                        help="nnU-Net trained-model folder, optionally named (repeat for several, e.g. "
                        "mixed=models/lesionlocator_small ct_only=run_ct/model for zero-shot); omit to score "
                        "the classical segmenter only")
    parser.add_argument("--mirroring", action="store_true", help="mirroring test-time augmentation (8x slower)")
    parser.add_argument("--fine-zoom", dest="fine_zoom", type=float, default=None, metavar="ZOOM",
                        help="small lesions on a grid ZOOM times finer (segment.fine_zoom; default: the config's, "
                        "1: off)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulated prompts")
    parser.add_argument("--max-lesions", type=int, default=None, help="at most this many lesions per dataset")
    parser.add_argument("--box-margin-mm", type=_box_margin, default=0.0, metavar="MM|none",
                        help="cut the networks' masks for box prompts to the box grown by MM "
                        "(segment.box_margin_mm; default 0); none: no cut")
    parser.add_argument("--box-grow", type=int, default=0, metavar="VOXELS",
                        help="move every box prompt's faces this many voxels outwards (negative: inwards, at "
                        "most to the lesion's middle); default 0, tight boxes")
    parser.add_argument("--no-classical", action="store_true", help="skip the classical segmenter")


COMMANDS = [
    Command(
        "train",
        help="train a promptable nnU-Net (image + prompt channel) on an nnU-Net raw dataset",
        description="Plan and preprocess an nnU-Net raw dataset, train nnUNetTrainerLesionLocator (prompts "
        "simulated from the ground truth) and export an nnU-Net trained-model folder to OUTPUT_DIR/model. "
        "Settings come from the config's train section; options override them.",
        add_arguments=add_train_arguments,
        run=run_train,
        device=Device(),
    ),
    Command(
        "evaluate-model",
        help="Dice per prompt type (point, box, mask) of a model and the classical segmenter on held-out data",
        description="Segment every lesion of held-out nnU-Net raw datasets (one per modality, e.g. the synthetic "
        "CT and MR exports) from simulated point, box and mask prompts with a trained-model folder and with the "
        "classical segmenter; writes per-lesion Dice (Parquet) and prints the mean Dice per dataset x prompt type.",
        add_arguments=add_evaluate_arguments,
        run=run_evaluate,
        output=Output("per-lesion Dice table (Parquet)"),
        device=Device(default="cpu"),
    ),
]
