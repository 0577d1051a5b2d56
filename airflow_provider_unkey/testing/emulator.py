"""A local HTTP server with the semantics of Unkey's v2 key-migration API.

:class:`UnkeyEmulator` speaks real HTTP (``http.server``, keep-alive, one thread per connection), so a
client under test exercises its whole stack: sessions, retries, timeouts, error parsing. It answers
``keys.migrateKeys``, ``keys.verifyKey``, ``apis.getApi`` and ``liveness`` the way the real server
does (see ``BEHAVIOUR.md`` next to Unkey's OpenAPI spec), validating migration requests with
:mod:`airflow_provider_unkey.rules`, the one home of the API's rules.

:class:`Faults` injects what production does to a client: latency, 5xx answers, rate-limit storms,
reset connections and responses lost after the keys were committed.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import gc
import hashlib
import json
import math
import os
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BufferedIOBase
from typing import Any, Final

from airflow_provider_unkey import rules

__all__ = [
    "DEFAULT_ROOT_KEY_PERMISSIONS",
    "Faults",
    "RequestRecord",
    "StoredKey",
    "UnkeyEmulator",
    "seam_hash",
    "sha256_base64",
]

#: What :meth:`UnkeyEmulator.add_root_key` grants unless told otherwise.
DEFAULT_ROOT_KEY_PERMISSIONS: Final = ("api.*.create_key", "api.*.verify_key", "api.*.read_api")

ERROR_DOCS: Final = "https://unkey.com/docs/errors/"
ERR_INVALID_INPUT: Final = "unkey/application/invalid_input"
ERR_AUTH_MISSING: Final = "unkey/authentication/missing"
ERR_AUTH_MALFORMED: Final = "unkey/authentication/malformed"
ERR_KEY_NOT_FOUND: Final = "unkey/authentication/key_not_found"
ERR_INSUFFICIENT_PERMISSIONS: Final = "unkey/authorization/insufficient_permissions"
ERR_API_NOT_FOUND: Final = "unkey/data/api_not_found"
ERR_MIGRATION_NOT_FOUND: Final = "unkey/data/migration_not_found"
ERR_ROUTE_NOT_FOUND: Final = "unkey/data/route_not_found"
ERR_BODY_TOO_LARGE: Final = "user/bad_request/request_body_too_large"
ERR_TIMEOUT: Final = "user/bad_request/request_timeout"
ERR_RATE_LIMITED: Final = "user/too_many_requests/workspace_rate_limited"
ERR_UNEXPECTED: Final = "unkey/application/unexpected_error"
ERR_UNAVAILABLE: Final = "unkey/application/service_unavailable"

#: The detail of the real server's 500 after a panic (its recovery middleware's words).
PANIC_DETAIL: Final = "An unexpected error occurred while processing your request."

_NULL_REMAINING: Final = ".credits.remaining"  # where rules.server_violations reports the panic

#: Status recorded for a connection reset by :attr:`Faults.reset_rate`.
STATUS_RESET: Final = "reset"
#: Status recorded for a response dropped by :attr:`Faults.drop_after_commit_rate`.
STATUS_DROPPED: Final = "dropped_after_commit"

PATH_MIGRATE: Final = "/v2/keys.migrateKeys"
PATH_VERIFY: Final = "/v2/keys.verifyKey"
PATH_GET_API: Final = "/v2/apis.getApi"
PATH_LIVENESS: Final = "/v2/liveness"


# Unkey ids are base58 after a prefix; a byte-translation table makes them ~free to generate in bulk
# (the slight modulo bias is irrelevant for an emulator).
_B58: Final = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_TABLE: Final = bytes.maketrans(bytes(range(256)), bytes(_B58[i % 58] for i in range(256)))
_ID_LENGTH: Final = 22

_VERIFY_FIELDS: Final = frozenset({"key", "tags", "permissions", "credits", "ratelimits", "migrationId"})
_GET_API_ID_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_DRAIN_CHUNK: Final = 65536
_DRAIN_TIMEOUT: Final = 10.0


def _random_ids(prefix: str, n: int) -> list[str]:
    raw = os.urandom(_ID_LENGTH * n).translate(_B58_TABLE).decode("ascii")
    return [prefix + raw[i : i + _ID_LENGTH] for i in range(0, _ID_LENGTH * n, _ID_LENGTH)]


def _random_id(prefix: str) -> str:
    return prefix + os.urandom(_ID_LENGTH).translate(_B58_TABLE).decode("ascii")


def sha256_base64(plaintext: str) -> str:
    """Unkey's native hash of a key: standard padded base64 of the SHA-256 digest of the whole key.

    :param plaintext: the key as the user presents it.
    :return: 44 characters ending in ``=``.
    """
    return base64.b64encode(hashlib.sha256(plaintext.encode()).digest()).decode("ascii")


def seam_hash(plaintext: str) -> str:
    """The hash ``github.com/seamapi/prefixed-api-key`` stores: hex SHA-256 of the long token.

    :param plaintext: a key shaped ``<prefix>_<shortToken>_<longToken>``.
    :return: 64 lowercase hex characters.
    """
    return hashlib.sha256(plaintext.rsplit("_", 1)[-1].encode()).hexdigest()


# --- public data ---------------------------------------------------------------------------------------
@dataclass
class Faults:
    """Faults the emulator injects into API requests (never into ``/v2/liveness``). All off by default.

    Random decisions come from the emulator's one seeded :class:`random.Random`, so a single-threaded
    client sending the same requests sees the same faults on every run.

    :param latency: seconds added to every API request.
    :param latency_per_key: seconds added per key of a ``keys.migrateKeys`` request.
    :param error_rate: share (0-1) of requests answered with a status drawn from ``error_statuses``
        without committing anything.
    :param error_statuses: the statuses ``error_rate`` draws from.
    :param rate_limit_storm: the next N requests are answered 429 (counts down as they are served).
    :param storm_retry_after: ``Retry-After`` (and ``RateLimit-Reset``) seconds of a storm's 429s, which
        carry every rate-limit header like any 429 (``RateLimit-Limit`` is the configured limit, or 0).
    :param reset_rate: share of requests whose connection is reset (TCP RST) before anything is read.
    :param drop_after_commit_rate: share of successful ``keys.migrateKeys`` requests whose keys are
        committed and whose connection is then closed without any response.
    """

    latency: float = 0.0
    latency_per_key: float = 0.0
    error_rate: float = 0.0
    error_statuses: tuple[int, ...] = (500, 502, 503)
    rate_limit_storm: int = 0
    storm_retry_after: int = 1
    reset_rate: float = 0.0
    drop_after_commit_rate: float = 0.0

    def __post_init__(self) -> None:
        for name in ("error_rate", "reset_rate", "drop_after_commit_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
        for name in ("latency", "latency_per_key", "rate_limit_storm", "storm_retry_after"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        self.error_statuses = tuple(self.error_statuses)
        if self.error_rate > 0 and not self.error_statuses:
            raise ValueError("error_rate needs at least one status in error_statuses")
        if any(not 400 <= s <= 599 for s in self.error_statuses):
            raise ValueError(f"error_statuses must be 4xx/5xx statuses, got {self.error_statuses!r}")


@dataclass(slots=True)
class StoredKey:
    """A key in the emulator's store, with every field as the migration request carried it.

    A field the request left out is ``None``. ``credits_remaining`` and ``native_hash`` are the state
    later verifications change: the store holds a key under ``hash`` until a seam-hashed key is
    rehashed, then under ``native_hash`` only (the seam hash is gone, as in Unkey's database).
    """

    hash: str
    key_id: str
    workspace_id: str
    api_id: str | None
    migration_id: str | None
    name: str | None = None
    externalId: str | None = None
    meta: dict[str, Any] | None = None
    roles: list[str] | None = None
    permissions: list[str] | None = None
    expires: int | None = None
    enabled: bool | None = None
    credits: dict[str, Any] | None = None
    ratelimits: list[dict[str, Any]] | None = None
    #: Credits left now (``None`` = unlimited); decremented by valid verifications.
    credits_remaining: int | None = None
    #: Unkey's native hash, set when a seam-hashed key is rehashed on its first valid verification
    #: (which also clears its pending migration: the seam hash then resolves to nothing).
    native_hash: str | None = None

    @property
    def external_id(self) -> str | None:
        """``externalId`` under a Python name."""
        return self.externalId

    def request_fields(self) -> dict[str, Any]:
        """The key object as the migration request sent it (only the fields it carried)."""
        return {name: getattr(self, name) for name in rules.KEY_FIELDS if getattr(self, name) is not None}


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request the emulator answered (or deliberately did not).

    :param status: the HTTP status sent, or ``"reset"`` / ``"dropped_after_commit"``.
    :param hashes: every hash of a ``keys.migrateKeys`` body (empty for other requests and for
        requests whose body was never read: 413s and resets).
    :param started: :func:`time.monotonic` when the request line was read.
    :param finished: :func:`time.monotonic` just before the answer was written.
    :param fault: the fault that shaped the answer (``"latency"``, ``"error"``, ``"rate_limit_storm"``,
        ``"reset"``, ``"drop_after_commit"``), else ``None``.
    """

    method: str
    path: str
    status: int | str
    request_id: str
    hashes: tuple[str, ...]
    started: float
    finished: float
    fault: str | None = None

    @property
    def duration(self) -> float:
        """Seconds between reading the request and answering it."""
        return self.finished - self.started


# --- internals -----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _RootKey:
    workspace_id: str
    permissions: frozenset[str]

    def may(self, action: str, api_id: str | None) -> bool:
        if f"api.*.{action}" in self.permissions:
            return True
        return api_id is not None and f"api.{api_id}.{action}" in self.permissions

    def may_at_all(self, action: str) -> bool:
        suffix = f".{action}"
        return any(p.startswith("api.") and p.endswith(suffix) for p in self.permissions)


@dataclass(frozen=True, slots=True)
class _Api:
    workspace_id: str
    name: str


@dataclass(frozen=True, slots=True)
class _Migration:
    workspace_id: str
    algorithm: str


class _BodyTooLarge(Exception):
    pass


class _BadFraming(Exception):
    pass


class _Request:
    """What a route sees of one HTTP request; the body is read on demand."""

    __slots__ = ("_body", "_rfile", "headers", "method", "path", "request_id", "started")

    def __init__(
        self, method: str, path: str, headers: Message[str, str], rfile: BufferedIOBase, request_id: str
    ) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self._rfile = rfile
        self.request_id = request_id
        self.started = time.monotonic()
        self._body: bytes | None = None

    def content_length(self) -> int | None:
        raw = self.headers.get("Content-Length")
        if raw is None:
            return None
        try:
            value = int(raw)
        except ValueError:
            raise _BadFraming("Content-Length is not an integer") from None
        if value < 0:
            raise _BadFraming("Content-Length is negative")
        return value

    def body(self) -> bytes:
        if self._body is None:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                self._body = self._read_chunked()
            else:
                length = self.content_length() or 0
                if length > rules.MAX_BODY_BYTES:
                    raise _BodyTooLarge
                self._body = self._rfile.read(length) if length else b""
                if len(self._body) != length:
                    raise _BadFraming("the body ended early")
        return self._body

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self._rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BadFraming("bad chunk size") from None
            if size == 0:
                while self._rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                if total > rules.MAX_BODY_BYTES:
                    raise _BodyTooLarge
                return b"".join(parts)
            total += size
            if total > rules.MAX_BODY_BYTES:
                # Too large: discard the rest (nothing is kept) so the client gets to read the 413.
                parts.clear()
                while size > 0:
                    got = len(self._rfile.read(min(size, _DRAIN_CHUNK)))
                    if not got:
                        raise _BadFraming("the body ended early")
                    size -= got
            else:
                parts.append(self._rfile.read(size))
            self._rfile.readline(1024)


@dataclass(frozen=True, slots=True)
class _FaultDraw:
    """The faults one request gets, drawn at once under the fault lock."""

    latency: float
    latency_per_key: float
    storm_retry_after: int | None = None  # set: this request is part of a rate-limit storm
    reset: bool = False
    error_status: int | None = None


_RESPOND: Final = "respond"
_RESET: Final = "reset"
_DROP: Final = "drop"


@dataclass(frozen=True, slots=True)
class _Quota:
    """A workspace's rate-limit state as one answer reports it."""

    limit: int
    remaining: int
    reset: int  # whole seconds until the window frees capacity (not a timestamp)
    allowed: bool

    def headers(self) -> tuple[tuple[str, str], ...]:
        return (
            ("RateLimit-Limit", str(self.limit)),
            ("RateLimit-Remaining", str(self.remaining)),
            ("RateLimit-Reset", str(self.reset)),
        )


@dataclass(slots=True)
class _Reply:
    status: int
    body: bytes
    problem: bool = False  # an error body: problem+json when the client accepts it
    headers: tuple[tuple[str, str], ...] = ()
    close: bool = False
    drain: int = 0  # bytes of an unread body to discard after answering, so the client sees the answer
    action: str = _RESPOND
    fault: str | None = None
    hashes: tuple[str, ...] = ()


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _accepts_problem_json(accept: str | None) -> bool:
    """Whether ``Accept`` allows ``application/problem+json`` (no header allows anything)."""
    if accept is None:
        return True
    for item in accept.split(","):
        media, *params = (p.strip() for p in item.split(";"))
        if media.lower() not in ("application/problem+json", "application/*", "*/*"):
            continue
        q = next((p[2:] for p in params if p.lower().startswith("q=")), "1")
        try:
            if float(q) > 0:
                return True
        except ValueError:
            return True
    return False


def _violation_entries(violations: Iterable[rules.Violation]) -> list[dict[str, str]]:
    out = []
    for v in violations:
        entry = {"location": v.location, "message": v.message}
        if v.fix:
            entry["fix"] = v.fix
        out.append(entry)
    return out


def _hashes_of(body: Any) -> tuple[str, ...]:
    if not isinstance(body, dict):
        return ()
    keys = body.get("keys")
    if not isinstance(keys, list):
        return ()
    return tuple(k["hash"] for k in keys if isinstance(k, dict) and isinstance(k.get("hash"), str))


def _check_rate_limit(limit: int | None, window: float) -> None:
    if limit is not None and limit < 0:
        raise ValueError(f"rate_limit must be >= 0, got {limit!r}")
    if window <= 0:
        raise ValueError(f"rate_limit_window must be > 0, got {window!r}")


_INVALID_JSON: Final = object()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# Python's json accepts NaN and Infinity; a JSON parser (and the real server's) does not.
_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)


