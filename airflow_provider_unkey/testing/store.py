"""The emulator's state: keys, root keys, APIs, migrations, identities, rate-limit windows, the request log.

:class:`Store` holds what Unkey's database would (one lock around everything a request reads or
commits), :class:`RateLimiter` the workspaces' sliding windows, :class:`RequestLog` every request the
emulator answered. Each has its own lock; none knows about HTTP.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from airflow_provider_unkey import rules

#: What :meth:`UnkeyEmulator.add_root_key` grants unless told otherwise.
DEFAULT_ROOT_KEY_PERMISSIONS: Final = ("api.*.create_key", "api.*.verify_key", "api.*.read_api")

# Unkey ids are base58 after a prefix; a byte-translation table makes them ~free to generate in bulk
# (the slight modulo bias is irrelevant for an emulator).
_B58: Final = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_TABLE: Final = bytes.maketrans(bytes(range(256)), bytes(_B58[i % 58] for i in range(256)))
_ID_LENGTH: Final = 22


def random_ids(prefix: str, n: int) -> list[str]:
    """``n`` fresh Unkey-style ids: ``prefix`` then 22 base58 characters."""
    raw = os.urandom(_ID_LENGTH * n).translate(_B58_TABLE).decode("ascii")
    return [prefix + raw[i : i + _ID_LENGTH] for i in range(0, _ID_LENGTH * n, _ID_LENGTH)]


def random_id(prefix: str) -> str:
    """One fresh Unkey-style id: ``prefix`` then 22 base58 characters."""
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
@dataclass(slots=True)
class StoredKey:
    """A key in the emulator's store, with every field as the migration request carried it.

    ``fields`` holds the key object's members other than ``hash``, whatever the field table
    (:data:`rules.KEY_FIELD_TABLE`) allows; the properties read the ones the emulator acts on, and a
    field the request left out reads as ``None``. ``credits_remaining`` and ``native_hash`` are the
    state later verifications change: the store holds a key under ``hash`` until a seam-hashed key is
    rehashed, then under ``native_hash`` only (the seam hash is gone, as in Unkey's database).
    """

    hash: str
    key_id: str
    workspace_id: str
    api_id: str | None
    migration_id: str | None
    fields: dict[str, Any] = field(default_factory=dict)
    #: Credits left now (``None`` = unlimited); decremented by valid verifications.
    credits_remaining: int | None = None
    #: Unkey's native hash, set when a seam-hashed key is rehashed on its first valid verification
    #: (which also clears its pending migration: the seam hash then resolves to nothing).
    native_hash: str | None = None

    @property
    def name(self) -> str | None:
        """``name``, as sent."""
        return self.fields.get("name")

    @property
    def externalId(self) -> str | None:
        """``externalId``, as sent."""
        return self.fields.get("externalId")

    @property
    def external_id(self) -> str | None:
        """``externalId`` under a Python name."""
        return self.externalId

    @property
    def meta(self) -> dict[str, Any] | None:
        """``meta``, as sent."""
        return self.fields.get("meta")

    @property
    def roles(self) -> list[str] | None:
        """``roles``, as sent."""
        return self.fields.get("roles")

    @property
    def permissions(self) -> list[str] | None:
        """``permissions``, as sent."""
        return self.fields.get("permissions")

    @property
    def expires(self) -> int | None:
        """``expires`` (Unix ms), as sent."""
        return self.fields.get("expires")

    @property
    def enabled(self) -> bool | None:
        """``enabled``, as sent."""
        return self.fields.get("enabled")

    @property
    def credits(self) -> dict[str, Any] | None:
        """``credits``, as sent (the count left now is :attr:`credits_remaining`)."""
        return self.fields.get("credits")

    @property
    def ratelimits(self) -> list[dict[str, Any]] | None:
        """``ratelimits``, as sent."""
        return self.fields.get("ratelimits")

    def request_fields(self) -> dict[str, Any]:
        """The key object as the migration request sent it (only the fields it carried)."""
        return {"hash": self.hash, **self.fields}


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request the emulator answered (or deliberately did not).

    :param status: the HTTP status sent, or ``"reset"`` / ``"dropped_after_commit"``.
    :param hashes: every hash of a ``keys.migrateKeys`` body (empty for other requests and for
        requests whose body was never read: 413s and resets).
    :param started: :func:`time.monotonic` when the request line was read.
    :param finished: :func:`time.monotonic` just before the answer was written.
    :param fault: the fault that shaped the answer (``"latency"``, ``"error"``, ``"rate_limit_storm"``,
        ``"reset"``, ``"drop_after_commit"``), ``"queue_timeout"`` for a 408 given while waiting for
        a capacity slot, else ``None``.
    :param queued: seconds the request waited for a capacity slot (0 when it got one at once or never
        asked: requests answered before the server processes them, such as 401s and the rate limit's
        429s, take no slot).
    :param admitted: :func:`time.monotonic` when it got its slot, ``None`` if it never held one.
    :param released: :func:`time.monotonic` when it gave its slot back (just before ``finished``),
        ``None`` if it never held one. A slot is released before the next request is granted it, so
        the intervals ``[admitted, released]`` show how many requests were processed at once.
    :param in_flight: requests processed at once (this one included) when it got its slot; 0 if it
        never held one.
    """

    method: str
    path: str
    status: int | str
    request_id: str
    hashes: tuple[str, ...]
    started: float
    finished: float
    fault: str | None = None
    queued: float = 0.0
    admitted: float | None = None
    released: float | None = None
    in_flight: int = 0

    @property
    def duration(self) -> float:
        """Seconds between reading the request and answering it."""
        return self.finished - self.started

    @property
    def processing(self) -> float:
        """Seconds it held a capacity slot: its simulated processing time and the route's work."""
        if self.admitted is None or self.released is None:
            return 0.0
        return self.released - self.admitted


# --- the store -----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RootKey:
    """A root key: its workspace and the permissions it holds."""

    workspace_id: str
    permissions: frozenset[str]

    def may(self, action: str, api_id: str | None) -> bool:
        """Whether the key may do ``action`` on ``api_id`` (``api.*.<action>`` covers every API)."""
        if f"api.*.{action}" in self.permissions:
            return True
        return api_id is not None and f"api.{api_id}.{action}" in self.permissions

    def may_at_all(self, action: str) -> bool:
        """Whether the key may do ``action`` on some API."""
        suffix = f".{action}"
        return any(p.startswith("api.") and p.endswith(suffix) for p in self.permissions)


@dataclass(frozen=True, slots=True)
class Api:
    """An API (a keyspace) of a workspace; a deleted one is soft-deleted, as Unkey's ``apis.deleteApi``
    does: its keys stay (their hashes still exist), but nothing finds the API or verifies its keys."""

    workspace_id: str
    name: str
    deleted: bool = False


@dataclass(frozen=True, slots=True)
class Migration:
    """A migration id registered for a workspace, with its hash algorithm."""

    workspace_id: str
    algorithm: str


class Store:
    """What Unkey's database holds, behind one lock (:attr:`lock`) around everything a request reads
    or commits. Routes read and write the dictionaries while holding it.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.root_keys: dict[str, RootKey] = {}
        self.apis: dict[str, Api] = {}
        self.migrations: dict[str, Migration] = {}
        # The hash index: the one hash each key is stored under now (as migrated, or its native hash
        # once a seam key was rehashed). Unique across workspaces, like Unkey's hash column.
        self.keys: dict[str, StoredKey] = {}
        self.identities: dict[tuple[str, str], str] = {}

    def add_root_key(self, key: str, workspace_id: str, permissions: Iterable[str]) -> None:
        """Register a root key of ``workspace_id`` holding ``permissions``."""
        perms = frozenset([permissions] if isinstance(permissions, str) else permissions)
        with self.lock:
            self.root_keys[key] = RootKey(workspace_id, perms)

    def add_api(self, api_id: str, workspace_id: str, name: str | None) -> None:
        """Register an API in ``workspace_id``; ``name`` defaults to the id."""
        with self.lock:
            self.apis[api_id] = Api(workspace_id, name or api_id)

    def delete_api(self, api_id: str) -> None:
        """Soft-delete an API; :raises KeyError: for an unknown one."""
        with self.lock:
            api = self.apis[api_id]
            self.apis[api_id] = dataclasses.replace(api, deleted=True)

    def live_api(self, api_id: str | None, workspace_id: str) -> Api | None:
        """The API if it exists, is not deleted and is ``workspace_id``'s (Unkey's ``FindLiveApiByID``
        and its workspace check), else ``None``."""
        api = self.apis.get(api_id) if api_id is not None else None
        if api is None or api.deleted or api.workspace_id != workspace_id:
            return None
        return api

    def add_migration(self, migration_id: str, workspace_id: str, algorithm: str) -> None:
        """Register a migration id; :raises ValueError: for an unknown algorithm."""
        normalised = rules.canonical_algorithm(algorithm)
        with self.lock:
            self.migrations[migration_id] = Migration(workspace_id, normalised)

    def add_existing_hash(self, hash: str, workspace_id: str) -> StoredKey:
        """Store a key with no API and no migration; :raises ValueError: when the hash exists."""
        key = StoredKey(hash, random_id("key_"), workspace_id, None, None)
        with self.lock:
            if hash in self.keys:
                raise ValueError(f"a key with hash {hash!r} already exists")
            self.keys[hash] = key
        return key

    def snapshot(self) -> dict[str, StoredKey]:
        """A copy of the hash index."""
        with self.lock:
            return dict(self.keys)

    def identity_id(self, workspace_id: str, external_id: str) -> str:
        """The id of the identity of ``external_id``, created on first use. Call with :attr:`lock` held."""
        ident_key = (workspace_id, external_id)
        identity_id = self.identities.get(ident_key)
        if identity_id is None:
            identity_id = self.identities[ident_key] = random_id("id_")
        return identity_id


# --- rate limiting -------------------------------------------------------------------------------------
#: Unkey's workspace limit counts requests per minute (``ApiRequestsCountMaxPerMinute``).
DEFAULT_RATE_LIMIT_WINDOW: Final = 60.0

#: The detail of Unkey's workspace 429 (``svc/api/internal/middleware/authentication.go``): the limit and
#: Go's ``time.Duration.String()`` of the window.
RATE_LIMITED_DETAIL: Final = (
    "This workspace has exceeded its API rate limit of {limit}/{window}. Please try again later."
)


def window_milliseconds(window: float) -> int:
    """``window`` seconds as the whole milliseconds Unkey's limiter counts windows in."""
    return round(window * 1000)


