"""Open a cohort report in headless Chromium as a reader would, and say what is on screen.

The report is loaded in an iframe of a small harness page (both ``file://``; Chromium runs with
``--allow-file-access-from-files`` so the harness may read the iframe's document). After the load
and half a second of (virtual) time for lazy images, the harness writes what it found as JSON into
its own DOM, which ``--dump-dom`` prints: which sections are laid out with a non-empty box, the patient
labels of the waterfall and swimmer plot (text, colour, visible), the plots and thumbnails drawn, the
patient section opened by the URL fragment, the review queue's categories, what the queue's filter
box and a click on a table header do, script errors. No
playwright, no download: the Debian ``chromium`` package (tests/system_deps.sh installs it).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SKIP_REASON = "chromium not installed (tests/system_deps.sh installs it when run as root: apt-get install -y chromium)"
SECTIONS = ("cohort", "response", "course", "evaluation", "review", "failed", "patients")

_HARNESS = """<!DOCTYPE html><html><head><meta charset="utf-8"></head><body style="margin:0">
<iframe id="report" src="REPORT" style="border:0;width:WIDTHpx;height:HEIGHTpx"></iframe>
<script>
var frame = document.getElementById("report"), started = performance.now();
frame.addEventListener("load", function () {
  var loadMs = performance.now() - started;
  function collect() {
    var d = frame.contentDocument, w = frame.contentWindow;
    function visible(e) {
      if (!e) return false;
      var r = e.getBoundingClientRect(), s = w.getComputedStyle(e);
      return r.width > 0 && r.height > 0 && s.visibility !== "hidden" && s.display !== "none" && s.opacity !== "0";
    }
    function drawn(i) { return i.complete && i.naturalWidth > 0 && visible(i); }
    function labels(selector) {
      return Array.prototype.map.call(d.querySelectorAll(selector), function (t) { return [t.textContent, t.getAttribute("fill"), visible(t)]; });
    }
    var open = d.querySelector("details.patient[open]"), thumbs = open ? Array.prototype.slice.call(open.querySelectorAll("img")) : [];
    var closed = Array.prototype.slice.call(d.querySelectorAll("details.patient:not([open]) img"));
    var plots = Array.prototype.slice.call(d.querySelectorAll("img.plot"));
    var result = {
      sections: {}, waterfall: labels("svg.waterfall .patient-label"), swimmer: labels("svg.swimmer .patient-label"),
      plots: plots.length, plots_drawn: plots.filter(drawn).length, open: open ? open.id : null,
      thumbnails: thumbs.length, thumbnails_drawn: thumbs.filter(drawn).length,
      closed_thumbnails: closed.length, closed_thumbnails_loaded: closed.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length,
      queue: Array.prototype.map.call(d.querySelectorAll("#queue-table tbody tr"), function (r) { return r.cells[1].textContent; }),
      errors: (w.reportErrors || []).length, load_ms: loadMs,
      timing: w.performance.timing.loadEventEnd - w.performance.timing.navigationStart
    };
    ["SECTIONS"].forEach(function (id) { result.sections[id] = visible(d.getElementById(id)); });
    // the tables' own controls: the queue filtered by a word, the patient index sorted twice by its first column
    var filter = d.querySelector("input.filter[data-filter='queue-table']"), index = d.getElementById("patient-index");
    if (filter && INTERACT) {
      filter.value = FILTER;
      filter.dispatchEvent(new w.Event("input"));
      result.filtered = Array.prototype.filter.call(d.querySelectorAll("#queue-table tbody tr"), visible).length;
      filter.value = "";
      filter.dispatchEvent(new w.Event("input"));
    }
    if (index && INTERACT) {
      index.tHead.rows[0].cells[0].click();
      index.tHead.rows[0].cells[0].click();
      result.sorted_first = index.tBodies[0].rows[0].cells[0].textContent;
    }
    var out = document.createElement("pre");
    out.id = "result";
    out.textContent = JSON.stringify(result);
    document.body.appendChild(out);
  }
  if (DELAY > 0) setTimeout(collect, DELAY); else collect();
});
</script></body></html>
"""


def _flags(profile: Path, width: int, height: int) -> list[str]:
    return ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--hide-scrollbars", "--allow-file-access-from-files", f"--user-data-dir={profile}",
            f"--window-size={width},{height}"]  # fmt: skip


def harness(report: Path, work: Path, fragment: str = "", width: int = 1300, height: int = 1400, delay_ms: int = 500,
            queue_filter: str = "fallback", interact: bool = True) -> Path:
    """A harness page in ``work`` that shows ``report`` (with ``#fragment``) in an iframe and looks
    at it ``delay_ms`` after its load event (0: at once); it types ``queue_filter`` into the review
    queue's filter box (``filtered``: the rows left visible) and sorts the patient index by its first
    column, descending (``sorted_first``: the first patient then), unless not ``interact``."""
    work.mkdir(parents=True, exist_ok=True)
    values = {"DELAY": str(delay_ms), "FILTER": json.dumps(queue_filter), "INTERACT": json.dumps(interact), "WIDTH": str(width),
              "HEIGHT": str(height), '"SECTIONS"': json.dumps(list(SECTIONS))[1:-1],
              "REPORT": report.resolve().as_uri() + (f"#{fragment}" if fragment else "")}  # last: a path may hold the other keys  # fmt: skip
    page = _HARNESS
    for key, value in values.items():
        page = page.replace(key, value)
    path = work / "harness.html"
    path.write_text(page)
    return path


def inspect(report: Path, work: Path, fragment: str = "", timeout: float = 120, virtual_time: bool = True) -> dict:
    """What the harness found on screen (see the module docstring), plus ``wall_s``: the seconds the
    Chromium process took. ``virtual_time`` fast-forwards timers (and clocks: load_ms is then
    virtual); without it the timings are real and the dump waits for the load event."""
    page = harness(report, work, fragment, delay_ms=500 if virtual_time else 0)
    flags = _flags(work / "profile", 1300, 1400) + (["--virtual-time-budget=5000"] if virtual_time else ["--run-all-compositor-stages-before-draw"])
    start = time.perf_counter()
    result = subprocess.run([CHROMIUM, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - start
    found = re.search(r'<pre id="result">(.*?)</pre>', result.stdout, re.S)
    if not found:
        raise AssertionError(f"the harness wrote no result; chromium said:\n{result.stderr[-3000:]}")
    data = json.loads(found.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))
    data["wall_s"] = wall
    return data


def screenshot(report: Path, work: Path, out: Path, fragment: str = "", width: int = 1300, height: int = 1400, timeout: float = 120) -> Path:
    """A PNG of the report as a ``width`` x ``height`` window shows it (scrolled to ``#fragment``)."""
    page = harness(report, work, fragment, width, height, interact=False)
    flags = _flags(work / "profile", width, height) + ["--virtual-time-budget=5000"]
    result = subprocess.run([CHROMIUM, *flags, f"--screenshot={out}", page.as_uri()], capture_output=True, text=True, timeout=timeout)
    if not out.exists():
        raise AssertionError(f"no screenshot; chromium said:\n{result.stderr[-3000:]}")
    return out
