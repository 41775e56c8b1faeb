"""Benchmark of the longitudinal answers (issue 24): test-retest stability and the status, new-lesion and
tracking figures of a synthetic cohort with every longitudinal event.

Parts (``--parts``):

* ``retest``: one generated patient's baseline (embedded CT, and MR) repeated in 5 sessions, unchanged
  and rigidly repositioned (:mod:`synthetic.retest`), tracked with ``lesionlocator track`` under each
  ``track.prompt_source`` given (anchored, the default; previous_mask, LesionLocator's autoregressive
  scheme). Prints per case the worst volume change (% of baseline) and longest-diameter change (mm),
  the statuses and the RECIST responses; for the repositioned scans also where the change comes from
  (:func:`sources_of_change`): the ground truth's own change on the moved grid, and how far the
  segmenter's masks move beyond it.
* ``cohort``: ``config/synth_longitudinal.yaml`` (30 patients x 4 sessions, CT and MR, repositioning,
  FOV change, growth, shrinkage to 30-50 %, vanishing, splits, merges, new lesions) run through the
  Snakemake workflow; prints :func:`lesionlocator.evaluate.longitudinal.headline_figures` against the
  issue's targets and the follow-up confusion of true x reported status.

Every figure comes with wall and CPU seconds (children included; the machine may be shared).

    .venv/bin/python bench/bench_longitudinal.py [--parts retest cohort] [--out DIR] [--cores 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TARGETS = {
    "status_accuracy_present": (">=", 0.95),
    "n_present_reported_vanished": ("==", 0),
    "n_reported_present_far": ("==", 0),
    "new_lesion_recall": (">=", 0.8),
    "false_new_candidates_per_scan": ("<=", 1.0),
    "cpm_at_r": (">=", 0.95),
    "followup_dice": (">=", 0.80),
}


def _cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def retest(out: Path, sources: list[str], sources_to_use: list[str]) -> list[dict]:
    from lesionlocator.cli import main as cli_main
    from lesionlocator.core.config import SyntheticConfig
    from lesionlocator.evaluate.retest import retest_changes, retest_summary
    from lesionlocator.measure.response import assess_response
    from synthetic.cohort import generate_cohort
    from synthetic.retest import write_retest_cohort

    rows = []
    for source in sources_to_use:
        kind = source.split(":")[0]
        cohort = out / f"baseline_{kind}"
        synthetic = SyntheticConfig(seed=4, n_patients=1, n_sessions=1, sources=[source], lesions_per_patient=(3, 3),
                                    diameter_mm=(18.0, 30.0))
        generate_cohort(synthetic, cohort)
        for rigid in (False, True):
            sessions_dir = write_retest_cohort(cohort, "P001", out / f"retest_{kind}_{'rigid' if rigid else 'same'}", 5, rigid=rigid)
            for prompt_source in sources:
                config = out / f"{kind}_{rigid}_{prompt_source}.yaml"
                config.write_text(yaml.safe_dump({"track": {"prompt_source": prompt_source}}))
                results = out / f"results_{kind}_{rigid}_{prompt_source}"
                wall, cpu = time.perf_counter(), _cpu()
                code = cli_main(["track", "--root", str(sessions_dir), "--patient", "P001", "--config", str(config), "-o", str(results)])
                wall, cpu = time.perf_counter() - wall, _cpu() - cpu
                lesions = pd.read_parquet(results / "patients" / "sub-P001" / "measurements.parquet")
                sessions, _ = assess_response(lesions)
                summary = retest_summary(lesions, sessions)
                if rigid:
                    changes = retest_changes(lesions)
                    summary["volume_change_pct_range"] = [round(float(changes["volume_change_pct"].min()), 2),
                                                          round(float(changes["volume_change_pct"].max()), 2)]
                    summary["diameter_change_mm_range"] = [round(float(changes["diameter_change_mm"].min()), 2),
                                                           round(float(changes["diameter_change_mm"].max()), 2)]
                    summary.update(sources_of_change(cohort, synthetic, sessions_dir, results, 5))
                rows.append({"source": kind, "scans": "repositioned" if rigid else "identical", "prompt_source": prompt_source,
                             "exit": code, **summary, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1)})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def sources_of_change(cohort: Path, config, sessions_dir: Path, results: Path, n_sessions: int) -> dict:
    """Ranges over baseline lesions x follow-ups of a repositioned retest: ``truth_*``: the change of the
    ground truth itself (:func:`synthetic.retest.repositioned_truth`, measured like the masks: voxel-count
    volume in %, longest axial diameter in mm); ``mask_*``: of the tracked masks; ``dice_carried``: Dice
    of each session's mask against the baseline's carried through the known transform, for the masks
    and (``truth_dice_carried``) for the truth, whose binary masks differ by their sampling alone;
    ``dice_truth``: of the masks against the truth on the same grid; ``truth_lesions_gone``: lesion x
    follow-ups whose truth has no voxel on the moved grid (moved out of the field of view)."""
    import numpy as np
    import SimpleITK as sitk

    from lesionlocator.core.io import Geometry, read_image
    from lesionlocator.core.regions import dice
    from lesionlocator.evaluate.retest import carried_dice
    from lesionlocator.measure.lesions import measure_labels
    from synthetic.retest import repositioned_truth

    truths = [repositioned_truth(cohort, config, "P001", s) for s in range(n_sessions)]
    masks = [read_image(results / "patients" / "sub-P001" / f"ses-{s + 1:02d}" / "lesions.nii.gz") for s in range(n_sessions)]
    geometry = Geometry.of(truths[0])
    measured = [measure_labels(sitk.GetArrayFromImage(t).astype(np.int64), geometry).set_index("lesion_id") for t in truths]
    rows = []
    for s in range(1, n_sessions):
        transform = sitk.ReadTransform(str(sessions_dir / "sub-P001" / f"ses-{s + 1:02d}" / "repositioning.tfm"))
        mask_dice, truth_dice = carried_dice(masks[0], masks[s], transform), carried_dice(truths[0], truths[s], transform)
        truth_s, mask_s = sitk.GetArrayViewFromImage(truths[s]), sitk.GetArrayViewFromImage(masks[s])
        for lesion_id in measured[0].index:
            base, now = measured[0].loc[lesion_id], measured[s].loc[lesion_id] if lesion_id in measured[s].index else None
            rows.append({
                "truth_volume_change_pct": np.nan if now is None else (now["volume_ml"] / base["volume_ml"] - 1) * 100,
                "truth_diameter_change_mm": np.nan if now is None else now["longest_diameter_mm"] - base["longest_diameter_mm"],
                "dice_carried": mask_dice.get(int(lesion_id), np.nan), "truth_dice_carried": truth_dice[int(lesion_id)],
                "dice_truth": dice(mask_s == lesion_id, truth_s == lesion_id),
            })  # fmt: skip
    frame = pd.DataFrame(rows)
    ranges = {f"{c}_range": [round(float(frame[c].min()), 3), round(float(frame[c].max()), 3)] for c in frame.columns}
    return {**ranges, "truth_lesions_gone": int(frame["truth_volume_change_pct"].isna().sum())}


def cohort(out: Path, cores: int) -> dict:
    from lesionlocator.aggregate.cohort import read_cohort_table
    from lesionlocator.evaluate.longitudinal import confusion_matrix, headline_figures

    base = yaml.safe_load((REPO / "config" / "synth_longitudinal.yaml").read_text())
    results = out / "cohort_results"
    base["results_dir"] = str(results)
    base["synthetic"]["output"] = str(results / "synthetic" / "cohort")
    base.setdefault("workflow", {})["shard_size"] = 8  # 4 shards: the two cores stay busy
    config = out / "synth_longitudinal.yaml"
    config.write_text(yaml.safe_dump(base))
    wall, cpu = time.perf_counter(), _cpu()
    run = subprocess.run(
        [str(Path(sys.executable).parent / "snakemake"), "--cores", str(cores), "--configfile", str(config), "--quiet", "rules", "--rerun-incomplete"],
        cwd=REPO, env={**os.environ, "TQDM_DISABLE": "1"}, capture_output=True, text=True,
    )
    wall, cpu = time.perf_counter() - wall, _cpu() - cpu
    if run.returncode != 0:
        print(run.stdout[-3000:], run.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"snakemake failed ({run.returncode})")
    dataset = results / "cohort"
    figures = headline_figures(dataset)
    print(f"cohort: 30 patients x 4 sessions through snakemake --cores {cores}: {wall:.0f} s wall, {cpu:.0f} CPU-s")
    for name, (op, target) in TARGETS.items():
        value = figures.get(name)
        print(f"  {name:32s} {value!s:>10}   target {op} {target}")
    for name in sorted(set(figures) - set(TARGETS)):
        print(f"  {name:32s} {figures[name]!s:>10}")
    print(confusion_matrix(read_cohort_table(dataset, "status_confusion")).to_string())
    return {**figures, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=["retest", "cohort"], choices=["retest", "cohort"])
    parser.add_argument("--prompt-sources", nargs="+", default=["anchored", "previous_mask"])
    parser.add_argument("--sources", nargs="+", default=["ct:data/real/example_ct.nii.gz", "mr:data/real/example_mr_sm.nii.gz"])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    os.chdir(REPO)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_longitudinal_"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"outputs under {out}")
    if "retest" in args.parts:
        rows = retest(out, args.prompt_sources, args.sources)
        print(pd.DataFrame(rows)[["source", "scans", "prompt_source", "max_abs_volume_change_pct", "max_abs_diameter_change_mm",
                                  "statuses", "recist_responses", "wall_s", "cpu_s"]].to_string(index=False))
    if "cohort" in args.parts:
        cohort(out, args.cores)


if __name__ == "__main__":
    main()
