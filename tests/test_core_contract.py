"""The core contract: ``rules``, ``client``, ``retries``, ``exceptions``, ``migration/`` and ``testing/``
never import Airflow, so they can be unit-tested fast and reused outside Airflow. Only ``hooks/``
and ``operators/`` (and the provider metadata) are Airflow layers.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "airflow_provider_unkey"
CORE = [
    *sorted((PACKAGE / "rules").glob("*.py")),
    PACKAGE / "arrow_memory.py",
    PACKAGE / "client.py",
    PACKAGE / "base_url.py",
    PACKAGE / "proxies.py",
    PACKAGE / "results.py",
    PACKAGE / "retries.py",
    PACKAGE / "exceptions.py",
    *sorted((PACKAGE / "migration").rglob("*.py")),
    *sorted((PACKAGE / "testing").glob("*.py")),
]


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module a file imports, anywhere in it (inside functions too), with its line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_core_module_never_imports_airflow(path: Path) -> None:
    airflow = [
        f"line {line}: {name}" for line, name in imported_modules(path) if name.split(".")[0] == "airflow"
    ]
    assert not airflow, f"{path.name} imports Airflow: {airflow}"


def test_the_checker_sees_imports_inside_functions(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from airflow.sdk import BaseHook\n    import airflow.models\n")
    assert imported_modules(sample) == [(2, "airflow.sdk"), (3, "airflow.models")]


def test_importing_the_whole_core_loads_no_airflow() -> None:
    names = [
        "airflow_provider_unkey."
        + ".".join(p.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
        for p in CORE
        if p.name != "__main__.py"
    ]
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'airflow'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# The layout: the migration core is a pipeline of stages, each a package whose ``__init__`` is its one
# door; modules import each other one way only (no circle, type-only imports included); and each
# module does one job, in at most MAX_LINES lines.

MIGRATION = "airflow_provider_unkey.migration"
STAGES = ("read", "prepare", "dedupe", "send", "ledger", "record")
WIRING = {"__init__", "engine", "run", "config"}
MAX_LINES = 400


def module_name(root: Path, path: Path) -> str:
    parts = (root.name, *path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules_of(root: Path) -> dict[str, Path]:
    return {module_name(root, p): p for p in sorted(root.rglob("*.py"))}


def import_edges(root: Path) -> dict[str, dict[str, tuple[int, list[str]]]]:
    """For each module of the package under ``root``: the modules of the package it imports, anywhere
    in it (``if TYPE_CHECKING:`` and functions included), each with a line and the names taken.

    ``from package import name`` is an edge to the submodule ``package.name`` when there is one, and to
    ``package`` (its ``__init__``) otherwise. A package's own ``__init__`` is not counted as imported
    by its submodules just because Python runs it first: only written imports are.
    """
    modules = modules_of(root)
    edges: dict[str, dict[str, tuple[int, list[str]]]] = {}
    for name, path in modules.items():
        found: dict[str, tuple[int, list[str]]] = {}
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in modules:
                        found.setdefault(alias.name, (node.lineno, []))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    target = node.module or ""
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    if sub in modules:
                        found.setdefault(sub, (node.lineno, []))
                    elif target in modules:
                        found.setdefault(target, (node.lineno, []))[1].append(alias.name)
        found.pop(name, None)
        edges[name] = found
    return edges


def import_circles(edges: dict[str, dict[str, tuple[int, list[str]]]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return circles


def stage_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if module.startswith(MIGRATION + ".") and len(parts) > 2 and parts[2] in STAGES else None


def door_names(path: Path) -> set[str]:
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return {ast.literal_eval(e) for e in node.value.elts}  # type: ignore[attr-defined]
    return set()


def private_stage_imports(root: Path) -> list[str]:
    """Imports that reach into another stage past its door, or take a name its door does not offer."""
    edges = import_edges(root)
    modules = modules_of(root)
    found = []
    for importer, targets in edges.items():
        for target, (line, names) in targets.items():
            stage = stage_of(target)
            if stage is None or stage == stage_of(importer):
                continue
            door = f"{MIGRATION}.{stage}"
            if target != door:
                found.append(f"{importer} line {line} imports {target}, past the door {door}")
            else:
                offered = door_names(modules[door])
                hidden = [n for n in names if n not in offered]
                if hidden:
                    found.append(
                        f"{importer} line {line} takes {hidden} from {door}, whose __all__ lacks them"
                    )
    return found


def test_the_package_has_no_import_circle() -> None:
    assert import_circles(import_edges(PACKAGE)) == []


def test_no_stage_reaches_into_another_stage() -> None:
    assert private_stage_imports(PACKAGE) == []


def test_migration_holds_only_the_wiring_and_the_stages() -> None:
    top = {p.stem for p in (PACKAGE / "migration").glob("*.py")}
    packages = {p.parent.name for p in (PACKAGE / "migration").glob("*/__init__.py")}
    assert top == WIRING
    assert packages == set(STAGES)


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_is_over_the_limit(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE)} has {lines} lines: split it where its jobs part"


def write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_checker_finds_a_circle_hidden_behind_type_checking(tmp_path: Path) -> None:
    pkg = write_package(
        tmp_path / "pkg",
        {
            "__init__.py": "",
            "outcomes.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.ledger import LedgerWriter\n"
            ),
            "ledger/__init__.py": "from pkg.ledger.writer import LedgerWriter\n",
            "ledger/writer.py": "from .base import Segment\n",
            "ledger/base.py": "def f():\n    from pkg import outcomes\n",
            "alone.py": "import pkg.outcomes\n",
        },
    )
    assert import_circles(import_edges(pkg)) == [
        ["pkg.ledger", "pkg.ledger.base", "pkg.ledger.writer", "pkg.outcomes"]
    ]


def test_the_checker_finds_a_stage_reaching_past_a_door(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "airflow_provider_unkey"
    pkg = write_package(
        root,
        {
            "__init__.py": "",
            "migration/__init__.py": "",
            "migration/record/__init__.py": "from .outcomes import Reason\n__all__ = ['Reason']\n",
            "migration/record/outcomes.py": "class Reason: ...\nclass _Hidden: ...\n",
            "migration/ledger/__init__.py": "",
            "migration/ledger/base.py": (
                "from airflow_provider_unkey.migration.record import Reason\n"
                "from airflow_provider_unkey.migration.record.outcomes import _Hidden\n"
                "from airflow_provider_unkey.migration.record import outcomes\n"
            ),
            "migration/ledger/writer.py": "from airflow_provider_unkey.migration.record import Reason, _Hidden\n",
            "migration/record/sinks.py": "from airflow_provider_unkey.migration.record.outcomes import Reason\n",
        },
    )
    assert private_stage_imports(pkg) == [
        "airflow_provider_unkey.migration.ledger.base line 2 imports "
        "airflow_provider_unkey.migration.record.outcomes, past the door airflow_provider_unkey.migration.record",
        "airflow_provider_unkey.migration.ledger.writer line 1 takes ['_Hidden'] from "
        "airflow_provider_unkey.migration.record, whose __all__ lacks them",
    ]