def check_rate_limit(limit: int | None, window: float) -> None:
    """:raises ValueError: for a negative limit or a window shorter than a millisecond."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"rate_limit must be an integer >= 0 or None, got {limit!r}")
    if not (isinstance(window, int | float) and math.isfinite(window) and window_milliseconds(window) >= 1):
        raise ValueError(f"rate_limit_window must be at least 0.001 s, got {window!r}")


def go_duration(nanoseconds: int) -> str:
    """Go's ``time.Duration.String()``: ``1m0s``, ``2s``, ``1.5s``, ``500ms``, ``1h0m0s``.

    :param nanoseconds: the duration (Go's ``Duration`` is an integer count of nanoseconds).
    """
    if nanoseconds == 0:
        return "0s"
    sign = "-" if nanoseconds < 0 else ""
    u = abs(nanoseconds)

    def fraction(value: int, precision: int) -> tuple[int, str]:
        # Go's fmtFrac: the digits after the point without trailing zeros, no point for none.
        whole, rest = divmod(value, 10**precision)
        digits = f"{rest:0{precision}d}".rstrip("0") if precision else ""
        return whole, f".{digits}" if digits else ""

    if u < 1_000_000_000:
        # Below a second Go switches to the largest unit that keeps an integer part.
        unit, precision = ("ns", 0) if u < 1_000 else ("µs", 3) if u < 1_000_000 else ("ms", 6)
        whole, frac = fraction(u, precision)
        return f"{sign}{whole}{frac}{unit}"
    seconds, frac = fraction(u, 9)
    text = f"{seconds % 60}{frac}s"
    minutes = seconds // 60
    if minutes:
        text = f"{minutes % 60}m{text}"
        if minutes // 60:
            text = f"{minutes // 60}h{text}"
    return sign + text


def _milliseconds(now: float) -> int:
    # Go's time.UnixMilli() truncates; rounding to the nanosecond first keeps a fake clock's 59.999
    # (59998.99999… after the float product) in millisecond 59999.
    return math.floor(round(now * 1000, 6))


def _whole_seconds_until(end_ms: int, now: float) -> int:
    # int64(time.Until(reset).Seconds()), floored at 0: truncated, so 0 during the window's last second.
    return max(int(round(end_ms / 1000 - now, 6)), 0)


@dataclass(frozen=True, slots=True)
class Quota:
    """A workspace's rate-limit state as one answer reports it.

    :param limit: the workspace's limit.
    :param remaining: what is left after this request (0 when it was refused).
    :param reset: whole seconds until the **current window** ends, truncated (0 during its last
        second; not when capacity comes back, and not a timestamp).
    :param allowed: whether the request was let through.
    :param reported: whether the answer carries the headers: Unkey's answer to a limit of 0 carries
        none.
    """

    limit: int
    remaining: int
    reset: int
    allowed: bool
    reported: bool = True

    def headers(self) -> tuple[tuple[str, str], ...]:
        """``RateLimit-Limit``, ``RateLimit-Remaining`` and ``RateLimit-Reset`` (none when not reported)."""
        if not self.reported:
            return ()
        return (
            ("RateLimit-Limit", str(self.limit)),
            ("RateLimit-Remaining", str(self.remaining)),
            ("RateLimit-Reset", str(self.reset)),
        )

    def refusal_headers(self) -> tuple[tuple[str, str], ...]:
        """The headers of a 429: :meth:`headers` and ``Retry-After``, the same number as the reset."""
        if not self.reported:
            return ()
        return (*self.headers(), ("Retry-After", str(self.reset)))


class RateLimiter:
    """Unkey's workspace rate limiter (``internal/services/ratelimit``): a sliding-window estimate over
    windows aligned to the epoch of the clock.

    Window ``n`` covers ``[n * window, (n + 1) * window)``, in whole milliseconds. A request is refused
    when ``current + floor(previous * (1 - elapsed)) + 1 > limit``, where ``current`` and ``previous``
    are the requests let through in this window and the one before and ``elapsed`` the share of this
    window that has passed; refused requests do not count. After a full window at the limit the next
    window starts with the previous one weighing fully, so capacity comes back gradually.

    A limit of 0 refuses everything before the limiter is asked, counting nothing and reporting no
    headers, as Unkey does. Counters are kept per workspace and window length, as Unkey keys them, so
    changing the limit keeps the counts.

    :param limit: requests per window per workspace; ``None`` for no limit.
    :param window: seconds (Unkey's is 60; a shorter one compresses time for a test or a benchmark).
    :param clock: Unix seconds (the windows are aligned to its epoch); a test can pass one it advances
        itself.
    """

    def __init__(self, limit: int | None, window: float, clock: Callable[[], float] = time.time) -> None:
        check_rate_limit(limit, window)
        self.limit = limit
        self.window = window
        self._window_ms = window_milliseconds(window)
        self._clock = clock
        self._lock = threading.Lock()
        # (workspace, window ms) -> {window sequence: requests let through}; only the last two matter.
        self._counts: dict[tuple[str, int], dict[int, int]] = {}

    def now(self) -> float:
        """The limiter's clock, now."""
        return self._clock()

    def configure(self, limit: int | None, window: float) -> None:
        """Set the limit and window (thread-safe); the counts stay, as Unkey's do when a limit changes."""
        check_rate_limit(limit, window)
        with self._lock:
            self.limit, self.window = limit, window
            self._window_ms = window_milliseconds(window)

    def detail(self, limit: int) -> str:
        """The detail of the 429 for ``limit``: ``... rate limit of 60/1m0s. ...``."""
        return RATE_LIMITED_DETAIL.format(limit=limit, window=go_duration(self._window_ms * 1_000_000))

    def count(self, workspace_id: str, now: float | None = None) -> Quota | None:
        """Count one request against its workspace's limit; ``None`` while no limit is set.

        :param now: the request's time on the limiter's clock; ``None`` reads the clock.
        """
        if self.limit is None:
            return None
        with self._lock:
            limit, window_ms = self.limit, self._window_ms
            if limit is None:
                return None
            if limit == 0:
                # Unkey answers a zero limit before asking its limiter: nothing counted, no headers.
                return Quota(0, 0, 0, allowed=False, reported=False)
            t = self._clock() if now is None else now
            now_ms = _milliseconds(t)
            sequence = now_ms // window_ms
            counts = self._counts.setdefault((workspace_id, window_ms), {})
            current = counts.get(sequence, 0)
            previous = counts.get(sequence - 1, 0)
            elapsed = (now_ms - sequence * window_ms) / window_ms
            # int() truncates like Go's int64(): the previous window's weighted share, floored.
            effective = current + int(previous * (1.0 - elapsed)) + 1
            allowed = effective <= limit
            if allowed:
                counts[sequence] = current + 1
                for stale in [s for s in counts if s < sequence - 1]:
                    del counts[stale]
            reset = _whole_seconds_until((sequence + 1) * window_ms, t)
        return Quota(limit, max(0, limit - effective) if allowed else 0, reset, allowed)

    def reset(self, now: float | None = None) -> int:
        """Whole seconds until the current window ends, truncated (what a 429 reports now)."""
        with self._lock:
            window_ms = self._window_ms
        t = self._clock() if now is None else now
        return _whole_seconds_until((_milliseconds(t) // window_ms + 1) * window_ms, t)

    def exhausted(self, reset: int | None = None) -> Quota:
        """The quota an injected 429 reports: the configured limit (0 when none), nothing remaining,
        and ``reset`` seconds, by default the limiter's own: the seconds until the current window ends.
        """
        limit = self.limit
        return Quota(
            0 if limit is None else limit, 0, self.reset() if reset is None else reset, allowed=False
        )


# --- the request log -----------------------------------------------------------------------------------
class RequestLog:
    """Every request answered, oldest first, with counters by hash and by status."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[RequestRecord] = []
        self._hash_counts: Counter[str] = Counter()
        self._status_counts: Counter[int | str] = Counter()

    def record(self, record: RequestRecord) -> None:
        """Append one request."""
        with self._lock:
            self._requests.append(record)
            self._status_counts[record.status] += 1
            if record.hashes:
                self._hash_counts.update(record.hashes)

    def requests(self) -> list[RequestRecord]:
        """A copy of the log."""
        with self._lock:
            return list(self._requests)

    def hash_counts(self) -> Counter[str]:
        """A copy of the count of each hash."""
        with self._lock:
            return Counter(self._hash_counts)

    def status_counts(self) -> Counter[int | str]:
        """A copy of the count of each status."""
        with self._lock:
            return Counter(self._status_counts)

    def clear(self) -> None:
        """Forget every request and count."""
        with self._lock:
            self._requests.clear()
            self._hash_counts.clear()
            self._status_counts.clear()
