"""The cohort report: one self-contained HTML file (plots embedded as base64 PNG, no network).

Sections: response (waterfall of best % change of the sum of diameters, best overall response
counts), lesion course (spaghetti plots of lesion volume and of the sum of diameters over
sessions), tracking status counts per session, evaluation (Dice and CPM per session, when ground
truth exists), lesions flagged for review (new candidates, merged, split, and masks the fallback
segmenter made) and failed patients.
"""

from __future__ import annotations

import base64
import html
import io
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from lesionlocator.aggregate.cohort import read_cohort_table
from lesionlocator.core.errors import InputError
from lesionlocator.core.io import atomic_path
from lesionlocator.measure.response import RESPONSES, flagged_for_review

log = logging.getLogger(__name__)

RESPONSE_COLOURS = {"CR": "#1a9850", "PR": "#91cf60", "SD": "#fee08b", "NON-CR/NON-PD": "#d9d9d9", "PD": "#d73027", "NE": "#969696"}
MAX_SPAGHETTI_PATIENTS = 60
MAX_FLAGGED_ROWS = 500


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


def _table_html(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, border=0, classes="data", na_rep="", float_format=lambda v: f"{v:.1f}")


def _img(data: str | None, alt: str) -> str:
    if data is None:
        return f"<p class='empty'>No data for: {html.escape(alt)}.</p>"
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>"


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
h1 {{ font-size: 1.5em; }} h2 {{ font-size: 1.15em; border-bottom: 1px solid #ccc; margin-top: 2em; }}
img {{ max-width: 100%; }} table.data {{ border-collapse: collapse; font-size: 0.85em; }}
table.data td, table.data th {{ padding: 2px 8px; border-bottom: 1px solid #eee; text-align: right; }}
.empty {{ color: #777; font-style: italic; }} .figures {{ color: #444; }}
</style></head>
<body>
<h1>{title}</h1>
<p class="figures">{figures}</p>
{sections}
<script>
window.reportErrors = [];
window.addEventListener("error", function (e) {{ window.reportErrors.push(String(e.message)); }});
window.addEventListener("load", function () {{
  var images = Array.prototype.slice.call(document.images);
  var drawn = images.filter(function (i) {{ return i.complete && i.naturalWidth > 0 && i.naturalHeight > 0; }});
  document.body.setAttribute("data-images", images.length);
  document.body.setAttribute("data-images-drawn", drawn.length);
  document.body.setAttribute("data-errors", window.reportErrors.length);
}});
</script>
</body></html>
"""


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

    sections = []
    counts = patients["best_response"].value_counts()
    response_counts = pd.DataFrame({"best overall response (RECIST 1.1)": [r for r in RESPONSES if r in counts],
                                    "patients": [int(counts[r]) for r in RESPONSES if r in counts]})  # fmt: skip
    sections.append("<h2>Response</h2>" + _img(waterfall_plot(patients), "waterfall plot of best response")
                    + (_table_html(response_counts) if len(response_counts) else ""))  # fmt: skip
    sections.append(
        "<h2>Lesion course</h2>"
        + _img(spaghetti_plot(lesions[lesions["voxel_count"] > 0], "volume_ml", ["patient", "lesion_id"], "lesion volume (mL)"),
               "spaghetti plot of lesion volume")
        + _img(spaghetti_plot(sessions, "sum_diameters_mm", ["patient"], "sum of target diameters (mm)"),
               "spaghetti plot of the sum of diameters")
    )  # fmt: skip
    sections.append("<h2>Tracking status</h2>" + _img(status_plot(lesions), "lesion status counts per session"))
    if not metrics.empty:
        pooled = metrics.groupby("session_index").agg(
            patients=("patient", "size"), dice=("mean_dice", "mean"), cpm_at_r=("cpm_at_r", "mean"),
            cpm_at_radius=("cpm_at_radius", "mean"), precision=("precision", "mean"), recall=("recall", "mean"),
            f1=("f1", "mean"), fp_volume_ml=("fp_volume_ml", "sum"), fn_volume_ml=("fn_volume_ml", "sum"),
        ).reset_index()  # fmt: skip
        table = pooled.to_html(index=False, border=0, classes="data", float_format=lambda v: f"{v:.3f}")
        sections.append("<h2>Evaluation against ground truth</h2>" + _img(evaluation_plot(metrics), "Dice and CPM per session") + table)
    flagged = lesions[flagged_for_review(lesions)][
        ["patient", "session", "session_index", "lesion_id", "status", "by_fallback", "volume_ml", "longest_diameter_mm"]
    ]
    note = f"<p>{len(flagged)} lesion-session(s) flagged" + (f"; first {MAX_FLAGGED_ROWS} shown" if len(flagged) > MAX_FLAGGED_ROWS else "") + ".</p>"
    sections.append("<h2>Lesions flagged for review</h2>" + (note + _table_html(flagged.head(MAX_FLAGGED_ROWS)) if len(flagged) else "<p class='empty'>None.</p>"))
    failed = failed_patients if isinstance(failed_patients, pd.DataFrame) else pd.DataFrame({"patient": list(failed_patients)})
    sections.append("<h2>Failed patients</h2>" + (_table_html(failed) if len(failed) else "<p class='empty'>None.</p>"))

    figures = (f"{len(patients)} patients, {len(sessions)} sessions, {lesions.loc[lesions['voxel_count'] > 0, ['patient', 'lesion_id']].drop_duplicates().shape[0]} lesions"
               + (f", {len(failed)} failed" if len(failed) else ""))  # fmt: skip
    page = PAGE.format(title=html.escape(title), figures=html.escape(figures), sections="\n".join(sections))
    output = Path(output)
    with atomic_path(output) as tmp:
        tmp.write_text(page, encoding="utf-8")
    log.info("report -> %s", output)
    return output
