"""The progress helper: log lines at a bounded rate without a terminal, a tqdm bar with one."""

from __future__ import annotations

import io
import logging

import pytest

from lesionlocator.core import progress as progress_module
from lesionlocator.core.progress import Progress, bar_wanted, progress

LOGGER = "lesionlocator.test_progress"


def test_without_a_terminal_it_logs_the_first_the_last_and_no_bar(caplog, capsys):
    caplog.set_level(logging.INFO, logger=LOGGER)
    with Progress("segment_baseline", total=50, unit="patient", logger=logging.getLogger(LOGGER)) as counter:
        assert counter._bar is None  # pytest's stderr is not a terminal
        for k in range(1, 51):
            counter.advance(f"P{k:03d} done")
    assert capsys.readouterr().err == ""
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2  # 50 fast items: the first and the last (at most one line per 10 s between)
    assert lines[0].startswith("segment_baseline: 1/50 patients (P001 done, ")
    assert lines[1].startswith("segment_baseline: 50/50 patients (P050 done, ")


def test_a_zero_interval_logs_every_item_and_the_iterator_counts_each(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    items = list(progress(["A", "B", "C"], "synthetic cohort", unit="patient", logger=logging.getLogger(LOGGER),
                          interval_s=0.0, bar=False))  # fmt: skip
    assert items == ["A", "B", "C"]
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(" (")[0] for line in lines] == [f"synthetic cohort: {k}/3 patients" for k in (1, 2, 3)]
    assert "(C done, " in lines[-1] and " s) [" in lines[-1]


def test_on_a_terminal_it_draws_a_tqdm_bar_and_still_logs(caplog, monkeypatch):
    stderr = io.StringIO()
    stderr.isatty = lambda: True  # forced to a terminal
    monkeypatch.setattr(progress_module.sys, "stderr", stderr)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert bar_wanted()
    caplog.set_level(logging.INFO, logger=LOGGER)
    with Progress("measure", total=2, unit="patient", logger=logging.getLogger(LOGGER)) as counter:
        assert isinstance(counter._bar, progress_module.tqdm)
        counter.advance("P1 done")
        counter.advance("P2 done")
    drawn = stderr.getvalue()
    assert "measure" in drawn and "2/2" in drawn and "P2 done" in drawn
    assert len(caplog.records) == 2  # the job's log file gets its lines too


@pytest.mark.parametrize("value", ["1", "true"])
def test_tqdm_disable_turns_the_bar_off(monkeypatch, value):
    stderr = io.StringIO()
    stderr.isatty = lambda: True
    monkeypatch.setattr(progress_module.sys, "stderr", stderr)
    monkeypatch.setenv("TQDM_DISABLE", value)
    assert not bar_wanted()


def test_resumed_count_and_shrunk_total(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    with Progress("train", total=10, unit="epoch", logger=logging.getLogger(LOGGER), bar=False, initial=4) as counter:
        counter.set_total(5)
        counter.advance("epoch 5")
    assert caplog.records[-1].getMessage().startswith("train: 5/5 epochs (epoch 5, ")


def test_a_bar_leaves_file_logging_alone_and_lifts_console_logging_above_it(tmp_path, monkeypatch):
    stderr = io.StringIO()
    stderr.isatty = lambda: True
    monkeypatch.setattr(progress_module.sys, "stderr", stderr)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    root = logging.getLogger()
    file_handler = logging.FileHandler(tmp_path / "job.log")
    monkeypatch.setattr(root, "handlers", [file_handler])
    monkeypatch.setattr(root, "level", logging.INFO)
    with Progress("aggregate", total=1, unit="batch") as counter:
        assert root.handlers == [file_handler]  # a Snakemake job: records stay in its log file
        counter.advance("lesions: 3 rows")
    file_handler.close()
    assert "aggregate: 1/1 batch (lesions: 3 rows, " in (tmp_path / "job.log").read_text()
    assert "aggregate: 1/1 batch (" not in stderr.getvalue()  # the terminal has the bar only
    console = logging.StreamHandler(stderr)
    monkeypatch.setattr(root, "handlers", [console])
    with Progress("aggregate", total=3, unit="batch", units="batches"):
        assert console not in root.handlers  # the CLI: tqdm writes its records above the bar
    assert root.handlers == [console]
