"""Benchmark of the segmenters on the embedded real CT with simulated lesions (CPU figures).

    .venv/bin/python bench/bench_segment.py [--lesions 8] [--patch 64] [--segmenter classical|bundled|nnunet|all] [--tta]
    .venv/bin/python bench/bench_segment.py --segmenter bundled --model FOLDER    # another trained-model folder
    .venv/bin/python bench/bench_segment.py --segmenter timing --threads 1        # 512^2 preprocessing, s per lesion

``--device cuda`` runs the networks on the GPU (classical always runs on the CPU).
Prints seconds per lesion and per scan, peak resident memory, Dice per prompt kind (classical and
the bundled model ``models/lesionlocator_small``, with and without mirroring TTA, on the same
lesions: ``insert_lesions`` is a simpler lesion model than the synthetic generator the bundled
model was trained on), and for an nnU-Net-format ResEnc network with random weights the share of
time spent in the network's forward passes (the rest is preprocessing, prompt encoding, stitching,
back-mapping); ``--tta`` runs that network with mirroring TTA (8 mirrored copies per patch). Each
segmenter runs in its own process so peak memory figures are separate.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lesionlocator.core.regions import dice  # noqa: E402
from lesionlocator.segment.api import Prompt  # noqa: E402
from tests.segment.simulate import insert_lesions  # noqa: E402


def where(args) -> str:
    """The device a network runs on, as the figures should name it."""
    if args.device == "cuda":
        import torch

        return f"cuda ({torch.cuda.get_device_name()})"
    return f"cpu, {args.threads} thread(s)"


def gpu_peak_mb() -> dict:
    """Peak GPU memory of this process (empty on the CPU)."""
    import torch

    return {"peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20)} if torch.cuda.is_available() else {}


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def case(n_lesions: int, seed: int = 0):
    image = sitk.ReadImage(str(REPO / "data" / "real" / "example_ct.nii.gz"))
    return insert_lesions(image, n_lesions=n_lesions, seed=seed)


def prompts_of(c, kind: str) -> list[Prompt]:
    if kind == "box":
        return [Prompt(i, "box", box=b) for i, b in c.boxes.items()]
    if kind == "point":
        return [Prompt(i, "point", point=p) for i, p in c.points.items()]
    prompts = []
    for n, i in enumerate(c.boxes):  # a previous mask: shifted 1 voxel, grown or shrunk by 1 voxel
        m = ndimage.shift((c.labels == i).astype(np.uint8), (1, -1, 1), order=0) > 0
        prompts.append(Prompt(i, "mask", mask=ndimage.binary_erosion(m) if n % 2 else ndimage.binary_dilation(m)))
    return prompts


def run_classical(args) -> dict:
    from lesionlocator.core.config import SegmentConfig
    from lesionlocator.segment.classical import ClassicalSegmenter

    return score_segmenter(args, "classical", lambda: ClassicalSegmenter(SegmentConfig(segmenter="classical")))


def run_bundled(args) -> dict:
    import torch

    from lesionlocator.core.config import BUNDLED_MODEL, SegmentConfig
    from lesionlocator.segment.nnunet import NnUNetSegmenter

    torch.set_num_threads(args.threads)
    folder = Path(args.model) if args.model else BUNDLED_MODEL
    out = {}
    for mirroring in (False, True):
        name = f"{'model' if args.model else 'bundled'} {folder.name}, mirroring {'on' if mirroring else 'off'}, {where(args)}"
        segmenter = NnUNetSegmenter(SegmentConfig(checkpoint=folder, device=args.device, mirroring=mirroring))
        out[name] = score_segmenter(args, name, lambda segmenter=segmenter: segmenter)
    out["peak_rss_mb"] = round(peak_mb())
    out.update(gpu_peak_mb())
    return out


def score_segmenter(args, name: str, factory) -> dict:
    """Dice per prompt kind and seconds per lesion of ``factory()`` on simulated lesions in the real CT."""
    out = {"segmenter": name}
    for contrast, tag in (((40.0, 90.0), ""), ((20.0, 40.0), "_low_contrast")):
        dices = {"box": [], "point": [], "mask": []}
        seconds, lesions = 0.0, 0
        for seed in range(args.scans):
            image = sitk.ReadImage(str(REPO / "data" / "real" / "example_ct.nii.gz"))
            c = insert_lesions(image, n_lesions=args.lesions, seed=seed, contrast_hu=contrast)
            for kind in dices:
                segmenter = factory()
                t0 = time.perf_counter()
                result = segmenter.segment(c.image, prompts_of(c, kind))
                seconds += time.perf_counter() - t0
                lesions += len(c.boxes)
                dices[kind] += [dice(result.labels == i, c.labels == i) for i in c.boxes]
        for kind, values in dices.items():
            out[f"dice_{kind}{tag}"] = f"{np.mean(values):.3f} (min {np.min(values):.3f}, n={len(values)})"
        if not tag:
            out["seconds_per_lesion"] = round(seconds / lesions, 3)
            out["seconds_per_scan"] = round(seconds / (args.scans * 3), 2)
    out["peak_rss_mb"] = round(peak_mb())
    return out


def ct_512(image: sitk.Image) -> sitk.Image:
    """``image`` resampled (linear, air outside) onto 512 x 512 x 168 voxels of 0.8 x 0.8 x 2 mm around its centre:
    the size of a clinical CT."""
    size, spacing = (512, 512, 168), (0.8, 0.8, 2.0)
    centre = np.asarray(image.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in image.GetSize()]))
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    reference = sitk.Image(size, image.GetPixelID())
    reference.SetSpacing(spacing)
    reference.SetDirection(image.GetDirection())
    reference.SetOrigin(tuple(centre - direction @ (np.asarray(spacing) * (np.asarray(size) - 1) / 2)))
    return sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, -1024.0)


def run_bundled_timing(args) -> dict:
    """The bundled model's preprocessing of a 512 x 512 x 168 CT and its per-lesion times (wall and CPU s)."""
    import torch

    from lesionlocator.core.config import BUNDLED_MODEL, SegmentConfig
    from lesionlocator.segment.nnunet import NnUNetSegmenter, preprocess

    torch.set_num_threads(args.threads)
    folder = Path(args.model) if args.model else BUNDLED_MODEL
    segmenter = NnUNetSegmenter(SegmentConfig(checkpoint=folder, device=args.device, mirroring=True))
    model = segmenter._model_for("box")
    big = sitk.GetArrayFromImage(ct_512(sitk.ReadImage(str(REPO / "data" / "real" / "example_ct.nii.gz"))))
    preprocess(model, big[:16, :64, :64], (2.0, 0.8, 0.8))  # imports and caches, once per job
    t0, cpu0 = time.perf_counter(), time.process_time()
    pre = preprocess(model, big, (2.0, 0.8, 0.8))
    out = {"segmenter": f"bundled {folder.name}, timing, {where(args)}",
           "preprocess_512x512x168_s": round(time.perf_counter() - t0, 2),
           "preprocess_512x512x168_cpu_s": round(time.process_time() - cpu0, 2),
           "network_grid": list(pre.data.shape)}
    c = case(args.lesions)
    for mirroring in (False, True):
        segmenter.config = segmenter.config.model_copy(update={"mirroring": mirroring})
        segmenter.segment(c.image, prompts_of(c, "box")[:1])  # warm-up
        segmenter.stats = type(segmenter.stats)()
        t0, cpu0 = time.perf_counter(), time.process_time()
        segmenter.segment(c.image, prompts_of(c, "box"))
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        s, n = segmenter.stats, len(c.boxes)
        tag = "tta" if mirroring else "no_tta"
        out[f"{tag}_seconds_per_lesion"] = round((wall - s.preprocess) / n, 3)
        out[f"{tag}_cpu_seconds_per_lesion"] = round((cpu - s.preprocess_cpu) / n, 3)
        out[f"{tag}_forward_s_per_lesion"] = round(s.forward / n, 3)
        out[f"{tag}_forward_cpu_s_per_lesion"] = round(s.forward_cpu / n, 3)
        out[f"{tag}_preprocess_s"] = round(s.preprocess, 2)
    out["threads"] = args.threads
    out["peak_rss_mb"] = round(peak_mb())
    return out


