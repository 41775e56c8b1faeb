"""Inline SVG charts of the cohort report: the waterfall and the swimmer plot.

SVG, not PNG, because both carry one label per patient: the labels stay sharp at any zoom, every bar
links to its patient's section (``#patient-<label>``) and shows its figures on hover (``<title>``), and
a 1,000-patient chart is a few hundred kB of text. Labels are escaped (:func:`markupsafe.escape`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from markupsafe import Markup, escape

RESPONSE_COLOURS = {"CR": "#1a9850", "PR": "#66bd63", "SD": "#e6b600", "NON-CR/NON-PD": "#9e9e9e", "PD": "#d73027", "NE": "#616161"}
#: Text colours of patient labels (darker than the bars where the bar colour is too light to read on white).
LABEL_COLOURS = {**RESPONSE_COLOURS, "SD": "#a07c00", "NON-CR/NON-PD": "#616161", "NE": "#424242"}
NO_RESPONSE_COLOUR = "#9e9e9e"
WATERFALL_CLIP_PCT = 100.0


def patient_anchor(patient: str) -> str:
    """The id of a patient's section in the report (labels are ``[A-Za-z0-9]+`` at ingest)."""
    return f"patient-{patient}"


def _legend(responses, x: float, y: float) -> str:
    parts = []
    for k, response in enumerate(r for r in RESPONSE_COLOURS if r in set(responses)):
        parts.append(f'<rect x="{x + 95 * k}" y="{y - 9}" width="10" height="10" fill="{RESPONSE_COLOURS[response]}"/>'
                     f'<text x="{x + 95 * k + 14}" y="{y}" class="legend">{escape(response)}</text>')  # fmt: skip
    return "".join(parts)


def waterfall_svg(patients: pd.DataFrame, bar_px: int = 14) -> Markup | None:
    """Best % change of the sum of diameters from baseline per patient, largest increase first; bars
    and patient labels coloured by best overall response, a bar linking to the patient's section.
    Bars are clipped at +``WATERFALL_CLIP_PCT`` % (the label says the true value); a change between
    -1 % and +1 % is drawn 1 px high so that it stays visible; dashed lines at +20 % and -30 %."""
    data = patients.dropna(subset=["best_pct_change_baseline"]).sort_values(
        ["best_pct_change_baseline", "patient"], ascending=[False, True]
    )
    if data.empty:
        return None
    values = data["best_pct_change_baseline"].astype(float)
    top = min(WATERFALL_CLIP_PCT, max(25.0, float(np.ceil(values.max() / 10) * 10)))
    bottom = max(-100.0, min(-40.0, float(np.floor(values.min() / 20) * 20)))
    plot_h, label_h, left, head = 260.0, 70.0, 48.0, 24.0
    width = left + bar_px * len(data) + 10

    def y(value: float) -> float:
        return head + (top - min(max(value, bottom), top)) / (top - bottom) * plot_h

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart waterfall" width="{width:.0f}" height="{head + plot_h + label_h:.0f}" '
             f'role="img" aria-label="waterfall plot of best change of the sum of diameters, {len(data)} patients">']  # fmt: skip
    for tick in range(int(bottom), int(top) + 1, 20):
        parts.append(f'<line x1="{left - 4}" x2="{width}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" class="grid"/>'
                     f'<text x="{left - 6}" y="{y(tick) + 3:.1f}" class="tick" text-anchor="end">{tick:+d}%</text>')  # fmt: skip
    for level, colour in ((20, RESPONSE_COLOURS["PD"]), (-30, RESPONSE_COLOURS["PR"])):
        parts.append(f'<line x1="{left}" x2="{width}" y1="{y(level):.1f}" y2="{y(level):.1f}" stroke="{colour}" stroke-dasharray="4 3"/>')
    zero = y(0.0)
    for k, row in enumerate(data.itertuples()):
        response = row.best_response if isinstance(row.best_response, str) else "NE"
        colour = RESPONSE_COLOURS.get(response, NO_RESPONSE_COLOUR)
        value = float(row.best_pct_change_baseline)
        top_y, bottom_y = sorted((y(value), zero))
        if bottom_y - top_y < 1.0:
            top_y, bottom_y = (zero - 1.0, zero) if value >= 0 else (zero, zero + 1.0)
        x = left + k * bar_px
        label = escape(row.patient)
        parts.append(
            f'<a href="#{escape(patient_anchor(row.patient))}"><g class="bar" data-patient="{label}">'
            f"<title>{label}: {value:+.1f}% best change of SoD, best response {escape(response)}</title>"
            f'<rect x="{x + 1}" y="{top_y:.1f}" width="{bar_px - 2}" height="{bottom_y - top_y:.1f}" fill="{colour}"/>'
            f'<text class="patient-label" x="{x + bar_px / 2 + 3:.1f}" y="{head + plot_h + 4:.1f}" fill="{LABEL_COLOURS.get(response, "#424242")}" '
            f'transform="rotate(-90 {x + bar_px / 2 + 3:.1f} {head + plot_h + 4:.1f})" text-anchor="end">{label}</text></g></a>'
        )  # fmt: skip
    parts.append(f'<line x1="{left}" x2="{width}" y1="{zero:.1f}" y2="{zero:.1f}" stroke="#333"/>')
    parts.append(_legend(data["best_response"].fillna("NE"), left, 14))
    parts.append("</svg>")
    return Markup("".join(parts))


