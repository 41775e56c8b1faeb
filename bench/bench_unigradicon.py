"""Benchmark of the uniGradICON backend: seconds and peak memory of one registration at 175^3.

Builds the backend once (weights from --weights, or an untrained network's state dict with a
seeded last layer, written to a temporary file: timings only, but a non-zero displacement field),
registers a real CT to a shifted copy of itself --runs times, writes each transform (.tfm and .h5)
and checks that the .tfm files are byte-identical (.h5 files hold HDF5 write times). Prints one
line per figure. Needs the extra lesionlocator[unigradicon].

    .venv/bin/python bench/bench_unigradicon.py [--weights FILE] [--device cpu] [--runs 2] [--threads N]
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from lesionlocator.core.config import RegisterConfig
from lesionlocator.register.base import save_transform

REPO = Path(__file__).resolve().parent.parent


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def shifted(image: sitk.Image, shift_mm=(6.0, -4.0, 9.0)) -> sitk.Image:
    """``image`` resampled through a translation (a synthetic follow-up)."""
    return sitk.Resample(image, image, sitk.TranslationTransform(3, shift_mm), sitk.sitkLinear, -1000.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, help="uniGradICON weights (default: an untrained network's, timing only)")
    parser.add_argument("--image", type=Path, default=REPO / "data" / "real" / "example_ct.nii.gz")
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        weights = args.weights
        if weights is None:
            import unigradicon

            weights = tmp / "untrained_regis_net.trch"
            torch.manual_seed(0)
            net = unigradicon.make_network([1, 1, 175, 175, 175], include_last_step=True)
            with torch.no_grad():
                for name, parameter in net.regis_net.named_parameters():
                    if "lastConv" in name:
                        parameter.copy_(0.02 * torch.randn(parameter.shape))
            torch.save(net.regis_net.state_dict(), weights)
            del net
            print(f"weights: untrained + seeded last layer, {weights.stat().st_size / 1e6:.0f} MB (timing only)")
        from lesionlocator.register.unigradicon_backend import UniGradICONRegistration

        config = RegisterConfig(backend="unigradicon", unigradicon_weights=weights, device=args.device)
        t0 = time.perf_counter()
        registration = UniGradICONRegistration(config)
        print(f"build (load weights, make network): {time.perf_counter() - t0:.1f} s, device {registration.device}, "
              f"torch threads {torch.get_num_threads()}")
        moving = sitk.ReadImage(str(args.image))
        fixed = shifted(moving)
        print(f"images: {moving.GetSize()} voxels, spacing {np.round(moving.GetSpacing(), 2).tolist()} mm")
        digests = []
        for run in range(args.runs):
            rss_before = peak_rss_gb()
            t0 = time.perf_counter()
            transform = registration.register(fixed, moving)
            seconds = time.perf_counter() - t0
            sizes = []
            for suffix in (".tfm", ".h5"):  # .h5 files hold HDF5 write times: bytes compared on .tfm
                t0 = time.perf_counter()
                path = save_transform(transform, tmp / f"run{run}{suffix}")
                sizes.append(f"write {suffix} {time.perf_counter() - t0:.1f} s ({path.stat().st_size / 1e6:.0f} MB)")
                if suffix == ".tfm":
                    digests.append(hashlib.sha256(path.read_bytes()).hexdigest())
            print(f"run {run}: register {seconds:.1f} s, {', '.join(sizes)}, "
                  f"peak RSS {peak_rss_gb():.2f} GB (before {rss_before:.2f} GB)")
        if torch.cuda.is_available() and registration.device.type == "cuda":
            print(f"peak CUDA memory: {torch.cuda.max_memory_allocated() / 1024**3:.2f} GB")
        if len(digests) > 1:
            print(f"byte-identical .tfm transform files on rerun: {len(set(digests)) == 1}")


if __name__ == "__main__":
    main()
