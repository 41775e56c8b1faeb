"""Bench: size and Chromium load time of the cohort report of a generated 1,000-patient cohort.

Setup (timed separately, not part of the figures asked for): ``--templates`` template patients of
``--sessions`` sessions (a 96 x 96 x 48 CT-like scan with 3-6 ellipsoid lesions that grow or shrink, a
new lesion from the third session on, and a lesion that leaves the field of view in some), measured
with the project's own ``measure_patient``; then ``--patients`` patients, each a template's scans and
label maps (its results folder is a symlink to the template's) with its own diameters and volumes
(a random walk per session) and acquisition dates, aggregated with ``aggregate_cohort``.

Timed: ``report_cohort`` (tables, charts, a thumbnail per lesion-session from the scans and label
maps); then the report in headless Chromium (the Debian package), three times: the page's own
navigation-start -> load-event time, and the wall seconds of the Chromium process against an empty
page's. The cohort has no ground truth, so the report has no evaluation section.

    .venv/bin/python bench/bench_report.py                  # 1,000 patients
    .venv/bin/python bench/bench_report.py --patients 50    # smoke run
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lesionlocator.aggregate.cohort import aggregate_cohort  # noqa: E402
from lesionlocator.aggregate.report import report_cohort  # noqa: E402
from lesionlocator.core.io import write_patient_table  # noqa: E402
from lesionlocator.core.layout import ResultsLayout  # noqa: E402
from lesionlocator.measure.lesions import lesion_table, measure_patient  # noqa: E402

SIZE_XYZ = (96, 96, 48)
SPACING = (1.2, 1.2, 3.0)


def _write(array: np.ndarray, path: Path, dtype) -> Path:
    image = sitk.GetImageFromArray(array.astype(dtype))
    image.SetSpacing(SPACING)
    image.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), useCompression=True)
    return path


def template_patient(rng: np.random.Generator, name: str, layout: ResultsLayout, scans: Path, n_sessions: int) -> pd.DataFrame:
    """Scans, label maps and the measured lesion table of one template patient."""
    z, y, x = np.mgrid[: SIZE_XYZ[2], : SIZE_XYZ[1], : SIZE_XYZ[0]]
    body = ((y - 48) / 44) ** 2 + ((x - 48) / 40) ** 2 <= 1
    n = int(rng.integers(3, 7))
    centres = np.column_stack([rng.integers(10, 38, n), rng.integers(25, 71, n), rng.integers(25, 71, n)])
    radii = rng.uniform(2.5, 7.0, n)
    trend = rng.uniform(-0.25, 0.25, n)
    sessions, status = [], []
    for index in range(n_sessions):
        session = f"{index + 1:02d}"
        labels = np.zeros(body.shape, np.uint32)
        for k in range(n):
            r = radii[k] * (1 + trend[k]) ** index
            labels[((z - centres[k, 0]) * 3.0 / 1.2) ** 2 + (y - centres[k, 1]) ** 2 + (x - centres[k, 2]) ** 2 <= r**2] = k + 1
            leaves = k == n - 1 and index == n_sessions - 1 and rng.random() < 0.3
            status.append((k + 1, session, "out_of_fov" if leaves else "present", False, None))
            if leaves:
                labels[labels == k + 1] = 0
        if index >= 2:
            labels[((z - 24) * 2.5) ** 2 + (y - 60) ** 2 + (x - 30) ** 2 <= 16] = 1_000_001
            status.append((1_000_001, session, "new_candidate" if index == 2 else "present", True, "new-lesion candidate (score 5.0)" if index == 2 else None))
        image = rng.normal(0, 12, body.shape) + np.where(body, 40.0, -900.0) + 35.0 * (labels > 0)
        image_path = _write(image, scans / name / f"{session}.nii.gz", np.int16)
        labels_path = _write(labels, layout.labels(name, session), np.uint32)
        _write(np.where(labels == 1_000_001, labels, 0), layout.candidates(name, session), np.uint32)
        sessions.append((session, image_path, labels_path))
    frame = pd.DataFrame(status, columns=["lesion_id", "session", "status", "is_new", "review_reason"])
    frame["first_session_index"] = np.where(frame["is_new"], 2, 0)
    return measure_patient(name, sessions, status=frame).to_pandas().assign(_image=lambda f: f["session"].map({s: str(p) for s, p, _ in sessions}))


def build_cohort(root: Path, n_patients: int, n_templates: int, n_sessions: int, seed: int = 0) -> tuple[Path, Path, Path]:
    """The cohort dataset, the manifest and the results folder of a generated cohort."""
    rng = np.random.default_rng(seed)
    layout = ResultsLayout(root / "results")
    templates = [template_patient(rng, f"T{k:03d}", layout, root / "scans", n_sessions) for k in range(n_templates)]
    files, manifest = [], []
    for i in range(n_patients):
        patient, template = f"P{i:04d}", templates[i % n_templates]
        walk = np.cumprod(rng.normal(1.0, 0.12, n_sessions).clip(0.5, 1.6))
        walk[0] = 1.0
        factor = template["session_index"].map(dict(enumerate(walk)))
        rows = template.assign(patient=patient, longest_diameter_mm=template["longest_diameter_mm"] * factor,
                               short_axis_mm=template["short_axis_mm"] * factor, volume_ml=template["volume_ml"] * factor**3)  # fmt: skip
        files.append(write_patient_table(lesion_table(rows.drop(columns="_image")), root / "tables" / f"{patient}.parquet"))
        os.symlink(layout.patient_dir(f"T{i % n_templates:03d}").resolve(), layout.patient_dir(patient))
        start = pd.Timestamp("2021-01-04") + pd.Timedelta(days=int(rng.integers(0, 700)))
        days = np.concatenate([[0], np.cumsum(rng.integers(50, 100, n_sessions - 1))])
        scans = template.drop_duplicates("session").sort_values("session_index")[["session", "_image"]].itertuples(index=False)
        for index, ((session, image), day) in enumerate(zip(scans, days)):
            manifest.append({"patient": patient, "session": session, "session_index": index,
                             "acq_time": (start + pd.Timedelta(days=int(day))).date().isoformat(), "image": image})  # fmt: skip
    manifest = pd.DataFrame(manifest)
    manifest.to_parquet(root / "manifest.parquet")
    aggregate_cohort(files, root / "cohort", sessions=manifest)
    return root / "cohort", root / "manifest.parquet", layout.root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--templates", type=int, default=40)
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--keep", help="write the report here too")
    args = parser.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")
    from tests.report_browser import CHROMIUM, inspect

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        dataset, manifest, results = build_cohort(root, args.patients, args.templates, args.sessions)
        print(f"setup: {args.patients} patients x {args.sessions} sessions from {args.templates} templates in {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        report = report_cohort(dataset, root / "report.html", manifest=manifest, results_dir=results)
        build_s = time.perf_counter() - start
        html = report.read_text()
        thumbnails = [part.split('"', 1)[0] for part in html.split("data:image/webp;base64,")[1:]]
        print(f"report_cohort: {build_s:.1f} s; {report.stat().st_size / 1e6:.1f} MB ({report.stat().st_size:,} bytes), "
              f"{len(thumbnails):,} thumbnails ({sum(map(len, thumbnails)) / 1e6:.1f} MB of them)")
        if args.keep:
            Path(args.keep).write_bytes(report.read_bytes())
        if CHROMIUM is None:
            print("chromium not installed: no load time")
            return
        empty = root / "empty.html"
        empty.write_text("<!DOCTYPE html><html><body>empty</body></html>")
        baseline = min(inspect(empty, root / f"e{k}", virtual_time=False)["wall_s"] for k in range(2))
        runs = [inspect(report, root / f"r{k}", virtual_time=False) for k in range(3)]
        for k, run in enumerate(runs):
            print(f"chromium run {k + 1}: navigation start -> load event {run['timing']} ms; process {run['wall_s']:.2f} s "
                  f"(empty page {baseline:.2f} s); errors {run['errors']}; sections not laid out: "
                  f"{[name for name, shown in run['sections'].items() if not shown] or 'none'}")  # fmt: skip
        print(f"load time (median of 3): {sorted(r['timing'] for r in runs)[1] / 1000:.2f} s in the page, "
              f"{sorted(r['wall_s'] for r in runs)[1] - baseline:.2f} s of Chromium wall time beyond an empty page")


if __name__ == "__main__":
    main()
