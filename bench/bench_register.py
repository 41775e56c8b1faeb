"""Registration and propagation figures: seconds and peak memory per follow-up registration.

Cases:
* ``real``: a 3-session series built from the embedded real CT (session 0 = the CT; sessions 1 and 2
  = the CT warped by known rigid + BSpline transforms onto other grids, spacing 2.5 x 2.5 x 4 mm,
  rotated direction, 70% / 60% of the z field of view); registers 1->0 and 2->1.
* ``phantom``: a seeded textured 512 x 512 x 150 phantom (0.8 x 0.8 x 2.5 mm) and its warped follow-up.

Each registration runs in a fresh process, so its peak resident memory (ru_maxrss) is its own.
Landmark error (mm, body voxels) against the known transform is printed for the first follow-up.

    .venv/bin/python bench/bench_register.py [--case real|phantom|all] [--threads N]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lesionlocator.core.config import RegisterConfig  # noqa: E402
from lesionlocator.core.io import Geometry, write_image  # noqa: E402
from tests.register.helpers import follow_up, known_transform, landmark_errors, real_ct  # noqa: E402


def phantom(seed: int = 0) -> sitk.Image:
    """A 512 x 512 x 150 body-like phantom: ellipsoid 'body' with smooth random texture and blobs (HU-like)."""
    rng = np.random.default_rng(seed)
    coarse = sitk.GetImageFromArray(rng.normal(0, 1, (38, 128, 128)).astype(np.float32))
    coarse = sitk.SmoothingRecursiveGaussian(coarse, 2.0)
    texture = sitk.Resample(coarse, [512, 512, 150], sitk.ScaleTransform(3, (0.25, 0.25, 0.25)), sitk.sitkLinear)
    tex = sitk.GetArrayFromImage(texture)
    tex /= tex.std() + 1e-6
    z, y, x = np.ogrid[:150, :512, :512]
    body = ((x - 256) / 220.0) ** 2 + ((y - 256) / 160.0) ** 2 <= 1.0
    body = np.broadcast_to(body, (150, 512, 512))
    array = np.where(body, 40.0 + 120.0 * tex, -1000.0).astype(np.float32)
    array[(z > 20) & (z < 130) & (((x - 180) / 60.0) ** 2 + ((y - 240) / 80.0) ** 2 <= 1)] = -800.0  # lung
    array[(z > 20) & (z < 130) & (((x - 332) / 60.0) ** 2 + ((y - 240) / 80.0) ** 2 <= 1)] = -800.0
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.8, 0.8, 2.5))
    image.SetOrigin((-204.0, -204.0, -180.0))
    return image


def _child(queue, fixed_path, moving_path, out_path, config_json):
    from lesionlocator.register import register_pair

    config = RegisterConfig.model_validate_json(config_json)
    start = time.perf_counter()
    register_pair(fixed_path, moving_path, out_path, config)
    seconds = time.perf_counter() - start
    queue.put((seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0))


def timed_registration(fixed_path: Path, moving_path: Path, out_path: Path, config: RegisterConfig) -> tuple[float, float]:
    """(seconds including image reading, peak RSS MiB) of one register_pair in a fresh process."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_child, args=(queue, str(fixed_path), str(moving_path), str(out_path), config.model_dump_json()))
    process.start()
    result = queue.get()
    process.join()
    return result


def bench_propagation(transform_path: Path, moving: sitk.Image, fixed: sitk.Image, n: int = 10) -> float:
    """Seconds per propagated mask prompt (a 15 mm sphere) at the follow-up's full resolution."""
    from lesionlocator.register import load_transform
    from lesionlocator.segment import Prompt
    from lesionlocator.track.propagate import propagate_prompts

    transform = load_transform(transform_path)
    mg, fg = Geometry.of(moving), Geometry.of(fixed)
    rng = np.random.default_rng(0)
    body = np.argwhere(sitk.GetArrayViewFromImage(moving)[::4, ::4, ::4] > -300) * 4
    prompts = []
    for lesion_id, centre in enumerate(body[rng.choice(len(body), n, replace=False)], start=1):
        world = mg.index_to_world(centre.astype(float))
        lo = np.maximum(centre - 12, 0)
        hi = np.minimum(centre + 13, mg.shape_zyx)
        mask = np.zeros(mg.shape_zyx, bool)
        sub = np.indices(hi - lo).reshape(3, -1).T + lo
        inside = np.linalg.norm(mg.index_to_world(sub.astype(float)) - world, axis=1) <= 15.0
        mask[tuple(sub[inside].T)] = True
        prompts.append(Prompt(lesion_id, "mask", mask=mask))
    start = time.perf_counter()
    results = propagate_prompts(prompts, transform, mg, fg)
    seconds = (time.perf_counter() - start) / n
    statuses = [r.status for r in results.values()]
    print(f"    propagation: {seconds:.3f} s per mask prompt ({statuses.count('propagated')} propagated, "
          f"{statuses.count('out_of_fov')} out_of_fov)")
    return seconds


def run_case(name: str, sessions: list[sitk.Image], true: sitk.Transform, config: RegisterConfig, workdir: Path) -> None:
    paths = [write_image(image, workdir / f"{name}_ses{i}.nii.gz") for i, image in enumerate(sessions)]
    print(f"{name}: sessions {[tuple(s.GetSize()) for s in sessions]}")
    for i in range(1, len(paths)):
        out = workdir / f"{name}_{i}_to_{i - 1}.tfm"
        seconds, peak = timed_registration(paths[i], paths[i - 1], out, config)
        line = f"  ses{i} -> ses{i - 1}: {seconds:.1f} s, peak RSS {peak:.0f} MiB"
        if i == 1:
            from lesionlocator.register import load_transform

            errors = landmark_errors(load_transform(out), true, sessions[1])
            line += f", landmark error mean {errors.mean():.2f} mm, p95 {np.percentile(errors, 95):.2f} mm"
        print(line, flush=True)
        if i == 1:
            bench_propagation(out, sessions[0], sessions[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=["real", "phantom", "all"], default="all")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    config = RegisterConfig(threads=args.threads)
    print(f"config: grid {config.grid_spacing_mm} mm, threads {config.threads}, stages rigid/affine/bspline")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if args.case in ("real", "all"):
            ct = real_ct()
            t1, t2 = known_transform(ct, "deformable", seed=0), known_transform(ct, "deformable", seed=1)
            s1 = follow_up(ct, t1, z_fraction=0.7)
            s2 = follow_up(s1, t2, z_fraction=0.6, direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
            run_case("real", [ct, s1, s2], t1, config, workdir)
        if args.case in ("phantom", "all"):
            base = phantom()
            true = known_transform(base, "deformable", seed=2)
            follow = sitk.Resample(base, base, true, sitk.sitkLinear, -1000.0)
            run_case("phantom", [base, follow], true, config, workdir)


if __name__ == "__main__":
    main()
