"""The cohort report: one self-contained HTML file a trial team reviews from (no server, no network).

Three parts, one page (the Jinja template ``templates/report.html.j2``, autoescaped):

* **Cohort**: counts; the best overall response table and the waterfall (one labelled bar per patient,
  coloured by response); the swimmer plot (time on study in days from ``acq_time``, the response at
  each assessment); lesion volume and sum of diameters over time in days (session index only when
  there are no dates), coloured by best response; tracking statuses; evaluation against ground truth
  when it exists (Dice, CPM@r, detection, status accuracy), every figure with its n; registration quality.
* **Review queue** (:func:`review_queue`): every lesion-session that needs a look (flagged lesions,
  lesions out of the field of view, large volume jumps) and every failed patient with its reason, most
  severe first, each linking to its patient's section.
* **Patients**: an index table, then one collapsible section per patient: the response per session
  and a lesion x session grid with the status, volume and diameters and a thumbnail of the lesion's
  axial slice with its mask's outline (:mod:`lesionlocator.aggregate.thumbnails`), candidates included.

Tables sort by a click on a header and filter by a text box; thumbnails are small WebP data URIs
(``loading="lazy"``), and a patient's section is kept as text (a ``<script type="text/x-patient-section">``)
that the page's script turns into markup when the section opens, so a 1,000-patient report opens in
about 3 s and stays under 50 MB (``bench/bench_report.py``; patient sections need JavaScript). Nothing is recomputed: the cohort tables, the ingest manifest (images,
``acq_time``) and the tracker's label maps are read as they are.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import jinja2
import numpy as np
import pandas as pd
from markupsafe import Markup

from lesionlocator.aggregate.charts import LABEL_COLOURS, RESPONSE_COLOURS, patient_anchor, swimmer_svg, waterfall_svg
from lesionlocator.aggregate.cohort import read_cohort_table
from lesionlocator.core.errors import InputError
from lesionlocator.core.io import atomic_path
from lesionlocator.core.layout import ResultsLayout
from lesionlocator.core.progress import Progress
from lesionlocator.measure.response import RESPONSES, REVIEW_CATEGORIES, flagged_for_review, review_category

log = logging.getLogger(__name__)

#: Review queue rows beyond this many are left out of the page (the count says so).
MAX_QUEUE_ROWS = 5000
#: Registered pairs whose similarity is less than this above ``register.min_similarity`` are listed as near it.
NEAR_MIN_SIMILARITY = 0.1
#: A lesion whose volume changes by at least this factor (up or down) between two sessions where it
#: has voxels is queued for review, when the larger of the two volumes is at least ``MIN_JUMP_ML``.
VOLUME_JUMP_FACTOR = 2.0
MIN_JUMP_ML = 0.5
#: Review queue categories, most severe first: a failed patient, then the tracker's flags
#: (:data:`~lesionlocator.measure.response.REVIEW_CATEGORIES`) with lesions out of the field of view
#: (not evaluable) and large volume jumps placed by how much they change a response.
QUEUE_CATEGORIES = ("failed patient", "lost", "uncertain", "new lesion", "out of field of view", "volume jump", "split/merged",
                    "fallback", "other")  # fmt: skip


def _png(figure) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None})
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(width: float = 8.0, height: float = 3.6, ncols: int = 1):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt.subplots(1, ncols, figsize=(width, height))


def session_times(sessions: pd.DataFrame, manifest: pd.DataFrame | None) -> tuple[pd.Series, str]:
    """Per row of ``sessions``, its time from the patient's baseline and the unit: days from
    ``acq_time`` of the ingest manifest when every session of the cohort has a date, else the
    session index (unit ``"session index"``)."""
    if manifest is not None and "acq_time" in manifest and len(sessions):
        dates = manifest.assign(_t=pd.to_datetime(manifest["acq_time"], errors="coerce", utc=True))[["patient", "session", "_t"]]
        merged = sessions[["patient", "session", "session_index"]].merge(dates, on=["patient", "session"], how="left")
        if merged["_t"].notna().all():
            baseline = merged.loc[merged.groupby("patient")["session_index"].idxmin(), ["patient", "_t"]].set_index("patient")["_t"]
            days = (merged["_t"] - merged["patient"].map(baseline)).dt.total_seconds() / 86400.0
            return pd.Series(days.round(1).to_numpy(), index=sessions.index), "days"
    return sessions["session_index"].astype(float), "session index"


def course_plot(frame: pd.DataFrame, value: str, group: list[str], ylabel: str, best: pd.Series, unit: str) -> str | None:
    """One line per group (a lesion, a patient) of ``value`` over ``time`` (in ``unit``), coloured by
    its patient's best overall response (``best``: indexed by patient)."""
    data = frame.dropna(subset=[value, "time"])
    if data.empty:
        return None
    fig, ax = _figure()
    for keys, line in data.sort_values(group + ["time"]).groupby(group, sort=True):
        patient = keys[0] if isinstance(keys, tuple) else keys
        response = best.get(patient)
        ax.plot(line["time"], line[value], lw=0.7, alpha=0.55, marker="o", ms=2, color=RESPONSE_COLOURS.get(response, "#9e9e9e"))
    import matplotlib.lines as mlines

    shown = [r for r in RESPONSES if r in set(best.reindex(data["patient"].unique()).dropna())]
    ax.legend(handles=[mlines.Line2D([], [], color=RESPONSE_COLOURS[r], label=f"best {r}") for r in shown], fontsize=7, ncol=3)
    ax.set_xlabel(f"{unit} from baseline")
    ax.set_ylabel(ylabel)
    if unit == "session index":
        ax.set_xticks(sorted(data["time"].unique()))
    ax.set_title(f"{data['patient'].nunique()} patients, {data.groupby(group).ngroups} lines", fontsize=9)
    return _png(fig)


