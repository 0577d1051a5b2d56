"""A headless Chromium driven by Selenium: found on the machine, or installed with apt-get when possible.

Where no browser can be had the tests are skipped with the reason, unless ``CI`` is set: then they fail.
``UNKEY_UI_CHROMIUM`` and ``UNKEY_UI_CHROMEDRIVER`` name the binaries when they are not on ``PATH``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any, NoReturn

import pytest

#: Debian's packages (``apt-get install chromium chromium-driver``), then other names Chromium goes by.
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
DRIVER_NAMES = ("chromedriver",)
APT_PACKAGES = ("chromium", "chromium-driver")
#: Hang protection only: installing a browser on a busy machine takes minutes.
APT_TIMEOUT = 1800


def unavailable(reason: str) -> NoReturn:
    """Skip, or fail when ``CI`` is set: CI must run the browser tests."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so the browser tests may not be skipped)", pytrace=False)
    pytest.skip(reason)


@dataclass(frozen=True)
class Binaries:
    browser: str
    driver: str


def _which(env: str, names: tuple[str, ...]) -> str | None:
    if path := os.environ.get(env):
        return path if os.access(path, os.X_OK) else None
    return next((p for name in names if (p := shutil.which(name))), None)


def find_binaries() -> Binaries | None:
    browser = _which("UNKEY_UI_CHROMIUM", BROWSER_NAMES)
    driver = _which("UNKEY_UI_CHROMEDRIVER", DRIVER_NAMES)
    return Binaries(browser, driver) if browser and driver else None


def _apt_get(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(
        ["apt-get", *args], capture_output=True, text=True, env=env, timeout=APT_TIMEOUT, check=False
    )


def install_with_apt() -> str | None:
    """Install Chromium and its driver with apt-get; ``None`` when done, else why it could not be."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "not root, so apt-get cannot install them"
    if shutil.which("apt-get") is None:
        return "apt-get is not available to install them"
    done = _apt_get("install", "-y", *APT_PACKAGES)
    if done.returncode != 0:
        # A fresh image may have no package lists yet.
        _apt_get("update")
        done = _apt_get("install", "-y", *APT_PACKAGES)
    if done.returncode != 0:
        return f"apt-get install {' '.join(APT_PACKAGES)} failed: {done.stderr.strip()[-500:]}"
    return None


def ensure_binaries() -> Binaries:
    """The browser and its driver, installing them when they are missing and that is possible."""
    if importlib.util.find_spec("selenium") is None:
        unavailable("selenium is not installed (pip install -e '.[test]')")
    if found := find_binaries():
        return found
    why = install_with_apt()
    found = find_binaries()
    if found is None:
        names = f"{'/'.join(BROWSER_NAMES)} and {DRIVER_NAMES[0]}"
        unavailable(f"no Chromium: {names} are not on PATH, and {why or 'installing them found neither'}")
    return found


def start_chromium(binaries: Binaries, *, width: int = 1400, height: int = 1100) -> Any:
    """A headless Chromium under chromedriver, logging the network (see :func:`api_exchanges`)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = binaries.browser
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-proxy-server",  # the api-server is on loopback; the environment's proxy must not apply
        "--no-first-run",
        f"--window-size={width},{height}",
        "--lang=en-US",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(binaries.driver), options=options)
    driver.set_page_load_timeout(300)
    driver.set_script_timeout(300)
    return driver


@dataclass
class Exchange:
    """One request the page sent to Airflow's API, with the answer."""

    method: str
    url: str
    body: str | None
    status: int | None = None
    response: str | None = None
    finished: bool = False
    returned: bool = False


#: Every exchange of each browser session, by request id: a request and its answer may arrive in
#: different reads of the log.
_EXCHANGES: dict[str, dict[str, Exchange]] = {}


def api_exchanges(driver: Any, path: str) -> list[Exchange]:
    """The finished requests to URLs containing ``path`` not returned by an earlier call, answered."""
    exchanges = _EXCHANGES.setdefault(driver.session_id, {})
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message.get("params", {})
        request_id = params.get("requestId")
        if message["method"] == "Network.requestWillBeSent" and "/api/" in params["request"]["url"]:
            request = params["request"]
            exchanges[request_id] = Exchange(request["method"], request["url"], request.get("postData"))
        elif message["method"] == "Network.responseReceived" and request_id in exchanges:
            exchanges[request_id].status = params["response"]["status"]
        elif message["method"] == "Network.loadingFinished" and request_id in exchanges:
            exchange = exchanges[request_id]
            # The body may be gone already (a redirect, a cancelled request).
            with contextlib.suppress(Exception):
                exchange.response = driver.execute_cdp_cmd(
                    "Network.getResponseBody", {"requestId": request_id}
                ).get("body")
            exchange.finished = True
    found = [e for e in exchanges.values() if path in e.url and e.finished and not e.returned]
    for exchange in found:
        exchange.returned = True
    return found
