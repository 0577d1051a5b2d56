"""Fixtures of the browser tests: Chromium, a real Airflow api-server, and the Unkey emulator."""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import version
from typing import Any

import pytest

from airflow_provider_unkey.testing import UnkeyEmulator
from tests.ui.browser import Binaries, ensure_binaries, start_chromium
from tests.ui.server import airflow_api_server

ROOT_KEY = "unkey_root_ui_9f8e7d6c5b4a"
API_ID = "api_ui_test_1"
MIGRATION_ID = "mig_ui_test"


#: The browser tests drive the connection form Airflow 3.2 and later build from the provider's
#: ``conn-fields``. Before 3.2 the form comes from the hook's WTForms widgets, laid out otherwise;
#: tests/test_provider.py checks what the API server sends that form.
_BEFORE_3_2 = tuple(int(p) for p in version("apache-airflow-core").split(".")[:2]) < (3, 2)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/ui/" in item.nodeid:
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.slow)
            if _BEFORE_3_2:
                item.add_marker(
                    pytest.mark.skip(
                        reason=f"the browser tests drive Airflow 3.2+'s connection form; this is Airflow "
                        f"{version('apache-airflow-core')}, whose form tests/test_provider.py checks"
                    )
                )


@pytest.fixture(scope="session")
def chromium() -> Binaries:
    """Chromium and chromedriver: found, or installed with apt-get (as root), or the test is skipped."""
    return ensure_binaries()


@pytest.fixture(scope="session")
def airflow_ui(chromium: Binaries, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a real ``airflow api-server`` (after ``airflow db migrate``), stopped at the end."""
    with airflow_api_server(tmp_path_factory.mktemp("airflow-ui-home")) as url:
        yield url


@pytest.fixture(scope="session")
def ui_emulator() -> Iterator[UnkeyEmulator]:
    """The Unkey emulator on a loopback port of this process; the api-server's hook calls it."""
    with UnkeyEmulator.quick(root_key=ROOT_KEY, api_id=API_ID, migration_id=MIGRATION_ID) as emu:
        yield emu


@pytest.fixture(scope="session")
def browser(chromium: Binaries) -> Iterator[Any]:
    driver = start_chromium(chromium)
    try:
        yield driver
    finally:
        driver.quit()