def _decode_json(raw: bytes) -> Any:
    """The decoded body, or ``_INVALID_JSON``."""
    try:
        return _DECODER.decode(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return _INVALID_JSON


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], emulator: UnkeyEmulator) -> None:
        self.emulator = emulator
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "UnkeyEmulator"
    sys_version = ""
    server: _Server

    def setup(self) -> None:
        super().setup()
        # One write per response, but small ones must not wait for a delayed ACK either.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.emulator._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.emulator._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request stderr log: :attr:`UnkeyEmulator.requests` is the log."""

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = do_GET

    def _dispatch(self) -> None:
        emu = self.server.emulator
        req = _Request(self.command, self.path.split("?", 1)[0], self.headers, self.rfile, _random_id("req_"))
        try:
            reply = emu._serve(req)
        except Exception as exc:  # a bug in the emulator must still be an answer, not a hung client
            reply = emu._error(req, 500, f"The emulator failed: {exc!r}", ERR_UNEXPECTED, close=True)
        finished = time.monotonic()
        if reply.action == _RESET:
            status: int | str = STATUS_RESET
        elif reply.action == _DROP:
            status = STATUS_DROPPED
        else:
            status = reply.status
        # Log before answering: a client that has its answer must find the request in the log.
        emu._record(
            RequestRecord(
                req.method, req.path, status, req.request_id, reply.hashes, req.started, finished, reply.fault
            )
        )
        if reply.action == _RESET:
            self._abort(reset=True)
            return
        if reply.action == _DROP:
            self._abort(reset=False)
            return
        self._write(reply, req)
        if reply.drain:
            self._drain(reply.drain)
        if reply.close:
            self.close_connection = True

    def _write(self, reply: _Reply, req: _Request) -> None:
        if reply.problem and _accepts_problem_json(req.headers.get("Accept")):
            content_type = "application/problem+json"
        else:
            content_type = "application/json"
        lines = [
            f"HTTP/1.1 {reply.status} {HTTPStatus(reply.status).phrase}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(reply.body)}",
        ]
        lines.extend(f"{name}: {value}" for name, value in reply.headers)
        if reply.close:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        # One write: headers and body in the same segment(s).
        self.wfile.write(head if req.method == "HEAD" else head + reply.body)

    def _drain(self, remaining: int) -> None:
        # Discard the rest of an oversized body so the client, still sending, gets to read our 413
        # instead of a reset; nothing is kept.
        self.connection.settimeout(_DRAIN_TIMEOUT)
        try:
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, _DRAIN_CHUNK))
                if not chunk:
                    break
                remaining -= len(chunk)
        except OSError:
            pass

    def _abort(self, *, reset: bool) -> None:
        self.close_connection = True
        if reset:
            # SO_LINGER 0: close() sends RST, and the client sees ECONNRESET rather than an orderly EOF.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # rfile holds a reference to the socket: close it first or close() would not close the fd.
        self.rfile.close()
        self.connection.close()


