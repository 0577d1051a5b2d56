"""How long the client waits before a retry: ``Retry-After``, ``RateLimit-Reset`` and the retry budget.

Nothing here sleeps or reads a real clock: :class:`FakeClock` stands in for tenacity's clock and sleep,
so the tests assert the waits the client chose, never the time they took.

The last part fails real requests (a closed port, a reset, a full backlog) to check that whether a
request may have been sent is read from the exception chain; two of them wait out a 0.2 s socket
timeout, and none asserts how long anything took.
"""

from __future__ import annotations

import contextlib
import email.utils
import errno
import functools
import http.client
import json
import logging
import math
import os
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

import pytest
import requests
import tenacity
import urllib3.exceptions
import urllib3.util.connection

from airflow_provider_unkey import client as client_module
from airflow_provider_unkey import retries as retries_module
from airflow_provider_unkey.client import RetryPolicy, UnkeyClient, _parse_retry_after
from airflow_provider_unkey.exceptions import (
    UnkeyAPIError,
    UnkeyRateLimitError,
    UnkeyRequestTimeoutError,
    UnkeyServerError,
    UnkeyTransportError,
)

#: A fixed "now" for the parser: 2027-01-15T08:00:00Z.
NOW = 1_800_000_000.0
#: Waits exactly as asked: no jitter, a backoff that is easy to tell from a server-requested wait.
EXACT = RetryPolicy(max_attempts=5, max_elapsed=600.0, initial_wait=0.25, max_wait=0.25, jitter=0.0)


class FakeClock:
    """tenacity's clock and sleep: a sleep is recorded and moves the clock on at once."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(float(seconds))
        self.now += float(seconds)


def install_fake_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """Make every retry loop of the client run on a :class:`FakeClock` for the rest of the test.

    tenacity reads ``time.monotonic()`` for its elapsed-time stops and takes its sleep function as an
    argument: the client's ``Retrying`` gets the fake sleep, tenacity's module the fake clock.
    """
    clock = FakeClock()
    monkeypatch.setattr(tenacity, "time", clock)
    monkeypatch.setattr(client_module, "Retrying", functools.partial(tenacity.Retrying, sleep=clock.sleep))
    return clock


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    return install_fake_clock(monkeypatch)


# --- the parser, branch by branch ------------------------------------------------------------------
@pytest.fixture
def local_time_not_utc() -> Iterator[None]:
    """Local time 5:45 ahead of UTC (a POSIX rule, no tz database needed): a date read as local time
    instead of GMT is off by 20,700 s."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "XYZ-05:45"
    time.tzset()
    try:
        assert time.timezone == -20_700
        yield
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()


def http_date(unix: float) -> str:
    return email.utils.formatdate(unix, usegmt=True)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        # Retry-After in whole seconds, as Unkey sends it.
        pytest.param({"Retry-After": "5"}, 5.0, id="seconds"),
        pytest.param({"Retry-After": "0"}, 0.0, id="zero"),
        pytest.param({"Retry-After": " 7 "}, 7.0, id="blanks-around"),
        pytest.param({"Retry-After": "1.5"}, 1.5, id="fraction"),
        pytest.param({"Retry-After": "-3"}, 0.0, id="negative-waits-nothing"),
        pytest.param({"Retry-After": "86400"}, 86400.0, id="long-is-kept-for-the-policy-to-judge"),
        # Retry-After as an HTTP date.
        pytest.param({"Retry-After": http_date(NOW + 30)}, 30.0, id="imf-date"),
        pytest.param({"Retry-After": http_date(NOW - 30)}, 0.0, id="date-in-the-past"),
        pytest.param({"Retry-After": "Fri Jan 15 08:00:45 2027"}, 45.0, id="asctime-date-is-gmt"),
        pytest.param({"Retry-After": "Friday, 15-Jan-27 08:01:00 GMT"}, 60.0, id="rfc850-date"),
        # Retry-After that is neither: ignored.
        pytest.param({"Retry-After": "soon"}, None, id="garbage"),
        pytest.param({"Retry-After": "   "}, None, id="blank"),
        pytest.param({"Retry-After": ""}, None, id="empty"),
        pytest.param({"Retry-After": "nan"}, None, id="nan"),
        pytest.param({"Retry-After": "inf"}, None, id="inf"),
        pytest.param({"Retry-After": "Fri, 45 Jan 2027 08:00:00 GMT"}, None, id="impossible-date"),
        # No header at all.
        pytest.param({}, None, id="missing"),
        pytest.param({"RateLimit-Limit": "100", "RateLimit-Remaining": "0"}, None, id="no-reset"),
        # RateLimit-Reset when Retry-After is missing, or useless.
        pytest.param({"RateLimit-Reset": "12"}, 12.0, id="reset-seconds"),
        pytest.param({"RateLimit-Reset": "0"}, 0.0, id="reset-zero"),
        pytest.param({"RateLimit-Reset": "-4"}, 0.0, id="reset-negative"),
        pytest.param({"RateLimit-Reset": " 9 "}, 9.0, id="reset-blanks-around"),
        pytest.param({"RateLimit-Reset": str(int(NOW) + 20)}, 20.0, id="reset-unix-seconds"),
        pytest.param({"RateLimit-Reset": str(int(NOW) - 20)}, 0.0, id="reset-unix-seconds-past"),
        pytest.param({"RateLimit-Reset": str(int(NOW * 1000) + 20_500)}, 20.5, id="reset-unix-ms"),
        pytest.param({"RateLimit-Reset": str(int(NOW * 1000) - 20_500)}, 0.0, id="reset-unix-ms-past"),
        pytest.param({"RateLimit-Reset": "later"}, None, id="reset-garbage"),
        pytest.param({"RateLimit-Reset": "nan"}, None, id="reset-nan"),
        pytest.param({"RateLimit-Reset": "inf"}, None, id="reset-inf"),
        pytest.param({"RateLimit-Reset": ""}, None, id="reset-empty"),
        # Both: a usable Retry-After wins; a useless one leaves it to RateLimit-Reset.
        pytest.param({"Retry-After": "3", "RateLimit-Reset": "50"}, 3.0, id="retry-after-wins"),
        pytest.param({"Retry-After": "0", "RateLimit-Reset": "50"}, 0.0, id="retry-after-zero-wins"),
        pytest.param(
            {"Retry-After": http_date(NOW + 5), "RateLimit-Reset": "50"}, 5.0, id="retry-after-date-wins"
        ),
        pytest.param({"Retry-After": "soon", "RateLimit-Reset": "8"}, 8.0, id="garbage-falls-to-reset"),
        pytest.param({"Retry-After": "soon", "RateLimit-Reset": "later"}, None, id="both-garbage"),
    ],
)
def test_parse_retry_after(local_time_not_utc: None, headers: dict[str, str], expected: float | None) -> None:
    assert _parse_retry_after(headers, NOW) == expected


