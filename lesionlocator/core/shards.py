"""Batches ("shards") of patients: the unit of a workflow job.

A cohort of 10,000 patients is not 10,000 jobs nor 10,000 model loads: each stage runs one job per
shard of ``workflow.shard_size`` patients, builds its model once, and loops over the patients. The
outputs stay per patient, and so does resume:

* every patient's stage result is recorded in ``<patient dir>/.done/<stage>.json`` with its
  *rerun key* (:mod:`lesionlocator.stage_keys`: the stage's config fields, input and weight hashes,
  code version); a rerun of the shard skips the patients whose key is unchanged, so a changed or
  failed patient is recomputed alone;
* one patient's failure does not stop its shard: it is recorded in the shard's report (the job's
  declared output) and the stages after it skip that patient (``upstream_failed``, carrying the
  first failure's ``"<stage>: <error>"``); ``run.json`` (``failed_patients``, ``failures``) and the
  cohort report list such patients with that reason. ``snakemake --forcerun <rule>`` retries them
  (the others are skipped in milliseconds);
* every patient has a time budget per stage (``workflow.patient_time_budget_s``, or derived from the
  size of its images by :func:`patient_time_budget`): a patient over it fails with
  ``"exceeded its time budget of N s in <stage>"`` and the shard goes on with the next one.

How a running patient is stopped at its deadline, in the job's own process (a model loaded once
per shard stays loaded; a child process per patient would reload it, or inherit a CUDA context
that does not survive a fork):

* Python code is interrupted by a ``SIGALRM`` timer (main thread only): its handler raises
  :class:`TimeBudgetExceeded` at the next bytecode, e.g. between two patches of a sliding window;
* a long C++ call cannot be interrupted that way (the handler waits until it returns), so code that
  runs one polls the deadline itself: a SimpleITK registration checks :func:`deadline_passed` in an
  iteration observer and stops its optimizer, then :func:`check_deadline` raises. Inside
  :func:`polling_deadline` the alarm does not raise (an exception raised inside a SimpleITK callback
  would come out as a generic ``RuntimeError``, with a traceback printed).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Literal

from lesionlocator.core.errors import LesionLocatorError
from lesionlocator.core.io import write_json

log = logging.getLogger(__name__)

Outcome = Literal["done", "up_to_date", "failed", "upstream_failed"]


def shard_patients(patients: list[str], shard_size: int) -> list[list[str]]:
    """Split the (already ordered) patient list into consecutive shards of ``shard_size``."""
    if shard_size < 1:
        raise ValueError("shard_size must be >= 1")
    return [patients[i : i + shard_size] for i in range(0, len(patients), shard_size)]


def done_path(patient_dir: Path, stage: str) -> Path:
    return Path(patient_dir) / ".done" / f"{stage}.json"


def read_done(patient_dir: Path, stage: str) -> str | None:
    """The fingerprint recorded when ``stage`` last finished for this patient, or None."""
    path = done_path(patient_dir, stage)
    try:
        return json.loads(path.read_text())["fingerprint"]
    except (OSError, ValueError, KeyError):
        return None


def failed_patients(reports: Iterable[str | Path]) -> set[str]:
    """Patients that failed (or were skipped for an upstream failure) in any of the shard reports."""
    failed = set()
    for report in reports:
        data = json.loads(Path(report).read_text())
        failed |= {p for p, item in data["patients"].items() if item["outcome"] in ("failed", "upstream_failed")}
    return failed


def failure_reasons(reports: Iterable[str | Path]) -> dict[str, str]:
    """Per failed patient, why: ``"<stage>: <error>"`` of the stage that failed. A stage skipped for an
    upstream failure carries the upstream reason, so the reports of the last stages name the root cause."""
    reasons: dict[str, str] = {}
    for report in reports:
        data = json.loads(Path(report).read_text())
        for patient, item in data["patients"].items():
            if item["outcome"] == "failed":
                reasons[patient] = f"{data['stage']}: {item['error']}"
            elif item["outcome"] == "upstream_failed":
                reasons.setdefault(patient, item["error"])
    return dict(sorted(reasons.items()))


def failure_table(reports: Iterable[str | Path]):
    """:func:`failure_reasons` as a ``pandas.DataFrame`` (patient, reason), as the cohort report lists them."""
    import pandas as pd

    return pd.DataFrame(list(failure_reasons(reports).items()), columns=["patient", "reason"])


@dataclass
class PatientTask:
    """One patient's work in a stage: ``run()`` writes the outputs; ``key`` fingerprints its inputs;
    ``budget_s``: the most seconds ``run()`` may take (None: no limit; see :func:`patient_time_budget`)."""

    patient: str
    patient_dir: Path
    key: str
    run: Callable[[], None]
    budget_s: float | None = None


# --- time budget ----------------------------------------------------------------------------------


#: Derived time budget (``workflow.patient_time_budget_s`` null): seconds per million voxels, and the floor.
BUDGET_S_PER_MEGAVOXEL = 5.0
BUDGET_MIN_S = 600.0


def patient_time_budget(budget_s: float | None, voxels: int) -> float:
    """The time budget (s) of one patient in one stage that reads images of ``voxels`` voxels in all:
    ``budget_s`` (``workflow.patient_time_budget_s``) when set, else :data:`BUDGET_S_PER_MEGAVOXEL`
    per million voxels, at least :data:`BUDGET_MIN_S`. The voxel count, not the field of view, sets
    it: a header with a wrong spacing does not raise its budget."""
    if budget_s is not None:
        return float(budget_s)
    return float(max(BUDGET_MIN_S, math.ceil(BUDGET_S_PER_MEGAVOXEL * voxels / 1e6)))


class TimeBudgetExceeded(LesionLocatorError):
    """A patient ran past its time budget in a stage."""


@dataclass(eq=False)
class Deadline:
    """The deadline of the patient being run: ``budget_s`` seconds of ``clock`` after it is armed.

    :meth:`arm` makes it the current deadline (what :func:`check_deadline` reads) and, in the main
    thread, starts a one-shot ``SIGALRM`` timer; :meth:`release` undoes both and may be called again.
    """

    stage: str
    budget_s: float
    clock: Callable[[], float] = time.monotonic
    start: float = 0.0
    polling: int = 0  # > 0 inside polling_deadline(): the alarm does not raise
    released: bool = False
    _previous_handler: object = None
    _alarm: bool = False

    @property
    def message(self) -> str:
        return f"exceeded its time budget of {self.budget_s:g} s in {self.stage}"

    def passed(self) -> bool:
        return self.clock() - self.start > self.budget_s

    def arm(self) -> None:
        self.start = self.clock()
        _RUNNING.append(self)
        if _alarm_available():
            self._previous_handler = signal.signal(signal.SIGALRM, self._on_alarm)
            self._alarm = True
            signal.setitimer(signal.ITIMER_REAL, max(self.budget_s, 1e-3))

    def _on_alarm(self, signum, frame) -> None:
        if _current() is self and not self.released and not self.polling:
            raise TimeBudgetExceeded(self.message)

    def release(self) -> None:
        self.released = True  # from here on the alarm does not raise
        if self._alarm:
            signal.setitimer(signal.ITIMER_REAL, 0.0)
            signal.signal(signal.SIGALRM, self._previous_handler)
            self._alarm = False
        if self in _RUNNING:
            _RUNNING.remove(self)


#: The deadlines armed, innermost last (one while a patient of run_shard runs).
_RUNNING: list[Deadline] = []


def _current() -> Deadline | None:
    return _RUNNING[-1] if _RUNNING else None


def _alarm_available() -> bool:
    """SIGALRM can be used: a POSIX main thread, and no other real-time timer running (pytest-timeout's)."""
    return (
        hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
        and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    )


def deadline_passed() -> bool:
    """Whether the running patient's time budget is spent (False outside a patient of :func:`run_shard`)."""
    deadline = _current()
    return deadline is not None and deadline.passed()


def check_deadline() -> None:
    """Raise :class:`TimeBudgetExceeded` when the running patient's time budget is spent: code that
    runs long C++ calls calls it between them (it costs a clock read)."""
    deadline = _current()
    if deadline is not None and deadline.passed():
        raise TimeBudgetExceeded(deadline.message)


@contextlib.contextmanager
def polling_deadline() -> Iterator[None]:
    """Code inside checks the deadline itself (:func:`deadline_passed` in a C++ callback, then
    :func:`check_deadline`): the alarm does not raise inside it. Leaving it checks the deadline."""
    deadline = _current()
    if deadline is None:
        yield
        return
    deadline.polling += 1
    try:
        yield
    finally:
        deadline.polling -= 1
    check_deadline()


def run_with_deadline(run: Callable[[], None], deadline: Deadline | None) -> None:
    """``run()`` under ``deadline`` (None: none), released after. The alarm fires once: should it
    interrupt the release itself, the caller that catches the error releases again (as :func:`run_shard`)."""
    if deadline is None:
        run()
        return
    try:
        deadline.arm()
        run()
        deadline.released = True  # done: an alarm from here on does not raise
    finally:
        deadline.release()


def run_shard(
    stage: str,
    tasks: list[PatientTask],
    report_path: str | Path,
    upstream_reports: Iterable[str | Path] = (),
    *,
    clock: Callable[[], float] = time.monotonic,
) -> dict:
    """Run ``tasks`` (one per patient) with per-patient skip, failure isolation, time budgets and a
    shard report.

    Returns the report (also written atomically to ``report_path``): per patient its outcome and,
    for failures, the error message. The report holds no timings, so reruns are byte-identical.
    A task whose ``budget_s`` runs out fails with ``TimeBudgetExceeded: exceeded its time budget of
    N s in <stage>`` (whatever error the interruption raised). ``clock`` (s) times the budgets.
    """
    from lesionlocator.core.progress import Progress

    upstream_failed = failure_reasons(upstream_reports)
    outcomes: dict[str, dict] = {}
    # a log line per patient at most every 10 s (a bar on a terminal); failures are logged in full
    with Progress(stage, total=len(tasks), unit="patient", logger=log) as progress:
        for task in tasks:
            if task.patient in upstream_failed:
                outcomes[task.patient] = {"outcome": "upstream_failed", "error": upstream_failed[task.patient]}
                progress.advance(f"{task.patient} skipped: upstream failed")
                continue
            if read_done(task.patient_dir, stage) == task.key:
                log.debug("%s %s: up to date", stage, task.patient)
                outcomes[task.patient] = {"outcome": "up_to_date", "error": None}
                progress.advance(f"{task.patient} up to date")
                continue
            done_path(task.patient_dir, stage).unlink(missing_ok=True)
            start = time.perf_counter()
            deadline = None if task.budget_s is None else Deadline(stage, float(task.budget_s), clock)
            try:
                run_with_deadline(task.run, deadline)
            except Exception as err:  # one patient's failure must not stop the shard
                if deadline is not None:
                    deadline.release()  # again: the alarm may have interrupted the first release
                if deadline is not None and deadline.passed():
                    # the interruption may surface as another error (a C++ call stopped early)
                    err = err if isinstance(err, TimeBudgetExceeded) else TimeBudgetExceeded(deadline.message)
                    log.error("%s %s failed: %s", stage, task.patient, err)
                else:
                    log.error("%s %s failed: %s\n%s", stage, task.patient, err, traceback.format_exc())
                outcomes[task.patient] = {"outcome": "failed", "error": f"{type(err).__name__}: {err}"}
                progress.advance(f"{task.patient} FAILED")
                continue
            write_json({"fingerprint": task.key, "stage": stage}, done_path(task.patient_dir, stage))
            log.debug("%s %s: done in %.1f s", stage, task.patient, time.perf_counter() - start)
            outcomes[task.patient] = {"outcome": "done", "error": None}
            progress.advance(f"{task.patient} done")
    # "done" and "up_to_date" are the same result; the report records only what downstream needs.
    report = {
        "stage": stage,
        "patients": {
            p: {"outcome": "ok" if o["outcome"] in ("done", "up_to_date") else o["outcome"], "error": o["error"]}
            for p, o in outcomes.items()
        },
    }
    write_json(report, report_path)
    n_failed = sum(o["outcome"] == "failed" for o in outcomes.values())
    if n_failed:
        log.warning("%s: %d of %d patient(s) failed; see %s", stage, n_failed, len(tasks), report_path)
    return report
