"""Time budgets per patient: a patient past its budget fails with the reason and the shard goes on.

No test asserts a duration: each runs a task that would not end (or not for minutes) without the
budget, and asserts the outcome; where a clock is needed it is one the test controls.
"""

from __future__ import annotations

import signal

import numpy as np
import pytest
import SimpleITK as sitk

from lesionlocator.core.config import RegisterConfig, WorkflowConfig
from lesionlocator.core.shards import (
    PatientTask,
    check_deadline,
    deadline_passed,
    done_path,
    failure_reasons,
    patient_time_budget,
    polling_deadline,
    run_shard,
)
from lesionlocator.register import build_registration
from lesionlocator.register.sitk_backend import execute


class TickingClock:
    """A clock that advances ``step`` seconds each time it is read."""

    def __init__(self, step: float = 1.0):
        self.now, self.step, self.reads = 0.0, step, 0

    def __call__(self) -> float:
        self.now += self.step
        self.reads += 1
        return self.now


def _shard(tmp_path, first, budget_s, clock=None, stage="seg"):
    ran = []
    tasks = [
        PatientTask("P1", tmp_path / "P1", "k1", first, budget_s=budget_s),
        PatientTask("P2", tmp_path / "P2", "k2", lambda: ran.append("P2"), budget_s=budget_s),
    ]
    kwargs = {} if clock is None else {"clock": clock}
    report = run_shard(stage, tasks, tmp_path / "report.json", **kwargs)
    return report, ran


def _assert_p1_timed_out(tmp_path, report, ran, budget: str, stage: str = "seg"):
    assert report["patients"]["P1"] == {
        "outcome": "failed",
        "error": f"TimeBudgetExceeded: exceeded its time budget of {budget} s in {stage}",
    }
    assert report["patients"]["P2"]["outcome"] == "ok" and ran == ["P2"], "the next patient must run"
    assert not done_path(tmp_path / "P1", stage).exists()
    assert failure_reasons([tmp_path / "report.json"])["P1"] == f"{stage}: {report['patients']['P1']['error']}"


def test_a_task_that_never_ends_but_checks_the_deadline_is_stopped(tmp_path):
    def forever():
        while True:
            check_deadline()

    clock = TickingClock()
    report, ran = _shard(tmp_path, forever, budget_s=5, clock=clock)
    _assert_p1_timed_out(tmp_path, report, ran, "5")
    assert clock.reads < 20


def test_pure_python_that_never_checks_is_interrupted_by_the_alarm(tmp_path):
    if not hasattr(signal, "setitimer"):
        pytest.skip("no SIGALRM on this platform")

    def spin():
        while True:
            pass

    before = signal.getsignal(signal.SIGALRM)
    report, ran = _shard(tmp_path, spin, budget_s=0.2)
    _assert_p1_timed_out(tmp_path, report, ran, "0.2")
    # the timer and the handler are restored, and no deadline is left behind
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) is before
    assert not deadline_passed()


def test_an_error_raised_after_the_deadline_is_reported_as_the_budget(tmp_path):
    """A C++ call stopped at the deadline may surface as another error: the reason is the budget."""

    def stopped():
        while not deadline_passed():
            pass
        raise RuntimeError("Exception thrown in SimpleITK ImageRegistrationMethod_Execute")

    report, ran = _shard(tmp_path, stopped, budget_s=3, clock=TickingClock())
    _assert_p1_timed_out(tmp_path, report, ran, "3")


def test_a_task_within_its_budget_and_one_without_a_budget_are_untouched(tmp_path):
    report, ran = _shard(tmp_path, lambda: None, budget_s=None)
    assert report["patients"]["P1"] == {"outcome": "ok", "error": None} and ran == ["P2"]
    assert not deadline_passed()
    check_deadline()  # outside a patient: never raises


def _blob(size: int = 40, shift: float = 0.0) -> sitk.Image:
    z, y, x = np.mgrid[:size, :size, :size].astype(np.float32)
    c = size / 2
    body = ((x - c - shift) ** 2 + (y - c) ** 2 + (z - c) ** 2 < (0.35 * size) ** 2).astype(np.float32)
    texture = np.sin(x / 3.0 + shift) * np.cos(y / 4.0) * np.sin(z / 5.0)
    image = sitk.GetImageFromArray(body * (100.0 + 40.0 * texture) - 1000.0 * (1 - body))
    image.SetSpacing((4.0, 4.0, 4.0))
    return image


