"""UnkeyHook and its client against the live emulator: connections, calls, retries, typed errors."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import pickle
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from airflow_provider_unkey import rules
from airflow_provider_unkey.client import RetryPolicy, UnkeyClient, normalise_base_url
from airflow_provider_unkey.exceptions import (
    UnkeyAPIError,
    UnkeyAuthenticationError,
    UnkeyBadRequestError,
    UnkeyConfigurationError,
    UnkeyNotFoundError,
    UnkeyPayloadTooLargeError,
    UnkeyPermissionError,
    UnkeyRateLimitError,
    UnkeyServerError,
    UnkeyTransportError,
)
from airflow_provider_unkey.hooks.unkey import UnkeyHook
from airflow_provider_unkey.testing import UnkeyEmulator
from tests.spec import assert_valid_request
from tests.test_client import install_fake_clock

ROOT_KEY = "unkey_root_test"
API_ID = "api_test"
MIGRATION_ID = "mig_test"
#: Fast retries so the suite does not sleep for real backoffs.
FAST = RetryPolicy(max_attempts=4, max_elapsed=30, initial_wait=0.01, max_wait=0.05, jitter=0.01)


def sha256_b64(plaintext: str) -> str:
    return base64.b64encode(hashlib.sha256(plaintext.encode()).digest()).decode()


def keys_for(*plaintexts: str) -> list[dict[str, Any]]:
    return [{"hash": sha256_b64(p)} for p in plaintexts]


@pytest.fixture
def emulator() -> Iterator[UnkeyEmulator]:
    emu = UnkeyEmulator.quick(root_key=ROOT_KEY, api_id=API_ID, migration_id=MIGRATION_ID)
    with emu:
        yield emu


@pytest.fixture
def sent_bodies() -> list[tuple[str, Any]]:
    """Every request body the clients of a test put on the wire, decoded."""
    return []


@pytest.fixture
def client(emulator: UnkeyEmulator, sent_bodies: list[tuple[str, Any]]) -> Iterator[UnkeyClient]:
    c = UnkeyClient(ROOT_KEY, emulator.url, retry=FAST)
    _capture(c, sent_bodies)
    yield c
    c.close()


def _capture(client: UnkeyClient, sink: list[tuple[str, Any]]) -> None:
    def hook(response: requests.Response, *args: Any, **kwargs: Any) -> None:
        body = response.request.body
        sink.append((response.request.path_url, json.loads(body) if body else None))

    client.session.hooks["response"].append(hook)


def _conn_env(monkeypatch: pytest.MonkeyPatch, value: str, conn_id: str = "unkey_default") -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", value)


# --- connections ------------------------------------------------------------------------------------
def test_connection_from_json_env(monkeypatch: pytest.MonkeyPatch, emulator: UnkeyEmulator) -> None:
    _conn_env(
        monkeypatch,
        json.dumps(
            {
                "conn_type": "unkey",
                "host": emulator.url,
                "password": ROOT_KEY,
                "extra": {"max_retries": 2, "timeout": 5},
            }
        ),
    )
    hook = UnkeyHook()
    assert hook.client.base_url == emulator.url
    assert hook.client.retry.max_attempts == 2
    assert hook.client.timeout == (10.0, 5.0)
    result = hook.migrate_keys(MIGRATION_ID, API_ID, keys_for("sk_json_1"))
    assert [h for h, _ in result.migrated] == [sha256_b64("sk_json_1")]
    assert emulator.keys[sha256_b64("sk_json_1")].key_id == result.migrated[0][1]


def test_connection_from_uri_env(monkeypatch: pytest.MonkeyPatch, emulator: UnkeyEmulator) -> None:
    port = emulator.url.rsplit(":", 1)[1]
    # The URI's path is the connection's schema, which the hook uses as the URL scheme.
    _conn_env(monkeypatch, f"unkey://:{ROOT_KEY}@127.0.0.1:{port}/http?max_retries=3", "unkey_uri")
    hook = UnkeyHook(unkey_conn_id="unkey_uri")
    assert hook.client.base_url == emulator.url
    assert hook.client.retry.max_attempts == 3
    result = hook.migrate_keys(MIGRATION_ID, API_ID, keys_for("sk_uri_1"))
    assert len(result.migrated) == 1 and result.failed == []


def test_connection_without_root_key_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    _conn_env(monkeypatch, json.dumps({"conn_type": "unkey", "host": "https://api.unkey.com"}))
    with pytest.raises(UnkeyConfigurationError, match="no root key"):
        _ = UnkeyHook().client


@pytest.mark.parametrize(
    ("host", "schema", "port", "expected"),
    [
        (None, None, None, "https://api.unkey.com"),
        ("", "", None, "https://api.unkey.com"),
        ("api.unkey.com", None, None, "https://api.unkey.com"),
        ("https://api.unkey.com/", None, None, "https://api.unkey.com"),
        ("127.0.0.1", "http", 8787, "http://127.0.0.1:8787"),
        ("http://127.0.0.1", None, 8787, "http://127.0.0.1:8787"),
        ("http://127.0.0.1:9000", None, 8787, "http://127.0.0.1:9000"),
        ("unkey.internal", "https", 8443, "https://unkey.internal:8443"),
        ("https://gw.example.com/unkey", None, None, "https://gw.example.com/unkey"),
        # Airflow 3.3's UI may send port 0 for an empty port: it means none.
        ("https://api.unkey.com", None, 0, "https://api.unkey.com"),
        ("api.unkey.com", "", 0, "https://api.unkey.com"),
        # The port the form asks for (docs/connection.md): the scheme's own port is left out.
        ("https://api.unkey.com", None, 443, "https://api.unkey.com"),
        ("http://127.0.0.1", None, 80, "http://127.0.0.1"),
        ("http://127.0.0.1", None, 443, "http://127.0.0.1:443"),
        # The form hides the schema, but a connection from the CLI or a URI may carry one.
        ("https://api.unkey.com", "https", None, "https://api.unkey.com"),
        ("http://127.0.0.1:8787", "https", None, "http://127.0.0.1:8787"),
        ("api.unkey.com", "HTTPS", 443, "https://api.unkey.com"),
    ],
)
def test_base_url_from_connection(
    host: str | None, schema: str | None, port: int | None, expected: str
) -> None:
    assert normalise_base_url(UnkeyHook.base_url_from(host, schema, port)) == expected


def test_plain_http_to_remote_host_is_refused() -> None:
    with pytest.raises(UnkeyConfigurationError, match="clear text"):
        UnkeyClient(ROOT_KEY, "http://unkey.example.com")
    # Loopback needs no opt-in; a remote host needs the explicit extra.
    assert UnkeyClient(ROOT_KEY, "http://localhost:1").base_url == "http://localhost:1"
    assert UnkeyClient(ROOT_KEY, "http://[::1]:1").base_url == "http://[::1]:1"
    assert UnkeyClient(ROOT_KEY, "http://unkey.example.com", allow_insecure_http=True).base_url


def test_plain_http_refused_from_connection_unless_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    _conn_env(
        monkeypatch, json.dumps({"conn_type": "unkey", "host": "http://10.1.2.3", "password": ROOT_KEY})
    )
    with pytest.raises(UnkeyConfigurationError, match="clear text"):
        _ = UnkeyHook().client
    _conn_env(
        monkeypatch,
        json.dumps(
            {
                "conn_type": "unkey",
                "host": "http://10.1.2.3",
                "password": ROOT_KEY,
                "extra": {"allow_insecure_http": "true"},
            }
        ),
    )
    assert UnkeyHook().client.base_url == "http://10.1.2.3"


def test_session_is_pooled_and_identified(emulator: UnkeyEmulator) -> None:
    client = UnkeyClient(ROOT_KEY, emulator.url, pool_size=7)
    session = client.session
    assert session is client.session
    adapter = session.get_adapter(emulator.url)
    assert adapter._pool_maxsize == 7  # type: ignore[attr-defined]
    from airflow_provider_unkey import __version__

    assert session.headers["User-Agent"] == f"airflow-provider-unkey/{__version__}"


# --- calls ------------------------------------------------------------------------------------------
def test_migrate_keys_reports_migrated_and_failed(
    emulator: UnkeyEmulator, client: UnkeyClient, sent_bodies: list[tuple[str, Any]]
) -> None:
    emulator.add_existing_hash(sha256_b64("sk_taken"))
    keys = [*keys_for("sk_a", "sk_b"), {"hash": sha256_b64("sk_taken")}]
    keys[0].update(name="A", enabled=False, roles=["admin"], permissions=["docs.read"], meta={"plan": "pro"})
    result = client.migrate_keys(MIGRATION_ID, API_ID, keys)
    assert {h for h, _ in result.migrated} == {sha256_b64("sk_a"), sha256_b64("sk_b")}
    assert all(key_id.startswith("key_") for _, key_id in result.migrated)
    assert result.failed == [sha256_b64("sk_taken")]
    assert result.request_id.startswith("req_")
    assert (result.attempts, result.unanswered_attempts) == (1, 0)
    stored = emulator.keys[sha256_b64("sk_a")]
    assert stored.name == "A" and stored.enabled is False and stored.roles == ["admin"]
    for path, body in sent_bodies:
        assert_valid_request(path, body)


def test_verify_key_after_migration(
    emulator: UnkeyEmulator, client: UnkeyClient, sent_bodies: list[tuple[str, Any]]
) -> None:
    result = client.migrate_keys(MIGRATION_ID, API_ID, keys_for("sk_live_verify"))
    verified = client.verify_key("sk_live_verify", migration_id=MIGRATION_ID)
    assert verified.valid and verified.code == "VALID"
    assert verified.key_id == result.migrated[0][1]
    unknown = client.verify_key("sk_never_migrated", migration_id=MIGRATION_ID)
    assert not unknown.valid and unknown.code == "NOT_FOUND"
    for path, body in sent_bodies:
        assert_valid_request(path, body)


def test_pre_serialised_body_is_sent_as_is(emulator: UnkeyEmulator, client: UnkeyClient) -> None:
    body = UnkeyClient.migrate_keys_body(MIGRATION_ID, API_ID, keys_for("sk_raw_1", "sk_raw_2"))
    result = client.migrate_keys(MIGRATION_ID, API_ID, body)
    assert len(result.migrated) == 2


def test_body_over_10_mib_is_refused_before_sending(emulator: UnkeyEmulator, client: UnkeyClient) -> None:
    keys = [{"hash": f"{i:064x}", "meta": {"pad": "x" * 2000}} for i in range(6000)]
    with pytest.raises(UnkeyPayloadTooLargeError, match="not sent"):
        client.migrate_keys(MIGRATION_ID, API_ID, keys)
    assert emulator.requests == []


# --- the contract's numbers (BEHAVIOUR.md), as literals ------------------------------------------------
TEN_MIB = 10 * 1024 * 1024


def test_contract_limits_are_pinned() -> None:
    # "the real limits are a 10 MiB request body (413 above it) and a 60 s server timeout (408)"
    assert TEN_MIB == 10_485_760
    assert rules.MAX_BODY_BYTES == TEN_MIB
    assert rules.SERVER_TIMEOUT_SECONDS == 60
    assert UnkeyEmulator().server_timeout == 60
    # The client's read timeout outlasts the server's, so that the server's 408 arrives first.
    timeout = UnkeyClient(ROOT_KEY).timeout
    assert isinstance(timeout, tuple) and timeout[1] > 60


def _body_of_size(size: int) -> bytes:
    """A valid ``migrateKeys`` body of exactly ``size`` bytes: one key, padded in its ``meta``."""
    empty = UnkeyClient.migrate_keys_body(
        MIGRATION_ID, API_ID, [{"hash": sha256_b64("sk_big"), "meta": {"p": ""}}]
    )
    body = UnkeyClient.migrate_keys_body(
        MIGRATION_ID, API_ID, [{"hash": sha256_b64("sk_big"), "meta": {"p": "x" * (size - len(empty))}}]
    )
    assert len(body) == size
    return body


def test_a_body_of_exactly_10_mib_is_sent_and_one_byte_more_is_not(
    emulator: UnkeyEmulator, client: UnkeyClient
) -> None:
    with pytest.raises(UnkeyPayloadTooLargeError, match="not sent"):
        client.migrate_keys(MIGRATION_ID, API_ID, _body_of_size(TEN_MIB + 1))
    assert emulator.requests == []
    result = client.migrate_keys(MIGRATION_ID, API_ID, _body_of_size(TEN_MIB))
    assert [h for h, _ in result.migrated] == [sha256_b64("sk_big")]
    # The emulator draws the line at the same byte.
    answer = requests.post(
        emulator.url + "/v2/keys.migrateKeys",
        data=b" " * (TEN_MIB + 1),
        headers={"Authorization": f"Bearer {ROOT_KEY}", "Content-Type": "application/json"},
        timeout=60,
    )
    assert answer.status_code == 413


# --- errors are typed and never retried when they cannot change -----------------------------------
def test_bad_request_is_typed_with_field_errors(emulator: UnkeyEmulator, client: UnkeyClient) -> None:
    with pytest.raises(UnkeyBadRequestError) as info:
        client.migrate_keys(MIGRATION_ID, API_ID, [{"hash": sha256_b64("x"), "prefix": "sk"}])
    err = info.value
    assert err.status == 400
    assert err.request_id and err.request_id.startswith("req_")
    assert err.error_type and err.error_type.startswith("https://unkey.com/docs/errors/")
    assert any(e.location == "body.keys[0].prefix" for e in err.errors)
    assert "body.keys[0].prefix" in str(err)
    assert len(emulator.requests) == 1, "a 400 must not be retried"


@pytest.mark.parametrize(
    ("setup", "error", "code"),
    [
        ("bad_key", UnkeyAuthenticationError, 401),
        ("no_permission", UnkeyPermissionError, 403),
        ("unknown_api", UnkeyNotFoundError, 404),
        ("unknown_migration", UnkeyNotFoundError, 404),
    ],
)
def test_client_errors_are_not_retried(
    emulator: UnkeyEmulator, setup: str, error: type[UnkeyAPIError], code: int
) -> None:
    root_key, api_id, migration_id = ROOT_KEY, API_ID, MIGRATION_ID
    if setup == "bad_key":
        root_key = "unkey_root_unknown"
    elif setup == "no_permission":
        root_key = "unkey_root_readonly"
        emulator.add_root_key(root_key, permissions=["api.*.read_api"])
    elif setup == "unknown_api":
        api_id = "api_missing"
    else:
        migration_id = "mig_missing"
    client = UnkeyClient(root_key, emulator.url, retry=FAST)
    with pytest.raises(error) as info:
        client.migrate_keys(migration_id, api_id, keys_for("sk_1"))
    assert info.value.status == code
    assert info.value.detail
    if setup == "unknown_migration":
        assert info.value.code == "migration_not_found"
    assert len(emulator.requests) == 1
    assert emulator.keys == {}


def test_persistent_server_error_retried_then_raised(emulator: UnkeyEmulator, client: UnkeyClient) -> None:
    emulator.set_faults(error_rate=1.0, error_statuses=(503,))
    with pytest.raises(UnkeyServerError) as info:
        client.migrate_keys(MIGRATION_ID, API_ID, keys_for("sk_5xx"))
    assert info.value.status == 503
    assert len(emulator.requests) == FAST.max_attempts
    assert emulator.keys == {}


def test_duplicate_hash_500_not_retried_when_policy_says_so(emulator: UnkeyEmulator) -> None:
    # The engine sends batches of several keys with 500 in no_retry_statuses and splits them instead.
    policy = RetryPolicy(max_attempts=4, no_retry_statuses=frozenset({500}))
    client = UnkeyClient(ROOT_KEY, emulator.url, retry=policy)
    with pytest.raises(UnkeyServerError):
        client.migrate_keys(MIGRATION_ID, API_ID, keys_for("sk_dup", "sk_dup"))
    assert len(emulator.requests) == 1


def test_transient_server_errors_are_retried_to_success(emulator: UnkeyEmulator) -> None:
    emulator.set_faults(error_rate=0.4, error_statuses=(500, 502, 503))
    client = UnkeyClient(
        ROOT_KEY,
        emulator.url,
        retry=RetryPolicy(max_attempts=10, initial_wait=0.01, max_wait=0.05, jitter=0.01),
    )
    for i in range(10):
        result = client.migrate_keys(MIGRATION_ID, API_ID, keys_for(f"sk_flaky_{i}"))
        assert len(result.migrated) == 1
    statuses = [r.status for r in emulator.requests]
    assert any(s in (500, 502, 503) for s in statuses), statuses
    assert emulator.hash_counts.most_common(1)[0][1] >= 2
    assert len(emulator.keys) == 10


def test_connection_resets_are_retried(emulator: UnkeyEmulator, client: UnkeyClient) -> None:
    emulator.set_faults(reset_rate=1.0)
    with pytest.raises(UnkeyTransportError):
        client.migrate_keys(MIGRATION_ID, API_ID, keys_for("sk_reset"))
    assert len(emulator.requests) == FAST.max_attempts
    emulator.set_faults(reset_rate=0.4)
    client.retry = RetryPolicy(max_attempts=10, initial_wait=0.01, max_wait=0.05, jitter=0.01)
    for i in range(6):
        assert len(client.migrate_keys(MIGRATION_ID, API_ID, keys_for(f"sk_reset_{i}")).migrated) == 1


def test_response_lost_after_commit_is_visible_in_result(
    emulator: UnkeyEmulator, client: UnkeyClient
) -> None:
    emulator.set_faults(drop_after_commit_rate=1.0)
    keys = keys_for("sk_lost_1", "sk_lost_2")
    first_attempt_done = False

    def heal(attempt: int, exc: BaseException, wait: float) -> None:
        nonlocal first_attempt_done
        first_attempt_done = True
        emulator.set_faults(drop_after_commit_rate=0.0)

    client.on_retry = heal
    result = client.migrate_keys(MIGRATION_ID, API_ID, keys)
    assert first_attempt_done
    # The first attempt created the keys; the retry sees them as existing.
    assert result.migrated == []
    assert sorted(result.failed) == sorted(k["hash"] for k in keys)
    assert (result.attempts, result.unanswered_attempts) == (2, 1)
    assert set(emulator.keys) == {k["hash"] for k in keys}


def test_rate_limit_retry_after_is_honoured(emulator: UnkeyEmulator, client: UnkeyClient) -> None:
    emulator.set_faults(rate_limit_storm=2, storm_retry_after=1)
    started = time.monotonic()
    result = client.migrate_keys(MIGRATION_ID, API_ID, keys_for("sk_throttled"))
    elapsed = time.monotonic() - started
    assert len(result.migrated) == 1
    assert [r.status for r in emulator.requests] == [429, 429, 200]
    # Two waits of Retry-After: 1 s each, measured between the requests the server saw.
    gaps = [b.started - a.finished for a, b in zip(emulator.requests, emulator.requests[1:], strict=False)]
    assert all(gap >= 0.95 for gap in gaps), gaps
    assert elapsed >= 1.95


def one_request_per_still_window() -> UnkeyEmulator:
    """An emulator whose workspace takes one request per 30 s window, on a clock that stands still at
    a window's start (windows are aligned to Unix time, and Reset counts to the window's end), so that
    Retry-After is the whole window, 30 s."""
    return UnkeyEmulator.quick(
        root_key=ROOT_KEY,
        api_id=API_ID,
        migration_id=MIGRATION_ID,
        rate_limit=1,
        rate_limit_window=30,
        rate_limit_clock=lambda: 1_800_000_000.0,
    )


def test_workspace_rate_limit_headers_reach_the_error() -> None:
    emu = one_request_per_still_window()
    with emu:
        # A 429 does not use up an attempt: only a policy that never retries it raises it at once.
        never = RetryPolicy(max_attempts=1, no_retry_statuses=frozenset({429}))
        client = UnkeyClient(ROOT_KEY, emu.url, retry=never)
        client.migrate_keys(MIGRATION_ID, API_ID, keys_for("sk_rl_1"))
        with pytest.raises(UnkeyRateLimitError) as info:
            client.migrate_keys(MIGRATION_ID, API_ID, keys_for("sk_rl_2"))
    err = info.value
    assert err.status == 429
    assert err.retry_after is not None and 0 < err.retry_after <= 30
    assert {k.lower() for k in err.rate_limit} >= {
        "ratelimit-limit",
        "ratelimit-remaining",
        "ratelimit-reset",
    }


def test_retry_after_longer_than_policy_allows_is_raised_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = install_fake_clock(monkeypatch)
    emu = one_request_per_still_window()
    with emu:
        client = UnkeyClient(ROOT_KEY, emu.url, retry=RetryPolicy(max_attempts=5, max_retry_after=2))
        client.migrate_keys(MIGRATION_ID, API_ID, keys_for("sk_rl_a"))
        with pytest.raises(UnkeyRateLimitError) as info:
            client.migrate_keys(MIGRATION_ID, API_ID, keys_for("sk_rl_b"))
        assert len(emu.requests) == 2
    # The server asked for up to 30 s: more than the policy's 2 s, so the error comes at once.
    assert info.value.retry_after is not None and info.value.retry_after > 2
    assert info.value.attempts == 1
    assert clock.sleeps == [], "not the 30 s the server asked for, nor any other wait"


def test_retry_budget_bounds_total_time(monkeypatch: pytest.MonkeyPatch, emulator: UnkeyEmulator) -> None:
    clock = install_fake_clock(monkeypatch)
    emulator.set_faults(error_rate=1.0, error_statuses=(503,))
    policy = RetryPolicy(max_attempts=100, max_elapsed=0.5, initial_wait=0.2, max_wait=0.2, jitter=0.0)
    retries: list[tuple[int, float]] = []
    client = UnkeyClient(
        ROOT_KEY,
        emulator.url,
        retry=policy,
        on_retry=lambda attempt, exc, wait: retries.append((attempt, wait)),
    )
    with pytest.raises(UnkeyServerError) as info:
        client.migrate_keys(MIGRATION_ID, API_ID, keys_for("sk_budget"))
    # Bounded by the 0.5 s budget, not by the 100 attempts: after 0.2 s and 0.2 s, a third wait of
    # 0.2 s would end past the budget and is not begun.
    assert clock.sleeps == [0.2, 0.2]
    assert retries == [(1, 0.2), (2, 0.2)]
    assert sum(clock.sleeps) <= policy.max_elapsed
    assert info.value.attempts == 3
    assert [r.status for r in emulator.requests] == [503, 503, 503]


def test_errors_survive_pickling(emulator: UnkeyEmulator, client: UnkeyClient) -> None:
    with pytest.raises(UnkeyNotFoundError) as info:
        client.migrate_keys("mig_missing", API_ID, keys_for("sk_p"))
    clone = pickle.loads(pickle.dumps(info.value))
    assert type(clone) is UnkeyNotFoundError
    assert (clone.status, clone.request_id, clone.error_type, str(clone)) == (
        info.value.status,
        info.value.request_id,
        info.value.error_type,
        str(info.value),
    )


# --- test_connection --------------------------------------------------------------------------------
def test_test_connection(monkeypatch: pytest.MonkeyPatch, emulator: UnkeyEmulator) -> None:
    def conn(password: str, **extra: Any) -> UnkeyHook:
        _conn_env(
            monkeypatch,
            json.dumps({"conn_type": "unkey", "host": emulator.url, "password": password, "extra": extra}),
        )
        return UnkeyHook()

    ok, message = conn(ROOT_KEY).test_connection()
    assert ok, message
    ok, message = conn(ROOT_KEY, api_id=API_ID).test_connection()
    assert ok and API_ID in message, message
    ok, message = conn(ROOT_KEY, api_id="api_does_not_exist").test_connection()
    assert not ok and "404" in message
    emulator.add_root_key("unkey_root_create_only", permissions=["api.*.create_key"])
    ok, message = conn("unkey_root_create_only").test_connection()
    assert ok, message
    ok, message = conn("unkey_root_wrong").test_connection()
    assert not ok and "401" in message and "unkey_root_wrong" not in message
    assert emulator.keys == {}, "test_connection must create nothing"
    assert all(r.path == "/v2/apis.getApi" for r in emulator.requests)


def test_test_connection_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    _conn_env(
        monkeypatch,
        json.dumps(
            {
                "conn_type": "unkey",
                "host": "http://127.0.0.1:9",
                "password": ROOT_KEY,
                "extra": {"max_retries": 1},
            }
        ),
    )
    ok, message = UnkeyHook().test_connection()
    assert not ok and "connection error" in message


# --- the root key never leaks ------------------------------------------------------------------------
def test_root_key_absent_from_logs_errors_and_reprs(
    monkeypatch: pytest.MonkeyPatch, emulator: UnkeyEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "unkey_root_9f8e7d6c5b4a"
    emulator.add_root_key(secret)
    _conn_env(
        monkeypatch,
        json.dumps(
            {"conn_type": "unkey", "host": emulator.url, "password": secret, "extra": {"max_retries": 2}}
        ),
    )
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    hook = UnkeyHook()
    hook.client.retry = FAST
    texts += [repr(hook), repr(hook.client), str(hook.client.__dict__.get("retry"))]
    hook.migrate_keys(MIGRATION_ID, API_ID, keys_for("sk_secret_ok"))
    emulator.set_faults(error_rate=1.0, error_statuses=(500,))
    for call in (
        lambda: hook.migrate_keys(MIGRATION_ID, API_ID, keys_for("sk_secret_500")),
        lambda: hook.migrate_keys("mig_missing", API_ID, keys_for("sk_secret_404")),
        lambda: hook.migrate_keys(MIGRATION_ID, API_ID, [{"hash": "x"}]),
    ):
        with pytest.raises(UnkeyAPIError) as info:
            call()
        texts += [str(info.value), repr(info.value), repr(info.value.__dict__)]
    emulator.set_faults(error_rate=0.0, reset_rate=1.0)
    with pytest.raises(UnkeyTransportError) as transport:
        hook.migrate_keys(MIGRATION_ID, API_ID, keys_for("sk_secret_reset"))
    texts += [str(transport.value), repr(transport.value)]
    texts += [record.getMessage() for record in caplog.records]
    texts += [caplog.text]
    assert caplog.records, "the retries should have logged"
    assert not [t for t in texts if secret in t]


def test_every_request_the_client_sends_validates(
    emulator: UnkeyEmulator, client: UnkeyClient, sent_bodies: list[tuple[str, Any]]
) -> None:
    client.migrate_keys(MIGRATION_ID, API_ID, keys_for("sk_contract_1"))
    client.migrate_keys(
        MIGRATION_ID, API_ID, UnkeyClient.migrate_keys_body(MIGRATION_ID, API_ID, keys_for("sk_c2"))
    )
    client.verify_key("sk_contract_1")
    client.verify_key("sk_contract_1", migration_id=MIGRATION_ID)
    client.get_api(API_ID)
    from airflow_provider_unkey.hooks.unkey import PROBE_API_ID

    with pytest.raises(UnkeyNotFoundError):
        client.get_api(PROBE_API_ID)
    assert client.liveness() == "OK"
    paths = [path for path, _ in sent_bodies]
    assert paths.count("/v2/keys.migrateKeys") == 2 and "/v2/apis.getApi" in paths
    for path, body in sent_bodies:
        if body is not None:
            assert_valid_request(path, body)


def test_root_key_goes_only_to_authenticated_calls(emulator: UnkeyEmulator, client: UnkeyClient) -> None:
    seen: dict[str, str | None] = {}

    def hook(response: requests.Response, *args: Any, **kwargs: Any) -> None:
        seen[response.request.path_url] = response.request.headers.get("Authorization")

    client.session.hooks["response"].append(hook)
    assert client.liveness() == "OK"
    client.get_api(API_ID)
    assert seen["/v2/liveness"] is None
    assert seen["/v2/apis.getApi"] == f"Bearer {ROOT_KEY}"


# --- proxies ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("extra", ["proxy", "proxies", "extra__unkey__proxy"])
def test_the_proxy_extra_carries_the_hooks_requests(
    monkeypatch: pytest.MonkeyPatch, emulator: UnkeyEmulator, extra: str
) -> None:
    from tests.test_client import ForwardProxy

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with ForwardProxy(credentials=("airflow", "hook-proxy-secret")) as proxy:
        url = proxy.proxy_url("airflow:hook-proxy-secret")
        conn = {"conn_type": "unkey", "host": emulator.url, "password": ROOT_KEY, "extra": {extra: url}}
        _conn_env(monkeypatch, json.dumps(conn))
        hook = UnkeyHook()
        assert hook.client.proxy == proxy.proxy_url("airflow:***")
        assert "hook-proxy-secret" not in repr(hook.client)
        result = hook.migrate_keys(MIGRATION_ID, API_ID, keys_for(f"sk_hook_proxy_{extra}"))
        assert len(result.migrated) == 1
        ok, message = hook.test_connection()
        assert ok, message
        hook.close()
    assert [u.removeprefix(emulator.url) for _, u, _ in proxy.seen] == [
        "/v2/keys.migrateKeys",
        "/v2/apis.getApi",
    ]


def test_without_the_extra_a_loopback_connection_ignores_the_environments_proxy(
    monkeypatch: pytest.MonkeyPatch, emulator: UnkeyEmulator
) -> None:
    from tests.test_client import ForwardProxy

    with ForwardProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        _conn_env(monkeypatch, json.dumps({"conn_type": "unkey", "host": emulator.url, "password": ROOT_KEY}))
        hook = UnkeyHook()
        assert hook.client.proxy is None
        assert len(hook.migrate_keys(MIGRATION_ID, API_ID, keys_for("sk_hook_direct")).migrated) == 1
        hook.close()
    assert proxy.seen == []


@pytest.mark.parametrize(
    ("value", "match"),
    [
        pytest.param({"https": "http://corp:3128"}, "must be a URL", id="a-mapping"),
        pytest.param("ftp://corp:21", "proxy must be", id="a-scheme-requests-cannot-use"),
    ],
)
def test_a_bad_proxy_extra_fails_clearly(monkeypatch: pytest.MonkeyPatch, value: Any, match: str) -> None:
    conn = {
        "conn_type": "unkey",
        "host": "https://api.unkey.com",
        "password": ROOT_KEY,
        "extra": {"proxy": value},
    }
    _conn_env(monkeypatch, json.dumps(conn))
    with pytest.raises(UnkeyConfigurationError, match=match):
        _ = UnkeyHook().client


# --- what the connection form saves ---------------------------------------------------------------
#: The extras of a connection saved from Airflow 3.3's form with every field left as it is.
FORM_SAVED_EXTRAS = {
    "timeout": None,
    "connect_timeout": None,
    "max_retries": None,
    "max_retry_seconds": None,
    "verify": True,
    "ca_bundle": None,
    "allow_insecure_http": False,
    "proxy": None,
    "api_id": None,
}


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({}, id="missing"),
        pytest.param(FORM_SAVED_EXTRAS, id="saved-by-the-form"),
        pytest.param({k: "" for k in FORM_SAVED_EXTRAS}, id="empty-strings"),
        pytest.param({f"extra__unkey__{k}": v for k, v in FORM_SAVED_EXTRAS.items()}, id="prefixed"),
    ],
)
def test_empty_or_missing_extras_follow_the_providers_defaults(
    monkeypatch: pytest.MonkeyPatch, emulator: UnkeyEmulator, extra: dict[str, Any]
) -> None:
    conn = {"conn_type": "unkey", "host": emulator.url, "password": ROOT_KEY, "port": 0, "extra": extra}
    _conn_env(monkeypatch, json.dumps(conn))
    hook = UnkeyHook()
    default = UnkeyClient(ROOT_KEY, emulator.url)
    assert hook.client.timeout == default.timeout == (10.0, 75.0)
    assert hook.client.retry == default.retry
    assert (hook.client.retry.max_attempts, hook.client.retry.max_elapsed) == (8, 600.0)
    assert hook.client.base_url == emulator.url
    assert hook.client.proxy is None
    ok, message = hook.test_connection()
    assert ok, message


def test_empty_extras_in_a_uri_follow_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    _conn_env(monkeypatch, f"unkey://:{ROOT_KEY}@api.unkey.com/https?timeout=&max_retries=&verify=")
    client = UnkeyHook().client
    assert client.timeout == (10.0, 75.0) and client.retry.max_attempts == 8
    assert client.base_url == "https://api.unkey.com"


@pytest.mark.parametrize(
    ("api_id", "expected"),
    [
        pytest.param("api_1", "is 5 characters long, at least 8 expected", id="too-short"),
        pytest.param("api-1234", "must match ^[a-zA-Z0-9_]+$", id="a-character-unkey-refuses"),
    ],
)
def test_connection_names_an_api_id_unkey_would_refuse(
    monkeypatch: pytest.MonkeyPatch, emulator: UnkeyEmulator, api_id: str, expected: str
) -> None:
    conn = {"conn_type": "unkey", "host": emulator.url, "password": ROOT_KEY, "extra": {"api_id": api_id}}
    _conn_env(monkeypatch, json.dumps(conn))
    ok, message = UnkeyHook().test_connection()
    assert not ok
    assert message.startswith(
        "The connection's extras are not valid: API id for the connection test [api_id]"
    )
    assert expected in message
    assert emulator.requests == [], "refused before anything is sent"


def test_connection_says_clearly_that_the_root_key_is_wrong(
    monkeypatch: pytest.MonkeyPatch, emulator: UnkeyEmulator
) -> None:
    wrong = "unkey_root_not_this_one"
    _conn_env(monkeypatch, json.dumps({"conn_type": "unkey", "host": emulator.url, "password": wrong}))
    ok, message = UnkeyHook().test_connection()
    assert not ok
    assert message.startswith(f"{emulator.url} does not know this root key: check the connection's Root key")
    assert "401" in message and wrong not in message