# --- the emulator --------------------------------------------------------------------------------------
class UnkeyEmulator:
    """A local, thread-safe HTTP server answering like Unkey's v2 API for key migration.

    :param host: interface to bind.
    :param port: port to bind; 0 picks a free one (see :attr:`url` after :meth:`start`).
    :param rate_limit: requests per window per workspace (every authenticated API request counts);
        ``None`` for no limit. While set, every answer to an authenticated request carries
        ``RateLimit-Limit``, ``RateLimit-Remaining`` and ``RateLimit-Reset``; change it with
        :meth:`set_rate_limit`.
    :param rate_limit_window: the fixed window of ``rate_limit``, in seconds.
    :param rate_limit_clock: the rate limiter's clock (monotonic seconds); a test can pass one it
        advances itself to reach a window's end without waiting for it.
    :param faults: faults to inject from the start; change them later with :meth:`set_faults`.
    :param seed: seed of the random decisions behind :class:`Faults`.
    :param server_timeout: the server's own per-request timeout (408 past it, nothing committed).
    :param freeze_gc: call :func:`gc.freeze` after every commit, so the cyclic garbage collector stops
        rescanning the ever-growing store (it otherwise costs up to 40 % of the throughput with keys
        carrying meta, roles and credits). Process-wide: meant for a process of its own, like the CLI.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        rate_limit: int | None = None,
        rate_limit_window: float = 60.0,
        rate_limit_clock: Callable[[], float] = time.monotonic,
        faults: Faults | None = None,
        seed: int = 0,
        server_timeout: float = rules.SERVER_TIMEOUT_SECONDS,
        freeze_gc: bool = False,
    ) -> None:
        _check_rate_limit(rate_limit, rate_limit_window)
        self.host = host
        self.port = port
        self.rate_limit = rate_limit
        self.rate_limit_window = rate_limit_window
        self.server_timeout = server_timeout
        self.seed = seed
        self.freeze_gc = freeze_gc
        # The store: one lock around everything a request reads or commits.
        self._lock = threading.Lock()
        self._root_keys: dict[str, _RootKey] = {}
        self._apis: dict[str, _Api] = {}
        self._migrations: dict[str, _Migration] = {}
        # The hash index: the one hash each key is stored under now (as migrated, or its native hash
        # once a seam key was rehashed). Unique across workspaces, like Unkey's hash column.
        self._keys: dict[str, StoredKey] = {}
        self._identities: dict[tuple[str, str], str] = {}
        # Faults and their one seeded RNG.
        self._fault_lock = threading.Lock()
        self._faults = dataclasses.replace(faults) if faults is not None else Faults()
        self._rng = random.Random(seed)
        # Rate-limit windows: workspace -> [window start, count].
        self._rate_limit_clock = rate_limit_clock
        self._window_lock = threading.Lock()
        self._windows: dict[str, list[float]] = {}
        # The log.
        self._log_lock = threading.Lock()
        self._requests: list[RequestRecord] = []
        self._hash_counts: Counter[str] = Counter()
        self._status_counts: Counter[int | str] = Counter()
        # The server.
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()

    # --- set-up ---------------------------------------------------------------------------------------
    @classmethod
    def quick(
        cls,
        root_key: str = "unkey_root_test",
        api_id: str = "api_test",
        migration_id: str = "mig_test",
        algorithm: str = rules.ALGORITHM_SHA256,
        **kwargs: Any,
    ) -> UnkeyEmulator:
        """An emulator with one root key (default permissions), one API and one migration, not started.

        :param kwargs: passed to the constructor (``port``, ``rate_limit``, ``faults``, ...).
        """
        emu = cls(**kwargs)
        emu.add_root_key(root_key)
        emu.add_api(api_id)
        emu.add_migration(migration_id, algorithm=algorithm)
        return emu

    def add_root_key(
        self,
        key: str,
        workspace_id: str = "ws_default",
        permissions: Iterable[str] = DEFAULT_ROOT_KEY_PERMISSIONS,
    ) -> None:
        """Register a root key of ``workspace_id`` holding ``permissions`` (``api.*.create_key``, ...)."""
        perms = frozenset([permissions] if isinstance(permissions, str) else permissions)
        with self._lock:
            self._root_keys[key] = _RootKey(workspace_id, perms)

    def add_api(self, api_id: str, workspace_id: str = "ws_default", name: str | None = None) -> None:
        """Register an API (a keyspace) in ``workspace_id``; ``name`` defaults to the id."""
        with self._lock:
            self._apis[api_id] = _Api(workspace_id, name or api_id)

    def add_migration(
        self, migration_id: str, workspace_id: str = "ws_default", algorithm: str = rules.ALGORITHM_SHA256
    ) -> None:
        """Register a migration id, as Unkey support would, for ``workspace_id``.

        :param algorithm: ``"sha256"`` or ``"github.com/seamapi/prefixed-api-key"`` (alias ``"seam"``).
        :raises ValueError: for any other algorithm.
        """
        normalised = rules.canonical_algorithm(algorithm)
        with self._lock:
            self._migrations[migration_id] = _Migration(workspace_id, normalised)

    def add_existing_hash(self, hash: str, workspace_id: str = "ws_other") -> StoredKey:
        """Store a key that already exists in Unkey (a migration of it lands in ``failed``).

        :return: the stored key (no API, no migration).
        """
        key = StoredKey(hash, _random_id("key_"), workspace_id, None, None)
        with self._lock:
            if hash in self._keys:
                raise ValueError(f"a key with hash {hash!r} already exists")
            self._keys[hash] = key
        return key

    # --- life cycle -----------------------------------------------------------------------------------
    def start(self) -> UnkeyEmulator:
        """Bind and serve in a daemon thread.

        :return: ``self``.
        :raises RuntimeError: when already started.
        """
        if self._server is not None:
            raise RuntimeError("the emulator is already running")
        server = _Server((self.host, self.port), self)
        self.port = server.server_address[1]
        self._server = server
        # serve_forever notices shutdown() only between polls: a short poll keeps stop() fast.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.01}, name="unkey-emulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every connection, idle keep-alive ones included. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._conn_lock:
            connections = list(self._connections)
        for conn in connections:
            # Wakes the handler thread blocked on the next request line; it then ends.
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def running(self) -> bool:
        """Whether the server is serving."""
        return self._server is not None

    def __enter__(self) -> UnkeyEmulator:
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server.

        :raises RuntimeError: before :meth:`start` when the port is still 0.
        """
        if self.port == 0:
            raise RuntimeError("the emulator has no port yet: start() it first")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._conn_lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    # --- faults ---------------------------------------------------------------------------------------
    @property
    def faults(self) -> Faults:
        """A copy of the faults in force (``rate_limit_storm`` is what is left of the storm)."""
        with self._fault_lock:
            return dataclasses.replace(self._faults)

    def set_faults(self, **fields: Any) -> Faults:
        """Change some fault fields while running (thread-safe); unnamed fields keep their values.

        :return: the faults now in force.
        :raises TypeError: for a name that is not a :class:`Faults` field.
        """
        with self._fault_lock:
            self._faults = dataclasses.replace(self._faults, **fields)
            return dataclasses.replace(self._faults)

    # --- rate limit -----------------------------------------------------------------------------------
    def set_rate_limit(self, limit: int | None, window: float | None = None) -> None:
        """Switch the workspace rate limit on (``limit`` requests per ``window`` s) or off (``None``).

        Thread-safe, while running too; every workspace starts a fresh window.

        :param window: seconds; ``None`` keeps the current window.
        :raises ValueError: for a negative limit or a window that is not positive.
        """
        window = self.rate_limit_window if window is None else window
        _check_rate_limit(limit, window)
        with self._window_lock:
            self.rate_limit, self.rate_limit_window = limit, window
            self._windows.clear()

    # --- inspection -----------------------------------------------------------------------------------
    @property
    def keys(self) -> dict[str, StoredKey]:
        """A snapshot of the store's hash index: the hash each key is stored under -> the key.

        That is the hash it was migrated (or seeded) with, or, for a seam-hashed key rehashed by its
        first valid verification, its native hash (:attr:`StoredKey.native_hash`) instead.
        """
        with self._lock:
            return dict(self._keys)

    @property
    def requests(self) -> list[RequestRecord]:
        """A snapshot of the request log, oldest first."""
        with self._log_lock:
            return list(self._requests)

    @property
    def hash_counts(self) -> Counter[str]:
        """How many times each hash arrived in a ``keys.migrateKeys`` body, whatever the answer."""
        with self._log_lock:
            return Counter(self._hash_counts)

    @property
    def status_counts(self) -> Counter[int | str]:
        """How many answers of each status were sent (``"reset"``, ``"dropped_after_commit"`` too)."""
        with self._log_lock:
            return Counter(self._status_counts)

    def reset_log(self) -> None:
        """Forget the request log and counters; the store and the rate-limit windows stay."""
        with self._log_lock:
            self._requests.clear()
            self._hash_counts.clear()
            self._status_counts.clear()

    def _record(self, record: RequestRecord) -> None:
        with self._log_lock:
            self._requests.append(record)
            self._status_counts[record.status] += 1
            if record.hashes:
                self._hash_counts.update(record.hashes)

    # --- answers --------------------------------------------------------------------------------------
    @staticmethod
    def _ok(req: _Request, data: Any) -> _Reply:
        return _Reply(200, _dumps({"meta": {"requestId": req.request_id}, "data": data}))

    @staticmethod
    def _error(
        req: _Request,
        status: int,
        detail: str,
        type_: str,
        *,
        errors: list[dict[str, str]] | None = None,
        headers: tuple[tuple[str, str], ...] = (),
        close: bool = False,
        fault: str | None = None,
    ) -> _Reply:
        error: dict[str, Any] = {
            "title": HTTPStatus(status).phrase,
            "detail": detail,
            "status": status,
            "type": ERROR_DOCS + type_,
        }
        if status == 400:
            # The spec requires errors[] on every 400.
            error["errors"] = errors if errors is not None else []
        body = _dumps({"meta": {"requestId": req.request_id}, "error": error})
        return _Reply(status, body, problem=True, headers=headers, close=close, fault=fault)

    def _bad_framing(self, req: _Request, exc: _BadFraming, location: str) -> _Reply:
        """400 for a body that cannot be read as sent; the connection cannot be reused after it."""
        return self._error(
            req,
            400,
            str(exc),
            ERR_INVALID_INPUT,
            close=True,
            errors=[{"location": location, "message": str(exc)}],
        )

    def _bad_request(self, req: _Request, detail: str, violations: Iterable[rules.Violation]) -> _Reply:
        return self._error(req, 400, detail, ERR_INVALID_INPUT, errors=_violation_entries(violations))

    # --- the request pipeline -------------------------------------------------------------------------
    def _serve(self, req: _Request) -> _Reply:
        route: Callable[[_Request, Any, _RootKey], _Reply]
        if req.path == PATH_LIVENESS and req.method in ("GET", "HEAD"):
            return self._ok(req, {"message": "OK"})
        if req.method == "POST" and req.path == PATH_MIGRATE:
            route = self._migrate
        elif req.method == "POST" and req.path == PATH_VERIFY:
            route = self._verify
        elif req.method == "POST" and req.path == PATH_GET_API:
            route = self._get_api
        else:
            return self._drained(req, self._error(req, 404, "Route not found.", ERR_ROUTE_NOT_FOUND))

        # 413 first, from Content-Length alone: an oversized body is never buffered.
        try:
            length = req.content_length()
        except _BadFraming as exc:
            return self._bad_framing(req, exc, "header.Content-Length")
        if length is not None and length > rules.MAX_BODY_BYTES:
            return self._too_large(req, drain=length)

        draw = self._draw_faults()
        if draw.reset:
            return _Reply(0, b"", action=_RESET, fault="reset")

        try:
            raw = req.body()
        except _BodyTooLarge:
            return self._too_large(req, drain=0)
        except _BadFraming as exc:
            return self._bad_framing(req, exc, "body")
        body = _decode_json(raw)
        hashes = _hashes_of(body) if req.path == PATH_MIGRATE else ()
        reply = self._delay_and_route(req, route, body, len(hashes), draw)
        reply.hashes = hashes
        return reply

    def _draw_faults(self) -> _FaultDraw:
        with self._fault_lock:
            faults = self._faults
            if faults.rate_limit_storm > 0:
                faults.rate_limit_storm -= 1
                return _FaultDraw(faults.latency, 0.0, storm_retry_after=faults.storm_retry_after)
            # Draw only for faults that are on: the sequence one fault sees does not depend on the
            # fields of faults that are off.
            rng = self._rng
            reset = faults.reset_rate > 0 and rng.random() < faults.reset_rate
            error_status = None
            if not reset and faults.error_rate > 0 and rng.random() < faults.error_rate:
                error_status = rng.choice(faults.error_statuses)
            return _FaultDraw(faults.latency, faults.latency_per_key, reset=reset, error_status=error_status)

    def _delay_and_route(
        self,
        req: _Request,
        route: Callable[[_Request, Any, _RootKey], _Reply],
        body: Any,
        n_keys: int,
        draw: _FaultDraw,
    ) -> _Reply:
        delay = draw.latency + draw.latency_per_key * n_keys
        fault = "latency" if delay > 0 else None
        if delay > 0:
            left = req.started + self.server_timeout - time.monotonic()
            if delay >= left:
                time.sleep(max(0.0, left))
                return self._timeout(req, fault)
            time.sleep(delay)
        if draw.storm_retry_after is not None:
            return self._too_many_requests(
                req,
                "Too many requests: the workspace is being rate limited.",
                self._exhausted(draw.storm_retry_after),
                fault="rate_limit_storm",
            )
        if draw.error_status == 429:
            return self._too_many_requests(req, "Injected fault.", self._exhausted(1), fault="error")
        if draw.error_status is not None:
            error_status = draw.error_status
            return self._error(
                req, error_status, "Injected fault.", self._error_type(error_status), fault="error"
            )

        root = self._authenticate(req)
        if isinstance(root, _Reply):
            return root
        quota = self._count_request(root.workspace_id)
        if quota is not None and not quota.allowed:
            return self._too_many_requests(
                req,
                f"The workspace exceeded its rate limit of {quota.limit} requests per "
                f"{self.rate_limit_window:g} s.",
                quota,
            )
        reply = route(req, body, root)
        if quota is not None:
            # A limited workspace sees its quota on every answer, whatever the status.
            reply.headers += quota.headers()
        if reply.fault is None:
            reply.fault = fault
        return reply

    @staticmethod
    def _error_type(status: int) -> str:
        return {
            400: ERR_INVALID_INPUT,
            401: ERR_KEY_NOT_FOUND,
            403: ERR_INSUFFICIENT_PERMISSIONS,
            404: ERR_ROUTE_NOT_FOUND,
            408: ERR_TIMEOUT,
            413: ERR_BODY_TOO_LARGE,
            429: ERR_RATE_LIMITED,
            502: ERR_UNAVAILABLE,
            503: ERR_UNAVAILABLE,
            504: ERR_UNAVAILABLE,
        }.get(status, ERR_UNEXPECTED)

    def _too_large(self, req: _Request, drain: int) -> _Reply:
        reply = self._error(
            req,
            413,
            f"The request body exceeds the limit of {rules.MAX_BODY_BYTES} bytes.",
            ERR_BODY_TOO_LARGE,
            close=True,
        )
        reply.drain = drain
        return reply

    def _timeout(self, req: _Request, fault: str | None) -> _Reply:
        return self._error(
            req,
            408,
            f"The request took longer than the server timeout of {self.server_timeout:g} s; "
            "nothing was committed.",
            ERR_TIMEOUT,
            fault=fault,
        )

    def _drained(self, req: _Request, reply: _Reply) -> _Reply:
        # Keep the connection usable after a 404: consume a (reasonably sized) body.
        try:
            length = req.content_length()
            if length is not None and length > rules.MAX_BODY_BYTES:
                reply.close, reply.drain = True, length
            else:
                req.body()
        except (_BadFraming, _BodyTooLarge):
            reply.close = True
        return reply

    def _authenticate(self, req: _Request) -> _RootKey | _Reply:
        header = req.headers.get("Authorization")
        if header is None or not header.strip():
            return self._error(
                req,
                400,
                "Authorization header is missing, but required.",
                ERR_AUTH_MISSING,
                errors=[
                    {
                        "location": "header.Authorization",
                        "message": "is required",
                        "fix": "send 'Authorization: Bearer <root key>'",
                    }
                ],
            )
        header = header.strip()
        token = header[7:].strip() if header.startswith("Bearer ") else ""
        if not token:
            return self._error(
                req,
                400,
                "Authorization header must be 'Bearer <root key>'.",
                ERR_AUTH_MALFORMED,
                errors=[{"location": "header.Authorization", "message": "must be 'Bearer <root key>'"}],
            )
        root = self._root_keys.get(token)
        if root is None:
            return self._error(req, 401, "The provided root key was not found.", ERR_KEY_NOT_FOUND)
        return root

    def _count_request(self, workspace_id: str) -> _Quota | None:
        """Count one request against its workspace's window; ``None`` while no limit is set.

        A refused request does not count: the window frees capacity at its end either way.
        """
        if self.rate_limit is None:
            return None
        with self._window_lock:
            limit, window = self.rate_limit, self.rate_limit_window
            if limit is None:
                return None
            now = self._rate_limit_clock()
            current = self._windows.get(workspace_id)
            # Elapsed time, not the window's end: ``start + window - now`` can round above the window.
            if current is None or now - current[0] >= window:
                current = self._windows[workspace_id] = [now, 0.0]
            allowed = current[1] < limit
            if allowed:
                current[1] += 1
            used, left = int(current[1]), window - (now - current[0])
        return _Quota(limit, limit - used, max(1, math.ceil(left)), allowed)

    def _exhausted(self, reset: int) -> _Quota:
        """The quota a 429 fault reports: none left, capacity back in ``reset`` seconds."""
        limit = self.rate_limit
        return _Quota(0 if limit is None else limit, 0, reset, allowed=False)

    def _too_many_requests(
        self, req: _Request, detail: str, quota: _Quota, fault: str | None = None
    ) -> _Reply:
        headers = (*quota.headers(), ("Retry-After", str(quota.reset)))
        return self._error(req, 429, detail, ERR_RATE_LIMITED, headers=headers, fault=fault)

    # --- routes ---------------------------------------------------------------------------------------
    def _invalid_json(self, req: _Request) -> _Reply:
        return self._bad_request(
            req, "The request body is not valid JSON.", [rules.Violation("body", "must be a JSON object")]
        )

    def _api_in_reach(self, req: _Request, root: _RootKey, action: str, api_id: str) -> _Api | _Reply:
        """The API, or the 403 (permission first, as the real handlers check) or 404 to answer."""
        if not root.may(action, api_id):
            return self._error(
                req,
                403,
                f"The root key needs 'api.*.{action}' or 'api.{api_id}.{action}'.",
                ERR_INSUFFICIENT_PERMISSIONS,
            )
        api = self._apis.get(api_id)
        if api is None or api.workspace_id != root.workspace_id:
            return self._error(req, 404, f"The API {api_id!r} does not exist.", ERR_API_NOT_FOUND)
        return api

    def _migrate(self, req: _Request, body: Any, root: _RootKey) -> _Reply:
        if body is _INVALID_JSON:
            return self._invalid_json(req)
        violations = rules.schema_violations(body)
        if violations:
            return self._bad_request(
                req, f"POST request body for '{PATH_MIGRATE}' failed to validate schema", violations
            )
        api_id: str = body["apiId"]
        migration_id: str = body["migrationId"]
        api = self._api_in_reach(req, root, "create_key", api_id)
        if isinstance(api, _Reply):
            return api
        migration = self._migrations.get(migration_id)
        if migration is None or migration.workspace_id != root.workspace_id:
            return self._error(
                req, 404, f"The migration {migration_id!r} does not exist.", ERR_MIGRATION_NOT_FOUND
            )
        # Every 400 wins over every 500: the server checks each key before it builds any row.
        server = rules.server_violations(body)
        bad = [v for v in server if v.status == 400]
        if bad:
            return self._bad_request(req, "The request cannot be processed.", bad)
        if any(v.location.endswith(_NULL_REMAINING) for v in server):
            # "credits": {"remaining": null} (the rules' only 500 there): the handler dereferences it
            # while building the rows, before any insert, panics, and the recovery middleware answers
            # 500. Nothing of the request is committed.
            return self._error(req, 500, PANIC_DETAIL, ERR_UNEXPECTED)
        if server:
            # The real server fails the insert and rolls the whole transaction back.
            first = server[0]
            return self._error(
                req,
                500,
                f"An internal error occurred; nothing was migrated ({first.location} {first.message}).",
                ERR_UNEXPECTED,
            )

        keys: list[dict[str, Any]] = body["keys"]
        key_ids = _random_ids("key_", len(keys))
        workspace_id = root.workspace_id
        migrated: list[dict[str, str]] = []
        failed: list[str] = []
        with self._lock:
            # The transaction: a request past the server timeout commits nothing.
            if time.monotonic() - req.started > self.server_timeout:
                return self._timeout(req, None)
            store = self._keys
            for key, key_id in zip(keys, key_ids, strict=True):
                h = key["hash"]
                if h in store:
                    failed.append(h)
                    continue
                get = key.get
                credits = get("credits")
                stored = StoredKey(
                    h,
                    key_id,
                    workspace_id,
                    api_id,
                    migration_id,
                    get("name"),
                    get("externalId"),
                    get("meta"),
                    get("roles"),
                    get("permissions"),
                    get("expires"),
                    get("enabled"),
                    credits,
                    get("ratelimits"),
                    credits["remaining"] if credits is not None else None,
                )
                store[h] = stored
                migrated.append({"hash": h, "keyId": key_id})
        if migrated and self.freeze_gc:
            gc.freeze()
        reply = self._ok(req, {"migrated": migrated, "failed": failed})
        if migrated:
            with self._fault_lock:
                rate = self._faults.drop_after_commit_rate
                drop = rate > 0 and self._rng.random() < rate
            if drop:
                reply.action, reply.fault = _DROP, "drop_after_commit"
        return reply

    def _verify(self, req: _Request, body: Any, root: _RootKey) -> _Reply:
        if body is _INVALID_JSON:
            return self._invalid_json(req)
        violations = _verify_violations(body)
        if violations:
            return self._bad_request(
                req, f"POST request body for '{PATH_VERIFY}' failed to validate schema", violations
            )
        if not root.may_at_all("verify_key"):
            return self._error(
                req,
                403,
                "The root key needs 'api.*.verify_key' or 'api.<apiId>.verify_key'.",
                ERR_INSUFFICIENT_PERMISSIONS,
            )
        plaintext: str = body["key"]
        migration_id: str | None = body.get("migrationId")
        cost = body["credits"]["cost"] if "credits" in body else 1
        native = sha256_base64(plaintext)
        with self._lock:
            store = self._keys
            stored = store.get(native)
            seam_key: str | None = None  # the seam hash the key was found under
            if stored is None and migration_id is not None:
                # Only a key not found by its native hash consults the migration. An unknown migration
                # (or another workspace's) is no error: the key is simply not found.
                migration = self._migrations.get(migration_id)
                if (
                    migration is not None
                    and migration.workspace_id == root.workspace_id
                    and migration.algorithm == rules.ALGORITHM_SEAM
                ):
                    hex_hash = seam_hash(plaintext)
                    for candidate in (hex_hash, hex_hash.upper()):
                        stored = store.get(candidate)
                        if stored is not None:
                            seam_key = candidate
                            break
            if stored is None or stored.workspace_id != root.workspace_id:
                return self._ok(req, {"valid": False, "code": "NOT_FOUND"})
            if not root.may("verify_key", stored.api_id):
                return self._error(
                    req,
                    403,
                    f"The root key needs 'api.*.verify_key' or 'api.{stored.api_id}.verify_key'.",
                    ERR_INSUFFICIENT_PERMISSIONS,
                )
            remaining = stored.credits_remaining
            if stored.enabled is False:
                code = "DISABLED"
            elif stored.expires is not None and stored.expires <= time.time() * 1000:
                code = "EXPIRED"
            elif remaining is not None and (remaining == 0 or remaining < cost):
                code = "USAGE_EXCEEDED"
            else:
                code = "VALID"
                if remaining is not None:
                    stored.credits_remaining = remaining = remaining - cost
                if seam_key is not None and stored.migration_id == migration_id:
                    # Unkey replaces the seam hash with its own hash of the whole key and clears the
                    # key's pending migration: from now on the seam hash exists nowhere, and migrating
                    # it again creates a second key.
                    del store[seam_key]
                    stored.native_hash = native
                    store[native] = stored
            identity = None
            if stored.externalId is not None:
                ident_key = (stored.workspace_id, stored.externalId)
                identity_id = self._identities.get(ident_key)
                if identity_id is None:
                    identity_id = self._identities[ident_key] = _random_id("id_")
                identity = {"id": identity_id, "externalId": stored.externalId}
            data: dict[str, Any] = {
                "valid": code == "VALID",
                "code": code,
                "keyId": stored.key_id,
                "enabled": stored.enabled is not False,
            }
            for name, value in (
                ("name", stored.name),
                ("meta", stored.meta),
                ("expires", stored.expires),
                ("credits", remaining),
                ("roles", stored.roles),
                ("permissions", stored.permissions),
                ("identity", identity),
            ):
                if value is not None:
                    data[name] = value
            return self._ok(req, data)

    def _get_api(self, req: _Request, body: Any, root: _RootKey) -> _Reply:
        if body is _INVALID_JSON:
            return self._invalid_json(req)
        violations = _get_api_violations(body)
        if violations:
            return self._bad_request(
                req, f"POST request body for '{PATH_GET_API}' failed to validate schema", violations
            )
        api_id: str = body["apiId"]
        api = self._api_in_reach(req, root, "read_api", api_id)
        if isinstance(api, _Reply):
            return api
        return self._ok(req, {"id": api_id, "name": api.name})


