"""The demo, run as ``make demo`` runs it: the Parquet example DAG against the emulator, in a subprocess."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_prints_progress_and_a_short_table(tmp_path: Path) -> None:
    # A subprocess: Airflow must see this AIRFLOW_HOME and DAGs folder from its first import.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    home = tmp_path / "airflow_home"
    env["AIRFLOW_HOME"] = str(home)
    proc = subprocess.run(
        [sys.executable, "-m", "example_dags.run_demo"],
        cwd=REPO,
        env=env,
        check=False,  # the output is asserted on below
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = proc.stdout + proc.stderr
    log = home / "demo.log"
    assert proc.returncode == 0, out[-5000:] + log.read_text()[-5000:]
    lines = out.splitlines()
    # What the terminal shows: where the log goes, progress, the closing table; not Airflow's internals.
    assert lines[0] == f"Airflow's full output goes to {log}"
    assert len(lines) < 40, out
    assert not [line for line in lines if re.search(r"\[(info|debug|warning)\s*\]|INFO -|Traceback", line)], (
        out
    )
    assert re.search(r"^  100,000/100,000 keys \(100\.0%\), .* keys/s; migrated 99,996", out, re.M)
    table = dict(
        re.match(r"^  (\S.*?)\s{2,}(.*)$", line).groups()  # type: ignore[union-attr]
        for line in lines[lines.index(next(line for line in lines if line.startswith("DAG run "))) + 1 :]
    )
    assert table["rows read"] == "100,000"
    assert table["migrated"] == "99,996"
    assert table["failed"] == "4 (duplicate_in_source 1, invalid 3)"
    assert re.fullmatch(r"[\d,]+ over [\d.]+ s", table["keys/s"])
    assert table["test keys verified"] == "5 of 5 as expected"
    assert table["full log"] == str(log)
    for name in ("migrated file", "failed file", "ledger", "report file"):
        assert Path(table[name]).exists(), name
    assert table["emulator"] == "99,996 keys stored"
    # The report names every planted bad row's failure, with the field it breaks.
    report = Path(table["report file"]).read_text()
    for row, detail in (
        ("7", "hash: is missing"),
        ("11", "hash: is base64, but hash_format is sha256_hex"),
        ("13", "permissions[1]: must match the pattern"),
        ("21", "hash: the same hash as source row 20"),
    ):
        assert re.search(rf"\| {re.escape(detail)}.* \| {row} \|$", report, re.M), (row, report)
    # The downstream task read the failed frame from XCom; the full log has Airflow's output.
    text = log.read_text()
    assert "4 rows failed: {'invalid': 3, 'duplicate_in_source': 1}" in text
    assert "row 13: invalid: permissions[1]" in text
    assert "unkey_root_demo" not in out + text, "the root key leaked into the demo's output"
    for key in ("sk_live_demo_00000000", "sk_live_demo_00000029"):
        assert key not in out + text, "a test key's plaintext reached the output"
