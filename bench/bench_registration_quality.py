"""Calibration of ``register.min_similarity``: the registration quality figure on good and bad pairs.

Good pairs (same anatomy): every follow-up of two synthetic cohorts (seeds 0 and 1, 4 patients x 3
sessions, sources ct:data/real/example_ct.nii.gz and mr:data/real/example_mr_sm.nii.gz) against its
previous session, and the registration test suite's pairs (the real CT warped by known rigid, affine
and deformable transforms onto another grid; the chest cut example_ct_sm inside the full CT, with its
true and with its published, reset origin).
Bad pairs (another body region): the real CT cut into a chest (z 340-427 mm), an abdomen and a
pelvis (z 94-181 mm), each pair registered both ways; pairs the backend itself refuses (overlap
under register.min_overlap) are registered again with min_overlap 0 to measure the figure anyway.

Each pair is registered with the default RegisterConfig (the pipeline's), then scored with
:func:`lesionlocator.register.quality.registration_quality`.

    .venv/bin/python bench/bench_registration_quality.py [--jobs N] [--patients 4]
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing as mp
import sys
import tempfile
from pathlib import Path

import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lesionlocator.core.config import RegisterConfig, SyntheticConfig  # noqa: E402
from lesionlocator.register import RegistrationError, build_registration  # noqa: E402
from lesionlocator.register.quality import registration_quality  # noqa: E402
from tests.register.helpers import follow_up, known_transform, real_ct  # noqa: E402

CT = REPO / "data" / "real" / "example_ct.nii.gz"
CT_CUT = REPO / "data" / "real" / "example_ct_sm.nii.gz"
SOURCES = ["ct:data/real/example_ct.nii.gz", "mr:data/real/example_mr_sm.nii.gz"]


def score(job: tuple[str, str, Path, Path, dict]) -> tuple[str, str, str, float | None]:
    """(kind, name, backend outcome, similarity) of one pair (fixed = follow-up, moving = previous)."""
    kind, name, fixed_path, moving_path, overrides = job
    fixed, moving = sitk.ReadImage(str(fixed_path)), sitk.ReadImage(str(moving_path))
    config = RegisterConfig(**overrides)
    outcome = "registered"
    try:
        transform = build_registration(config).register(fixed, moving)
    except RegistrationError as err:
        if "do not cover the same anatomy" not in str(err):
            return kind, name, f"refused: {err}", None
        transform = build_registration(config.model_copy(update={"min_overlap": 0.0})).register(fixed, moving)
        outcome = "refused by min_overlap"
    return kind, name, outcome, registration_quality(fixed, moving, transform).similarity


def synthetic_pairs(folder: Path, patients: int) -> list[tuple]:
    from synthetic.cohort import generate_cohort

    jobs = []
    for seed in (0, 1):
        root = folder / f"cohort{seed}"
        generate_cohort(SyntheticConfig(seed=seed, n_patients=patients, n_sessions=3, sources=SOURCES), root)
        for patient in sorted(root.glob("sub-*")):
            images = sorted(patient.glob("ses-*/image.nii.gz"))
            modality = "ct" if sitk.GetArrayFromImage(sitk.ReadImage(str(images[0]))).min() < -500 else "mr"
            for previous, current in itertools.pairwise(images):
                name = f"synthetic seed {seed} {patient.name} {current.parent.name} ({modality})"
                jobs.append(("good", name, current, previous, {}))
    return jobs


def suite_pairs(folder: Path) -> list[tuple]:
    ct = real_ct()
    moving = folder / "ct.nii.gz"
    sitk.WriteImage(ct, str(moving))
    jobs = []
    for kind in ("rigid", "affine", "deformable"):
        path = folder / f"suite_{kind}.nii.gz"
        sitk.WriteImage(follow_up(ct, known_transform(ct, kind)), str(path))
        jobs.append(("good", f"suite: CT warped ({kind}), other grid", path, moving, {}))
    jobs.append(("good", "suite: chest cut in the full CT", CT_CUT, CT, {}))
    cut = sitk.ReadImage(str(CT_CUT))
    cut.SetOrigin(sitk.ReadImage(str(CT)).GetOrigin())
    sitk.WriteImage(cut, str(folder / "cut_reset.nii.gz"))
    jobs.append(("good", "suite: chest cut, reset origin (z search)", folder / "cut_reset.nii.gz", CT, {}))
    return jobs


def bad_pairs(folder: Path) -> list[tuple]:
    ct = sitk.ReadImage(str(CT))
    regions = {"chest": ct[:, :, 82:112], "abdomen": ct[:, :, 41:71], "pelvis": ct[:, :, 0:30],
               "chest40": ct[:, :, 72:112], "pelvis40": ct[:, :, 0:40]}  # fmt: skip
    paths = {}
    for name, image in regions.items():
        paths[name] = folder / f"{name}.nii.gz"
        sitk.WriteImage(image, str(paths[name]))
    pairs = [("pelvis", "chest"), ("chest", "pelvis"), ("abdomen", "chest"), ("chest", "abdomen"),
             ("pelvis", "abdomen"), ("abdomen", "pelvis"), ("pelvis40", "chest40"), ("chest40", "pelvis40")]  # fmt: skip
    return [("bad", f"another region: follow-up {f}, previous {m}", paths[f], paths[m], {}) for f, m in pairs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="pairs registered in parallel (one thread each)")
    parser.add_argument("--patients", type=int, default=4, help="patients per synthetic cohort")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        jobs = bad_pairs(folder) + suite_pairs(folder) + synthetic_pairs(folder, args.patients)
        with mp.get_context("spawn").Pool(args.jobs) as pool:
            results = pool.map(score, jobs, chunksize=1)
    print(f"{'kind':5s} {'similarity':>10s}  {'backend':24s} pair")
    for kind, name, outcome, similarity in sorted(results, key=lambda r: (r[0], r[3] if r[3] is not None else -9)):
        figure = "-" if similarity is None else f"{similarity:.3f}"
        print(f"{kind:5s} {figure:>10s}  {outcome:24s} {name}")
    good = [s for k, _, _, s in results if k == "good" and s is not None]
    bad = [s for k, _, _, s in results if k == "bad" and s is not None]
    passed_overlap = [s for k, _, o, s in results if k == "bad" and s is not None and o == "registered"]
    print(f"\ngood pairs: n = {len(good)}, min {min(good):.3f}, median {sorted(good)[len(good) // 2]:.3f}")
    print(f"bad pairs:  n = {len(bad)}, max {max(bad):.3f} (of those that pass min_overlap: "
          f"n = {len(passed_overlap)}, max {max(passed_overlap, default=float('nan')):.3f})")  # fmt: skip
    print(f"register.min_similarity default: {RegisterConfig().min_similarity}")


if __name__ == "__main__":
    main()
