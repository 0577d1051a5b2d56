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
        pytest.param(429, {"Retry-After": "0"}, 0.0, id="429-zero"),
        pytest.param(429, {"Retry-After": "-1"}, 0.0, id="429-negative"),
        pytest.param(429, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0, id="429-past-date"),
        pytest.param(429, {"RateLimit-Reset": "4"}, 4.0, id="429-reset-without-retry-after"),
        pytest.param(429, {"Retry-After": "soon", "RateLimit-Reset": "6"}, 6.0, id="429-garbage-then-reset"),
        pytest.param(429, {"Retry-After": "soon"}, EXACT.initial_wait, id="429-garbage-backs-off"),
        pytest.param(429, {}, EXACT.initial_wait, id="429-no-header-backs-off"),
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
    once = RetryPolicy(max_attempts=1)
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
