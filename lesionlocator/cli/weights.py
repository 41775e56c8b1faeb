"""``lesionlocator weights fetch``: download, verify and install the released LesionLocator checkpoint."""

from __future__ import annotations

import argparse

from lesionlocator.cli.command import Command
from lesionlocator.segment.released_weights import (
    DEFAULT_API_URL,
    DEFAULT_DEST,
    DEFAULT_RECORD,
    InstalledWeights,
    fetch_weights,
)


def report(weights: InstalledWeights) -> str:
    """What is installed where, the files verified, and the config lines that use it."""
    lines = [f"{'installed' if weights.fetched else 'already installed (nothing downloaded)'}: {weights.root}"]
    lines += [f"  verified {f.key}: {f.size} bytes, {f.checksum}" for f in weights.files]
    lines += [f"  segmentation model ({kind} prompts): {path}" for kind, path in sorted(weights.models.items())]
    if weights.track is not None:
        lines.append(f"  tracking checkpoint: {weights.track}")
    lines += ["config lines that use it:", "  segment:", f"    checkpoint: {weights.root}"]
    if weights.track is not None:
        lines += ["  register:", "    backend: lesionlocator_track", f"    track_checkpoint: {weights.track}"]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> None:
    weights = fetch_weights(args.dest, record=args.record, api_url=args.api_url, timeout=args.timeout, force=args.force)
    print(report(weights))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["fetch"], help="fetch: download, verify and install the checkpoint")
    parser.add_argument("--dest", default=str(DEFAULT_DEST),
                        help=f"folder to install the checkpoint root into (default: {DEFAULT_DEST}, under the current folder)")
    parser.add_argument("--record", default=DEFAULT_RECORD, help=f"record ID (default: {DEFAULT_RECORD}, the authors' release)")
    parser.add_argument("--api-url", default=DEFAULT_API_URL, help=f"the records API (default: {DEFAULT_API_URL})")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds without data before giving up (default: 60)")
    parser.add_argument("--force", action="store_true", help="download again and replace the checkpoint at --dest")


COMMANDS = [
    Command(
        "weights",
        help="download the released LesionLocator checkpoint (weights fetch); nothing downloads otherwise",
        description="fetch: read the record's file list (names, sizes, checksums) from its public record "
        f"({DEFAULT_API_URL}/records/{DEFAULT_RECORD} by default), download every file, check its size and "
        "checksum, unpack the archives, check the result is a LesionLocator checkpoint (LesionLocatorSeg, and "
        "LesionLocatorTrack when present) and only then move it to --dest; print what was installed and the "
        "config lines that use it. A failure leaves nothing at --dest. A checkpoint already at --dest is kept "
        "unless --force; anything else there (but an empty folder) is refused. No other command ever downloads.",
        add_arguments=add_arguments,
        run=run,
    ),
]
