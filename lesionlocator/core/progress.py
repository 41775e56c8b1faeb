"""Progress of the loops that take minutes: a bar on a terminal, log lines in a log file.

:class:`Progress` counts the finished items of a loop (patients of a shard, epochs, files). It

* always writes plain lines through :mod:`logging`, at most one every ``interval_s`` seconds plus
  the first and the last item, e.g. ``segment_baseline: 3/50 patients (P003 done, 12.1 s) [0:36 < 9:40]``
  (the item's own time; the time elapsed and the estimated time left): a Snakemake job's log file
  gets them;
* also shows a :mod:`tqdm` bar on stderr when stderr is a terminal (``bar=None``), unless disabled
  with ``bar=False`` or the environment variable ``TQDM_DISABLE=1``; while the bar is shown, log
  records that go to the console (the CLI's) are written above it instead of through it, and those
  that go to a file (a Snakemake job's) stay there.

Progress goes to stderr and logs only: no output file changes with it.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from contextlib import ExitStack
from typing import Callable, Iterable, Iterator, TypeVar

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

T = TypeVar("T")
log = logging.getLogger(__name__)


def bar_wanted() -> bool:
    """True when stderr is a terminal and ``TQDM_DISABLE`` is not set (to anything but 0/false)."""
    disabled = os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false", "no")
    return not disabled and sys.stderr is not None and sys.stderr.isatty()


def _logs_to_console() -> bool:
    """Whether the root logger writes to stdout or stderr (the CLI does; a Snakemake job logs to a file)."""
    return any(
        isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) in (sys.stdout, sys.stderr)
        for handler in logging.getLogger().handlers
    )


class Progress:
    """Finished-item counter of one loop: log lines at a bounded rate, and a bar on a terminal.

    Use as a context manager and call :meth:`advance` after each item::

        with Progress("segment_baseline", total=len(tasks), unit="patient") as progress:
            for task in tasks:
                ...
                progress.advance(f"{task.patient} done")
    """

    def __init__(
        self,
        desc: str,
        total: int | None,
        unit: str = "item",
        logger: logging.Logger | None = None,
        interval_s: float = 10.0,
        bar: bool | None = None,
        initial: int = 0,
        units: str | None = None,
    ) -> None:
        self.desc = desc
        self.total = total
        self.unit = unit
        self.units = units or f"{unit}s"
        self.done = self._initial = initial
        self._lines = 0
        self._log = logger or log
        self._interval_s = interval_s
        self._show_bar = bar_wanted() if bar is None else bar
        self._bar: tqdm | None = None
        self._stack = ExitStack()
        self._started = self._last_line = self._last_item = time.monotonic()

    def __enter__(self) -> Progress:
        self._started = self._last_line = self._last_item = time.monotonic()
        if self._show_bar:
            if _logs_to_console():  # print those records above the bar, not through it
                self._stack.enter_context(logging_redirect_tqdm())
            self._bar = self._stack.enter_context(
                tqdm(total=self.total, initial=self._initial, desc=self.desc, unit=self.unit, file=sys.stderr,
                     dynamic_ncols=True, leave=True)
            )
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()
        self._bar = None

    def set_total(self, total: int) -> None:
        """Change the number of items expected (an epoch count shrunk to a time budget)."""
        self.total = total
        if self._bar is not None:
            self._bar.total = total
            self._bar.refresh()

    def advance(self, note: str = "", n: int = 1) -> None:
        """Count ``n`` more finished items; ``note`` says which and how it went ("P003 done"); the
        log line adds the time since the previous item (s)."""
        now = time.monotonic()
        self.done += n
        note = f"{note}, {now - self._last_item:.1f} s" if note else f"{now - self._last_item:.1f} s"
        self._last_item = now
        if self._bar is not None:
            self._bar.set_postfix_str(note, refresh=False)
            self._bar.update(n)
        last = self.total is not None and self.done >= self.total
        if not self._lines or last or now - self._last_line >= self._interval_s:
            self._lines += 1
            self._last_line = now
            self._log.info("%s", self.line(note, now - self._started))

    def line(self, note: str, elapsed_s: float) -> str:
        """The log line: ``<desc>: <done>/<total> <unit>s (<note>) [<elapsed> < <left>]``."""
        count = f"{self.done}/{self.total}" if self.total is not None else f"{self.done}"
        plural = self.unit if (self.done if self.total is None else self.total) == 1 else self.units
        timing = tqdm.format_interval(elapsed_s)
        if self.total and self._initial < self.done < self.total:
            timing += f" < {tqdm.format_interval(elapsed_s / (self.done - self._initial) * (self.total - self.done))}"
        return f"{self.desc}: {count} {plural} ({note}) [{timing}]"


def progress(
    items: Iterable[T],
    desc: str,
    unit: str = "item",
    total: int | None = None,
    note: Callable[[T], str] = lambda item: f"{item} done",
    **kwargs,
) -> Iterator[T]:
    """Iterate over ``items``, counting each one as finished when the loop body asks for the next.

    ``total`` defaults to ``len(items)`` when it has one; ``note(item)`` is the log note of a
    finished item; other keyword arguments go to :class:`Progress`.
    """
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(desc, total, unit=unit, **kwargs) as counter:
        for item in items:
            yield item
            counter.advance(note(item))