def test_the_fixed_now_is_the_date_the_cases_name() -> None:
    # The asctime and RFC 850 cases above spell NOW out; keep them honest.
    assert http_date(NOW) == "Fri, 15 Jan 2027 08:00:00 GMT"


# --- the policy: which server-requested waits are honoured ------------------------------------------
@pytest.mark.parametrize("status", [408, 429])
@pytest.mark.parametrize(
    ("retry_after", "retried"),
    [(None, True), (0.0, True), (120.0, True), (120.5, False), (math.inf, False)],
)
def test_policy_honours_server_waits_up_to_its_maximum(
    status: int, retry_after: float | None, retried: bool
) -> None:
    policy = RetryPolicy(max_retry_after=120.0)
    assert policy.is_retryable(UnkeyAPIError(status, retry_after=retry_after)) is retried


# --- through a real HTTP exchange --------------------------------------------------------------------
class BackgroundServer(ThreadingHTTPServer):
    """A local HTTP server on a free port, serving from a thread while the ``with`` block runs."""

    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        # A short poll: shutdown() waits for the loop to notice it.
        serve = functools.partial(self.serve_forever, poll_interval=0.01)
        self._thread = threading.Thread(target=serve, name=type(self).__name__, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join()


class ScriptedServer(BackgroundServer):
    """Answers ``keys.migrateKeys`` from a script of ``(status, headers)``, then with a success."""

    def __init__(self, script: list[tuple[int, dict[str, str]]]) -> None:
        super().__init__(_ScriptedHandler)
        self.script = list(script)
        self.statuses: list[int] = []
        self._lock = threading.Lock()

    def next_answer(self) -> tuple[int, dict[str, str]]:
        with self._lock:
            answer = self.script.pop(0) if self.script else (200, {})
            self.statuses.append(answer[0])
            return answer


class _ScriptedHandler(BaseHTTPRequestHandler):
    server: ScriptedServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        status, headers = self.server.next_answer()
        if status == 200:
            data = {
                "migrated": [{"hash": k["hash"], "keyId": "key_1"} for k in request["keys"]],
                "failed": [],
            }
            body: dict[str, Any] = {"meta": {"requestId": "req_ok"}, "data": data}
        else:
            body = {
                "meta": {"requestId": f"req_{status}"},
                "error": {"title": "Error", "detail": "scripted", "status": status, "type": "about:blank"},
            }
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


def migrate(
    script: list[tuple[int, dict[str, str]]], policy: RetryPolicy = EXACT
) -> tuple[list[int], UnkeyAPIError | None]:
    """One ``migrate_keys`` call against the script: the statuses served, and the error raised, if any."""
    with ScriptedServer(script) as server, UnkeyClient("unkey_root_test", server.url, retry=policy) as client:
        try:
            result = client.migrate_keys("mig_test", "api_test", [{"hash": "abc"}])
        except UnkeyAPIError as exc:
            return server.statuses, exc
        assert result.migrated == [("abc", "key_1")]
        assert result.attempts == len(server.statuses)
        return server.statuses, None


@pytest.mark.parametrize(
    ("status", "headers", "wait"),
    [
        pytest.param(429, {"Retry-After": "3"}, 3.0, id="429-seconds"),
        pytest.param(429, {"retry-after": "2"}, 2.0, id="429-header-name-in-any-case"),
        # Unkey's Retry-After is truncated: 0 means "within the second", so a 429 waits at least 1 s.
        pytest.param(429, {"Retry-After": "0"}, 1.0, id="429-zero-waits-the-floor"),
        pytest.param(429, {"Retry-After": "-1"}, 1.0, id="429-negative"),
        pytest.param(429, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 1.0, id="429-past-date"),
        pytest.param(429, {"RateLimit-Reset": "4"}, 4.0, id="429-reset-without-retry-after"),
        pytest.param(429, {"Retry-After": "soon", "RateLimit-Reset": "6"}, 6.0, id="429-garbage-then-reset"),
        pytest.param(429, {"Retry-After": "soon"}, 1.0, id="429-garbage-backs-off-at-least-the-floor"),
        pytest.param(429, {}, 1.0, id="429-no-header-backs-off-at-least-the-floor"),
        pytest.param(408, {"Retry-After": "0"}, 0.0, id="408-zero-has-no-floor"),
        pytest.param(429, {"Retry-After": "120"}, 120.0, id="429-at-the-policy-maximum"),
        pytest.param(408, {"Retry-After": "5"}, 5.0, id="408-honoured"),
        pytest.param(503, {"Retry-After": "7"}, 7.0, id="503-honoured"),
        pytest.param(500, {"Retry-After": "7"}, EXACT.initial_wait, id="500-ignores-it"),
        pytest.param(502, {"Retry-After": "7"}, EXACT.initial_wait, id="502-ignores-it"),
    ],
)
def test_the_wait_before_a_retry_comes_from_the_answer(
    clock: FakeClock, status: int, headers: dict[str, str], wait: float
) -> None:
    statuses, error = migrate([(status, headers)])
    assert error is None
    assert statuses == [status, 200]
    assert clock.sleeps == [wait]


def test_retry_after_is_kept_on_the_error_for_statuses_that_may_carry_it(clock: FakeClock) -> None:
    # A 429 does not use up an attempt: the policy stops it from being retried at all.
    once = RetryPolicy(max_attempts=1, no_retry_statuses=frozenset({429}))
    for status, expected in ((429, 9.0), (408, 9.0), (503, 9.0), (500, None), (502, None), (504, None)):
        _, error = migrate([(status, {"Retry-After": "9"})], once)
        assert error is not None and error.status == status
        assert error.retry_after == expected, status
    assert clock.sleeps == []


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Retry-After": "121"}, id="seconds"),
        pytest.param({"RateLimit-Reset": "3600"}, id="reset"),
        pytest.param({"Retry-After": "Fri, 01 Jan 2100 00:00:00 GMT"}, id="date"),
    ],
)
def test_a_wait_longer_than_the_policy_allows_raises_at_once(
    clock: FakeClock, headers: dict[str, str]
) -> None:
    statuses, error = migrate([(429, headers)] * 3)
    assert isinstance(error, UnkeyRateLimitError)
    assert error.retry_after is not None and error.retry_after > EXACT.max_retry_after
    assert statuses == [429], "not retried"
    assert clock.sleeps == [], "nothing waited for"
    assert error.attempts == 1


