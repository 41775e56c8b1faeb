"""Getting the released LesionLocator checkpoint: download it from its public record, verify it, install it.

Nothing here runs unless asked (``lesionlocator weights fetch``); the pipeline never downloads.

:func:`fetch_weights` reads the record's JSON from a Zenodo-style REST API
(``GET <api_url>/records/<record>``: ``files``, each with ``key``, ``size``, ``checksum``
``"<algorithm>:<hex>"`` and ``links.self``, the download URL), which is the only source of file names,
sizes and checksums. It downloads every file into a temporary folder next to ``dest`` (streamed,
with progress), checks each file's size and checksum against the record, unpacks the zip archives
(refusing entries that would land outside the folder), finds the checkpoint root (the folder holding
``LesionLocatorSeg``), checks it is a LesionLocator checkpoint (both ``LesionLocatorSeg`` models with
``plans.json``, ``dataset.json`` and at least one ``fold_N/checkpoint_final.pth``; the same for
``LesionLocatorTrack`` when it is there) and only then renames it to ``dest``. Any failure raises a
:class:`FetchError` naming the URL or file and the problem, and leaves nothing at ``dest`` and no
temporary folder.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import math
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

from lesionlocator import __version__
from lesionlocator.core.errors import InputError, LesionLocatorError
from lesionlocator.core.progress import Progress
from lesionlocator.segment.model import OFFICIAL_SEG_FOLDER, check_model_files, resolve_model_folders
from lesionlocator.segment.official import CHECKPOINT_NAME, TRACK_FOLDER, resolve_track_folder

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://zenodo.org/api"
DEFAULT_RECORD = "15174217"  # LesionLocator (CVPR 2025), https://zenodo.org/records/15174217
DEFAULT_DEST = Path("models") / "lesionlocator_released"
PROVENANCE_FILE = "fetched_from.json"  # written into the installed root: the record and its verified files
CHECKSUM_ALGORITHMS = ("md5", "sha1", "sha256", "sha512")
CHUNK_BYTES = 1 << 20
IGNORED_ARCHIVE_FOLDERS = ("__MACOSX",)  # resource forks of archives made on macOS


class FetchError(LesionLocatorError):
    """A download or install that failed: the message names the URL or file, then the problem."""

    def __init__(self, where: str | Path, problem: str):
        self.where = str(where)
        self.problem = problem
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class RecordFile:
    """One file of the record: its name, size (bytes), checksum and download URL."""

    key: str
    size: int
    checksum: str  # "<algorithm>:<hex digest>", as the record gives it
    url: str


@dataclass(frozen=True)
class InstalledWeights:
    """A LesionLocator checkpoint at ``root``: its segmentation models by prompt kind, its tracking folder.

    ``files``: the record's files verified and unpacked into it (empty when it was already there);
    ``fetched``: False when ``root`` already held a checkpoint and nothing was downloaded.
    """

    root: Path
    models: dict[str, Path]
    track: Path | None
    files: tuple[RecordFile, ...]
    fetched: bool


def record_url(api_url: str, record: str) -> str:
    return f"{api_url.rstrip('/')}/records/{record}"


def _open(url: str, timeout: float):
    """The response to ``GET url`` (redirects followed); an HTTP error or no connection raises :class:`FetchError`."""
    request = urllib.request.Request(url, headers={"User-Agent": f"lesionlocator/{__version__}"})
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        raise FetchError(url, f"HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise FetchError(url, f"cannot connect ({reason})") from err


def read_record(api_url: str = DEFAULT_API_URL, record: str = DEFAULT_RECORD, timeout: float = 60.0) -> list[RecordFile]:
    """The files the record lists (name, size, checksum, URL), from its JSON."""
    url = record_url(api_url, record)
    with _open(url, timeout) as response:
        try:
            data = json.loads(response.read())
        except (ValueError, OSError) as err:
            raise FetchError(url, f"the record is not readable JSON ({err})") from err
    entries = data.get("files") if isinstance(data, dict) else None
    if isinstance(entries, dict):  # InvenioRDM's files endpoint: {"entries": [...]}
        entries = entries.get("entries")
    if not isinstance(entries, list) or not entries:
        raise FetchError(url, "the record lists no files")
    files = []
    for entry in entries:
        try:
            key, size, checksum = str(entry["key"]), int(entry["size"]), str(entry["checksum"])
        except (KeyError, TypeError, ValueError) as err:
            raise FetchError(url, f"a file entry lacks key, size or checksum: {entry!r}") from err
        if key != PurePosixPath(key).name or key in ("", ".", ".."):
            raise FetchError(url, f"file name {key!r} is not a plain file name")
        links = entry.get("links") or {}
        files.append(RecordFile(key, size, checksum, links.get("self") or links.get("content")
                                or f"{url}/files/{urllib.parse.quote(key)}/content"))
    return files


def _hasher(file: RecordFile) -> tuple["hashlib._Hash", str]:
    algorithm, _, digest = file.checksum.partition(":")
    if algorithm.lower() not in CHECKSUM_ALGORITHMS or not digest:
        raise FetchError(file.key, f"checksum {file.checksum!r}: unknown algorithm (known: {', '.join(CHECKSUM_ALGORITHMS)})")
    return hashlib.new(algorithm.lower()), digest.lower()


def download(file: RecordFile, target: Path, timeout: float = 60.0) -> None:
    """Stream ``file`` to ``target``, checking its size and checksum against the record."""
    hasher, expected = _hasher(file)  # refuse an unknown algorithm before downloading
    received = 0
    with _open(file.url, timeout) as response, open(target, "wb") as out:
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) != file.size:
            raise FetchError(file.url, f"the server sends {declared} bytes, the record says {file.size}")
        with Progress(file.key, total=max(1, math.ceil(file.size / CHUNK_BYTES)), unit="MiB", units="MiB",
                      logger=log) as progress:
            while True:
                try:
                    chunk = response.read(CHUNK_BYTES)
                except (OSError, ValueError, http.client.HTTPException) as err:  # IncompleteRead, a reset, a timeout
                    raise FetchError(file.url, f"download interrupted after {received} bytes ({err})") from err
                if not chunk:
                    break
                received += len(chunk)
                if received > file.size:
                    raise FetchError(file.url, f"more bytes than the record's {file.size}")
                hasher.update(chunk)
                out.write(chunk)
                progress.advance()
    if received != file.size:
        raise FetchError(file.url, f"truncated download: {received} of {file.size} bytes")
    if hasher.hexdigest() != expected:
        raise FetchError(file.url, f"checksum mismatch: got {hasher.name}:{hasher.hexdigest()}, the record says {file.checksum}")
    log.info("%s: %d bytes, %s verified", file.key, received, file.checksum)


def _safe_member(info: zipfile.ZipInfo, archive: Path) -> PurePosixPath | None:
    """The entry's relative path, None for one to skip; refuses absolute paths and ``..`` (zip slip)."""
    name = info.filename.replace("\\", "/")
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise FetchError(archive, f"unsafe entry {info.filename!r} (absolute or '..' path): refused")
    if (info.external_attr >> 16) & 0o170000 == 0o120000:
        raise FetchError(archive, f"entry {info.filename!r} is a symbolic link: refused")
    if not path.parts or path.parts[0] in IGNORED_ARCHIVE_FOLDERS:
        return None
    return path


