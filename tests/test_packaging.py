"""What is published: one version everywhere, Airflow's CLI showing it, a changelog entry for it, the license.

The version is written once, as ``__version__`` in ``airflow_provider_unkey/__init__.py``: hatch reads
it for the distribution's metadata (``[tool.hatch.version]``) and ``get_provider_info`` returns it to
Airflow. ``.ci/check-dist`` checks the built sdist and wheel themselves.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import airflow_provider_unkey
from airflow_provider_unkey.get_provider_info import get_provider_info

ROOT = Path(__file__).resolve().parent.parent
DIST = "airflow-provider-unkey"
VERSION = airflow_provider_unkey.__version__
#: The SHA-256 of the Apache License 2.0 as https://www.apache.org/licenses/LICENSE-2.0.txt serves it.
APACHE_2_0_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"
#: Keep a Changelog 1.1.0's types of change.
CHANGE_TYPES = ("Added", "Changed", "Deprecated", "Removed", "Fixed", "Security")


def pyproject() -> dict[str, object]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def test_the_version_is_written_once_and_read_by_hatch() -> None:
    data = pyproject()
    project = data["project"]
    assert isinstance(project, dict)
    assert "version" not in project, "the version belongs in __init__.py, not in pyproject.toml"
    assert "version" in project["dynamic"]
    assert data["tool"]["hatch"]["version"]["path"] == "airflow_provider_unkey/__init__.py"  # type: ignore[index]
    assert re.fullmatch(r"\d+\.\d+\.\d+((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?", VERSION), VERSION


def test_provider_info_metadata_and_package_agree_on_the_version() -> None:
    assert get_provider_info()["versions"][0] == version(DIST) == VERSION


def test_airflow_providers_list_shows_the_provider_and_its_version(tmp_path: Path) -> None:
    # A throwaway AIRFLOW_HOME, and nothing of the caller's Airflow configuration.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(AIRFLOW_HOME=str(tmp_path / "airflow_home"), AIRFLOW__CORE__LOAD_EXAMPLES="False")
    proc = subprocess.run(
        [sys.executable, "-m", "airflow", "providers", "list", "--output", "json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    providers = {p["package_name"]: p["version"] for p in json.loads(out[out.index("[{") :].splitlines()[0])}
    assert providers.get(DIST) == VERSION, providers


def test_the_changelog_has_a_section_for_this_version() -> None:
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    sections = re.findall(r"^## (.+)$", text, re.M)
    assert sections[0] == "[Unreleased]", sections
    assert re.fullmatch(r"\[\d+\.\d+\.\d+\S*\] - \d{4}-\d{2}-\d{2}", sections[1]), sections
    assert any(re.fullmatch(rf"\[{re.escape(VERSION)}\] - \d{{4}}-\d{{2}}-\d{{2}}", s) for s in sections), (
        f"CHANGELOG.md has no section '## [{VERSION}] - YYYY-MM-DD'"
    )
    # Under each section, only Keep a Changelog's types of change, each with at least one entry.
    for body in re.split(r"^## .+$", text, flags=re.M)[1:]:
        for kind, entries in re.findall(r"^### (.+)\n\n((?:- .+\n(?: {2}.+\n)*)+)", body, re.M):
            assert kind in CHANGE_TYPES, kind
            assert entries.strip()
        assert set(re.findall(r"^### (.+)$", body, re.M)) <= set(CHANGE_TYPES)
    assert not re.search(r"\b(TODO|TBD|XXX)\b", text)


def test_the_license_is_the_apache_2_0_text() -> None:
    license_text = (ROOT / "LICENSE").read_bytes()
    assert hashlib.sha256(license_text).hexdigest() == APACHE_2_0_SHA256
    assert b"Apache License\n                           Version 2.0, January 2004" in license_text
    project = pyproject()["project"]
    assert isinstance(project, dict)
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