def test_a_server_wait_that_would_cross_the_retry_budget_is_not_begun(clock: FakeClock) -> None:
    policy = RetryPolicy(max_attempts=5, max_elapsed=10.0, max_retry_after=120.0, jitter=0.0)
    statuses, error = migrate([(429, {"Retry-After": "4"})] * 5, policy)
    # 4 s and 4 s fit in the 10 s budget; a third 4 s would end past it.
    assert statuses == [429, 429, 429]
    assert clock.sleeps == [4.0, 4.0]
    assert isinstance(error, UnkeyRateLimitError) and error.attempts == 3


def test_a_429_does_not_use_up_an_attempt(clock: FakeClock) -> None:
    """Seven 429s and four 500s, then 200: the 500s spend four of the five attempts, the 429s none."""
    script = [(429, {"Retry-After": "0"})] * 7 + [(500, {})] * 4
    statuses, error = migrate(script)
    assert error is None
    assert statuses == [s for s, _ in script] + [200]
    assert clock.sleeps == [1.0] * 7 + [EXACT.initial_wait] * 4


def test_attempts_answered_with_something_else_than_429_run_out(clock: FakeClock) -> None:
    """500s between 429s: the fifth 500 ends the call, however many 429s came between."""
    script = [(500, {}), (429, {"Retry-After": "0"})] * 4 + [(500, {})] + [(200, {})]
    statuses, error = migrate(script)
    assert isinstance(error, UnkeyServerError) and error.status == 500
    assert statuses == [s for s, _ in script[:9]]
    assert error.attempts == 9


