"""Cost of the reliability checks that run on every image read and every write.

    .venv/bin/python bench/bench_reliability.py

Prints the time of the memory estimate (header only) next to a full ``read_image`` for the embedded
CT (NIfTI) and the embedded DICOM series, and the cost of the stale-temporary-file scan of one write.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from lesionlocator.core.io import check_memory, read_image, remove_stale_parts, write_json

REPO = Path(__file__).resolve().parents[1]
IMAGES = {
    "CT NIfTI 122x101x112": REPO / "data" / "real" / "example_ct.nii.gz",
    "CT DICOM 512x512x20": REPO / "data" / "real" / "example_ct_dicom",
}


def best_of(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    for name, path in IMAGES.items():
        if not path.exists():
            print(f"{name}: {path} not found, skipped")
            continue
        memory = best_of(lambda: check_memory(path))
        full = best_of(lambda: read_image(path), repeats=3)
        print(f"{name}: memory estimate {memory * 1e3:.2f} ms, read_image {full * 1e3:.0f} ms ({100 * memory / full:.1f} %)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for i in range(1000):
            (folder / f"file{i}.json").write_text("{}")
        scan = best_of(lambda: remove_stale_parts(folder / "file0.json"))
        write = best_of(lambda: write_json({"a": 1}, folder / "file0.json"))
        print(f"stale-part scan in a folder of 1000 files: {scan * 1e3:.2f} ms; a whole write_json there: {write * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