def test_a_simpleitk_registration_stops_at_its_deadline(tmp_path):
    """The backend's iteration observer stops the optimizer (C++) once the controlled clock, read at each
    iteration, passes the budget; the rigid stage alone runs more iterations than the budget allows."""
    registration = build_registration(RegisterConfig(deformable=False, affine=False, z_search_mm=0.0, min_overlap=0.0))
    fixed, moving = _blob(), _blob(shift=2.0)
    clock = TickingClock()
    report, ran = _shard(tmp_path, lambda: registration.register(fixed, moving), budget_s=10, clock=clock, stage="register_t1")
    _assert_p1_timed_out(tmp_path, report, ran, "10", "register_t1")
    assert clock.reads < 40, "the registration went on after its deadline"


def test_a_million_iterations_stop_at_a_real_deadline(tmp_path):
    """Real clock, one second: a gradient descent that never converges, 10^6 iterations (minutes)."""
    fixed, moving = _blob(), _blob(shift=2.0)

    def register() -> None:
        method = sitk.ImageRegistrationMethod()
        method.SetMetricAsMeanSquares()
        method.SetOptimizerAsRegularStepGradientDescent(
            1.0, 1e-12, 1_000_000, relaxationFactor=0.999, gradientMagnitudeTolerance=1e-30
        )
        method.SetInitialTransform(sitk.TranslationTransform(3, [1.0, 0.0, 0.0]), inPlace=False)
        method.SetInterpolator(sitk.sitkLinear)
        with polling_deadline():  # as the backend runs it: the observer stops it, not the alarm
            execute(method, fixed, moving)
        raise AssertionError(f"not stopped: {method.GetOptimizerIteration()} iterations")

    report, ran = _shard(tmp_path, register, budget_s=1, stage="register_t1")
    _assert_p1_timed_out(tmp_path, report, ran, "1", "register_t1")


def test_derived_budget():
    assert WorkflowConfig().patient_time_budget_s is None
    assert patient_time_budget(None, 0) == 600
    assert patient_time_budget(None, 2 * 512 * 512 * 300) == 787  # a CT pair: 157 million voxels at 5 s each
    assert patient_time_budget(42, 10**9) == 42


def test_register_shard_gives_each_patient_its_budget_and_goes_on(tmp_path, monkeypatch):
    """The workflow field reaches the register job's patients; a pair that never ends fails alone."""
    from lesionlocator import pipeline
    from lesionlocator.core.config import validate_config
    from lesionlocator.core.layout import ResultsLayout
    from lesionlocator.ingest.cohort import ingest_cohort
    from tests.helpers import write_session
    from tests.reliability.builders import blob_image

    image = blob_image(shape_zyx=(32, 48, 48), spacing=(1.0, 1.0, 1.5), centre_zyx=(16, 24, 24), radii_zyx=(5, 6, 6))
    for patient in ("A1", "B2"):
        for session in ("1", "2"):
            write_session(tmp_path / "cohort", patient, session, image)
    layout = ResultsLayout(tmp_path / "results")
    ingest_cohort(layout.manifest, root=tmp_path / "cohort")

    budgets = {}
    real_run_shard, real_register_pair = pipeline.run_shard, pipeline.register_pair

    def run_shard(stage, tasks, *args, **kwargs):
        budgets.update({task.patient: task.budget_s for task in tasks})
        return real_run_shard(stage, tasks, *args, **kwargs)

    def register_pair(fixed, *args, **kwargs):
        while "sub-A1" in str(fixed):  # A1's registration never ends (a C++ loop that polls the deadline)
            check_deadline()
        return real_register_pair(fixed, *args, **kwargs)

    monkeypatch.setattr(pipeline, "run_shard", run_shard)
    monkeypatch.setattr(pipeline, "register_pair", register_pair)
    derived = validate_config({"results_dir": str(layout.root), "register": {"affine": False, "deformable": False}})
    config = derived.model_copy(update={"workflow": derived.workflow.model_copy(update={"patient_time_budget_s": 0.5})})
    report = pipeline.register_shard(layout.manifest, ["A1", "B2"], 1, config, tmp_path / "register_t1.json")
    assert budgets == {"A1": 0.5, "B2": 0.5}
    assert report["patients"]["A1"] == {"outcome": "failed", "error": "TimeBudgetExceeded: exceeded its time budget of 0.5 s in register_t1"}
    assert report["patients"]["B2"] == {"outcome": "ok", "error": None}
    budgets.clear()  # null: derived from the pair's voxels (B2 is up to date: the budget is in no rerun key)
    again = pipeline.register_shard(layout.manifest, ["B2"], 1, derived, tmp_path / "again.json")
    assert budgets == {"B2": patient_time_budget(None, 2 * 32 * 48 * 48)} == {"B2": 600.0}
    assert again["patients"]["B2"] == {"outcome": "ok", "error": None}

