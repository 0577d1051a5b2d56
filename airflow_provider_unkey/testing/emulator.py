"""A local HTTP server with the semantics of Unkey's v2 key-migration API.

:class:`UnkeyEmulator` speaks real HTTP (``http.server``, keep-alive, one thread per connection), so a
client under test exercises its whole stack: sessions, retries, timeouts, error parsing. It answers
``keys.migrateKeys``, ``keys.verifyKey``, ``apis.getApi`` and ``liveness`` the way the real server
does (see ``BEHAVIOUR.md`` next to Unkey's OpenAPI spec), validating migration requests with
:mod:`airflow_provider_unkey.rules`, the one home of the API's rules.

:class:`Faults` injects what production does to a client: latency, 5xx answers, rate-limit storms,
reset connections and responses lost after the keys were committed.

This module is the façade; the parts live next to it:

- :mod:`~airflow_provider_unkey.testing.transport`: the HTTP server, request framing, writing answers;
- :mod:`~airflow_provider_unkey.testing.faults`: :class:`Faults` and drawing each request's faults;
- :mod:`~airflow_provider_unkey.testing.controls`: the emulator's methods that change and read it while
  it runs (faults, rate limit, production traffic, capacity; the store, the log, the counters);
- :mod:`~airflow_provider_unkey.testing.store`: keys, root keys, APIs, migrations, identities;
- :mod:`~airflow_provider_unkey.testing.ratelimit`: the workspace rate limiter;
- :mod:`~airflow_provider_unkey.testing.request_log`: the request log;
- :mod:`~airflow_provider_unkey.testing.production`: the workspace's own production traffic, counted
  against the same rate limit;
- :mod:`~airflow_provider_unkey.testing.pipeline`: what every API request goes through before its route;
- :mod:`~airflow_provider_unkey.testing.routes`: the endpoints, with
  :mod:`~airflow_provider_unkey.testing.schemas` (request bodies) and
  :mod:`~airflow_provider_unkey.testing.replies` (answer and error bodies).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

from airflow_provider_unkey import rules
from airflow_provider_unkey.testing import replies, routes, transport
from airflow_provider_unkey.testing.capacity import Capacity, Load, Stats
from airflow_provider_unkey.testing.controls import EmulatorControls
from airflow_provider_unkey.testing.faults import FaultDraw, Faults, FaultSource
from airflow_provider_unkey.testing.pipeline import Pipeline
from airflow_provider_unkey.testing.production import Production, ProductionBurst, ProductionStats
from airflow_provider_unkey.testing.ratelimit import DEFAULT_RATE_LIMIT_WINDOW, RateLimiter
from airflow_provider_unkey.testing.request_log import RequestLog, RequestRecord
from airflow_provider_unkey.testing.routes import Route, Routes
from airflow_provider_unkey.testing.store import (
    DEFAULT_ROOT_KEY_PERMISSIONS,
    RootKey,
    Store,
    StoredKey,
    seam_hash,
    sha256_base64,
)
from airflow_provider_unkey.testing.transport import Reply, Request, Server

__all__ = [
    "DEFAULT_ROOT_KEY_PERMISSIONS",
    "Faults",
    "Load",
    "ProductionBurst",
    "ProductionStats",
    "RequestRecord",
    "Stats",
    "StoredKey",
    "UnkeyEmulator",
    "seam_hash",
    "sha256_base64",
]

# The constants at the address they had before the emulator was split (their homes: replies,
# transport and routes).
ERROR_DOCS: Final = replies.ERROR_DOCS
ERR_INVALID_INPUT: Final = replies.ERR_INVALID_INPUT
ERR_AUTH_MISSING: Final = replies.ERR_AUTH_MISSING
ERR_AUTH_MALFORMED: Final = replies.ERR_AUTH_MALFORMED
ERR_KEY_NOT_FOUND: Final = replies.ERR_KEY_NOT_FOUND
ERR_INSUFFICIENT_PERMISSIONS: Final = replies.ERR_INSUFFICIENT_PERMISSIONS
ERR_API_NOT_FOUND: Final = replies.ERR_API_NOT_FOUND
ERR_MIGRATION_NOT_FOUND: Final = replies.ERR_MIGRATION_NOT_FOUND
ERR_ROUTE_NOT_FOUND: Final = replies.ERR_ROUTE_NOT_FOUND
ERR_BODY_TOO_LARGE: Final = replies.ERR_BODY_TOO_LARGE
ERR_TIMEOUT: Final = replies.ERR_TIMEOUT
ERR_RATE_LIMITED: Final = replies.ERR_RATE_LIMITED
ERR_UNEXPECTED: Final = replies.ERR_UNEXPECTED
ERR_UNAVAILABLE: Final = replies.ERR_UNAVAILABLE
PANIC_DETAIL: Final = replies.PANIC_DETAIL
STATUS_RESET: Final = transport.STATUS_RESET
STATUS_DROPPED: Final = transport.STATUS_DROPPED
PATH_MIGRATE: Final = routes.PATH_MIGRATE
PATH_VERIFY: Final = routes.PATH_VERIFY
PATH_GET_API: Final = routes.PATH_GET_API
PATH_LIVENESS: Final = routes.PATH_LIVENESS

# The internal types under their old names (the signature of ``UnkeyEmulator._delay_and_route``).
_Request = Request
_Reply = Reply
_RootKey = RootKey
_FaultDraw = FaultDraw


class UnkeyEmulator(EmulatorControls):
    """A local, thread-safe HTTP server answering like Unkey's v2 API for key migration.

    :param host: interface to bind.
    :param port: port to bind; 0 picks a free one (see :attr:`url` after :meth:`start`).
    :param rate_limit: requests per window per workspace (every validated, authenticated API request
        counts, on every route); ``None`` for no limit, 0 to refuse everything (Unkey's answer to a
        zero limit: 429 without headers). Unkey's sliding-window limiter: see
        :class:`~airflow_provider_unkey.testing.ratelimit.RateLimiter`. While set, every answer to a
        counted request carries ``RateLimit-Limit``, ``RateLimit-Remaining`` and ``RateLimit-Reset``;
        change it with :meth:`set_rate_limit`.
    :param rate_limit_window: the window of ``rate_limit``, in seconds (whole milliseconds; Unkey's
        is 60 s, a shorter one compresses time).
    :param rate_limit_clock: the rate limiter's clock, Unix seconds: windows are aligned to its
        epoch, as Unkey's are to Unix time. A test can pass one it advances itself to reach a
        window's edge without waiting for it; production traffic runs on it too.
    :param production_per_minute: the workspace's own production traffic from the start:
        ``keys.verifyKey`` requests a minute, evenly spaced, counted against the rate limit of
        ``production_workspace_id`` (see :meth:`set_production_traffic`); ``None`` for none.
    :param production_burst: recurring bursts of production traffic (see :class:`ProductionBurst`).
    :param production_workspace_id: the workspace production traffic belongs to.
    :param faults: faults to inject from the start; change them later with :meth:`set_faults`.
    :param seed: seed of the random decisions behind :class:`Faults`.
    :param server_timeout: the server's own per-request timeout: a request whose time since it was
        read (waiting for a capacity slot included) passes it is answered 408, nothing committed.
    :param capacity: requests processed at once at most (``None`` or 0: no limit); the others wait
        their turn in a FIFO queue, and a request spends its latency faults holding its slot, so
        capacity 8 with 50 ms of latency serves at most 160 requests/s. Change it with
        :meth:`set_capacity`.
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
        rate_limit_window: float = DEFAULT_RATE_LIMIT_WINDOW,
        rate_limit_clock: Callable[[], float] = time.time,
        production_per_minute: float | None = None,
        production_burst: ProductionBurst | None = None,
        production_workspace_id: str = "ws_default",
        faults: Faults | None = None,
        seed: int = 0,
        server_timeout: float = rules.SERVER_TIMEOUT_SECONDS,
        freeze_gc: bool = False,
        capacity: int | None = None,
    ) -> None:
        self._limiter = RateLimiter(rate_limit, rate_limit_window, rate_limit_clock)
        self._production = Production(self._limiter, production_workspace_id)
        if production_per_minute or production_burst is not None:
            self._production.configure(production_per_minute, production_burst)
        self._capacity = Capacity(capacity)
        self.host = host
        self.port = port
        self.server_timeout = server_timeout
        self.seed = seed
        self.freeze_gc = freeze_gc
        self._store = Store()
        self._faults = FaultSource(faults, seed)
        self._log = RequestLog()
        # The routes and the pipeline read server_timeout and freeze_gc from here, per request.
        self._routes = Routes(self._store, self._faults, self)
        self._pipeline = Pipeline(
            self._store, self._faults, self._limiter, self._routes, self, self._capacity, self._production
        )
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

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

        :param kwargs: passed to the constructor (``port``, ``rate_limit``, ``production_per_minute``,
            ``faults``, ...).
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
        self._store.add_root_key(key, workspace_id, permissions)

    def add_api(self, api_id: str, workspace_id: str = "ws_default", name: str | None = None) -> None:
        """Register an API (a keyspace) in ``workspace_id``; ``name`` defaults to the id."""
        self._store.add_api(api_id, workspace_id, name)

    def delete_api(self, api_id: str) -> None:
        """Delete an API as Unkey's ``apis.deleteApi`` does (a soft delete): ``keys.migrateKeys`` and
        ``apis.getApi`` answer 404 for it ("The requested API does not exist or has been deleted."),
        and ``keys.verifyKey`` answers 200 ``NOT_FOUND`` for its keys, which stay stored (their hashes
        still exist: migrating one elsewhere lands in ``failed``).

        :raises KeyError: for an API never added.
        """
        self._store.delete_api(api_id)

    def add_migration(
        self, migration_id: str, workspace_id: str = "ws_default", algorithm: str = rules.ALGORITHM_SHA256
    ) -> None:
        """Register a migration id, as Unkey support would, for ``workspace_id``.

        :param algorithm: ``"sha256"`` or ``"github.com/seamapi/prefixed-api-key"`` (alias ``"seam"``).
        :raises ValueError: for any other algorithm.
        """
        self._store.add_migration(migration_id, workspace_id, algorithm)

    def add_existing_hash(self, hash: str, workspace_id: str = "ws_other") -> StoredKey:
        """Store a key that already exists in Unkey (a migration of it lands in ``failed``).

        :return: the stored key (no API, no migration).
        """
        return self._store.add_existing_hash(hash, workspace_id)

    # --- life cycle -----------------------------------------------------------------------------------
    def start(self) -> UnkeyEmulator:
        """Bind and serve in a daemon thread; production traffic runs in another until :meth:`stop`.

        :return: ``self``.
        :raises RuntimeError: when already started.
        """
        if self._server is not None:
            raise RuntimeError("the emulator is already running")
        server = Server((self.host, self.port), self)
        self.port = server.server_address[1]
        self._server = server
        # serve_forever notices shutdown() only between polls: a short poll keeps stop() fast.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.01}, name="unkey-emulator", daemon=True
        )
        self._thread.start()
        self._production.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every connection, idle keep-alive ones included, and production
        traffic. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        self._production.stop()
        server.close()
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

    # --- what the transport calls ---------------------------------------------------------------------
    def _record(self, record: RequestRecord) -> None:
        self._log.record(record)

    def _crashed(self, req: Request, exc: Exception) -> Reply:
        # A bug in the emulator must still be an answer, not a hung client.
        return replies.error(req, 500, f"The emulator failed: {exc!r}", ERR_UNEXPECTED, close=True)

    def _serve(self, req: Request) -> Reply:
        # The last stage is looked up on the instance per request, so a test can wrap it.
        return self._pipeline.serve(req, self._delay_and_route)

    def _delay_and_route(self, req: Request, route: Route, body: Any, n_keys: int, draw: FaultDraw) -> Reply:
        return self._pipeline.delay_and_route(req, route, body, n_keys, draw)
