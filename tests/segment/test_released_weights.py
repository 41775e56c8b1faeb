"""``lesionlocator weights fetch`` against a records API on the loopback address.

A ``ThreadingHTTPServer`` on 127.0.0.1 serves a Zenodo-style record JSON and a zip of a checkpoint
the test writes in the released layout (``LesionLocatorCheckpoint/LesionLocatorSeg/{point,bbox}_optimized``
and ``LesionLocatorTrack``, tiny weights); each route can lie about its length, send fewer bytes or
answer an HTTP error. No other network is used.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from lesionlocator.cli import main
from lesionlocator.segment.model import load_model, resolve_model_folders
from lesionlocator.segment.official import read_track_checkpoint
from lesionlocator.segment.released_weights import PROVENANCE_FILE, FetchError, fetch_weights
from tests.segment.toy_model import toy_dataset_json, toy_plans, write_toy_lesionlocator_checkpoint

RECORD = "4242"
PLANS = toy_plans(patch_size=(16, 16, 16), features=(4, 8))


def write_tiny_track_folder(root: Path) -> Path:
    """``root/LesionLocatorTrack`` in the released format: ``reg_net.*``, ``unet.*`` and ``unet_patch_size``."""
    folder = root / "LesionLocatorTrack"
    (folder / "fold_0").mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps(PLANS))
    (folder / "dataset.json").write_text(json.dumps(toy_dataset_json()))
    weights = {"reg_net.regis_net.w": torch.ones(2), "unet.conv.weight": torch.zeros(3),
               "unet_patch_size": torch.tensor([16] * 3)}
    checkpoint = {"network_weights": weights, "trainer_name": "LesionLocatorTrainerTrack",
                  "init_args": {"configuration": "3d_fullres"}, "inference_allowed_mirroring_axes": (0, 1, 2)}
    torch.save(checkpoint, folder / "fold_0" / "checkpoint_final.pth")
    return folder


def zip_folder(folder: Path, top: str, extra: dict[str, bytes] | None = None) -> bytes:
    """``folder``'s files under ``top/`` in a zip (stored, as fast as it gets), plus ``extra`` entries as named."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, f"{top}/{path.relative_to(folder).as_posix()}")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("released") / "LesionLocatorCheckpoint"
    write_toy_lesionlocator_checkpoint(root, plans=PLANS)
    write_tiny_track_folder(root)
    return root


@pytest.fixture(scope="module")
def released_zip(released) -> bytes:
    return zip_folder(released, "LesionLocatorCheckpoint")


@dataclass
class Route:
    body: bytes
    status: int = 200
    declared_length: int | None = None  # Content-Length to announce (default: len(body))


@dataclass
class Records:
    """What the loopback server serves, and the paths it was asked for."""

    url: str
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def publish(self, files: dict[str, bytes], checksum: dict[str, str] | None = None, size: dict[str, int] | None = None,
                record: str = RECORD) -> None:
        """A record listing ``files`` (md5 checksums unless given), each served at ``/files/<name>``."""
        entries = []
        for name, data in files.items():
            self.routes[f"/files/{name}"] = Route(data)
            entries.append({
                "key": name,
                "size": (size or {}).get(name, len(data)),
                "checksum": (checksum or {}).get(name, f"md5:{hashlib.md5(data).hexdigest()}"),
                "links": {"self": f"{self.url}/files/{name}"},
            })
        self.routes[f"/api/records/{record}"] = Route(json.dumps({"id": record, "files": entries}).encode())

    def downloads(self) -> list[str]:
        return [path for path in self.requests if path.startswith("/files/")]


