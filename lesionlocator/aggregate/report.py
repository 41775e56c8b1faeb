"""The cohort report: one self-contained HTML file (plots embedded as base64 PNG, no network).

Sections: response (waterfall of best % change of the sum of diameters, best overall response
counts), lesion course (spaghetti plots of lesion volume and of the sum of diameters over
sessions), tracking status counts per session, evaluation (Dice and CPM per session, and the reported
statuses against the true ones with the follow-ups' confusion, when ground truth exists), registration quality (the pairs below or near ``register.min_similarity``), lesions
flagged for review (every flagged lesion-session with its reason, most severe first: lost, uncertain,
equivocal new lesions and candidates, split/merged, fallback masks, other reasons the tracker gave;
:func:`review_list`) and failed patients. The page is the Jinja template ``templates/report.html.j2``
(autoescaped); this module computes the plots and tables it shows.
"""

from __future__ import annotations

import base64
import io
import logging
from pathlib import Path
from typing import Sequence

import jinja2
import numpy as np
import pandas as pd
from markupsafe import Markup

from lesionlocator.aggregate.cohort import read_cohort_table
from lesionlocator.core.errors import InputError
from lesionlocator.core.io import atomic_path
from lesionlocator.measure.response import RESPONSES, REVIEW_CATEGORIES, flagged_for_review, review_category

log = logging.getLogger(__name__)

RESPONSE_COLOURS = {"CR": "#1a9850", "PR": "#91cf60", "SD": "#fee08b", "NON-CR/NON-PD": "#d9d9d9", "PD": "#d73027", "NE": "#969696"}
MAX_SPAGHETTI_PATIENTS = 60
MAX_FLAGGED_ROWS = 500
#: Registered pairs whose similarity is less than this above ``register.min_similarity`` are listed as near it.
NEAR_MIN_SIMILARITY = 0.1


def _png(figure) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(width: float = 8.0, height: float = 3.6):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def waterfall_plot(patients: pd.DataFrame) -> str | None:
    """Best % change of the sum of diameters per patient, sorted, coloured by best response."""
    data = patients.dropna(subset=["best_pct_change_baseline"]).sort_values(
        ["best_pct_change_baseline", "patient"], ascending=[False, True]
    )
    if data.empty:
        return None
    fig, ax = _figure()
    colours = [RESPONSE_COLOURS.get(r, "#636363") for r in data["best_response"].fillna("NE")]
    ax.bar(np.arange(len(data)), data["best_pct_change_baseline"].clip(upper=200), color=colours, width=0.9)
    ax.axhline(20, color="#d73027", lw=0.8, ls="--")
    ax.axhline(-30, color="#1a9850", lw=0.8, ls="--")
    ax.set_xlabel(f"patients (n = {len(data)})")
    ax.set_ylabel("best change of sum of diameters (%)")
    ax.set_xticks([])
    handles = [__import__("matplotlib.patches").patches.Patch(color=c, label=r) for r, c in RESPONSE_COLOURS.items()
               if r in set(data["best_response"])]  # fmt: skip
    if handles:
        ax.legend(handles=handles, fontsize=8, ncol=3, loc="upper right")
    return _png(fig)


def spaghetti_plot(frame: pd.DataFrame, value: str, group: list[str], ylabel: str) -> str | None:
    """One line per group (lesion or patient) of ``value`` over session_index."""
    data = frame.dropna(subset=[value])
    if data.empty:
        return None
    patients = sorted(data["patient"].unique())[:MAX_SPAGHETTI_PATIENTS]
    data = data[data["patient"].isin(patients)].sort_values(group + ["session_index"])
    fig, ax = _figure()
    for _, line in data.groupby(group, sort=True):
        ax.plot(line["session_index"], line[value], lw=0.8, alpha=0.6, marker="o", ms=2)
    ax.set_xlabel("session index")
    ax.set_ylabel(ylabel)
    ax.set_xticks(sorted(data["session_index"].unique()))
    if len(patients) < frame["patient"].nunique():
        ax.set_title(f"first {len(patients)} of {frame['patient'].nunique()} patients", fontsize=9)
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


def evaluation_plot(metrics: pd.DataFrame) -> str | None:
    """Distributions (box plots over patients) of mean Dice and CPM@r per session index."""
    if metrics.empty:
        return None
    import matplotlib.pyplot as plt

    matplotlib_fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    indices = sorted(metrics["session_index"].unique())
    for ax, column, label in zip(axes, ("mean_dice", "cpm_at_r"), ("Dice (mean per patient)", f"CPM@{metrics['radius_mm'].iloc[0]:g} mm")):
        values = [metrics.loc[metrics["session_index"] == i, column].dropna().to_numpy() for i in indices]
        ax.boxplot(values, positions=indices, widths=0.6)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("session index")
        ax.set_ylabel(label)
    return _png(matplotlib_fig)


def registration_review(registration: pd.DataFrame) -> dict:
    """The registered pairs that failed the quality check or passed it by less than
    :data:`NEAR_MIN_SIMILARITY`, lowest similarity first, with the counts the report states."""
    near = registration["passed"] & (registration["similarity"] < registration["min_similarity"] + NEAR_MIN_SIMILARITY)
    shown = registration[~registration["passed"] | near].sort_values(["similarity", "patient", "session_index"], na_position="first")
    columns = ["patient", "session", "session_index", "similarity", "min_similarity", "shared_fraction", "passed", "error"]
    return {"pairs": len(registration), "failed": int((~registration["passed"]).sum()), "near": int(near.sum()),
            "margin": NEAR_MIN_SIMILARITY, "table": _table_html(shown[columns], digits=2) if len(shown) else None}  # fmt: skip