def test_jitter_is_added_to_a_server_requested_wait(clock: FakeClock) -> None:
    policy = RetryPolicy(max_attempts=30, jitter=0.5)
    statuses, error = migrate([(429, {"Retry-After": "2"})] * 20, policy)
    assert error is None and len(statuses) == 21
    assert len(clock.sleeps) == 20
    assert all(2.0 <= wait <= 2.5 for wait in clock.sleeps), clock.sleeps
    assert len(set(clock.sleeps)) > 1, "the waits should not all be the same"


def test_on_retry_sees_the_wait_the_client_chose(clock: FakeClock) -> None:
    seen: list[tuple[int, int, float]] = []
    with ScriptedServer([(429, {"Retry-After": "3"}), (408, {}), (503, {"Retry-After": "1"})]) as server:
        client = UnkeyClient("unkey_root_test", server.url, retry=EXACT)
        client.on_retry = lambda attempt, exc, wait: seen.append(
            (attempt, exc.status if isinstance(exc, UnkeyAPIError) else 0, wait)
        )
        with client:
            result = client.migrate_keys("mig_test", "api_test", [{"hash": "abc"}])
    assert result.attempts == 4
    # The 408 without a header backs off exponentially: its attempt is the second one.
    assert seen == [(1, 429, 3.0), (2, 408, 0.25), (3, 503, 1.0)]
    assert clock.sleeps == [3.0, 0.25, 1.0]


def test_errors_raised_after_retries_keep_their_type(clock: FakeClock) -> None:
    _, timeout = migrate([(408, {"Retry-After": "1"})] * 5)
    assert isinstance(timeout, UnkeyRequestTimeoutError) and timeout.attempts == EXACT.max_attempts
    _, server = migrate([(503, {})] * 5)
    assert isinstance(server, UnkeyServerError) and server.attempts == EXACT.max_attempts
    assert clock.sleeps == [1.0] * 4 + [0.25] * 4


# --- "may the request have reached the server?", from the exception chain -------------------------
# Each case fails a real request the way it fails in production, so that requests and urllib3 build
# the exception chain themselves; the client must read ``sent`` from that chain, not from its text.
# A connect timeout needs a peer that drops SYNs: a listening socket whose backlog is full does
# (Linux). A blackhole address is no use here: a sandbox's proxy may answer it.


