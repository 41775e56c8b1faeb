"""Every hash of the project in one place: files, folders, canonical JSON, the package's own code, and
the versions of the libraries a result depends on.

The rerun keys (:mod:`lesionlocator.stage_keys`), the manifest's per-session fingerprints, ``run.json``
and a trained model's lineage all hash through these functions, so one input always hashes the same.
"""

from __future__ import annotations

import ast
import hashlib
import json
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Iterable

_CHUNK = 1 << 20


def files_of(path: str | Path) -> list[Path]:
    """A folder's files (recursively, sorted), or ``[path]`` for a file."""
    path = Path(path)
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def package_versions(names: Iterable[str]) -> dict[str, str | None]:
    """Installed version of each distribution (None when it is not installed)."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def files_sha256(paths: Iterable[str | Path | None]) -> str:
    """SHA-256 over the bytes of ``paths`` in order (a folder: its files in sorted order, each after its
    name; None: a marker, so that a missing optional file differs from an empty one)."""
    digest = hashlib.sha256()
    for path in paths:
        if path is None:
            digest.update(b"\0none")
            continue
        for file in files_of(path):
            digest.update(file.name.encode() + b"\0")
            with open(file, "rb") as handle:
                for block in iter(lambda: handle.read(_CHUNK), b""):
                    digest.update(block)
    return digest.hexdigest()


def tree_sha256(path: str | Path) -> dict[str, str]:
    """Per file of a folder (relative POSIX path) or of a single file (its name): its SHA-256."""
    path = Path(path)
    if not path.is_dir():
        return {path.name: file_sha256(path)}
    return {p.relative_to(path).as_posix(): file_sha256(p) for p in files_of(path)}


@cache
def _weights_sha256_cached(path: Path, stamp: tuple) -> str:
    return json_sha256(tree_sha256(path))


def weights_sha256(path: str | Path | None) -> str | None:
    """SHA-256 of model weights (a checkpoint file or a model folder, all files), None for no weights.

    Cached per process by path, size and modification time of every file, so a shard of 50 patients
    hashes a model once."""
    if path is None:
        return None
    path = Path(path).resolve()
    stamp = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files_of(path))
    return _weights_sha256_cached(path, stamp)


def canonical_json(data: object) -> str:
    """JSON with sorted keys and no spaces (pydantic models as their JSON dump)."""
    if hasattr(data, "model_dump"):
        data = data.model_dump(mode="json")
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def json_sha256(data: object) -> str:
    """SHA-256 of :func:`canonical_json`."""
    return hashlib.sha256(canonical_json(data).encode()).hexdigest()


# --- the package's own code -----------------------------------------------------------------------

_PACKAGE = __name__.split(".")[0]


_ROOT = Path(__file__).resolve().parents[1]  # the package folder


def _module_file(module: str) -> Path | None:
    """The source file of a package module (found on disk, nothing imported); None for a name that is
    not a module (a function or class imported from one)."""
    parts = module.split(".")[1:]
    for candidate in (_ROOT.joinpath(*parts, "__init__.py"), _ROOT.joinpath(*parts).with_suffix(".py") if parts else None):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def _imported_modules(module: str, path: Path) -> set[str]:
    """The package's modules that the module at ``path`` imports, at module level or inside functions."""
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {name for name in names if name == _PACKAGE or name.startswith(_PACKAGE + ".")}
    return found


def module_closure(modules: Iterable[str]) -> list[str]:
    """``modules`` and every package module they import, transitively (sorted names)."""
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _module_file(name)
        if path is None:  # a name imported from a module (a function, a class), not a module
            continue
        seen.add(name)
        todo += sorted(_imported_modules(name, path) - seen)
    return sorted(seen)


@cache
def code_sha256(modules: tuple[str, ...]) -> str:
    """SHA-256 of the source of ``modules`` and of every package module they import (transitively):
    the version of a stage's code. A change to any of those files changes it; a change elsewhere does
    not."""
    return json_sha256({name: file_sha256(_module_file(name)) for name in module_closure(modules)})
