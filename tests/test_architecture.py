"""The package's imports flow one way (docs/architecture.md): infrastructure <- stages <- pipeline <- CLI.

Every import is read with ``ast`` (function-level imports included), so a lazy import counts too.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from tests.helpers import REPO

#: Which stages a stage may use besides the infrastructure (``core``). Everything else is against the flow.
STAGE_USES = {
    "ingest": set(),
    "segment": set(),
    "register": {"segment"},  # LesionLocatorTrack: its registration network shares the checkpoint reader
    "track": {"segment", "register"},  # segments propagated prompts through transforms
    "measure": set(),
    "evaluate": set(),
    "aggregate": {"measure", "evaluate"},  # cohort tables of their per-patient tables, response
    "train": {"segment", "synthetic"},  # trains the segment engine's network on generated cohorts
    "synthetic": set(),
}
ALLOWED = {
    "core": set(),
    **{stage: {"core"} | uses for stage, uses in STAGE_USES.items()},
    "pipeline": {"core", *STAGE_USES},
    "cli": {"core", "pipeline", *STAGE_USES},
}


def _group(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "synthetic":
        return "synthetic"
    if len(parts) == 1 or parts[1] == "core":
        return "core"
    if parts[1] in ("pipeline", "stage_keys"):
        return "pipeline"
    return parts[1]


def _modules(root: Path = REPO) -> dict[str, Path]:
    files = [*(root / "lesionlocator").rglob("*.py"), *(root / "synthetic").rglob("*.py")]
    return {".".join(f.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): f for f in files}


def _imports(path: Path) -> list[tuple[str, str | None]]:
    """(module, imported name or None) of every import of the project's own packages."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
    return [(m, n) for m, n in found if m.split(".")[0] in ("lesionlocator", "synthetic")]


def _resolve(module: str, name: str | None, modules: dict[str, Path]) -> str:
    """The module an import names: ``from a import b`` is module ``a.b`` when ``a.b`` is a module."""
    return f"{module}.{name}" if name and f"{module}.{name}" in modules else module


def flow_violations(root: Path = REPO) -> list[str]:
    modules = _modules(root)
    problems = []
    for module, path in modules.items():
        for target, name in _imports(path):
            source_group, target_group = _group(module), _group(_resolve(target, name, modules))
            if source_group != target_group and target_group not in ALLOWED[source_group]:
                problems.append(f"{module} imports {target} ({source_group} -> {target_group})")
            if name and name.startswith("_") and not name.startswith("__") and _resolve(target, name, modules) == target:
                problems.append(f"{module} imports the private {target}.{name}")
    return sorted(problems)


def import_cycles(root: Path = REPO) -> list[list[str]]:
    """Strongly connected groups of modules (Tarjan) larger than one: import cycles."""
    modules = _modules(root)
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in modules.items():
        for target, name in _imports(path):
            resolved = _resolve(target, name, modules)
            if resolved in modules and resolved != module:
                graph[module].add(resolved)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for module in sorted(modules):
        if module not in index:
            visit(module)
    return cycles


def test_imports_flow_one_way():
    assert flow_violations() == []


def test_no_import_cycle():
    assert import_cycles() == []


def test_the_checks_find_a_violation_and_a_cycle(tmp_path):
    package = tmp_path / "lesionlocator"
    for sub in ("core", "segment", "track"):
        (package / sub).mkdir(parents=True)
        (package / sub / "__init__.py").write_text("")
    (tmp_path / "synthetic").mkdir()
    (package / "__init__.py").write_text("")
    (package / "core" / "io.py").write_text("from lesionlocator.track import followup\n")  # against the flow
    (package / "track" / "followup.py").write_text("def f():\n    from lesionlocator.segment.api import _private\n")
    (package / "segment" / "api.py").write_text("from lesionlocator.segment import model\n_private = 1\n")
    (package / "segment" / "model.py").write_text("import lesionlocator.segment.api\n")  # a cycle
    assert flow_violations(tmp_path) == [
        "lesionlocator.core.io imports lesionlocator.track (core -> track)",
        "lesionlocator.track.followup imports the private lesionlocator.segment.api._private",
    ]
    assert import_cycles(tmp_path) == [["lesionlocator.segment.api", "lesionlocator.segment.model"]]


def test_test_only_code_is_not_in_the_package():
    for module, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):  # not ast.Global, whose names are strings
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                assert not [n for n in names if n.split(".")[0] == "tests"], f"{module} imports test code"


def test_the_docs_name_every_room():
    """docs/architecture.md and the README's layout name every subpackage and core module there is."""
    package = REPO / "lesionlocator"
    rooms = {p.name for p in package.iterdir() if (p / "__init__.py").is_file()} - {"cli"}
    core = {p.stem for p in (package / "core").glob("*.py") if p.stem != "__init__"}
    architecture = (REPO / "docs" / "architecture.md").read_text()
    readme = (REPO / "README.md").read_text()
    layout = readme[readme.index("## Layout"):readme.index("## The pipeline")]
    for text in (architecture, layout):
        assert {room for room in rooms if f"{room}/" not in text} == set()
        assert {module for module in core if module not in text} == set()