def unpack_zip(archive: Path, into: Path) -> None:
    """Unpack ``archive`` into ``into``, every entry checked first (nothing written if one is unsafe)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [(info, _safe_member(info, archive)) for info in zf.infolist()]
            needed = sum(info.file_size for info, path in members if path is not None)
            _check_free_space(into, needed, archive)
            for info, path in members:
                if path is None:
                    continue
                target = into.joinpath(*path.parts)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out, CHUNK_BYTES)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as err:
        raise FetchError(archive, f"not a readable zip archive ({err})") from err
    log.info("%s: unpacked", archive.name)


def _check_free_space(folder: Path, needed: int, what: str | Path) -> None:
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise FetchError(what, f"needs {needed / 1e9:.2f} GB in {folder}, {free / 1e9:.2f} GB free")


def check_checkpoint(root: Path) -> tuple[dict[str, Path], Path | None]:
    """``(models by prompt kind, LesionLocatorTrack folder or None)`` of a LesionLocator checkpoint root.

    Checks the files a run needs, without loading the weights (:func:`~lesionlocator.segment.model.check_model_files`):
    each model folder holds ``plans.json``, ``dataset.json`` and at least one ``fold_N/checkpoint_final.pth``.
    Raises :class:`InputError`.
    """
    models = resolve_model_folders(root)
    if "any" in models:
        raise InputError(root, "an nnU-Net trained-model folder, not the released LesionLocator checkpoint root")
    track = resolve_track_folder(root) if (root / TRACK_FOLDER).exists() else None
    for folder in [*models.values(), *([track] if track else [])]:
        check_model_files(folder, None, CHECKPOINT_NAME)
    return models, track


def find_checkpoint_root(folder: Path) -> Path:
    """The folder under ``folder`` (``folder`` itself included) that holds ``LesionLocatorSeg``."""
    roots = set(
        seg.parent for seg in [folder / OFFICIAL_SEG_FOLDER, *folder.rglob(OFFICIAL_SEG_FOLDER)]
        if seg.is_dir() and not set(seg.relative_to(folder).parts) & set(IGNORED_ARCHIVE_FOLDERS)
    )
    roots = sorted(roots)
    if not roots:
        raise FetchError(folder, f"the record's files hold no {OFFICIAL_SEG_FOLDER} folder: not a LesionLocator checkpoint")
    if len(roots) > 1:
        raise FetchError(folder, f"several {OFFICIAL_SEG_FOLDER} folders: {', '.join(str(r) for r in roots)}")
    return roots[0]


def installed(dest: Path) -> InstalledWeights | None:
    """The checkpoint already at ``dest``, None when there is none there."""
    if not dest.is_dir():
        return None
    try:
        models, track = check_checkpoint(dest)
    except InputError:
        return None
    return InstalledWeights(dest, models, track, (), fetched=False)


def _is_free(dest: Path) -> bool:
    """Nothing at ``dest``, or an empty folder."""
    return (not dest.exists() and not dest.is_symlink()) or (dest.is_dir() and not any(dest.iterdir()))


def fetch_weights(
    dest: Path = DEFAULT_DEST,
    record: str = DEFAULT_RECORD,
    api_url: str = DEFAULT_API_URL,
    timeout: float = 60.0,
    force: bool = False,
) -> InstalledWeights:
    """Download the record's files, verify and unpack them, install the checkpoint root at ``dest``.

    An existing checkpoint at ``dest`` is kept (nothing downloaded) unless ``force`` (then replaced once
    the new one is complete); anything else there but an empty folder is refused, ``force`` or not.
    ``timeout``: seconds without data before a connection is given up.
    """
    dest = Path(dest).absolute()
    present = installed(dest)
    if present is not None and not force:
        log.info("%s already holds a LesionLocator checkpoint: nothing downloaded (--force replaces it)", dest)
        return present
    if present is None and not _is_free(dest):
        raise FetchError(dest, "exists and is not a LesionLocator checkpoint: remove it or choose another destination "
                               "(--force replaces only a checkpoint)")
    files = read_record(api_url, record, timeout)
    for file in files:
        _hasher(file)
    log.info("record %s: %d file(s), %.2f GB: %s", record, len(files), sum(f.size for f in files) / 1e9,
             ", ".join(f.key for f in files))
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.fetch-", dir=dest.parent))
    try:
        downloads, unpacked = staging / "downloads", staging / "unpacked"
        downloads.mkdir()
        unpacked.mkdir()
        _check_free_space(staging, sum(f.size for f in files), record_url(api_url, record))
        for file in files:
            download(file, downloads / file.key, timeout)
        extras = []
        for file in files:
            if zipfile.is_zipfile(downloads / file.key):
                unpack_zip(downloads / file.key, unpacked)
                (downloads / file.key).unlink()  # its room is needed by the next archive
            else:
                extras.append(file.key)
        root = find_checkpoint_root(unpacked)
        for key in extras:  # a file beside the archives (a README) goes with the checkpoint
            if not (root / key).exists():
                (downloads / key).rename(root / key)
        try:
            models, track = check_checkpoint(root)
        except InputError as err:
            raise FetchError(record_url(api_url, record), f"not a LesionLocator checkpoint: {err}") from err
        provenance = {"record": record, "record_url": record_url(api_url, record), "files": [asdict(f) for f in files]}
        (root / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
        _install(root, dest, staging, replace=present is not None)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    models = {kind: dest / path.relative_to(root) for kind, path in models.items()}
    track = dest / track.relative_to(root) if track is not None else None
    log.info("installed %s", dest)
    return InstalledWeights(dest, models, track, tuple(files), fetched=True)


def _install(root: Path, dest: Path, staging: Path, replace: bool) -> None:
    """Rename the complete checkpoint ``root`` to ``dest``; the checkpoint there (``replace``) goes to ``staging``."""
    previous = staging / "previous"
    if replace and (dest.exists() or dest.is_symlink()):
        dest.rename(previous)
    elif not _is_free(dest):  # appeared while downloading
        raise FetchError(dest, "appeared while downloading and is not empty: nothing installed")
    try:
        root.rename(dest)
    except OSError as err:
        if previous.exists() or previous.is_symlink():
            previous.rename(dest)
        raise FetchError(dest, f"cannot install the checkpoint there ({err})") from err
