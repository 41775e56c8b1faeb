"""Faults below the pipeline: a writer killed mid-write, the memory estimate before loading."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk

from lesionlocator.core.errors import InputError
from lesionlocator.core.io import (
    atomic_path,
    available_memory_bytes,
    check_memory,
    estimate_image_bytes,
    read_image,
    remove_stale_parts,
    write_image,
)
from tests.helpers import make_image
from tests.reliability.builders import nifti_with_huge_header, partial_files


def test_sigkilled_writer_leaves_the_old_file_and_the_next_write_cleans_up(tmp_path):
    target = tmp_path / "lesions.nii.gz"
    write_image(make_image(seed=1), target)
    before = target.read_bytes()
    writer = textwrap.dedent(
        f"""
        import os, signal
        from lesionlocator.core.io import atomic_path
        with atomic_path({str(target)!r}) as tmp:
            tmp.write_bytes(b"half of a gzip stream")
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    killed = subprocess.run([sys.executable, "-c", writer], capture_output=True)
    assert killed.returncode == -signal.SIGKILL
    assert target.read_bytes() == before, "the final name still holds the complete previous file"
    assert len(partial_files(tmp_path)) == 1
    write_image(make_image(seed=2), target)
    assert partial_files(tmp_path) == []
    assert np.array_equal(sitk.GetArrayFromImage(read_image(target)), sitk.GetArrayFromImage(make_image(seed=2)))


def test_only_the_same_targets_leftovers_are_removed(tmp_path):
    names = [".a.nii.gz.k3j2_x9q.part.nii.gz", ".a.nii.gz.old.part.nii.gz", ".ab.nii.gz.k3j2_x9q.part.nii.gz",
             ".a.nii.gz.k3j2_x9q.part.parquet", "a.nii.gz.k3j2_x9q.part.nii.gz"]  # fmt: skip
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    removed = remove_stale_parts(tmp_path / "a.nii.gz")
    assert sorted(p.name for p in removed) == sorted(names[:2])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[2:])


def test_failed_write_removes_its_temporary_file(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "table.parquet") as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


def test_memory_estimate_from_the_header(tmp_path):
    image = make_image(shape_zyx=(5, 6, 7), dtype=np.float32)
    path = write_image(image, tmp_path / "small.nii.gz")
    assert estimate_image_bytes(path) == (5 * 6 * 7 * 4, 5 * 6 * 7, 4)
    assert available_memory_bytes() > 0
    check_memory(path)  # a small image passes
    huge = nifti_with_huge_header(tmp_path / "huge.nii")
    needed, voxels, per_voxel = estimate_image_bytes(huge)
    assert (voxels, per_voxel) == (32000**3, 4)
    with pytest.raises(InputError, match=r"huge.nii: image too large to load: its voxels need 122070.3 GiB .* only [\d.]+ GiB"):
        read_image(huge)


def test_memory_estimate_of_a_dicom_folder():
    from tests.helpers import EMBEDDED_REAL

    needed, voxels, per_voxel = estimate_image_bytes(EMBEDDED_REAL / "example_ct_dicom")
    assert voxels == 512 * 512 * 20 and needed == voxels * per_voxel


def test_available_memory_is_the_smaller_of_meminfo_and_the_cgroup_room(monkeypatch, tmp_path):
    import psutil

    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(available=4000000 * 1024, total=8000000 * 1024))
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    assert available_memory_bytes(cgroup) == 4000000 * 1024
    (cgroup / "memory.max").write_text("max\n")
    assert available_memory_bytes(cgroup) == 4000000 * 1024
    (cgroup / "memory.max").write_text("2000000000\n")
    (cgroup / "memory.current").write_text("500000000\n")
    assert available_memory_bytes(cgroup) == 1500000000
    (cgroup / "memory.current").write_text("2500000000\n")  # over the limit: no room at all
    assert available_memory_bytes(cgroup) == 0

    def unknown():
        raise OSError("no /proc")

    monkeypatch.setattr(psutil, "virtual_memory", unknown)
    assert available_memory_bytes(cgroup) == 0
    assert available_memory_bytes(tmp_path / "none") is None


def test_available_memory_is_memavailable_of_meminfo_on_linux():
    meminfo = Path("/proc/meminfo")
    if not meminfo.exists():
        pytest.skip("no /proc/meminfo")
    fields = dict(line.split(":", 1) for line in meminfo.read_text().splitlines())
    if "MemAvailable" not in fields:
        pytest.skip("kernel without MemAvailable")
    expected = int(fields["MemAvailable"].split()[0]) * 1024
    # psutil reads the same field; memory moves between the two reads, so allow 5 %
    assert abs(available_memory_bytes(Path("/nonexistent")) - expected) <= 0.05 * expected


def test_memory_check_compares_the_voxel_bytes_with_the_available_memory(monkeypatch, tmp_path):
    import lesionlocator.core.io as io

    path = write_image(make_image(shape_zyx=(5, 6, 7)), tmp_path / "small.nii.gz")
    monkeypatch.setattr(io, "available_memory_bytes", lambda: 100)
    with pytest.raises(InputError, match=r"small.nii.gz: image too large to load: its voxels need 420 B \(210 voxels x 2 bytes.* only 100 B"):
        read_image(path)
    monkeypatch.setattr(io, "available_memory_bytes", lambda: None)  # unknown: no check
    assert read_image(path).GetSize() == (7, 6, 5)