def run_nnunet(args) -> dict:
    import torch

    from lesionlocator.core.config import SegmentConfig
    from lesionlocator.segment.nnunet import NnUNetSegmenter
    from tests.segment.toy_model import toy_plans, write_toy_model

    torch.set_num_threads(args.threads)
    c = case(args.lesions)
    with tempfile.TemporaryDirectory() as tmp:
        plans = toy_plans(patch_size=(args.patch,) * 3, spacing_zyx=(2.0, 2.0, 2.0), features=(16, 32, 64, 128))
        folder = write_toy_model(Path(tmp) / "m", plans=plans)
        segmenter = NnUNetSegmenter(SegmentConfig(checkpoint=folder, device=args.device, mirroring=args.tta))
        segmenter.segment(c.image, prompts_of(c, "point")[:1])  # warm-up
        segmenter.stats = type(segmenter.stats)()
        t0, cpu0 = time.perf_counter(), time.process_time()
        segmenter.segment(c.image, prompts_of(c, "box"))
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        s = segmenter.stats
    tta = "mirroring TTA (8 copies)" if args.tta else "no TTA"
    return {
        "segmenter": f"nnunet random ResEnc, patch {args.patch}^3, 2 mm target spacing, {tta}, 1 fold, {where(args)}",
        "seconds_per_scan": round(wall, 2),
        "cpu_seconds_per_scan": round(cpu, 2),
        "seconds_per_lesion": round(wall / len(c.boxes), 3),
        "preprocess_s": round(s.preprocess, 2),
        "forward_s": round(s.forward, 2),
        "patches": s.patches,
        "forward_s_per_patch": round(s.forward / s.patches, 3),
        "forward_share": round(s.forward / wall, 3),
        "overhead_beyond_forward": round(1 - s.forward / wall, 3),
        "overhead_excluding_once_per_scan_preprocessing": round(1 - s.forward / (wall - s.preprocess), 3),
        "peak_rss_mb": round(peak_mb()),
        **gpu_peak_mb(),
        "threads": args.threads,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segmenter", choices=["classical", "bundled", "timing", "nnunet", "all"], default="all",
                        help="timing: the bundled model's preprocessing of a 512^2 CT and per-lesion times, wall and CPU")
    parser.add_argument("--lesions", type=int, default=8, help="simulated lesions per scan")
    parser.add_argument("--scans", type=int, default=2, help="simulated scans (classical)")
    parser.add_argument("--patch", type=int, default=64, help="patch edge of the random nnU-Net")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the networks run")
    parser.add_argument("--tta", action="store_true", help="the random nnU-Net with mirroring TTA")
    parser.add_argument("--model", metavar="FOLDER", help="--segmenter bundled: this trained-model folder instead "
                        "(e.g. the GPU recipe's, bench/gpu_train.py)")
    args = parser.parse_args()
    if args.segmenter == "all":
        for name in ("classical", "bundled", "timing", "nnunet"):
            argv = [sys.executable, __file__, "--segmenter", name, "--lesions", str(args.lesions),
                    "--scans", str(args.scans), "--patch", str(args.patch), "--threads", str(args.threads),
                    "--device", args.device] + (["--tta"] if args.tta else []) + (["--model", args.model] if args.model else [])
            subprocess.run(argv, check=True)
        return
    runs = {"classical": run_classical, "bundled": run_bundled, "timing": run_bundled_timing, "nnunet": run_nnunet}
    result = runs[args.segmenter](args)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
