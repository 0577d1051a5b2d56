"""The migration's extra link and its asset in Airflow's UI, in Chromium, after a real run.

A module of its own api-server: ``example_unkey_assets_migrate`` is run with ``airflow dags test``
against the emulator (its ``unkey_default`` connection names the workspace's dashboard) into the
server's metadata database. The tests then open, as a person does, the task instance (its Details tab
shows the **Unkey dashboard** button) and the asset's page (the ``unkey://`` asset between the DAG
that updates it and the DAG scheduled on it, with the run's event and its ``extra``), and take the
screenshots the docs show: ``docs/images/extra-link.png`` and ``docs/images/asset-event.png``
(rewritten with ``UNKEY_UPDATE_SCREENSHOTS=1``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
import requests
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By

from airflow_provider_unkey.testing import UnkeyEmulator
from tests.ui import pages
from tests.ui.browser import Binaries
from tests.ui.server import airflow_api_server, airflow_env

pytestmark = pytest.mark.timeout(1800)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "example_dags" / "example_unkey_assets.py"
DOCS_IMAGES = ROOT / "docs" / "images"
#: Set to rewrite the docs' screenshots from the ones the tests take.
UPDATE_SCREENSHOT = "UNKEY_UPDATE_SCREENSHOTS"
MIGRATE = "example_unkey_assets_migrate"
DOWNSTREAM = "example_unkey_assets_downstream"
ROOT_KEY = "unkey_root_ui_assets_3c2b1a"
DASHBOARD = "https://app.unkey.com/acme"
#: Hang protection only.
RUN_TIMEOUT = 900


@dataclass(frozen=True)
class Migrated:
    """A finished run of the example's migration, and the api-server that shows it."""

    url: str
    run_id: str
    asset_uri: str
    asset_id: int
    event: dict[str, Any]


def _api(url: str, path: str, **params: Any) -> Any:
    token = requests.get(f"{url}/auth/token", timeout=30).json()["access_token"]
    answer = requests.get(
        f"{url}/api/v2{path}", params=params, headers={"Authorization": f"Bearer {token}"}, timeout=60
    )
    answer.raise_for_status()
    return answer.json()


@pytest.fixture(scope="module")
def migrated(chromium: Binaries, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Migrated]:
    """The example's migration, run into the metadata database of an api-server of this module's own."""
    home = tmp_path_factory.mktemp("airflow-ui-assets-home")
    with (
        UnkeyEmulator.quick(root_key=ROOT_KEY, api_id="api_demo", migration_id="mig_demo") as emu,
        airflow_api_server(home) as url,
    ):
        shutil.copy(EXAMPLE, home / "dags" / EXAMPLE.name)
        env = airflow_env(home)
        connection = {"conn_type": "unkey", "host": emu.url, "password": ROOT_KEY}
        env["AIRFLOW_CONN_UNKEY_DEFAULT"] = json.dumps({**connection, "extra": {"dashboard_url": DASHBOARD}})
        env["UNKEY_EXAMPLE_BASE_URL"] = emu.url
        run = subprocess.run(
            [sys.executable, "-m", "airflow", "dags", "test", MIGRATE],
            env=env,
            cwd=home,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        (dag_run,) = _api(url, f"/dags/{MIGRATE}/dagRuns")["dag_runs"]
        assert dag_run["state"] == "success", dag_run
        asset_uri = f"unkey://{urlsplit(emu.url).netloc}/api_demo"
        (asset,) = _api(url, "/assets", uri_pattern="unkey://")["assets"]
        assert asset["uri"] == asset_uri
        (event,) = _api(url, "/assets/events", asset_id=asset["id"])["asset_events"]
        yield Migrated(url, dag_run["dag_run_id"], asset_uri, asset["id"], event)


def _save(png: bytes, name: str, tmp_path: Path) -> None:
    """Keep the screenshot with the test's files, and in docs/images when asked to."""
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000
    (tmp_path / name).write_bytes(png)
    if os.environ.get(UPDATE_SCREENSHOT):
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / name, DOCS_IMAGES / name)
    assert (DOCS_IMAGES / name).read_bytes().startswith(b"\x89PNG"), f"set {UPDATE_SCREENSHOT}=1 to write it"


def test_the_task_instance_shows_the_dashboard_link(browser: Any, migrated: Migrated, tmp_path: Path) -> None:
    task = f"{migrated.url}/dags/{MIGRATE}/runs/{quote(migrated.run_id, safe='')}/tasks/migrate_keys"
    browser.get(task)
    pages.wait(browser).until(
        lambda d: next(iter(d.find_elements(By.XPATH, "//a[@title='Details']")), None)
    ).click()
    link = pages.wait(browser).until(
        lambda d: next(iter(d.find_elements(By.XPATH, "//a[normalize-space(.)='Unkey dashboard']")), None)
    )
    assert link.get_attribute("href") == f"{DASHBOARD}/apis/api_demo"
    assert link.get_attribute("target") == "_blank"
    assert "Extra Links" in browser.find_element(By.TAG_NAME, "body").text
    _save(browser.get_screenshot_as_png(), "extra-link.png", tmp_path)


def test_the_asset_shows_the_migration_and_its_event(
    browser: Any, migrated: Migrated, tmp_path: Path
) -> None:
    extra = migrated.event["extra"]
    assert (extra["migrated"], extra["failed"], extra["run_id"]) == (298, 2, migrated.run_id)
    browser.get(f"{migrated.url}/assets")
    pages.wait(browser).until(
        lambda d: next(
            iter(d.find_elements(By.XPATH, f"//a[normalize-space(.)={migrated.asset_uri!r}]")), None
        )
    ).click()
    pages.wait(browser).until(lambda d: f"/assets/{migrated.asset_id}" in d.current_url)

    # The graph: the DAG that updates the asset, and the DAG scheduled on it.
    def both_dags(d: Any) -> str | None:
        text = str(d.find_element(By.TAG_NAME, "body").text)
        return text if DOWNSTREAM in text and MIGRATE in text else None

    body = pages.wait(browser).until(both_dags)
    assert "1 Asset Event" in body
    # The event's extra, unfolded as a person does: a click on the JSON's fold, then on the counts by
    # reason's.
    for shows in ('"migrated": 298', '"duplicate_in_source": 1'):
        fold = pages.wait(browser).until(
            lambda d: next(iter(d.find_elements(By.CSS_SELECTOR, ".codicon-folding-collapsed")), None)
        )
        ActionChains(browser).move_to_element(fold).click().perform()
        pages.wait(browser).until(lambda d, shows=shows: shows in d.find_element(By.TAG_NAME, "body").text)
    _save(browser.get_screenshot_as_png(), "asset-event.png", tmp_path)
