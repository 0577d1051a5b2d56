"""The throughput suite's ``--smoke`` mode finishes, and every contender's run is accounted for.

It runs ``python -m benchmarks.throughput_suite --smoke`` in a subprocess (2,000 keys, one repeat,
latency 0) and reads the JSON it writes. Nothing here is timed: no speed, no duration bound. What is
checked is what the suite checks after each run: every key a contender reports migrated is stored by
the emulator, nothing failed, a run over the whole file stored every key of it exactly once, and the
engine's summary reconciles. dlt and matplotlib come with the ``bench`` extra; without it the suite
skips them and says so, and so does this test.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
KEYS = 2_000


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], dict, Path]:
    out = tmp_path_factory.mktemp("throughput")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.throughput_suite",
            "--smoke",
            "--out",
            str(out),
            "--plots",
            str(out / "plots"),
            "--inputs",
            str(out / "inputs"),
        ],
        cwd=REPO,
        check=False,
        capture_output=True,
        text=True,
        timeout=280,
    )
    found = sorted(out.glob("throughput-*-smoke.json"))
    document = json.loads(found[-1].read_text()) if found else {}
    return proc, document, out


def test_the_smoke_run_completes_with_every_check_passing(smoke: tuple) -> None:
    proc, document, _ = smoke
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert document["problems"] == []
    assert document["meta"]["smoke"] is True


def test_every_key_reached_the_emulator_exactly_once(smoke: tuple) -> None:
    _, document, _ = smoke
    runs = {r["contender"]: r for r in document["runs"]}
    expected = {"naive", "sdk", "engine", "operator", "limit t=16", "limit t=32", "limit t=64"}
    if importlib.util.find_spec("dlt") is not None:
        expected.add("dlt")
    assert expected <= set(runs)
    for name, run in runs.items():
        assert run["failed"] == 0, name
        assert run["keys_stored"] == run["migrated"], name  # stored once each: a resend would fail
        if run["sample"]:
            assert run["migrated"] == run["keys"] < KEYS, name
        else:
            assert run["migrated"] == run["keys"] == KEYS, name


def test_the_engine_summary_reconciles(smoke: tuple) -> None:
    _, document, _ = smoke
    for run in document["runs"]:
        if run["contender"] in ("engine", "operator"):
            assert run["keys"] == KEYS
            assert run["migrated"] + run["failed"] == KEYS


def test_results_and_table_are_written(smoke: tuple) -> None:
    proc, document, out = smoke
    assert {e["contender"] for e in document["results"]} >= {"limit", "engine", "operator"}
    assert "| contender | keys/s |" in proc.stdout
    assert len(list(out.glob("throughput-*-smoke.csv"))) == 1


def test_dlt_ran_when_installed(smoke: tuple) -> None:
    if importlib.util.find_spec("dlt") is None:
        pytest.skip("dlt is in the bench extra (pip install -e '.[bench]'): the suite skipped it")
    _, document, _ = smoke
    assert any(r["contender"] == "dlt" for r in document["runs"])


def test_the_plot_is_drawn_when_matplotlib_is_installed(smoke: tuple) -> None:
    if importlib.util.find_spec("matplotlib") is None:
        pytest.skip(
            "matplotlib is in the bench extra (pip install -e '.[bench]'): the suite skipped the plots"
        )
    _, document, out = smoke
    assert (out / "plots" / "keys_per_second.png").exists(), document.get("plots")


def test_the_shared_workspace_benchmark_smoke_run_meets_its_goals(tmp_path: Path) -> None:
    """``benchmarks.shared_workspace --smoke``: the compressed window, 2,000 keys, once, beside
    production traffic; it exits 0 only when its goals hold (no production call refused, no 429 over
    5 %, every key migrated, none given up), and its JSON records the run."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.shared_workspace", "--smoke", "--out", str(tmp_path)],
        cwd=REPO,
        check=False,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (found,) = tmp_path.glob("shared-*.json")
    (run,) = json.loads(found.read_text())
    assert run["scenario"] == "compressed" and run["migrated"] == KEYS
    assert run["production_refused"] == 0 and run["gave_up"] == 0 and run["refused"] == 0
