"""A lock in the results folder: one run at a time writes there.

Snakemake's own lock lives in the working folder (``.snakemake/locks``), so two clones of the
workflow given the same ``results_dir`` would both run: one swaps ``cohort/`` while the other reads
it, and each overwrites the other's logs. The lock here lives in ``results_dir`` itself: a file
``lesionlocator.lock`` naming its holder (host, PID, process start time, command, working folder),
created atomically and exclusively (a hard link from a complete temporary file, or ``O_EXCL`` where
the filesystem has no hard links), so a reader never sees a half-written holder.

The Snakefile's ``onstart:`` takes it (the main process only: jobs run with ``--no-hooks``; a dry
run runs no hook) and ``onsuccess:``/``onerror:`` release it; ``lesionlocator track`` holds it while it
runs. A lock whose holder is a dead process on this host is stale and taken over; one held from
another host cannot be checked from here, and the message says how to remove it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

from lesionlocator.core.errors import LesionLocatorError

log = logging.getLogger(__name__)

LOCK_NAME = "lesionlocator.lock"


class ResultsLockedError(LesionLocatorError):
    """The results folder is held by another run: the message names the lock file and its holder."""


def lock_path(results_dir: str | Path) -> Path:
    return Path(results_dir) / LOCK_NAME


def _start_time(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), or None when it does not exist."""
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.Error:  # exists, but not ours to inspect
        return -1.0


def _holder_record(command: str) -> dict:
    pid = os.getpid()
    return {
        "host": socket.gethostname(),
        "pid": pid,
        "started": _start_time(pid),
        "command": command,
        "cwd": os.getcwd(),
        "since": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


def read_lock(results_dir: str | Path) -> dict | None:
    """The holder recorded in the lock file, or None when there is none (or it cannot be read)."""
    try:
        holder = json.loads(lock_path(results_dir).read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def holder_is_alive(holder: dict) -> bool | None:
    """True when the holder's process runs, False when it is gone, None when it runs on another host
    (which cannot be checked from here). A PID that now belongs to a process started later (PID
    reuse) counts as gone."""
    if holder.get("host") != socket.gethostname():
        return None
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    started = _start_time(pid)
    if started is None:
        return False
    recorded = holder.get("started")
    reused = isinstance(recorded, (int, float)) and recorded > 0 and started > 0 and abs(started - recorded) > 1.0
    return not reused


def describe_holder(holder: dict) -> str:
    return (
        f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}: {holder.get('command', '?')} "
        f"in {holder.get('cwd', '?')}, since {holder.get('since', '?')}"
    )


def _is_mine(holder: dict | None) -> bool:
    return bool(holder) and holder.get("host") == socket.gethostname() and holder.get("pid") == os.getpid()


def _create_exclusively(path: Path, text: str) -> bool:
    """Create ``path`` holding ``text`` if it does not exist; False when it does. Atomic: a hard link
    from a complete temporary file (also safe on NFS), or O_EXCL where hard links are not supported."""
    temporary = path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.tmp")
    temporary.write_text(text)
    try:
        os.link(temporary, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links on this filesystem
        pass
    finally:
        temporary.unlink(missing_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return True


def _remove_stale(path: Path, stale_text: str) -> None:
    """Remove the stale lock ``path`` if it still holds ``stale_text``. It is renamed aside first (one
    process wins the rename), so a fresh lock another run created meanwhile is put back, not lost."""
    aside = path.with_name(f".{path.name}.stale.{socket.gethostname()}.{os.getpid()}")
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return  # another run took it over first
    try:
        if aside.read_text() != stale_text:
            with contextlib.suppress(FileExistsError):
                os.link(aside, path)
    finally:
        aside.unlink(missing_ok=True)


def acquire_results_lock(results_dir: str | Path, command: str | None = None) -> Path:
    """Take the results folder's lock for this process (creating the folder); returns the lock file.

    Raises :class:`ResultsLockedError` when another live process holds it, or a process on another
    host. A lock left by a dead process of this host is taken over (logged as stale). Taking a lock
    this process already holds is a no-op.
    """
    path = lock_path(results_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = _holder_record(command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]))
    text = json.dumps(record, indent=1) + "\n"
    for _ in range(5):
        if _create_exclusively(path, text):
            log.debug("results lock taken: %s", path)
            return path
        try:
            held_text = path.read_text()
            holder = json.loads(held_text)
            if not isinstance(holder, dict):
                raise ValueError("not a holder record")
        except FileNotFoundError:
            continue  # released meanwhile: try again
        except (OSError, ValueError):
            raise ResultsLockedError(
                f"{path}: the results folder is locked, and the lock file cannot be read. If no other run "
                "writes to this folder, delete that file and run again."
            ) from None
        if _is_mine(holder):
            return path
        alive = holder_is_alive(holder)
        if alive is False:
            log.warning("%s: taking over a stale lock (%s is no longer running)", path, describe_holder(holder))
            _remove_stale(path, held_text)
            continue
        if alive is None:
            raise ResultsLockedError(
                f"{path}: the results folder is locked by another run ({describe_holder(holder)}). "
                f"This host cannot tell whether that run is still going: check on {holder.get('host')}. "
                f"If it is not (it was killed, or its machine went down), delete {path} and run again, "
                "as `snakemake --unlock` does for Snakemake's own lock."
            )
        raise ResultsLockedError(
            f"{path}: the results folder is in use by another run ({describe_holder(holder)}). "
            "Wait for it to finish, or give this run another results_dir."
        )
    raise ResultsLockedError(f"{path}: could not take the results folder's lock (it changed hands repeatedly)")


def release_results_lock(results_dir: str | Path) -> bool:
    """Remove the lock if this process holds it (never another run's); True when it was removed."""
    path = lock_path(results_dir)
    if not _is_mine(read_lock(results_dir)):
        return False
    path.unlink(missing_ok=True)
    log.debug("results lock released: %s", path)
    return True


@contextlib.contextmanager
def results_lock(results_dir: str | Path, command: str | None = None) -> Iterator[Path]:
    """Hold the results folder's lock for the duration of a ``with`` block (``lesionlocator track``)."""
    held_before = _is_mine(read_lock(results_dir))
    path = acquire_results_lock(results_dir, command)
    try:
        yield path
    finally:
        if not held_before:
            release_results_lock(results_dir)
