"""The documentation site builds with every warning an error, and its generated reference is not empty.

``make docs`` (which ``make test``, and so CI, runs first) builds the site the same way; this test
also checks what the build made: the reference pages that mkdocstrings generates from the docstrings
hold the operators' parameters, so a broken ``:::`` block, a renamed module or a docstring that stops
parsing cannot leave them silently empty.
"""

from __future__ import annotations

import html
import importlib
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
    # The controls UnkeyEmulator inherits (testing/controls.py) included.
    "reference/emulator": [
        "UnkeyEmulator",
        "rate_limit",
        "add_migration",
        "Faults",
        "error_rate",
        "set_rate_limit",
        "set_production_traffic",
        "reset_log",
    ],
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


PACKAGE = ROOT / "airflow_provider_unkey"
STAGES = ("read", "prepare", "dedupe", "send", "ledger", "record")


def test_the_architecture_page_draws_the_stages(site: Path) -> None:
    """The stage diagram is a mermaid block the site renders, and names every stage package."""
    body = (site / "architecture/index.html").read_text(encoding="utf-8")
    diagrams = re.findall(r'<pre class="mermaid"><code>(.*?)</code></pre>', body, re.S)
    stages = next((html.unescape(d) for d in diagrams if "subgraph wiring" in html.unescape(d)), None)
    assert stages is not None, "no mermaid diagram of the stages on the architecture page"
    for stage in STAGES:
        assert f'subgraph {stage}["{stage}/"]' in stages, stage
    assert 'engine["engine.py' in stages


def test_the_architecture_page_lists_each_stage_as_it_is() -> None:
    """Each stage's row names every module the stage has, and its door's offer exists."""
    text = (ROOT / "docs/architecture.md").read_text(encoding="utf-8")
    for stage in STAGES:
        row = next(line for line in text.splitlines() if line.startswith(f"| `migration/{stage}/` |"))
        _, offers, modules = row.removesuffix(" |").split(" | ")
        on_disk = {p.name for p in (PACKAGE / "migration" / stage).glob("*.py") if p.name != "__init__.py"}
        named = set(re.findall(r"`([a-z_]+\.py)`", modules))
        assert named == on_disk, f"{stage}: the page names {sorted(named)}, the package has {sorted(on_disk)}"
        door = importlib.import_module(f"airflow_provider_unkey.migration.{stage}")
        offered = set(re.findall(r"`([A-Za-z_]+)`", offers))
        assert offered <= set(door.__all__), f"{stage}: the door lacks {sorted(offered - set(door.__all__))}"


def test_where_to_change_what_names_files_that_exist() -> None:
    text = (ROOT / "docs/architecture.md").read_text(encoding="utf-8")
    table = text[text.index("## Where to change what") :].split("\n\n")[1]
    paths = set(re.findall(r"`((?:[a-z_]+/)*[a-z_]+(?:\.py|/))`", table))
    assert paths, "no paths in the table"
    missing = [p for p in sorted(paths) if not (PACKAGE / p).exists() and not (ROOT / p).exists()]
    assert not missing, f"'where to change what' names paths that do not exist: {missing}"
