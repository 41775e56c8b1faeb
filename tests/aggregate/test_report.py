"""The HTML report renders in headless Chromium: every plot decodes, no script error."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from lesionlocator.aggregate.cohort import aggregate_cohort, read_cohort_table
from lesionlocator.aggregate.report import report_cohort
from lesionlocator.evaluate.tracking import evaluate_patient
from lesionlocator.measure.lesions import measure_patient
from tests.lesion_builders import ellipsoid, make_patient, write_labels

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def dataset(tmp_path, geometry):
    lesion_files, eval_files = [], []
    for k, growth in enumerate([(1.0, 0.6, 1.3), (1.0, 0.5, 0.4)]):
        folder = tmp_path / f"P{k}"
        sessions = make_patient(folder, geometry, seed=k, growth=growth)
        status = pd.DataFrame({"lesion_id": [11, 3, 11], "session": ["ses-02", "ses-01", "ses-01"], "status": ["split", "uncertain", "present"],
                               "by_fallback": [False, False, True], "review_reason": [None, f"segmenters disagree <{k}>", None]})  # fmt: skip
        measure_patient(f"P{k}", sessions, folder / "lesions.parquet", status=status)
        evaluate_patient(f"P{k}", [(s, labels, labels) for s, _, labels in sessions], folder / "eval.parquet")
        lesion_files.append(folder / "lesions.parquet")
        eval_files.append(folder / "eval.parquet")
    out = tmp_path / "dataset"
    aggregate_cohort(lesion_files, out, evaluation_files=eval_files)
    return out


def test_report_content(tmp_path, dataset):
    html = report_cohort(dataset, tmp_path / "report.html", failed_patients=["P7"]).read_text()
    assert html.count("data:image/png;base64,") == 5
    assert "split" in html and "P7" in html and "http" not in html.replace("http-equiv", "")
    # the review list: every flagged lesion-session with its reason, most severe first
    assert "6 lesion-session(s) flagged (uncertain 2, split/merged 2, fallback 2), most severe first" in html
    review = html[html.index("Lesions flagged for review"):]
    order = [review.index(text) for text in ("uncertain (segmenters disagree &lt;0&gt;)", "uncertain (segmenters disagree &lt;1&gt;)",
                                             "split (the mask has separate fragments)", "mask from the fallback segmenter")]  # fmt: skip
    assert order == sorted(order) and review.count("mask from the fallback segmenter") == 2


def test_report_escapes_what_it_is_given(tmp_path, dataset):
    failed = pd.DataFrame({"patient": ["<img src=x>"], "reason": ["scan & <b>label</b> missing"]})
    html = report_cohort(dataset, tmp_path / "report.html", failed_patients=failed, title="<script>alert(1)</script>").read_text()
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x>" not in html and "&lt;b&gt;label&lt;/b&gt;" in html
    assert html.count("<h2>") == 6  # response, course, status, evaluation, flagged, failed

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


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium chromium-driver)")
def test_report_renders_in_chromium(tmp_path, dataset):
    report = report_cohort(dataset, tmp_path / "report.html")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]  # fmt: skip
    result = subprocess.run([CHROMIUM, *flags, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120)
    body = re.search(r"<body[^>]*>", result.stdout)
    assert body, result.stderr[-2000:]
    attributes = dict(re.findall(r'(data-[a-z-]+)="(\d+)"', body.group(0)))
    assert int(attributes["data-images"]) == 5
    assert attributes["data-images-drawn"] == attributes["data-images"]
    assert attributes["data-errors"] == "0"
    shot = tmp_path / "report.png"
    subprocess.run([CHROMIUM, *flags, "--window-size=1200,2400", f"--screenshot={shot}", report.as_uri()],
                   capture_output=True, timeout=120)  # fmt: skip
    assert shot.exists() and shot.stat().st_size > 10_000


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