def swimmer_svg(sessions: pd.DataFrame, patients: pd.DataFrame, time_unit: str, row_px: int = 16) -> Markup | None:
    """One lane per patient: a bar from baseline to its last assessment (``time`` column of
    ``sessions``, in ``time_unit``: days, or session index when there are no dates), a marker at
    every follow-up coloured by its RECIST 1.1 overall response (a triangle at the first PD), the
    label coloured by the best overall response; longest time on study first."""
    data = sessions.dropna(subset=["time"])
    if data.empty:
        return None
    span = data.groupby("patient")["time"].max()
    best = patients.set_index("patient")["best_response"] if len(patients) else pd.Series(dtype=object)
    order = sorted(span.index, key=lambda p: (-span[p], p))
    t_max = max(float(span.max()), 1.0)
    left, right, head = 70.0, 20.0, 30.0
    plot_w = 640.0
    height = head + row_px * len(order) + 30

    def x(t: float) -> float:
        return left + t / t_max * plot_w

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart swimmer" width="{left + plot_w + right:.0f}" height="{height:.0f}" '
             f'role="img" aria-label="swimmer plot, {len(order)} patients, time in {escape(time_unit)}">']  # fmt: skip
    step = _nice_step(t_max)
    for tick in np.arange(0, t_max + step / 2, step):
        parts.append(f'<line x1="{x(tick):.1f}" x2="{x(tick):.1f}" y1="{head - 6}" y2="{height - 24:.0f}" class="grid"/>'
                     f'<text x="{x(tick):.1f}" y="{height - 10:.0f}" class="tick" text-anchor="middle">{tick:g}</text>')  # fmt: skip
    parts.append(f'<text x="{left + plot_w / 2:.0f}" y="{height:.0f}" class="tick" text-anchor="middle">{escape(time_unit)} from baseline</text>')
    by_patient = {p: g for p, g in data.groupby("patient")}
    for k, patient in enumerate(order):
        lane = head + k * row_px + row_px / 2
        response = best.get(patient)
        response = response if isinstance(response, str) else "NE"
        label = escape(patient)
        group = by_patient[patient].sort_values("time")
        parts.append(f'<a href="#{escape(patient_anchor(patient))}"><g class="lane" data-patient="{label}">'
                     f'<text class="patient-label" x="{left - 6}" y="{lane + 4:.1f}" text-anchor="end" '
                     f'fill="{LABEL_COLOURS.get(response, "#424242")}">{label}</text>'
                     f'<rect x="{left}" y="{lane - 3:.1f}" width="{x(span[patient]) - left:.1f}" height="6" fill="#d0d7e1"/>')  # fmt: skip
        first_pd = True
        for row in group.itertuples():
            if row.session_index == 0 or not isinstance(row.recist_response, str):
                continue
            colour = RESPONSE_COLOURS.get(row.recist_response, NO_RESPONSE_COLOUR)
            tip = f"<title>{label} ses-{escape(row.session)}: {escape(row.recist_response)} at {row.time:g} {escape(time_unit)}</title>"
            cx = x(row.time)
            if row.recist_response == "PD" and first_pd:
                first_pd = False
                parts.append(f'<polygon points="{cx - 5:.1f},{lane + 5:.1f} {cx + 5:.1f},{lane + 5:.1f} {cx:.1f},{lane - 6:.1f}" '
                             f'fill="{colour}">{tip}</polygon>')  # fmt: skip
            else:
                parts.append(f'<circle cx="{cx:.1f}" cy="{lane:.1f}" r="4.5" fill="{colour}" stroke="#fff" stroke-width="0.8">{tip}</circle>')
        parts.append("</g></a>")
    parts.append(_legend([r for r in data["recist_response"].dropna()], left, 14))
    parts.append("</svg>")
    return Markup("".join(parts))


def _nice_step(span: float) -> float:
    raw = span / 8
    power = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
