"""The deployment tests' reporting: a failed test's report carries the last lines of every process's
log, and the session ends with each deployment's timings (shown without ``-s`` too, for CI's log)."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from tests.deployments import harness, scenario


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    for value in getattr(item, "funcargs", {}).values():
        if isinstance(value, scenario.Setup):
            report.sections.append(
                (f"{value.deployment.name}: the last lines of each process's log", value.deployment.tail())
            )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if harness.TIMINGS:
        terminalreporter.write_sep("-", "Airflow deployments: time of each set-up, end to end")
        for line in harness.TIMINGS:
            terminalreporter.write_line(line)