# --- request schemas of the two read endpoints (rules.py covers keys.migrateKeys) -----------------------
def _verify_violations(body: Any) -> list[rules.Violation]:
    """``V2KeysVerifyKeyRequestBody``: the fields the emulator reads, checked to the letter."""
    if not isinstance(body, dict):
        return [rules.Violation("body", "must be an object")]
    out = [
        rules.Violation(f"body.{name}", "additional property is not allowed")
        for name in body
        if name not in _VERIFY_FIELDS
    ]
    key = body.get("key")
    if "key" not in body:
        out.append(rules.Violation("body.key", "is required"))
    elif not isinstance(key, str) or not 1 <= len(key) <= 512:
        out.append(rules.Violation("body.key", "must be a string of 1 to 512 characters"))
    migration_id = body.get("migrationId")
    if "migrationId" in body and (not isinstance(migration_id, str) or len(migration_id) > 256):
        out.append(rules.Violation("body.migrationId", "must be a string of at most 256 characters"))
    if "credits" in body:
        credits = body["credits"]
        cost = credits.get("cost") if isinstance(credits, dict) else None
        if (
            not isinstance(credits, dict)
            or set(credits) != {"cost"}
            or isinstance(cost, bool)
            or not isinstance(cost, int)
            or not 0 <= cost <= 1_000_000_000_000
        ):
            out.append(rules.Violation("body.credits", "must be {cost: integer 0..1000000000000}"))
    tags = body.get("tags")
    if "tags" in body and (
        not isinstance(tags, list)
        or len(tags) > 20
        or any(not isinstance(t, str) or not 1 <= len(t) <= 512 for t in tags)
    ):
        out.append(rules.Violation("body.tags", "must be at most 20 strings of 1 to 512 characters"))
    permissions = body.get("permissions")
    if "permissions" in body and (not isinstance(permissions, str) or not 1 <= len(permissions) <= 1000):
        out.append(rules.Violation("body.permissions", "must be a string of 1 to 1000 characters"))
    if "ratelimits" in body and not isinstance(body["ratelimits"], list):
        out.append(rules.Violation("body.ratelimits", "must be an array"))
    return out


def _get_api_violations(body: Any) -> list[rules.Violation]:
    """``V2ApisGetApiRequestBody``: ``{apiId}``, 8-255 characters of ``[a-zA-Z0-9_]``."""
    if not isinstance(body, dict):
        return [rules.Violation("body", "must be an object")]
    out = [
        rules.Violation(f"body.{name}", "additional property is not allowed")
        for name in body
        if name != "apiId"
    ]
    api_id = body.get("apiId")
    if "apiId" not in body:
        out.append(rules.Violation("body.apiId", "is required"))
    elif not isinstance(api_id, str) or not 8 <= len(api_id) <= 255:
        out.append(rules.Violation("body.apiId", "must be a string of 8 to 255 characters"))
    elif not set(api_id) <= _GET_API_ID_CHARS:
        out.append(rules.Violation("body.apiId", "must match the pattern ^[a-zA-Z0-9_]+$"))
    return out