@pytest.fixture
def records():
    served = Records(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            served.requests.append(self.path)
            route = served.routes.get(self.path)
            if route is None:
                self.send_error(404)
                return
            self.send_response(route.status)
            declared = route.declared_length if route.declared_length is not None else len(route.body)
            self.send_header("Content-Length", str(declared))
            self.end_headers()
            self.wfile.write(route.body)  # HTTP/1.0: the connection closes after the handler returns

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    served.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served
    server.shutdown()
    server.server_close()
    thread.join()


def fetch(records: Records, dest: Path, **kwargs):
    return fetch_weights(dest, record=RECORD, api_url=f"{records.url}/api", timeout=5, **kwargs)


def assert_nothing_left(dest: Path) -> None:
    """Nothing at ``dest`` and no temporary folder beside it."""
    assert not dest.exists()
    assert not dest.parent.exists() or list(dest.parent.iterdir()) == []


def test_fetch_installs_a_checkpoint_that_loads(records, released_zip, tmp_path, capsys):
    records.publish({"LesionLocatorCheckpoint.zip": released_zip, "README.md": b"the authors' notes\n"})
    dest = tmp_path / "models" / "lesionlocator_released"
    api = f"{records.url}/api"
    code = main(["weights", "fetch", "--dest", str(dest), "--record", RECORD, "--api-url", api, "--timeout", "5"])
    assert code == 0
    out = capsys.readouterr().out
    assert f"installed: {dest}" in out
    md5 = hashlib.md5(released_zip).hexdigest()
    assert f"verified LesionLocatorCheckpoint.zip: {len(released_zip)} bytes, md5:{md5}" in out
    assert f"    checkpoint: {dest}\n" in out
    assert "    backend: lesionlocator_track\n" in out
    assert f"    track_checkpoint: {dest / 'LesionLocatorTrack'}" in out

    folders = resolve_model_folders(dest)
    seg = dest / "LesionLocatorSeg"
    assert folders == {"point": seg / "point_optimized", "box": seg / "bbox_optimized"}
    assert load_model(folders["point"]).folds == [0]
    assert read_track_checkpoint(dest).unet_patch_size == (16, 16, 16)
    assert (dest / "README.md").read_bytes() == b"the authors' notes\n"
    provenance = json.loads((dest / PROVENANCE_FILE).read_text())
    assert provenance["record"] == RECORD and provenance["files"][0]["checksum"] == f"md5:{md5}"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["lesionlocator_released"]  # no temporary folder left


def test_an_installed_checkpoint_is_not_downloaded_again_unless_forced(records, released_zip, tmp_path):
    records.publish({"LesionLocatorCheckpoint.zip": released_zip})
    dest = tmp_path / "released"
    assert fetch(records, dest).fetched
    assert len(records.downloads()) == 1
    (dest / "marker").write_text("kept")

    again = fetch(records, dest)
    assert not again.fetched and again.files == ()
    assert len(records.requests) == 2  # neither the record nor the file asked for again
    assert (dest / "marker").exists()

    forced = fetch(records, dest, force=True)
    assert forced.fetched and len(records.downloads()) == 2
    assert not (dest / "marker").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["released"]


def test_a_wrong_checksum_installs_nothing(records, released_zip, tmp_path):
    records.publish({"LesionLocatorCheckpoint.zip": released_zip}, checksum={"LesionLocatorCheckpoint.zip": "md5:" + "0" * 32})
    dest = tmp_path / "models" / "released"
    problem = r"checksum mismatch: got md5:[0-9a-f]{32}, the record says md5:0{32}$"
    with pytest.raises(FetchError, match=rf"/files/LesionLocatorCheckpoint.zip: {problem}"):
        fetch(records, dest)
    assert_nothing_left(dest)


@pytest.mark.parametrize("how", ["connection closed early", "record larger than the file"])
def test_a_truncated_download_installs_nothing(records, released_zip, tmp_path, how):
    name = "LesionLocatorCheckpoint.zip"
    if how == "connection closed early":
        records.publish({name: released_zip})
        records.routes[f"/files/{name}"] = Route(released_zip[: len(released_zip) // 2], declared_length=len(released_zip))
        problem = rf"(truncated download: {len(released_zip) // 2} of {len(released_zip)} bytes|download interrupted)"
    else:
        records.publish({name: released_zip}, size={name: len(released_zip) + 10})
        problem = rf"the server sends {len(released_zip)} bytes, the record says {len(released_zip) + 10}"
    dest = tmp_path / "models" / "released"
    with pytest.raises(FetchError, match=rf"/files/{name}: {problem}"):
        fetch(records, dest)
    assert_nothing_left(dest)


def test_a_zip_slip_entry_is_refused(records, released, tmp_path):
    archive = zip_folder(released, "LesionLocatorCheckpoint", extra={"../../escaped.txt": b"outside"})
    records.publish({"LesionLocatorCheckpoint.zip": archive})
    dest = tmp_path / "models" / "released"
    with pytest.raises(FetchError, match=r"LesionLocatorCheckpoint.zip: unsafe entry '../../escaped.txt'"):
        fetch(records, dest)
    assert_nothing_left(dest)
    assert not list(tmp_path.rglob("escaped.txt"))


def test_an_unknown_checksum_algorithm_is_refused_before_downloading(records, released_zip, tmp_path):
    records.publish({"LesionLocatorCheckpoint.zip": released_zip}, checksum={"LesionLocatorCheckpoint.zip": "crc32:1234abcd"})
    dest = tmp_path / "released"
    with pytest.raises(FetchError, match=r"LesionLocatorCheckpoint.zip: checksum 'crc32:1234abcd': unknown algorithm"):
        fetch(records, dest)
    assert records.downloads() == []
    assert not dest.exists()


def test_a_record_without_a_checkpoint_installs_nothing(records, tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("something/else.txt", "not a model")
    records.publish({"other.zip": buffer.getvalue()})
    dest = tmp_path / "models" / "released"
    with pytest.raises(FetchError, match="hold no LesionLocatorSeg folder"):
        fetch(records, dest)
    assert_nothing_left(dest)


def test_an_incomplete_checkpoint_installs_nothing(records, released, tmp_path):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(released.rglob("*")):
            if path.is_file() and "bbox_optimized/fold_0" not in path.as_posix():
                zf.write(path, f"ckpt/{path.relative_to(released).as_posix()}")
    records.publish({"ckpt.zip": archive.getvalue()})
    dest = tmp_path / "models" / "released"
    with pytest.raises(FetchError, match=r"not a LesionLocator checkpoint: .*bbox_optimized: no fold_\*/checkpoint_final.pth"):
        fetch(records, dest)
    assert_nothing_left(dest)


def test_an_http_error_names_the_url(records, tmp_path):
    dest = tmp_path / "released"
    with pytest.raises(FetchError, match=rf"{records.url}/api/records/{RECORD}: HTTP 404"):
        fetch(records, dest)
    assert not dest.exists()


@pytest.mark.parametrize("force", [False, True])
def test_something_else_at_dest_is_left_alone_even_with_force(records, released_zip, tmp_path, capsys, force):
    records.publish({"LesionLocatorCheckpoint.zip": released_zip})
    dest = tmp_path / "released"
    dest.mkdir()
    (dest / "mine.txt").write_text("keep me")
    argv = ["weights", "fetch", "--dest", str(dest), "--record", RECORD, "--api-url", f"{records.url}/api"]
    assert main(argv + ["--force"] * force) == 2
    assert "exists and is not a LesionLocator checkpoint" in capsys.readouterr().err
    assert (dest / "mine.txt").read_text() == "keep me" and records.requests == []


def test_an_empty_folder_at_dest_is_filled(records, released_zip, tmp_path):
    records.publish({"LesionLocatorCheckpoint.zip": released_zip})
    dest = tmp_path / "released"
    dest.mkdir()
    assert fetch(records, dest).fetched
    assert resolve_model_folders(dest)["box"] == dest / "LesionLocatorSeg" / "bbox_optimized"