#: Columns of the review list, in order.
REVIEW_COLUMNS = ["patient", "session", "session_index", "lesion_id", "status", "new_lesion", "reader", "by_fallback", "volume_ml",
                  "longest_diameter_mm", "review_reason"]  # fmt: skip


def review_list(lesions: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Every flagged lesion-session (:func:`~lesionlocator.measure.response.flagged_for_review`) with its
    reason, most severe category first (:data:`~lesionlocator.measure.response.REVIEW_CATEGORIES`),
    then by patient, session and lesion; and the number of rows per category (categories with none left out)."""
    flagged = lesions[flagged_for_review(lesions).to_numpy(bool)]
    category = review_category(flagged)
    ordered = flagged.assign(_category=category).sort_values(["_category", "patient", "session_index", "lesion_id"], kind="mergesort")
    counts = pd.Series(category).value_counts()
    by_category = {name: int(counts[k]) for k, name in enumerate(REVIEW_CATEGORIES) if k in counts}
    return ordered.reindex(columns=REVIEW_COLUMNS).reset_index(drop=True), by_category


def _table_html(frame: pd.DataFrame, digits: int = 1, na_rep: str = "") -> Markup:
    """``frame`` as an HTML table; pandas escapes the cells, so the markup is safe to insert."""
    return Markup(frame.to_html(index=False, border=0, classes="data", na_rep=na_rep, float_format=lambda v: f"{v:.{digits}f}"))


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
        "n": [figures.get(n) if n else None for _, n in shown.values()],
    })
    confusion = confusion_matrix(counts)
    return {"table": _table_html(table, digits=3, na_rep="NaN"),
            "confusion": _table_html(confusion.rename_axis(index="true \\ reported").reset_index(), digits=0)}


def report_cohort(
    dataset_dir: str | Path,
    output: str | Path,
    failed_patients: Sequence[str] | pd.DataFrame = (),
    title: str = "LesionLocator cohort report",
) -> Path:
    """Write the self-contained HTML report of a cohort dataset (see :mod:`lesionlocator.aggregate.cohort`).

    ``failed_patients`` is a list of patient labels or a frame (patient, reason) listed as failed.
    """
    dataset_dir = Path(dataset_dir)
    if not (dataset_dir / "patients").is_dir():
        raise InputError(dataset_dir, "not a cohort dataset (no patients/ table); run lesionlocator aggregate first")
    lesions = read_cohort_table(dataset_dir, "lesions")
    sessions = read_cohort_table(dataset_dir, "sessions")
    patients = read_cohort_table(dataset_dir, "patients")
    metrics = read_cohort_table(dataset_dir, "session_metrics") if (dataset_dir / "session_metrics").is_dir() else pd.DataFrame()
    registration = read_cohort_table(dataset_dir, "registration") if (dataset_dir / "registration").is_dir() else pd.DataFrame()

    counts = patients["best_response"].value_counts()
    response_counts = pd.DataFrame({"best overall response (RECIST 1.1)": [r for r in RESPONSES if r in counts],
                                    "patients": [int(counts[r]) for r in RESPONSES if r in counts]})  # fmt: skip
    evaluation = None
    if not metrics.empty:
        pooled = metrics.groupby("session_index").agg(
            patients=("patient", "size"), dice=("mean_dice", "mean"), cpm_at_r=("cpm_at_r", "mean"),
            cpm_at_radius=("cpm_at_radius", "mean"), precision=("precision", "mean"), recall=("recall", "mean"),
            f1=("f1", "mean"), fp_volume_ml=("fp_volume_ml", "sum"), fn_volume_ml=("fn_volume_ml", "sum"),
        ).reset_index()  # fmt: skip
        evaluation = {"plot": evaluation_plot(metrics), "table": _table_html(pooled, digits=3, na_rep="NaN")}
    status_evaluation = _status_evaluation(dataset_dir)
    flagged, by_category = review_list(lesions)
    equivocal = int(sessions["n_equivocal_new_lesions"].sum()) if "n_equivocal_new_lesions" in sessions else 0
    failed = failed_patients if isinstance(failed_patients, pd.DataFrame) else pd.DataFrame({"patient": list(failed_patients)})
    n_lesions = lesions.loc[lesions["voxel_count"] > 0, ["patient", "lesion_id"]].drop_duplicates().shape[0]
    figures = f"{len(patients)} patients, {len(sessions)} sessions, {n_lesions} lesions" + (f", {len(failed)} failed" if len(failed) else "")
    page = _TEMPLATES.get_template("report.html.j2").render(
        title=title,
        figures=figures,
        waterfall=waterfall_plot(patients),
        response_counts=_table_html(response_counts) if len(response_counts) else None,
        volume_course=spaghetti_plot(lesions[lesions["voxel_count"] > 0], "volume_ml", ["patient", "lesion_id"], "lesion volume (mL)"),
        diameter_course=spaghetti_plot(sessions, "sum_diameters_mm", ["patient"], "sum of target diameters (mm)"),
        status=status_plot(lesions),
        evaluation=evaluation,
        status_evaluation=status_evaluation,
        registration=registration_review(registration) if len(registration) else None,
        flagged={"count": len(flagged), "max_rows": MAX_FLAGGED_ROWS, "table": _table_html(flagged.head(MAX_FLAGGED_ROWS)),
                 "by_category": ", ".join(f"{name} {n}" for name, n in by_category.items()), "equivocal": equivocal},
        failed=_table_html(failed) if len(failed) else None,
    )
    output = Path(output)
    with atomic_path(output) as tmp:
        tmp.write_text(page, encoding="utf-8")
    log.info("report -> %s", output)
    return output
