"""The HTML report: its cohort figures, review queue and patient sections, and how it renders in headless Chromium."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pandas as pd
import pytest

from lesionlocator.aggregate.charts import swimmer_svg, waterfall_svg
from lesionlocator.aggregate.cohort import aggregate_cohort, read_cohort_table
from lesionlocator.aggregate.report import report_cohort, review_queue, session_times
from lesionlocator.core.layout import ResultsLayout
from lesionlocator.evaluate.tracking import evaluate_patient
from lesionlocator.measure.lesions import measure_patient
from tests.lesion_builders import ellipsoid, make_patient, write_labels
from tests.report_browser import CHROMIUM, SKIP_REASON, inspect, screenshot


@pytest.fixture
def dataset(tmp_path, geometry):
    """Two patients x 3 sessions (lesions 3 and 11), with scans, label maps where the tracker writes
    them (results/patients/...) and a manifest with acquisition dates 0, 42 and 91 days apart."""
    lesion_files, eval_files, manifest = [], [], []
    layout = ResultsLayout(tmp_path / "results")
    for k, growth in enumerate([(1.0, 0.6, 1.3), (1.0, 0.5, 0.4)]):
        folder = tmp_path / f"P{k}"
        sessions = []
        for index, (_, scan, labels) in enumerate(make_patient(folder, geometry, seed=k, growth=growth)):
            target = layout.labels(f"P{k}", f"{index:02d}")
            target.parent.mkdir(parents=True)
            shutil.copy(labels, target)
            sessions.append((f"{index:02d}", scan, target))
            manifest.append({"patient": f"P{k}", "session": f"{index:02d}", "session_index": index,
                             "acq_time": ["2024-01-10", "2024-02-21", "2024-04-10"][index], "image": str(scan)})  # fmt: skip
        status = pd.DataFrame({"lesion_id": [11, 3, 11], "session": ["02", "01", "01"], "status": ["split", "uncertain", "present"],
                               "by_fallback": [False, False, True], "review_reason": [None, f"segmenters disagree <{k}>", None]})  # fmt: skip
        measure_patient(f"P{k}", sessions, folder / "lesions.parquet", status=status)
        evaluate_patient(f"P{k}", [(s, labels, labels) for s, _, labels in sessions], folder / "eval.parquet")
        lesion_files.append(folder / "lesions.parquet")
        eval_files.append(folder / "eval.parquet")
    out = tmp_path / "dataset"
    aggregate_cohort(lesion_files, out, evaluation_files=eval_files)
    pd.DataFrame(manifest).to_parquet(tmp_path / "manifest.parquet")
    return out


def _report(tmp_path, dataset, **kwargs):
    return report_cohort(dataset, tmp_path / "report.html", manifest=tmp_path / "manifest.parquet", results_dir=tmp_path / "results", **kwargs)


def test_report_content(tmp_path, dataset):
    html = _report(tmp_path, dataset, failed_patients=pd.DataFrame({"patient": ["P7"], "reason": ["register_t1: too dissimilar"]})).read_text()
    assert html.count("data:image/png;base64,") == 4  # lesion volume, SoD, status, evaluation
    assert "split" in html and "P7" in html
    assert re.findall(r'(?:src|href)="(?!data:|#)([^"]*)"', html) == [], "self-contained: every image inline, every link in the page"
    # times in days from acq_time: the swimmer plot's axis and the patient grids
    assert "days from baseline" in html and "day 42" in html and "day 91" in html
    assert "with an evaluable follow-up (2 of 3)" in html  # P7 failed
    # the waterfall and swimmer plot label every patient, coloured by best response, linking to its section
    assert len(re.findall(r'<a href="#patient-P0"><g class="bar"', html)) == 1 and len(re.findall(r'<a href="#patient-P1"><g class="lane"', html)) == 1
    # the review queue: the failed patient first, then every flagged lesion-session with its reason, most severe first
    review = html[html.index('<section id="review">'):html.index('<section id="failed">')]
    assert "8 item(s) to review (failed patient 1, uncertain 2, volume jump 2, split/merged 1, fallback 2)" in review
    order = [review.index(text) for text in ("register_t1: too dissimilar", "uncertain (segmenters disagree &lt;0&gt;)",
                                             "uncertain (segmenters disagree &lt;1&gt;)", "split (the mask has separate fragments)",
                                             "mask from the fallback segmenter")]  # fmt: skip
    assert order == sorted(order) and review.count("mask from the fallback segmenter") == 2
    assert 'href="#patient-P0-lesion-3"' in review and 'href="#patient-P7"' in review
    # patient sections: one per patient (the failed one too), a grid row per lesion, a thumbnail per lesion-session
    assert len(re.findall(r'<details class="patient" id="patient-(P0|P1|P7)">', html)) == 3
    assert 'id="patient-P0-lesion-3"' in html and 'id="patient-P1-lesion-11"' in html
    assert html.count('loading="lazy"') == html.count("data:image/webp;base64,") == 12


def test_report_escapes_what_it_is_given(tmp_path, dataset):
    failed = pd.DataFrame({"patient": ["<img src=x>"], "reason": ["scan & <b>label</b> missing"]})
    html = _report(tmp_path, dataset, failed_patients=failed, title="<script>alert(1)</script>").read_text()
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x>" not in html and "&lt;b&gt;label&lt;/b&gt;" in html
    assert html.count("<h2>") == 7  # cohort, response, course, evaluation, review queue, failed, patients


def test_report_without_images_or_dates(tmp_path, dataset):
    html = report_cohort(dataset, tmp_path / "plain.html").read_text()
    assert "data:image/webp" not in html and "session index from baseline" in html and "day 42" not in html


def test_review_queue_orders_by_severity_and_finds_jumps_and_lost_views(tmp_path, dataset):
    lesions = read_cohort_table(dataset, "lesions")
    lesions.loc[(lesions.patient == "P1") & (lesions.lesion_id == 3) & (lesions.session_index == 2), ["status", "voxel_count"]] = ["out_of_fov", 0]
    queue = review_queue(lesions, pd.DataFrame({"patient": ["P9"], "reason": ["segment_baseline: no prompt"]}))
    assert queue["severity"].is_monotonic_increasing
    assert queue.iloc[0][["category", "patient", "reason"]].tolist() == ["failed patient", "P9", "segment_baseline: no prompt"]
    outside = queue[queue.category == "out of field of view"]
    assert outside[["patient", "session_index", "lesion_id"]].values.tolist() == [["P1", 2, 3]] and np.isnan(outside.volume_ml.iloc[0])
    # P0's lesions shrink to 0.6 then grow to 1.3 of their size: volume x0.22 then x10 (above 0.5 mL: queued)
    jumps = queue[queue.reason.str.contains("volume x", na=False)]
    assert set(map(tuple, jumps[["patient", "session_index"]].values)) >= {("P0", 1), ("P0", 2)}
    assert (queue.category.map({c: k for k, c in enumerate(queue.category.unique())}).diff().fillna(0) >= 0).all()


def test_session_times_in_days_or_session_index(tmp_path, dataset):
    sessions = read_cohort_table(dataset, "sessions")
    manifest = pd.read_parquet(tmp_path / "manifest.parquet")
    times, unit = session_times(sessions, manifest)
    assert unit == "days" and times.tolist() == [0.0, 42.0, 91.0] * 2
    manifest.loc[4, "acq_time"] = None
    times, unit = session_times(sessions, manifest)
    assert unit == "session index" and times.tolist() == [0.0, 1.0, 2.0] * 2


def test_waterfall_labels_every_patient_and_shows_a_tiny_change():
    patients = pd.DataFrame({"patient": ["A1", "B2", "C3"], "best_pct_change_baseline": [0.1, -45.0, 260.0], "best_response": ["SD", "PR", "PD"]})
    svg = str(waterfall_svg(patients))
    labels = re.findall(r'<text class="patient-label"[^>]*fill="([^"]+)"[^>]*>([^<]+)</text>', svg)
    assert [name for _, name in labels] == ["C3", "A1", "B2"]  # largest increase first
    assert dict((name, colour) for colour, name in labels) == {"C3": "#d73027", "A1": "#a07c00", "B2": "#66bd63"}
    heights = [float(h) for h in re.findall(r'<rect x="[^"]+" y="[^"]+" width="12" height="([^"]+)"', svg)]
    assert len(heights) == 3 and min(heights) >= 1.0, "a +0.1 % bar stays visible"
    assert "+260.0%" in svg, "a clipped bar's hover text says its true value"


def test_cohort_with_a_confirmed_and_an_equivocal_new_lesion(tmp_path, geometry):
    # P0's candidate is seen again at ses-02 (confirmed): PD from ses-01; P1's is not (equivocal): SD, on the review list
    baseline, spot = ellipsoid(geometry, (12, 20, 20), (9, 6, 6)), ellipsoid(geometry, (12, 40, 44), (4, 4, 4))
    files = []
    for k, seen_again in enumerate([True, False]):
        sessions = []
        for index in range(3):
            labels = baseline.astype(np.uint32) * 3
            if index == 1 or (index == 2 and seen_again):
                labels[spot] = 1_000_001
            sessions.append((f"ses-{index:02d}", None, write_labels(labels, geometry, tmp_path / f"P{k}_{index}.nii.gz")))
        status = pd.DataFrame({"lesion_id": [3, 3, 3, 1_000_001, 1_000_001], "session": ["ses-00", "ses-01", "ses-02", "ses-01", "ses-02"],
                               "status": ["present", "present", "present", "new_candidate", "present" if seen_again else "vanished"],
                               "by_fallback": False, "is_new": [False, False, False, True, True], "first_session_index": [0, 0, 0, 1, 1],
                               "review_reason": [None, None, None, "new-lesion candidate, not yet confirmed", None], "reader": None})  # fmt: skip
        measure_patient(f"P{k}", sessions, tmp_path / f"P{k}.parquet", status=status)
        files.append(tmp_path / f"P{k}.parquet")
    aggregate_cohort(files, tmp_path / "dataset")
    sessions = read_cohort_table(tmp_path / "dataset", "sessions").set_index(["patient", "session_index"])
    patients = read_cohort_table(tmp_path / "dataset", "patients").set_index("patient")
    assert sessions.loc["P0", "recist_response"].tolist()[1:] == ["PD", "PD"] and patients.loc["P0", "first_pd_session_index"] == 1
    assert sessions.loc["P1", "recist_response"].tolist()[1:] == ["SD", "SD"] and patients.loc["P1", "best_response"] == "SD"
    assert sessions.loc["P1", "n_equivocal_new_lesions"].tolist() == [0, 1, 0] and sessions.loc[("P1", 1), "needs_review"]
    html = report_cohort(tmp_path / "dataset", tmp_path / "report.html").read_text()
    assert "1 equivocal new lesion sighting(s)" in html
    assert "equivocal new lesion (new-lesion candidate, not yet confirmed)" in html
    assert "first sighting of a confirmed new lesion (new-lesion candidate, not yet confirmed)" in html


@pytest.mark.skipif(CHROMIUM is None, reason=SKIP_REASON)
def test_report_renders_in_chromium(tmp_path, dataset):
    """Open the report as a reader would: the sections are laid out, the plots and the patient labels
    are drawn, the queue is there, and the thumbnails of the patient a link opens are decoded and visible."""
    report = _report(tmp_path, dataset, failed_patients=["P7"])
    seen = inspect(report, tmp_path / "browser", fragment="patient-P1")
    assert seen["errors"] == 0
    assert all(seen["sections"].values()), seen["sections"]
    assert seen["plots"] == seen["plots_drawn"] == 4
    assert sorted(name for name, _, visible in seen["waterfall"] if visible) == ["P0", "P1"]
    assert sorted(name for name, _, visible in seen["swimmer"] if visible) == ["P0", "P1"]
    assert all(colour.startswith("#") for _, colour, _ in seen["waterfall"] + seen["swimmer"])
    assert seen["queue"][0] == "failed patient" and "uncertain" in seen["queue"]
    assert seen["filtered"] == 2 and seen["sorted_first"] == "P7", "the queue filters, the patient index sorts"
    assert seen["open"] == "patient-P1" and seen["thumbnails"] == seen["thumbnails_drawn"] == 6
    assert seen["closed_thumbnails"] == 0, "a closed patient section is not parsed (nor its thumbnails decoded) until it opens"
    shot = screenshot(report, tmp_path / "browser", tmp_path / "report.png", fragment="patient-P1")
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    red = (pixels[..., 0] > 200) & (pixels[..., 1] < 80) & (pixels[..., 2] < 80)
    assert pixels.std() > 20 and red.sum() > 50, "the screenshot shows the thumbnails' red outlines"


def test_report_shows_the_status_figures_and_confusion(tmp_path, dataset):
    from lesionlocator.evaluate.longitudinal import evaluate_patient_longitudinal
    from tests.evaluate.longitudinal_builders import write_patient

    status_files = []
    for patient in ("P1", "P2"):
        folder = tmp_path / f"status_{patient}"
        folder.mkdir()
        sessions, truth, *_ = write_patient(folder, patient)
        evaluate_patient_longitudinal(patient, sessions, truth, folder / "evaluation.parquet", folder / "status.parquet")
        status_files.append(folder / "status.parquet")
    lesion_files = sorted(p for p in (tmp_path).glob("P*/lesions.parquet"))
    out = tmp_path / "with_status"
    aggregate_cohort(lesion_files, out, evaluation_files=[tmp_path / f"status_{p}" / "evaluation.parquet" for p in ("P1", "P2")],
                     status_files=status_files)
    html = report_cohort(out, tmp_path / "report.html").read_text()
    section = html[html.index("Lesion statuses against ground truth"):]
    assert "status accuracy, truly present lesions" in section and "new-lesion recall" in section
    assert "false new-lesion candidates per follow-up scan" in section and "true \\ reported" in section
    without = report_cohort(dataset, tmp_path / "plain.html").read_text()
    assert "Lesion statuses against ground truth" not in without


def test_report_command_with_manifest_and_results(tmp_path, dataset):
    from lesionlocator.cli import main

    out = tmp_path / "cli.html"
    assert main(["report", str(dataset), "-o", str(out), "--manifest", str(tmp_path / "manifest.parquet"),
                 "--results-dir", str(tmp_path / "results")]) == 0  # fmt: skip
    html = out.read_text()
    assert html.count("data:image/webp;base64,") == 12 and "day 91" in html


def test_charts_escape_patient_labels():
    label = '"><script>alert(1)</script>'
    patients = pd.DataFrame({"patient": [label], "best_pct_change_baseline": [10.0], "best_response": ["SD"]})
    sessions = pd.DataFrame({"patient": [label] * 2, "session": ["a", "b"], "session_index": [0, 1], "time": [0.0, 30.0],
                             "recist_response": [None, "SD"]})  # fmt: skip
    svg = str(waterfall_svg(patients)) + str(swimmer_svg(sessions, patients, "days"))
    assert "<script>" not in svg and "&lt;script&gt;" in svg
