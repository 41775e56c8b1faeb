"""The results folder's lock: one run at a time; a dead holder's lock is stale; another host's is refused."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from lesionlocator.core import lock
from lesionlocator.core.lock import (
    LOCK_NAME,
    ResultsLockedError,
    acquire_results_lock,
    read_lock,
    release_results_lock,
    results_lock,
)


def _dead_pid() -> int:
    """The PID of a process that has finished (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture
def live_pid():
    """The PID of another live process of this host (stopped after the test)."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield process.pid
    process.kill()
    process.wait()


def _write_holder(results, **holder) -> dict:
    record = {"host": socket.gethostname(), "started": None, "command": "snakemake --cores 2",
              "cwd": "/elsewhere/clone", "since": "2024-01-01 10:00:00 +0000", **holder}  # fmt: skip
    results.mkdir(parents=True, exist_ok=True)
    (results / LOCK_NAME).write_text(json.dumps(record))
    return record


def test_take_and_release(tmp_path):
    results = tmp_path / "results"
    path = acquire_results_lock(results, "lesionlocator track")
    assert path == results / LOCK_NAME
    holder = read_lock(results)
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    assert holder["command"] == "lesionlocator track" and holder["cwd"] == os.getcwd()
    assert acquire_results_lock(results) == path, "taking a lock this process holds is a no-op"
    assert sorted(p.name for p in results.iterdir()) == [LOCK_NAME], "no temporary file left"
    assert release_results_lock(results)
    assert not path.exists()
    assert not release_results_lock(results)


def test_a_live_holder_on_this_host_is_refused(tmp_path, live_pid):
    results = tmp_path / "results"
    holder = _write_holder(results, pid=live_pid, started=lock._start_time(live_pid))
    with pytest.raises(ResultsLockedError) as err:
        acquire_results_lock(results)
    message = str(err.value)
    assert message.startswith(f"{results / LOCK_NAME}: the results folder is in use by another run")
    assert f"pid {live_pid} on host {socket.gethostname()}: snakemake --cores 2 in /elsewhere/clone" in message
    assert "another results_dir" in message
    assert read_lock(results) == holder
    assert not release_results_lock(results), "never removes another run's lock"
    assert (results / LOCK_NAME).exists()


def test_this_process_as_the_holder_is_its_own_lock(tmp_path):
    results = tmp_path / "results"
    _write_holder(results, pid=os.getpid())
    assert acquire_results_lock(results) == results / LOCK_NAME
    assert release_results_lock(results)


def test_a_dead_holder_on_this_host_is_stale_and_taken_over(tmp_path, caplog):
    results = tmp_path / "results"
    dead = _dead_pid()
    _write_holder(results, pid=dead)
    acquire_results_lock(results)
    assert read_lock(results)["pid"] == os.getpid()
    assert f"taking over a stale lock (pid {dead} on host" in caplog.text
    assert sorted(p.name for p in results.iterdir()) == [LOCK_NAME]


def test_a_reused_pid_is_stale(tmp_path, live_pid):
    """The recorded PID now belongs to a process that started after the holder did."""
    results = tmp_path / "results"
    _write_holder(results, pid=live_pid, started=lock._start_time(live_pid) - 3600)
    acquire_results_lock(results)
    assert read_lock(results)["pid"] == os.getpid()


def test_a_holder_on_another_host_is_refused_with_how_to_remove_it(tmp_path):
    results = tmp_path / "results"
    _write_holder(results, host="node-17", pid=_dead_pid())
    with pytest.raises(ResultsLockedError) as err:
        acquire_results_lock(results)
    message = str(err.value)
    assert "cannot tell whether that run is still going: check on node-17" in message
    assert f"delete {results / LOCK_NAME} and run again" in message
    assert read_lock(results)["host"] == "node-17"


def test_an_unreadable_lock_is_refused(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / LOCK_NAME).write_text("{not json")
    with pytest.raises(ResultsLockedError, match="cannot be read"):
        acquire_results_lock(results)


def test_the_context_manager_releases_on_error_and_keeps_an_outer_lock(tmp_path):
    results = tmp_path / "results"
    with pytest.raises(RuntimeError), results_lock(results):
        assert (results / LOCK_NAME).exists()
        raise RuntimeError("boom")
    assert not (results / LOCK_NAME).exists()
    acquire_results_lock(results)
    with results_lock(results):
        pass
    assert read_lock(results)["pid"] == os.getpid(), "an inner block does not release the outer holder's lock"
    release_results_lock(results)


def test_without_hard_links_the_lock_is_created_with_o_excl(tmp_path, monkeypatch, live_pid):
    def no_links(src, dst):
        raise PermissionError("hard links not supported")

    monkeypatch.setattr(lock.os, "link", no_links)
    results = tmp_path / "results"
    acquire_results_lock(results)
    assert read_lock(results)["pid"] == os.getpid()
    assert sorted(p.name for p in results.iterdir()) == [LOCK_NAME]
    release_results_lock(results)
    _write_holder(results, pid=live_pid)
    with pytest.raises(ResultsLockedError, match="in use by another run"):
        acquire_results_lock(results)