def status_plot(lesions: pd.DataFrame) -> str | None:
    counts = lesions.groupby(["session_index", "status"]).size().unstack(fill_value=0)
    if counts.empty:
        return None
    fig, ax = _figure()
    bottom = np.zeros(len(counts))
    for status in counts.columns:
        ax.bar(counts.index, counts[status], bottom=bottom, label=status)
        bottom += counts[status].to_numpy()
    ax.set_xlabel("session index")
    ax.set_ylabel("lesions")
    ax.set_xticks(counts.index)
    ax.legend(fontsize=8)
    return _png(fig)


def evaluation_plot(metrics: pd.DataFrame, summary: pd.DataFrame) -> str | None:
    """Per session index: mean Dice per patient (dots) with the lesion-pooled mean (bar), CPM@r, and
    detection precision / recall / F1, each pooled over lesions with its n written on the plot."""
    if metrics.empty or summary.empty:
        return None
    pooled = summary[summary["scope"] == "eval_session_index"].pivot_table(index="session_index", columns="metric", values="value")
    if pooled.empty:
        return None
    fig, (dice, cpm, detection) = _figure(12.0, 3.4, ncols=3)
    indices = pooled.index.to_numpy(int)
    rng = np.random.default_rng(0)
    dice.bar(indices, pooled["mean_dice"], color="#c6dbef", width=0.6, label="pooled over lesions")
    for index in indices:
        values = metrics.loc[metrics["session_index"] == index, "mean_dice"].dropna().to_numpy()
        dice.plot(index + rng.uniform(-0.18, 0.18, len(values)), values, "o", ms=3, color="#08519c", alpha=0.6)
    dice.set_ylabel("Dice")
    radius = metrics["radius_mm"].iloc[0]
    cpm.bar(indices, pooled["cpm_at_r"], color="#9ecae1", width=0.6)
    cpm.set_ylabel(f"CPM@{radius:g} mm (fraction of true lesions)")
    width = 0.25
    for k, (name, colour) in enumerate((("precision", "#6baed6"), ("recall", "#fd8d3c"), ("f1", "#74c476"))):
        detection.bar(indices + (k - 1) * width, pooled[name], width=width, color=colour, label=name)
    detection.set_ylabel("detection")
    detection.legend(fontsize=7, loc="lower left")
    for ax, n in ((dice, pooled["n_gt"]), (cpm, pooled["n_gt"]), (detection, pooled["tp"] + pooled["fn"])):
        ax.set_ylim(0, 1.12)
        ax.set_xticks(indices)
        ax.set_xlabel("session index")
        for index, count in zip(indices, n):
            ax.text(index, 1.04, f"n={int(count)}", ha="center", fontsize=7)
    dice.set_title("n: true lesions; dots: patients", fontsize=8)
    return _png(fig)