def _read_request(conn: socket.socket) -> None:
    """Read one request (headers and a ``Content-Length`` body) off ``conn``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return
        body += chunk


def _close_at_once(conn: socket.socket) -> None:
    conn.close()


def _read_then_close(conn: socket.socket) -> None:
    _read_request(conn)
    conn.close()


def _read_then_reset(conn: socket.socket) -> None:
    _read_request(conn)
    # SO_LINGER with a zero timeout: close() sends an RST instead of a FIN.
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def _read_then_hang(conn: socket.socket) -> None:
    _read_request(conn)
    conn.recv(1)  # until the client gives up and closes
    conn.close()


class RawServer:
    """A TCP listener on loopback that hands each accepted connection to ``behave``, or, with
    ``accept=False``, never accepts and keeps its backlog full, so that a further connect times out."""

    def __init__(self, behave: Any = None, *, accept: bool = True) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0 if not accept else 8)
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.behave = behave
        self.fillers: list[socket.socket] = []
        self.thread: threading.Thread | None = None
        if accept:
            self.thread = threading.Thread(target=self._serve, daemon=True)
            self.thread.start()
        else:
            # Fill the accept queue (and the SYN queue behind it); nobody ever accepts.
            for _ in range(4):
                filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                filler.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    filler.connect(("127.0.0.1", self.port))
                self.fillers.append(filler)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self.behave, args=(conn,), daemon=True).start()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        for filler in self.fillers:
            filler.close()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        if self.thread is not None:
            self.thread.join()


def _closed_port_url() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _transport_error(
    url: str, clock: FakeClock, timeout: tuple[float, float] = (5.0, 5.0)
) -> tuple[UnkeyTransportError, list[BaseException]]:
    """Two attempts of one request to ``url``: the error, and the exception chain the client read."""
    chain: list[BaseException] = []
    decide = retries_module.may_have_been_sent

    def spy(exc: BaseException) -> bool:
        chain[:] = list(retries_module._exception_chain(exc))
        return decide(exc)

    policy = RetryPolicy(max_attempts=2, initial_wait=0.25, max_wait=0.25, jitter=0.0)
    client = UnkeyClient("unkey_root_test", url, timeout=timeout, retry=policy)
    with pytest.MonkeyPatch.context() as patch, client, pytest.raises(UnkeyTransportError) as info:
        patch.setattr(client_module, "may_have_been_sent", spy)
        client.migrate_keys("mig_test", "api_test", [{"hash": "abc"}])
    assert info.value.attempts == 2
    assert clock.sleeps == [0.25]
    return info.value, chain


def _holds(chain: list[BaseException], *types: type[BaseException]) -> bool:
    return all(any(isinstance(link, t) for link in chain) for t in types)


_Protocol, _ReadTimeout = urllib3.exceptions.ProtocolError, urllib3.exceptions.ReadTimeoutError


@pytest.mark.parametrize(
    ("behave", "read_timeout", "links"),
    [
        # The connection was up and the request written: the server may have committed it.
        pytest.param(_close_at_once, 5.0, (_Protocol,), id="accepts-and-closes"),
        pytest.param(
            _read_then_close, 5.0, (_Protocol, http.client.RemoteDisconnected), id="reads-then-closes"
        ),
        pytest.param(_read_then_reset, 5.0, (_Protocol, ConnectionResetError), id="reads-then-resets"),
        pytest.param(
            _read_then_hang, 0.2, (requests.exceptions.ReadTimeout, _ReadTimeout), id="read-timeout"
        ),
    ],
)
def test_a_failure_after_connecting_may_have_been_sent(
    clock: FakeClock, behave: Any, read_timeout: float, links: tuple[type[BaseException], ...]
) -> None:
    with RawServer(behave) as server:
        error, chain = _transport_error(server.url, clock, (5.0, read_timeout))
    assert _holds(chain, *links), chain
    assert error.sent is True and error.unanswered_attempts == 2


def test_a_refused_connection_was_not_sent(clock: FakeClock) -> None:
    error, chain = _transport_error(_closed_port_url(), clock)
    assert _holds(chain, urllib3.exceptions.NewConnectionError, ConnectionRefusedError), chain
    assert error.sent is False and error.unanswered_attempts == 0


@pytest.mark.skipif(sys.platform != "linux", reason="a full listen backlog drops SYNs on Linux")
def test_a_connect_timeout_was_not_sent(clock: FakeClock) -> None:
    with RawServer(accept=False) as server:
        error, chain = _transport_error(server.url, clock, (0.2, 5.0))
    assert _holds(chain, requests.exceptions.ConnectTimeout, urllib3.exceptions.ConnectTimeoutError), chain
    assert error.sent is False and error.unanswered_attempts == 0


@pytest.mark.parametrize(
    ("raised", "sent", "link"),
    [
        # What the socket layer raises while connecting; urllib3 and requests wrap it as they do.
        pytest.param(
            socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
            False,
            urllib3.exceptions.NameResolutionError,
            id="dns",
        ),
        pytest.param(
            TimeoutError("timed out"), False, requests.exceptions.ConnectTimeout, id="connect-timeout"
        ),
        pytest.param(
            OSError(errno.ENETUNREACH, "Network is unreachable"),
            False,
            urllib3.exceptions.NewConnectionError,
            id="unreachable",
        ),
        pytest.param(
            ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
            False,
            urllib3.exceptions.NewConnectionError,
            id="refused",
        ),
    ],
)
def test_sent_is_false_for_every_failure_to_connect(
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    raised: BaseException,
    sent: bool,
    link: type[BaseException],
) -> None:
    def create_connection(*args: Any, **kwargs: Any) -> socket.socket:
        raise raised

    monkeypatch.setattr(urllib3.util.connection, "create_connection", create_connection)
    error, chain = _transport_error("http://127.0.0.1:9", clock)
    assert _holds(chain, link), chain
    assert error.sent is sent and error.unanswered_attempts == (2 if sent else 0)


def _wrapped_as_requests_does(error: BaseException) -> requests.exceptions.ConnectionError:
    """``error`` wrapped as requests wraps urllib3's: raised inside the ``except`` that caught it."""
    try:
        try:
            raise error
        except Exception as err:
            raise requests.exceptions.ConnectionError(err)  # noqa: B904 (requests chains implicitly)
    except requests.exceptions.ConnectionError as wrapped:
        return wrapped


def _refused(message: str) -> BaseException:
    error = urllib3.exceptions.NewConnectionError(None, message)  # type: ignore[arg-type]
    error.__cause__ = ConnectionRefusedError(errno.ECONNREFUSED, message)
    return urllib3.exceptions.MaxRetryError(None, "/", error)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "sent"),
    [
        # The words that once decided, in chains that say otherwise: the chain wins.
        pytest.param(
            urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError("refused")),
            True,
            id="reset-worded-refused",
        ),
        pytest.param(
            urllib3.exceptions.ProtocolError("NewConnectionError", http.client.RemoteDisconnected("x")),
            True,
            id="disconnect-worded-new-connection",
        ),
        pytest.param(_refused("Connection reset by peer"), False, id="refused-worded-reset"),
        pytest.param(
            _refused("Remote end closed connection without response"), False, id="refused-worded-closed"
        ),
        # A chain that tells neither (a closed pool, a TLS error) counts as sent: that loses nothing.
        pytest.param(urllib3.exceptions.ClosedPoolError(None, "closed"), True, id="closed-pool"),  # type: ignore[arg-type]
        pytest.param(urllib3.exceptions.SSLError("bad record mac"), True, id="tls"),
    ],
)
def test_the_chain_decides_not_the_message(error: BaseException, sent: bool) -> None:
    assert retries_module.may_have_been_sent(_wrapped_as_requests_does(error)) is sent


