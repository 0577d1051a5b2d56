"""``python -m airflow_provider_unkey.testing`` serves the emulator until SIGINT/SIGTERM."""

from __future__ import annotations

import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
import requests

from airflow_provider_unkey.testing import seam_hash, sha256_base64

ROOT = "unkey_root_cli_secret_7f3a"
RATE_HEADERS = ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset")


def quota(r: requests.Response) -> tuple[str, str, int]:
    """``(limit, remaining, reset)`` of an answer that carries every RateLimit-* header."""
    return r.headers["RateLimit-Limit"], r.headers["RateLimit-Remaining"], int(r.headers["RateLimit-Reset"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Cli:
    """The CLI in a subprocess, its output collected by reader threads (no pipe can fill up)."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "airflow_provider_unkey.testing", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout, True), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr, False), daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _pump(self, stream: object, sink: list[str], to_queue: bool) -> None:
        for line in stream:  # type: ignore[attr-defined]
            sink.append(line)
            if to_queue:
                self.lines.put(line)

    def first_line(self, timeout: float = 20) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output from the CLI; stderr: {''.join(self.stderr)}") from None

    def finish(self, sig: signal.Signals | None = signal.SIGINT, timeout: float = 20) -> int:
        if sig is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=timeout)
        for t in self._threads:
            t.join(5)
        return code

    @property
    def output(self) -> str:
        return "".join(self.stdout) + "".join(self.stderr)


@pytest.fixture
def cli_factory() -> Iterator[list[Cli]]:
    started: list[Cli] = []
    yield started
    for cli in started:
        if cli.proc.poll() is None:
            cli.proc.kill()
            cli.proc.wait(10)


def start(started: list[Cli], *extra: str, port: int | None = None) -> tuple[Cli, str]:
    port = free_port() if port is None else port
    cli = Cli(
        "--port",
        str(port),
        "--root-key",
        ROOT,
        "--api-id",
        "api_cli",
        "--migration-id",
        "mig_cli",
        *extra,
    )
    started.append(cli)
    line = cli.first_line()
    assert line == f"Unkey emulator listening on http://127.0.0.1:{port}\n"
    return cli, line.split()[-1]


def test_the_cli_serves_until_sigint(cli_factory: list[Cli]) -> None:
    cli, url = start(cli_factory)
    body = {"migrationId": "mig_cli", "apiId": "api_cli", "keys": [{"hash": sha256_base64("sk_1")}]}
    r = requests.post(
        f"{url}/v2/keys.migrateKeys", json=body, headers={"Authorization": f"Bearer {ROOT}"}, timeout=10
    )
    assert r.status_code == 200
    assert r.json()["data"]["migrated"][0]["hash"] == sha256_base64("sk_1")
    verified = requests.post(
        f"{url}/v2/keys.verifyKey",
        json={"key": "sk_1", "migrationId": "mig_cli"},
        headers={"Authorization": f"Bearer {ROOT}"},
        timeout=10,
    )
    assert verified.json()["data"]["code"] == "VALID"
    # No --rate-limit: no rate-limit headers.
    for answer in (r, verified):
        assert not {name.lower() for name in answer.headers} & {*RATE_HEADERS, "retry-after"}
    assert cli.finish(signal.SIGINT) == 0
    assert ROOT not in cli.output
    assert "1 keys stored" in "".join(cli.stderr)


def test_the_cli_exits_0_on_sigterm(cli_factory: list[Cli]) -> None:
    cli, url = start(cli_factory)
    assert requests.get(f"{url}/v2/liveness", timeout=10).status_code == 200
    assert cli.finish(signal.SIGTERM) == 0
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/v2/liveness", timeout=2)


def test_the_cli_takes_its_options(cli_factory: list[Cli]) -> None:
    taken = seam_hash("pre_short_long")
    cli, url = start(
        cli_factory,
        "--algorithm",
        "seam",
        "--existing-hash",
        taken,
        "--rate-limit",
        "2",
        # A day: the windows are aligned to Unix time, and the few requests below stay in one of them.
        "--rate-limit-window",
        "86400",
        "--storm-retry-after",
        "3",
        "--rate-limit-storm",
        "1",
    )
    auth = {"Authorization": f"Bearer {ROOT}"}
    body = {
        "migrationId": "mig_cli",
        "apiId": "api_cli",
        "keys": [{"hash": taken}, {"hash": seam_hash("a_b_c")}],
    }
    storm = requests.post(f"{url}/v2/keys.migrateKeys", json=body, headers=auth, timeout=10)
    assert storm.status_code == 429 and storm.headers["Retry-After"] == "3"
    assert quota(storm) == ("2", "0", 3)
    r = requests.post(f"{url}/v2/keys.migrateKeys", json=body, headers=auth, timeout=10)
    assert r.json()["data"]["failed"] == [taken]
    verified = requests.post(
        f"{url}/v2/keys.verifyKey", json={"key": "a_b_c", "migrationId": "mig_cli"}, headers=auth, timeout=10
    )
    assert verified.json()["data"]["code"] == "VALID"  # the migration's algorithm is seam
    # --rate-limit 2 --rate-limit-window 86400: every answer carries the quota, in whole seconds to
    # the window's end (UTC midnight).
    (limit, remaining, reset), (_, remaining_after, reset_after) = quota(r), quota(verified)
    assert (limit, remaining, remaining_after) == ("2", "1", "0")
    assert 0 <= reset_after <= reset < 86400
    assert "Retry-After" not in r.headers and "Retry-After" not in verified.headers
    limited = requests.post(
        f"{url}/v2/keys.verifyKey", json={"key": "a_b_c", "migrationId": "mig_cli"}, headers=auth, timeout=10
    )
    assert limited.status_code == 429
    assert limited.json()["error"]["detail"] == (
        "This workspace has exceeded its API rate limit of 2/24h0m0s. Please try again later."
    )
    limit, remaining, reset = quota(limited)
    assert (limit, remaining) == ("2", "0") and 0 <= reset <= reset_after
    assert limited.headers["Retry-After"] == str(reset)
    assert cli.finish() == 0
    assert ROOT not in cli.output


def test_the_cli_runs_production_traffic(cli_factory: list[Cli]) -> None:
    cli, url = start(
        cli_factory,
        "--rate-limit",
        "100",
        "--rate-limit-window",
        "86400",
        "--production-rate",
        "60",
        "--production-burst",
        "120:1:5",
    )
    body = {"migrationId": "mig_cli", "apiId": "api_cli", "keys": [{"hash": sha256_base64("sk_1")}]}
    r = requests.post(
        f"{url}/v2/keys.migrateKeys", json=body, headers={"Authorization": f"Bearer {ROOT}"}, timeout=10
    )
    assert r.status_code == 200
    # Production's first request went out when the emulator was made: the workspace's count holds it.
    assert int(quota(r)[1]) <= 98
    assert cli.finish() == 0
    (line,) = [line for line in cli.stderr if line.startswith("Unkey emulator stopped:")]
    found = re.search(r"production: (\d+) sent, (\d+) accepted, (\d+) refused \(429\), (\d+) of them", line)
    assert found is not None, line
    sent, accepted, refused, in_bursts = map(int, found.groups())
    assert sent >= 1 and sent == accepted + refused and in_bursts <= refused
    assert "1 requests" in line  # the HTTP clients' own count


def test_the_cli_rejects_bad_options(cli_factory: list[Cli]) -> None:
    cli = Cli("--root-key", ROOT, "--api-id", "api_cli", "--migration-id", "mig_cli", "--error-rate", "2")
    cli_factory.append(cli)
    assert cli.finish(sig=None) == 2
    assert "error_rate" in cli.output and ROOT not in cli.output
    negative = Cli(
        "--root-key", ROOT, "--api-id", "api_cli", "--migration-id", "mig_cli", "--rate-limit", "-1"
    )
    cli_factory.append(negative)
    assert negative.finish(sig=None) == 2
    assert "rate_limit" in negative.output and ROOT not in negative.output
    for bad in (["--production-burst", "54:30"], ["--production-burst", "54:300:30"]):
        burst = Cli("--root-key", ROOT, "--api-id", "api_cli", "--migration-id", "mig_cli", *bad)
        cli_factory.append(burst)
        assert burst.finish(sig=None) == 2
        assert "--production-burst" in burst.output and ROOT not in burst.output
    rate = Cli(
        "--root-key", ROOT, "--api-id", "api_cli", "--migration-id", "mig_cli", "--production-rate", "-1"
    )
    cli_factory.append(rate)
    assert rate.finish(sig=None) == 2
    assert "per_minute" in rate.output and ROOT not in rate.output
    missing = Cli("--api-id", "api_cli", "--migration-id", "mig_cli")
    cli_factory.append(missing)
    assert missing.finish(sig=None) == 2
    assert "--root-key" in missing.output


def test_a_port_in_use_is_exit_1(cli_factory: list[Cli]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cli = Cli("--port", str(port), "--root-key", ROOT, "--api-id", "api_cli", "--migration-id", "mig_cli")
        cli_factory.append(cli)
        assert cli.finish(sig=None) == 1
    assert "cannot listen" in cli.output and ROOT not in cli.output
