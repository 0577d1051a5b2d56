"""The example DAGs, run end to end with ``dag.test()`` against the emulator, as ``make demo`` does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_migrates_and_verifies(tmp_path: Path) -> None:
    # A subprocess: Airflow must see this AIRFLOW_HOME and DAGs folder from its first import.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env["AIRFLOW_HOME"] = str(tmp_path / "airflow_home")
    proc = subprocess.run(
        [sys.executable, "-m", "example_dags.run_demo"],
        cwd=REPO,
        env=env,
        check=False,  # the output is asserted on below
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    assert "Done: 10000 rows, 9996 migrated, 4 failed {'invalid': 3, 'duplicate_in_source': 1}" in out
    assert out.count(": VALID (key_") == 4
    assert "a key never issued: NOT_FOUND" in out
    # Every planted bad row is reported with the field it breaks.
    assert "row 7: invalid: hash: is missing" in out
    assert "row 11: invalid: hash: is base64" in out
    assert "row 13: invalid: permissions[1]" in out
    assert "row 21: duplicate_in_source: hash: the same hash as source row 20" in out
    assert "Emulator: 9996 keys stored" in out
    assert "unkey_root_demo" not in out, "the root key leaked into the demo's output"