# --- proxies: an explicit one, the environment's, NO_PROXY and loopback ---------------------------
#: A host name no resolver knows: only the test proxy (which maps it to loopback) can reach it, so a
#: request to it that succeeds went through the proxy.
REMOTE_HOST = "unkey.test"
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "REQUEST_METHOD")


class ForwardProxy(BackgroundServer):
    """A plain HTTP forward proxy: takes absolute-URI ``GET``/``POST`` requests and forwards them with
    :mod:`http.client`, mapping :data:`REMOTE_HOST` to ``127.0.0.1``.

    :param credentials: ``(user, password)`` the proxy requires (``407`` otherwise).
    """

    def __init__(self, credentials: tuple[str, str] | None = None) -> None:
        super().__init__(_ForwardProxyHandler)
        self.credentials = credentials
        #: ``(method, absolute URL, Proxy-Authorization)`` of every request the proxy received.
        self.seen: list[tuple[str, str, str | None]] = []

    def proxy_url(self, userinfo: str = "") -> str:
        return f"http://{userinfo}{'@' if userinfo else ''}127.0.0.1:{self.server_address[1]}"


class _ForwardProxyHandler(BaseHTTPRequestHandler):
    server: ForwardProxy

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _forward(self) -> None:
        import base64
        from urllib.parse import urlsplit

        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        auth = self.headers.get("Proxy-Authorization")
        self.server.seen.append((self.command, self.path, auth))
        if self.server.credentials is not None:
            expected = base64.b64encode(":".join(self.server.credentials).encode()).decode()
            if auth != f"Basic {expected}":
                self.send_response(407)
                self.send_header("Proxy-Authenticate", 'Basic realm="test"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        target = urlsplit(self.path)
        if target.scheme != "http" or not target.hostname:
            self.send_error(400, "absolute http:// URI expected")
            return
        host = "127.0.0.1" if target.hostname == REMOTE_HOST else target.hostname
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("proxy-authorization", "host")}
        upstream = http.client.HTTPConnection(host, target.port or 80)
        try:
            upstream.request(self.command, target.path or "/", body=body or None, headers=headers)
            answer = upstream.getresponse()
            data = answer.read()
        finally:
            upstream.close()
        self.send_response(answer.status, answer.reason)
        for name, value in answer.getheaders():
            if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = _forward
    do_POST = _forward


@pytest.fixture
def clean_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No proxy variable of the machine running the tests, in either case."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


@pytest.fixture
def emulator() -> Iterator[Any]:
    from airflow_provider_unkey.testing import UnkeyEmulator

    with UnkeyEmulator.quick(root_key="unkey_root_test", api_id="api_test", migration_id="mig_test") as emu:
        yield emu


def _b64_hash(plaintext: str) -> str:
    import base64
    import hashlib

    return base64.b64encode(hashlib.sha256(plaintext.encode()).digest()).decode()


def _round_trip(client: UnkeyClient, tag: str) -> None:
    """An unauthenticated GET and an authenticated POST, both answered."""
    assert client.liveness() == "OK"
    result = client.migrate_keys("mig_test", "api_test", [{"hash": _b64_hash(tag)}])
    assert [h for h, _ in result.migrated] == [_b64_hash(tag)]


def _port(url: str) -> int:
    from urllib.parse import urlsplit

    port = urlsplit(url).port
    assert port is not None
    return port


def test_an_explicit_proxy_carries_every_request(clean_proxy_env: pytest.MonkeyPatch, emulator: Any) -> None:
    # The emulator is loopback, which the environment's proxy never gets; an explicit proxy does.
    with ForwardProxy() as proxy, UnkeyClient("unkey_root_test", emulator.url, proxy=proxy.url) as client:
        _round_trip(client, "sk_explicit_proxy")
        assert client.proxy == proxy.url
    assert [(m, u) for m, u, _ in proxy.seen] == [
        ("GET", f"{emulator.url}/v2/liveness"),
        ("POST", f"{emulator.url}/v2/keys.migrateKeys"),
    ]
    assert emulator.hash_counts[_b64_hash("sk_explicit_proxy")] == 1


