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