def registration_review(registration: pd.DataFrame) -> dict:
    """The registered pairs that failed the quality check or passed it by less than
    :data:`NEAR_MIN_SIMILARITY`, lowest similarity first, with the counts the report states."""
    near = registration["passed"] & (registration["similarity"] < registration["min_similarity"] + NEAR_MIN_SIMILARITY)
    shown = registration[~registration["passed"] | near].sort_values(["similarity", "patient", "session_index"], na_position="first")
    columns = ["patient", "session", "session_index", "similarity", "min_similarity", "shared_fraction", "passed", "error"]
    return {"pairs": len(registration), "failed": int((~registration["passed"]).sum()), "near": int(near.sum()),
            "margin": NEAR_MIN_SIMILARITY, "table": _table_html(shown[columns], digits=2) if len(shown) else None}  # fmt: skip


def review_queue(lesions: pd.DataFrame, failed: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every lesion-session that needs a look and every failed patient, most severe first
    (:data:`QUEUE_CATEGORIES`, then patient, session, lesion).

    Rows: the flagged lesion-sessions (:func:`~lesionlocator.measure.response.flagged_for_review`,
    with the tracker's reason), lesions out of the field of view (not evaluable there), and volume
    jumps: a lesion's volume changed by :data:`VOLUME_JUMP_FACTOR` or more since its previous session
    with voxels (the larger volume at least :data:`MIN_JUMP_ML`); a row that is several of these takes
    its most severe category and lists every reason. ``failed``: (patient, reason). Columns: severity
    (the category's rank), category, patient, session, session_index, lesion_id, status, volume_ml,
    reason.
    """
    columns = ["severity", "category", "patient", "session", "session_index", "lesion_id", "status", "volume_ml", "reason"]
    rows = lesions.copy()
    flagged = flagged_for_review(rows).to_numpy(bool)
    tracker = review_category(rows)  # index into REVIEW_CATEGORIES, len(...) when not flagged
    offset = {name: QUEUE_CATEGORIES.index(name) for name in REVIEW_CATEGORIES}
    severity = np.where(flagged, [offset[REVIEW_CATEGORIES[k]] if k < len(REVIEW_CATEGORIES) else 99 for k in tracker], 99)
    reasons = [[r] if f and isinstance(r, str) else [] for f, r in zip(flagged, rows["review_reason"])]
    outside = rows["status"].eq("out_of_fov").to_numpy()
    for k in np.flatnonzero(outside):
        severity[k] = min(severity[k], QUEUE_CATEGORIES.index("out of field of view"))
        reasons[k].append("outside the field of view: not evaluable here")
    for k, text in _volume_jumps(rows).items():
        severity[k] = min(severity[k], QUEUE_CATEGORIES.index("volume jump"))
        reasons[k].append(text)
    queued = severity < 99
    rows["volume_ml"] = rows["volume_ml"].where(rows["voxel_count"] > 0)  # no volume where it has no voxels
    queue = rows.loc[queued, ["patient", "session", "session_index", "lesion_id", "status", "volume_ml"]].assign(
        severity=severity[queued], reason=["; ".join(r) for r, q in zip(reasons, queued) if q]
    )
    if failed is not None and len(failed):
        reason = failed["reason"] if "reason" in failed else pd.Series("", index=failed.index)
        queue = pd.concat([queue, pd.DataFrame({"patient": failed["patient"].astype(str), "severity": 0,
                                                "reason": reason.fillna("").astype(str).to_numpy()})], ignore_index=True)  # fmt: skip
    queue["category"] = [QUEUE_CATEGORIES[int(k)] for k in queue["severity"]]
    queue = queue.sort_values(["severity", "patient", "session_index", "lesion_id"], kind="mergesort", na_position="first")
    return queue.reindex(columns=columns).reset_index(drop=True)


def _volume_jumps(lesions: pd.DataFrame) -> dict[int, str]:
    """Positions (in ``lesions``) of the rows whose volume changed by :data:`VOLUME_JUMP_FACTOR` or
    more since the lesion's previous session with voxels, with the reason."""
    present = lesions.reset_index(drop=True)
    present = present[present["voxel_count"] > 0].sort_values(["patient", "lesion_id", "session_index"])
    previous = present.groupby(["patient", "lesion_id"])[["volume_ml", "session"]].shift(1)
    ratio = present["volume_ml"] / previous["volume_ml"]
    larger = np.maximum(present["volume_ml"], previous["volume_ml"])
    jump = ((ratio >= VOLUME_JUMP_FACTOR) | (ratio <= 1.0 / VOLUME_JUMP_FACTOR)) & (larger >= MIN_JUMP_ML)
    return {int(k): f"volume x{ratio[k]:.2g} since ses-{previous.at[k, 'session']} ({previous.at[k, 'volume_ml']:.2f} -> "
                    f"{present.at[k, 'volume_ml']:.2f} mL)" for k in present.index[jump.to_numpy(bool)]}  # fmt: skip


def _table_html(frame: pd.DataFrame, digits: int = 1, na_rep: str = "", sortable: bool = False) -> Markup:
    """``frame`` as an HTML table; pandas escapes the cells, so the markup is safe to insert."""
    classes = "data sortable" if sortable else "data"
    html = frame.to_html(index=False, border=0, classes=classes, na_rep=na_rep, float_format=lambda v: f"{v:.{digits}f}")
    return Markup(re.sub(r">\s+<", "><", html))  # no indentation: a 1,000-patient report has thousands of these


_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("lesionlocator.aggregate", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _status_evaluation(dataset_dir: Path) -> dict | None:
    """The status figures against ground truth (issue-24 headline figures, each with its count) and the
    follow-ups' confusion of true x reported status; None without a status evaluation."""
    if not (dataset_dir / "status_confusion").is_dir():
        return None
    from lesionlocator.evaluate.longitudinal import confusion_matrix, headline_figures

    counts = read_cohort_table(dataset_dir, "status_confusion")
    if counts.empty:
        return None

    figures = headline_figures(dataset_dir)
    shown = {
        "status accuracy, truly present lesions": ("status_accuracy_present", "n_present_followup"),
        "truly present, reported vanished": ("n_present_reported_vanished", "n_present_followup"),
        "reported present > 20 mm from the truth": ("n_reported_present_far", "n_reported_present"),
        "new-lesion recall": ("new_lesion_recall", "n_gt_new"),
        "false new-lesion candidates per follow-up scan": ("false_new_candidates_per_scan", "n_followup_scans"),
        "CPM@r (follow-ups)": ("cpm_at_r", None),
        "Dice (follow-ups)": ("followup_dice", None),
    }
    table = pd.DataFrame({
        "figure": list(shown),
        "value": [figures.get(key) for key, _ in shown.values()],
        "n": pd.array([figures.get(n) if n else None for _, n in shown.values()], dtype="Int64"),
    })
    confusion = confusion_matrix(counts)
    return {"table": _table_html(table, digits=3, na_rep="NaN"),
            "confusion": _table_html(confusion.rename_axis(index="true \\ reported").reset_index(), digits=0)}


def _fmt(value, digits: int = 1, suffix: str = "") -> str:
    return f"{value:.{digits}f}{suffix}" if isinstance(value, (int, float, np.number)) and np.isfinite(value) else ""


def _time_label(time: float, unit: str) -> str:
    if not np.isfinite(time):
        return ""
    return f"day {time:g}" if unit == "days" else f"t{time:g}"


_CELL_COLUMNS = ["session", "status", "voxel_count", "volume_ml", "longest_diameter_mm", "short_axis_mm", "by_fallback"]


def patient_sections(
    lesions: pd.DataFrame,
    sessions: pd.DataFrame,
    patients: pd.DataFrame,
    failed: pd.DataFrame,
    queue: pd.DataFrame,
    unit: str,
    manifest: pd.DataFrame | None,
    layout: ResultsLayout | None,
    workers: int | None = None,
) -> list[dict]:
    """One dict per patient (sorted; failed patients included) for the template: the response per
    session and the lesion x session grid with thumbnails (when ``manifest`` and ``layout`` give
    the scans and the tracker's label maps)."""
    from lesionlocator.aggregate.thumbnails import patient_thumbnails

    by_patient = {p: g for p, g in lesions.groupby("patient", sort=False)}
    sessions_of = {p: g.sort_values("session_index") for p, g in sessions.groupby("patient", sort=False)}
    info = patients.set_index("patient")
    reasons = dict(zip(failed["patient"].astype(str), failed["reason"].fillna("") if "reason" in failed else [""] * len(failed)))
    queued = queue.dropna(subset=["lesion_id"]).groupby(["patient", "session", "lesion_id"])["reason"].first().to_dict()
    images = (manifest.groupby("patient")[["session", "image"]].apply(lambda g: dict(zip(g["session"], g["image"]))).to_dict()
              if manifest is not None and "image" in manifest else {})  # fmt: skip
    names = sorted(set(info.index) | set(reasons))

    def thumbs_of(patient: str) -> dict:
        rows = by_patient[patient]
        session_ids = sorted(rows["session"].unique())
        return patient_thumbnails(rows, images[patient], {s: layout.labels(patient, s) for s in session_ids},
                                  {s: layout.candidates(patient, s) for s in session_ids})  # fmt: skip

    # scans are read and thumbnails encoded in threads (SimpleITK's reader and PIL's encoder release the GIL)
    pool = ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1))
    progress = Progress("report", total=len(names), unit="patient", units="patients", logger=log)
    out = []
    with pool, progress:
        thumbnails = {p: pool.submit(thumbs_of, p) for p in names if layout is not None and p in by_patient and p in images}
        for patient in names:
            rows = by_patient.get(patient, lesions.iloc[:0])
            timeline = sessions_of.get(patient, sessions.iloc[:0])
            row = info.loc[patient] if patient in info.index else None
            best = row["best_response"] if row is not None and isinstance(row["best_response"], str) else None
            thumbs = thumbnails[patient].result() if patient in thumbnails else {}
            columns = [{"session": s, "when": _time_label(t, unit), "response": r if isinstance(r, str) else ""}
                       for s, t, r in zip(timeline["session"], timeline["time"], timeline["recist_response"])]  # fmt: skip
            if not columns:
                columns = [{"session": s, "when": "", "response": ""} for s in rows.sort_values("session_index")["session"].unique()]
            targets = set(row["target_lesion_ids"]) if row is not None else set()
            grid = []
            for lesion_id, lesion in rows.groupby("lesion_id", sort=True):
                cells_by_session = {r.session: r for r in lesion[_CELL_COLUMNS].itertuples(index=False)}
                kind = "target" if lesion_id in targets else ("new" if lesion["is_new"].any() else "non-target")
                state = lesion["new_lesion"].dropna()
                cells = []
                for column in columns:
                    r = cells_by_session.get(column["session"])
                    if r is None:
                        cells.append(None)
                        continue
                    thumb = thumbs.get((int(lesion_id), r.session))
                    cells.append({
                        "status": r.status, "volume": _fmt(r.volume_ml, 2, " mL") if r.voxel_count > 0 else "",
                        "diameters": f"{r.longest_diameter_mm:.1f} x {r.short_axis_mm:.1f} mm" if r.voxel_count > 0 else "",
                        "fallback": bool(r.by_fallback), "review": queued.get((patient, r.session, lesion_id)),
                        "image": thumb.webp_base64 if thumb is not None else None, "note": thumb.note if thumb is not None else "",
                    })  # fmt: skip
                grid.append({"id": int(lesion_id), "kind": kind + (f" ({state.iloc[0]})" if len(state) else ""), "cells": cells})
            response_table = pd.DataFrame({
                "session": timeline["session"], "when": [_time_label(t, unit) for t in timeline["time"]],
                "lesions": timeline["n_lesions"], "new": timeline["n_new_lesions"], "equivocal new": timeline["n_equivocal_new_lesions"],
                "SoD (mm)": timeline["sum_diameters_mm"], "% vs baseline": timeline["pct_change_baseline"],
                "% vs nadir": timeline["pct_change_nadir"], "volume (mL)": timeline["total_volume_ml"],
                "RECIST 1.1": timeline["recist_response"], "volumetric": timeline["volumetric_response"],
                "to review": timeline["review_reasons"],
            })  # fmt: skip
            out.append({
                "id": patient, "anchor": patient_anchor(patient), "best": best or "",
                "failed": reasons.get(patient), "n_lesions": int(row["n_lesions"]) if row is not None else 0,
                "n_queued": int((queue["patient"] == patient).sum()), "columns": columns, "grid": grid,
                "responses": _table_html(response_table, digits=1) if len(timeline) else None,
            })  # fmt: skip
            progress.advance(patient)
    return out


def _patient_index(patients: pd.DataFrame, sessions: pd.DataFrame, queue: pd.DataFrame, failed: pd.DataFrame, unit: str) -> pd.DataFrame:
    """One row per patient for the sortable index table (the patient cell links to its section)."""
    span = sessions.groupby("patient")["time"].max()
    index = pd.DataFrame({
        "patient": patients["patient"], "best response": patients["best_response"].fillna(""),
        "best % change of SoD": patients["best_pct_change_baseline"], "lesions": patients["n_lesions"],
        "sessions": patients["n_sessions"], f"{unit} on study": patients["patient"].map(span),
        "to review": patients["patient"].map(queue["patient"].value_counts()).fillna(0).astype(int),
    })  # fmt: skip
    extra = failed[~failed["patient"].isin(patients["patient"])]
    if len(extra):
        index = pd.concat([index, pd.DataFrame({"patient": extra["patient"], "best response": "failed"})], ignore_index=True)
    return index.sort_values("patient", ignore_index=True)


def report_cohort(
    dataset_dir: str | Path,
    output: str | Path,
    failed_patients: Sequence[str] | pd.DataFrame = (),
    title: str = "LesionLocator cohort report",
    manifest: str | Path | pd.DataFrame | None = None,
    results_dir: str | Path | None = None,
    workers: int | None = None,
) -> Path:
    """Write the self-contained HTML report of a cohort dataset (see :mod:`lesionlocator.aggregate.cohort`).

    ``failed_patients``: patient labels, or a frame (patient, reason), listed as failed and queued
    for review. ``manifest``: the ingest manifest (a path or a frame; columns patient, session,
    acq_time, image): times in days from ``acq_time`` and the scans of the thumbnails.
    ``results_dir``: the run's results folder, where the tracker's label maps are
    (:class:`~lesionlocator.core.layout.ResultsLayout`); without it (or the manifest) there are no thumbnails.
    ``workers``: threads that read scans and encode thumbnails (default: up to 4).
    """
    dataset_dir = Path(dataset_dir)
    if not (dataset_dir / "patients").is_dir():
        raise InputError(dataset_dir, "not a cohort dataset (no patients/ table); run lesionlocator aggregate first")
    lesions = read_cohort_table(dataset_dir, "lesions")
    sessions = read_cohort_table(dataset_dir, "sessions")
    patients = read_cohort_table(dataset_dir, "patients")
    metrics = read_cohort_table(dataset_dir, "session_metrics") if (dataset_dir / "session_metrics").is_dir() else pd.DataFrame()
    summary = read_cohort_table(dataset_dir, "summary") if (dataset_dir / "summary").is_dir() else pd.DataFrame()
    registration = read_cohort_table(dataset_dir, "registration") if (dataset_dir / "registration").is_dir() else pd.DataFrame()
    if manifest is not None and not isinstance(manifest, pd.DataFrame):
        if not Path(manifest).exists():
            raise InputError(manifest, "ingest manifest not found")
        manifest = pd.read_parquet(manifest)
    if manifest is not None:
        manifest = manifest.assign(patient=manifest["patient"].astype(str), session=manifest["session"].astype(str))
    layout = ResultsLayout(Path(results_dir)) if results_dir is not None else None

    times, unit = session_times(sessions, manifest)
    sessions = sessions.assign(time=times)
    lesions = lesions.merge(sessions[["patient", "session", "time"]], on=["patient", "session"], how="left")
    best = patients.set_index("patient")["best_response"]
    failed = failed_patients if isinstance(failed_patients, pd.DataFrame) else pd.DataFrame({"patient": list(failed_patients)})
    failed = failed.assign(patient=failed["patient"].astype(str)) if len(failed) else pd.DataFrame({"patient": [], "reason": []})
    if "reason" not in failed:
        failed = failed.assign(reason="")
    queue = review_queue(lesions, failed)

    counts = patients["best_response"].value_counts()
    response_counts = pd.DataFrame({"best overall response (RECIST 1.1)": [r for r in RESPONSES if r in counts],
                                    "patients": [int(counts[r]) for r in RESPONSES if r in counts]})  # fmt: skip
    evaluation = None
    if not metrics.empty:
        pooled = metrics.groupby("session_index").agg(
            patients=("patient", "size"), true_lesions=("n_gt", "sum"), dice=("mean_dice", "mean"), cpm_at_r=("cpm_at_r", "mean"),
            precision=("precision", "mean"), recall=("recall", "mean"), f1=("f1", "mean"),
            fp_volume_ml=("fp_volume_ml", "sum"), fn_volume_ml=("fn_volume_ml", "sum"),
        ).reset_index()  # fmt: skip
        evaluation = {"plot": evaluation_plot(metrics, summary), "table": _table_html(pooled, digits=3, na_rep="NaN")}
    present = lesions[lesions["voxel_count"] > 0]
    n_lesions = present[["patient", "lesion_id"]].drop_duplicates().shape[0]
    candidates = lesions[lesions["status"].eq("new_candidate")]
    by_category = queue["category"].value_counts()
    cohort_counts = [("patients", len(patients) + len(set(failed["patient"]) - set(patients["patient"]))), ("sessions", len(sessions)),
                     ("lesions tracked", n_lesions), ("new-lesion candidates", len(candidates)), ("failed patients", len(failed)),
                     ("lesion-sessions to review", int(queue["lesion_id"].notna().sum()))]  # fmt: skip
    equivocal = int(sessions["n_equivocal_new_lesions"].sum()) if "n_equivocal_new_lesions" in sessions else 0
    queue_shown = queue.head(MAX_QUEUE_ROWS)
    page = _TEMPLATES.get_template("report.html.j2").render(
        title=title,
        counts=cohort_counts,
        unit=unit,
        waterfall=waterfall_svg(patients),
        waterfall_n=int(patients["best_pct_change_baseline"].notna().sum()),
        swimmer=swimmer_svg(sessions, patients, unit),
        response_counts=_table_html(response_counts) if len(response_counts) else None,
        volume_course=course_plot(present, "volume_ml", ["patient", "lesion_id"], "lesion volume (mL)", best, unit),
        diameter_course=course_plot(sessions, "sum_diameters_mm", ["patient"], "sum of target diameters (mm)", best, unit),
        status=status_plot(lesions),
        evaluation=evaluation,
        status_evaluation=_status_evaluation(dataset_dir),
        registration=registration_review(registration) if len(registration) else None,
        queue={"rows": queue_shown.to_dict("records"), "count": len(queue), "max_rows": MAX_QUEUE_ROWS, "equivocal": equivocal,
               "by_category": ", ".join(f"{name} {int(by_category[name])}" for name in QUEUE_CATEGORIES if name in by_category),
               "jump": VOLUME_JUMP_FACTOR, "min_jump_ml": MIN_JUMP_ML},  # fmt: skip
        failed=failed.to_dict("records"),
        patient_index=_patient_index(patients, sessions, queue, failed, unit),
        patients=patient_sections(lesions, sessions, patients, failed, queue, unit, manifest, layout, workers),
        colours=LABEL_COLOURS,
        thumbnails=layout is not None and manifest is not None,
    )
    output = Path(output)
    with atomic_path(output) as tmp:
        tmp.write_text(page, encoding="utf-8")
    log.info("report -> %s (%.1f MB)", output, output.stat().st_size / 1e6)
    return output
