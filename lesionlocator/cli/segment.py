"""``lesionlocator segment``: segment the prompted lesions of one scan into a uint32 instance map."""

from __future__ import annotations

import argparse

from pydantic import ValidationError

from lesionlocator.cli.command import Command, Device, Output
from lesionlocator.core.errors import ConfigError


def run(args: argparse.Namespace) -> None:
    from lesionlocator.segment.session import segment_session

    config = args.config.segment
    overrides = {}
    if args.segmenter:
        overrides["segmenter"] = args.segmenter
    if args.checkpoint:
        overrides["checkpoint"] = args.checkpoint
    if args.device:
        overrides["device"] = args.device
    if args.no_tta:
        overrides["mirroring"] = False
    if overrides:
        try:
            config = type(config).model_validate({**config.model_dump(), **overrides})
        except ValidationError as err:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'segment'}: {e['msg']}" for e in err.errors())
            raise ConfigError(f"segment options: {problems}") from None
    kinds = ("point", "box") if args.prefer == "point" else ("box", "point")
    out = segment_session(
        args.image,
        prompts_json=args.prompts,
        prompt_mask=args.prompt_mask,
        config=config,
        output_path=args.output,
        per_lesion_dir=args.per_lesion_dir,
        kinds=kinds,
        mask_kind=args.mask_as,
    )
    volumes = out.result.volumes_voxels()
    for lesion_id in sorted(out.result.scores):
        print(f"lesion {lesion_id}: {volumes[lesion_id]} voxels, score {out.result.scores[lesion_id]:.3f}")
    print(f"-> {out.labels_path}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", required=True, help="image file (NIfTI/NRRD/MHA) or DICOM series folder")
    parser.add_argument("--prompts", help="prompts.json (see lesionlocator.core.prompts)")
    parser.add_argument("--prompt-mask", help="instance mask with the image's geometry; each label is one lesion")
    parser.add_argument("--mask-as", choices=["mask", "box", "point"], default="mask",
                        help="turn each lesion of --prompt-mask into this prompt kind (default: mask)")
    parser.add_argument("--prefer", choices=["box", "point"], default="box",
                        help="prompt kind used for lesions of --prompts that have both a point and a box (default: box)")
    parser.add_argument("--segmenter", choices=["classical", "nnunet"], help="override segment.segmenter")
    parser.add_argument("--checkpoint", help="override segment.checkpoint (nnU-Net or LesionLocator model folder)")
    parser.add_argument("--no-tta", action="store_true", help="disable mirroring test-time augmentation")
    parser.add_argument("--per-lesion-dir", help="also write lesion_<id>.nii.gz binary masks into this folder")


COMMANDS = [
    Command(
        "segment",
        help="segment the prompted lesions of one scan (points, boxes or masks) into a uint32 label map",
        description="Segment every lesion prompted by a prompts.json (points/boxes, world or voxel frame) "
        "and/or an instance mask (one lesion per label value; IDs kept). Writes one uint32 instance map with "
        "the image's geometry (lesion ID = prompt ID). The segmenter (classical, or an nnU-Net / released "
        "LesionLocator checkpoint) comes from the config's 'segment' section; flags override it.",
        add_arguments=add_arguments,
        run=run,
        config=True,
        output=Output("instance label map to write (e.g. labels.nii.gz)"),
        device=Device(("auto", "cpu", "cuda", "mps"), help="override segment.device"),
    ),
]
