"""The documentation site builds with every warning an error, and its generated reference is not empty.

``make docs`` (which ``make test``, and so CI, runs first) builds the site the same way; this test
also checks what the build made: the reference pages that mkdocstrings generates from the docstrings
hold the operators' parameters, so a broken ``:::`` block, a renamed module or a docstring that stops
parsing cannot leave them silently empty.
"""

from __future__ import annotations

import html
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None and not os.environ.get("CI"),
    reason="mkdocs is not installed: pip install -e '.[docs]' (or make docs); required when CI is set",
)

#: Reference page -> texts it must show: parameters and members, as the docstrings document them.
EXPECTED = {
    "reference/operators": [
        "MigrateKeysOperator",
        "migration_id",
        "api_id",
        "parquet_path",
        "partition",
        "sql_conn_id",
        "column_mapping",
        "hash_format",
        "algorithm",
        "validate_only",
        "ledger_path",
        "max_concurrency",
        "VerifyKeysOperator",
        "expected_codes",
    ],
    "reference/hook": ["UnkeyHook", "unkey_conn_id", "test_connection", "migrate_keys", "UnkeyClient"],
    "reference/partitions": ["parquet_partitions", "sql_partitions", "hash_column", "hash_format"],
    "reference/errors": ["UnkeyAPIError", "UnkeyRateLimitError", "MigrationAborted", "not_sent"],
    "reference/emulator": ["UnkeyEmulator", "rate_limit", "add_migration", "Faults", "error_rate"],
}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert build.returncode == 0, f"mkdocs build --strict failed:\n{build.stdout}\n{build.stderr}"
    return out


def _text(page: Path) -> str:
    body = page.read_text(encoding="utf-8")
    article = body[body.find("<article") : body.rfind("</article>")]
    return html.unescape(re.sub(r"<[^>]+>", " ", article))


@pytest.mark.parametrize("page", sorted(EXPECTED))
def test_reference_pages_show_the_documented_parameters(site: Path, page: str) -> None:
    text = _text(site / page / "index.html")
    missing = [name for name in EXPECTED[page] if not re.search(rf"\b{re.escape(name)}\b", text)]
    assert not missing, f"{page}: the generated reference lacks {missing}"


def test_the_operator_reference_has_a_row_per_parameter(site: Path) -> None:
    """Each documented parameter is a row of the parameters table, not a word in the prose."""
    body = (site / "reference/operators/index.html").read_text(encoding="utf-8")
    for name in ("migration_id", "validate_only", "partition", "ledger_path", "list_skipped"):
        assert re.search(rf"<td>\s*<code>{name}</code>\s*</td>", body), f"no table row for {name}"


def test_no_sphinx_role_is_left_raw(site: Path) -> None:
    """``:class:`~x.Y``` in a docstring renders as code, never as the role's text."""
    leftovers = {}
    for page in sorted(site.glob("reference/*/index.html")):
        found = re.findall(r":(?:class|func|meth|mod|data|attr|exc):", _text(page))
        if found:
            leftovers[page.parent.name] = found[:5]
    assert not leftovers, leftovers


def test_every_docs_page_is_built(site: Path) -> None:
    pages = sorted(p.relative_to(ROOT / "docs") for p in (ROOT / "docs").glob("**/*.md"))
    missing = [
        str(p)
        for p in pages
        if not (site / ("" if p.stem == "index" else p.with_suffix("")) / "index.html").exists()
    ]
    assert not missing, f"pages not built: {missing}"