def test_a_proxys_credentials_are_sent_and_never_shown(
    clean_proxy_env: pytest.MonkeyPatch, emulator: Any, caplog: pytest.LogCaptureFixture, clock: FakeClock
) -> None:
    import base64
    from urllib.parse import quote

    password = "pr0xy-p@ss:w/rd"
    token = base64.b64encode(f"alice:{password}".encode()).decode()
    encoded = quote(password, safe="")
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    with ForwardProxy(credentials=("alice", password)) as proxy:
        url = proxy.proxy_url(f"alice:{encoded}")
        with UnkeyClient("unkey_root_test", emulator.url, proxy=url) as client:
            _round_trip(client, "sk_proxy_auth")
            texts += [repr(client), str(client.proxy)]
            assert client.proxy == proxy.proxy_url("alice:***")
        assert proxy.seen and all(auth == f"Basic {token}" for _, _, auth in proxy.seen)
        # A wrong password: the proxy's 407 is an error that names neither password.
        wrong = proxy.proxy_url("alice:" + quote("wr0ng-p@ss", safe=""))
        with UnkeyClient("unkey_root_test", emulator.url, proxy=wrong) as client:
            with pytest.raises(UnkeyAPIError) as refused:
                client.liveness()
            assert refused.value.status == 407
            texts += [str(refused.value), repr(refused.value), repr(client)]
    # A proxy that is gone: the transport error does not name the password either.
    gone = _closed_port_url().replace("http://", f"http://alice:{encoded}@")
    policy = RetryPolicy(max_attempts=2, initial_wait=0.0, max_wait=0.0, jitter=0.0)
    with UnkeyClient("unkey_root_test", emulator.url, proxy=gone, retry=policy) as client:
        with pytest.raises(UnkeyTransportError) as unreachable:
            client.liveness()
        texts += [str(unreachable.value), repr(unreachable.value), repr(client)]
    texts += [record.getMessage() for record in caplog.records] + [caplog.text]
    assert any("127.0.0.1" in t for t in texts)
    for secret in (password, encoded, token, "wr0ng-p@ss"):
        assert not [t for t in texts if secret in t], secret


def test_the_environments_proxy_carries_requests_to_a_remote_host(
    clean_proxy_env: pytest.MonkeyPatch, emulator: Any
) -> None:
    base_url = f"http://{REMOTE_HOST}:{_port(emulator.url)}"
    with ForwardProxy() as proxy:
        clean_proxy_env.setenv("HTTP_PROXY", proxy.url)
        with UnkeyClient("unkey_root_test", base_url, allow_insecure_http=True) as client:
            assert client.proxy == proxy.url
            _round_trip(client, "sk_env_proxy")
    assert [u for _, u, _ in proxy.seen] == [f"{base_url}/v2/liveness", f"{base_url}/v2/keys.migrateKeys"]


