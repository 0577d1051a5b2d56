"""What would be published holds what it must and nothing else: the wheel's and the sdist's file lists.

``python .ci/check_wheel.py DIST_DIR`` (``.ci/check-dist`` runs it on what ``python -m build`` made):
one wheel and one sdist of the checkout's version, the wheel with the package's typing marker, the
emulator and its pytest plugin, the provider's metadata entry point and the LICENSE, none of the
repository's tests, benchmarks, examples, docs or CI; the sdist with LICENSE, README.md, CHANGELOG.md,
pyproject.toml and the package, and no virtualenv, Airflow home, caches or build leftovers. Prints the
wheel's file count and size; exits non-zero with every problem found.
"""

from __future__ import annotations

import configparser
import re
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "airflow_provider_unkey"
DIST_NAME = "airflow_provider_unkey"

#: Files the wheel must hold, besides the entry points' modules (checked from entry_points.txt).
WHEEL_REQUIRED = (
    f"{PACKAGE}/__init__.py",
    f"{PACKAGE}/py.typed",
    f"{PACKAGE}/get_provider_info.py",
    f"{PACKAGE}/testing/emulator.py",
    f"{PACKAGE}/testing/pytest_plugin.py",
)
#: The repository's parts that are not the package: never in the wheel, at any depth.
WHEEL_FORBIDDEN = ("tests", "benchmarks", "example_dags", "docs", ".ci")
#: The entry point groups Airflow and pytest find the provider by.
ENTRY_POINT_GROUPS = ("apache_airflow_provider", "pytest11")
#: What the sdist must hold at its top level (under ``<name>-<version>/``).
SDIST_REQUIRED = (
    "LICENSE",
    "README.md",
    "CHANGELOG.md",
    "pyproject.toml",
    "PKG-INFO",
    f"{PACKAGE}/__init__.py",
)
#: Path parts that are junk in an sdist: environments, Airflow homes, caches, build output, VCS.
SDIST_JUNK = re.compile(
    r"(^|/)(\.venv[^/]*|venv|airflow_home|__pycache__|\.mypy_cache|\.ruff_cache|\.pytest_cache|"
    r"\.hypothesis|\.git|site|dist|build|[^/]*\.egg-info|results)(/|$)|\.py[co]$|\.log$|\.db$"
)


def checkout_version() -> str:
    text = (ROOT / PACKAGE / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__ = "([^"]+)"$', text, re.M)
    if match is None:
        raise SystemExit(f"no __version__ in {PACKAGE}/__init__.py")
    return match.group(1)


def check_wheel(wheel: Path, version: str) -> list[str]:
    problems: list[str] = []
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        dist_info = f"{DIST_NAME}-{version}.dist-info"
        for name in names:
            top = name.split("/", 1)[0]
            if top not in (PACKAGE, dist_info):
                problems.append(f"wheel: {name} is neither the package nor its .dist-info")
            parts = name.split("/")
            if any(part in WHEEL_FORBIDDEN for part in parts[:-1]):
                problems.append(f"wheel: {name} is not part of the package")
            if "__pycache__" in parts or name.endswith((".pyc", ".pyo")):
                problems.append(f"wheel: {name} is a bytecode cache")
        problems += [f"wheel: {name} is missing" for name in WHEEL_REQUIRED if name not in names]

        license_name = f"{dist_info}/licenses/LICENSE"
        if license_name not in names:
            problems.append(f"wheel: {license_name} is missing")
        elif zf.read(license_name) != (ROOT / "LICENSE").read_bytes():
            problems.append(f"wheel: {license_name} is not the checkout's LICENSE")

        metadata = zf.read(f"{dist_info}/METADATA").decode()
        for line in (f"Version: {version}", "License-Expression: Apache-2.0", "License-File: LICENSE"):
            if line not in metadata.splitlines():
                problems.append(f"wheel: METADATA lacks {line!r}")

        entry_points = configparser.ConfigParser(delimiters=("=",))
        entry_points.optionxform = str  # type: ignore[assignment,method-assign]
        entry_points.read_string(zf.read(f"{dist_info}/entry_points.txt").decode())
        for group in ENTRY_POINT_GROUPS:
            if not entry_points.has_section(group) or not entry_points.items(group):
                problems.append(f"wheel: entry_points.txt has no [{group}]")
                continue
            for ep_name, target in entry_points.items(group):
                module = target.split(":", 1)[0].strip()
                path = module.replace(".", "/")
                if f"{path}.py" not in names and f"{path}/__init__.py" not in names:
                    problems.append(f"wheel: entry point {group}:{ep_name} names {module}, not in the wheel")
    return problems


def check_sdist(sdist: Path, version: str) -> list[str]:
    problems: list[str] = []
    prefix = f"{DIST_NAME}-{version}/"
    with tarfile.open(sdist) as tf:
        names = [m.name for m in tf.getmembers() if m.isfile()]
    outside = [name for name in names if not name.startswith(prefix)]
    problems += [f"sdist: {name} is outside {prefix}" for name in outside]
    inner = [name.removeprefix(prefix) for name in names if name.startswith(prefix)]
    problems += [f"sdist: {name} is missing" for name in SDIST_REQUIRED if name not in inner]
    problems += [f"sdist: {name} is junk" for name in inner if SDIST_JUNK.search(name)]
    on_disk = {
        str(p.relative_to(ROOT))
        for p in (ROOT / PACKAGE).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
    }
    problems += [f"sdist: the package's {name} is missing" for name in sorted(on_disk - set(inner))]
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    dist = Path(argv[1])
    version = checkout_version()
    wheels = sorted(dist.glob("*.whl"))
    sdists = sorted(dist.glob("*.tar.gz"))
    expected_wheel = f"{DIST_NAME}-{version}-py3-none-any.whl"
    expected_sdist = f"{DIST_NAME}-{version}.tar.gz"
    if [w.name for w in wheels] != [expected_wheel] or [s.name for s in sdists] != [expected_sdist]:
        print(
            f"expected {expected_wheel} and {expected_sdist} in {dist}, found {sorted(p.name for p in dist.iterdir())}"
        )
        return 1
    problems = check_wheel(wheels[0], version) + check_sdist(sdists[0], version)
    for problem in problems:
        print(problem)
    if problems:
        return 1
    with zipfile.ZipFile(wheels[0]) as zf:
        count = len(zf.namelist())
    with tarfile.open(sdists[0]) as tf:
        sdist_count = sum(1 for m in tf.getmembers() if m.isfile())
    print(f"{wheels[0].name}: {count} files, {wheels[0].stat().st_size:,} bytes")
    print(f"{sdists[0].name}: {sdist_count} files, {sdists[0].stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