def test_no_proxy_sends_requests_directly(
    clean_proxy_env: pytest.MonkeyPatch, emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The remote name resolves to loopback for this test only, so that a direct request can succeed.
    connect = urllib3.util.connection.create_connection

    def resolve_remote_host(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        host, port = address
        return connect(("127.0.0.1" if host == REMOTE_HOST else host, port), *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", resolve_remote_host)
    base_url = f"http://{REMOTE_HOST}:{_port(emulator.url)}"
    with ForwardProxy() as proxy:
        clean_proxy_env.setenv("HTTP_PROXY", proxy.url)
        clean_proxy_env.setenv("NO_PROXY", "example.com,.test")
        with UnkeyClient("unkey_root_test", base_url, allow_insecure_http=True) as client:
            assert client.proxy is None and client.session.proxies == {}
            _round_trip(client, "sk_no_proxy")
    assert proxy.seen == []
    assert emulator.hash_counts[_b64_hash("sk_no_proxy")] == 1


def test_a_loopback_base_url_never_takes_the_environments_proxy(
    clean_proxy_env: pytest.MonkeyPatch, emulator: Any
) -> None:
    with ForwardProxy() as proxy:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
            clean_proxy_env.setenv(name, proxy.url)
        for host in ("127.0.0.1", "localhost"):
            base_url = f"http://{host}:{_port(emulator.url)}"
            with UnkeyClient("unkey_root_test", base_url) as client:
                assert client.proxy is None
                _round_trip(client, f"sk_loopback_{host}")
    assert proxy.seen == []


@pytest.mark.parametrize(
    ("env", "base_url", "proxy", "expected"),
    [
        pytest.param({}, "https://api.unkey.com", None, {}, id="nothing-set"),
        pytest.param(
            {"HTTPS_PROXY": "http://corp:3128"},
            "https://api.unkey.com",
            None,
            {"https": "http://corp:3128"},
            id="https-proxy",
        ),
        pytest.param(
            {"https_proxy": "corp:3128"},
            "https://api.unkey.com",
            None,
            {"https": "http://corp:3128"},
            id="lower-case-no-scheme",
        ),
        pytest.param(
            {"HTTP_PROXY": "http://corp:3128"},
            "https://api.unkey.com",
            None,
            {},
            id="http-proxy-not-for-https",
        ),
        pytest.param(
            {"ALL_PROXY": "http://corp:3128"},
            "https://api.unkey.com",
            None,
            {"https": "http://corp:3128"},
            id="all-proxy",
        ),
        pytest.param(
            {"HTTPS_PROXY": "http://corp:3128", "NO_PROXY": "unkey.com"},
            "https://api.unkey.com",
            None,
            {},
            id="no-proxy-domain-suffix",
        ),
        pytest.param(
            {"HTTPS_PROXY": "http://corp:3128", "no_proxy": "*"},
            "https://api.unkey.com",
            None,
            {},
            id="no-proxy-star",
        ),
        pytest.param(
            {"HTTPS_PROXY": "http://corp:3128", "NO_PROXY": "10.0.0.0/8"},
            "https://10.1.2.3",
            None,
            {},
            id="no-proxy-cidr",
        ),
        pytest.param(
            {"HTTPS_PROXY": "http://corp:3128", "NO_PROXY": "other.example"},
            "https://api.unkey.com",
            None,
            {"https": "http://corp:3128"},
            id="no-proxy-other-host",
        ),
        pytest.param(
            {"HTTP_PROXY": "http://corp:3128", "HTTPS_PROXY": "http://corp:3128"},
            "http://[::1]:8787",
            None,
            {},
            id="loopback-ipv6",
        ),
        pytest.param(
            {"HTTPS_PROXY": "http://corp:3128", "NO_PROXY": "unkey.com"},
            "https://api.unkey.com",
            "http://explicit:8080",
            {"http": "http://explicit:8080", "https": "http://explicit:8080"},
            id="explicit-wins-over-no-proxy",
        ),
        pytest.param(
            {},
            "http://127.0.0.1:8787",
            "explicit:8080",
            {"http": "http://explicit:8080", "https": "http://explicit:8080"},
            id="explicit-for-loopback",
        ),
    ],
)
def test_resolve_proxies(
    clean_proxy_env: pytest.MonkeyPatch,
    env: dict[str, str],
    base_url: str,
    proxy: str | None,
    expected: dict[str, str],
) -> None:
    for name, value in env.items():
        clean_proxy_env.setenv(name, value)
    assert client_module.resolve_proxies(base_url, proxy) == expected


@pytest.mark.parametrize(
    "proxy",
    [
        pytest.param("ftp://bob:hunter2secret@corp:21", id="unsupported-scheme"),
        pytest.param("socks5://bob:hunter2secret@corp:1080", id="socks-without-pysocks"),
        pytest.param("http://bob:hunter2secret@corp:port", id="bad-port"),
        pytest.param("http://bob:hunter2secret@", id="no-host"),
    ],
)
def test_a_bad_proxy_is_refused_without_showing_its_password(
    clean_proxy_env: pytest.MonkeyPatch, proxy: str
) -> None:
    from airflow_provider_unkey.exceptions import UnkeyConfigurationError

    if proxy.startswith("socks"):
        # As without PySocks, installed or not (selenium brings it along in the test extra).
        clean_proxy_env.setitem(sys.modules, "socks", None)
    with pytest.raises(UnkeyConfigurationError) as refused:
        UnkeyClient("unkey_root_test", "https://api.unkey.com", proxy=proxy)
    assert "hunter2secret" not in str(refused.value)
    clean_proxy_env.setenv("HTTPS_PROXY", proxy)
    with pytest.raises(UnkeyConfigurationError) as from_env:
        UnkeyClient("unkey_root_test", "https://api.unkey.com")
    assert "hunter2secret" not in str(from_env.value) and "HTTPS_PROXY" in str(from_env.value)


def test_a_socks_proxy_with_pysocks(clean_proxy_env: pytest.MonkeyPatch) -> None:
    pytest.importorskip("socks", reason="PySocks comes with the test extra (through selenium)")
    client = UnkeyClient(
        "unkey_root_test", "https://api.unkey.com", proxy="socks5h://bob:hunter2secret@corp:1080"
    )
    assert client.session.proxies["https"] == "socks5h://bob:hunter2secret@corp:1080"
    assert "hunter2secret" not in repr(client)


def test_only_the_proxy_variables_of_the_environment_are_read(
    clean_proxy_env: pytest.MonkeyPatch, emulator: Any, tmp_path: Any
) -> None:
    # .netrc would give an unauthenticated call credentials, and REQUESTS_CA_BUNDLE would replace
    # `verify`: neither is read.
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login netrc_user password netrc_secret\n")
    netrc.chmod(0o600)
    clean_proxy_env.setenv("NETRC", str(netrc))
    clean_proxy_env.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "no-such-bundle.pem"))
    seen: list[str | None] = []
    with UnkeyClient("unkey_root_test", emulator.url) as client:
        client.session.hooks["response"].append(
            lambda response, *a, **k: seen.append(response.request.headers.get("Authorization"))
        )
        assert client.liveness() == "OK"
        assert client.session.verify is True
    assert seen == [None]
