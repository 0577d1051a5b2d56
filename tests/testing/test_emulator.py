"""The Unkey emulator answers like the real server (BEHAVIOUR.md), over real HTTP."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from airflow_provider_unkey import rules
from airflow_provider_unkey.testing import Faults, UnkeyEmulator, seam_hash, sha256_base64
from tests.testing.clocks import W0, FakeClock

ROOT = "unkey_root_test"
AUTH = {"Authorization": f"Bearer {ROOT}"}
MIGRATE = "/v2/keys.migrateKeys"
VERIFY = "/v2/keys.verifyKey"
GET_API = "/v2/apis.getApi"
ERRORS = "https://unkey.com/docs/errors/"
B58 = set("123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz")


def plaintext(i: int | str) -> str:
    return f"sk_live_{i}"


def key(i: int | str, **fields: Any) -> dict[str, Any]:
    return {"hash": sha256_base64(plaintext(i)), **fields}


def body(*keys: dict[str, Any], api_id: str = "api_test", migration_id: str = "mig_test") -> dict[str, Any]:
    return {"migrationId": migration_id, "apiId": api_id, "keys": list(keys)}


def post(
    emu: UnkeyEmulator,
    path: str,
    payload: Any,
    headers: dict[str, Any] | None = None,
    session: requests.Session | requests.sessions.Session | None = None,
) -> requests.Response:
    sender = session or requests
    kwargs: dict[str, Any] = {"headers": AUTH if headers is None else headers, "timeout": 10}
    if isinstance(payload, bytes):
        kwargs["data"] = payload
    else:
        kwargs["json"] = payload
    return sender.post(f"{emu.url}{path}", **kwargs)


def migrate(emu: UnkeyEmulator, *keys: dict[str, Any], **kw: Any) -> requests.Response:
    return post(emu, MIGRATE, body(*keys), **kw)


def verify(emu: UnkeyEmulator, key_text: str, migration_id: str | None = "mig_test") -> dict[str, Any]:
    payload: dict[str, Any] = {"key": key_text}
    if migration_id is not None:
        payload["migrationId"] = migration_id
    r = post(emu, VERIFY, payload)
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()["data"]
    return data


def assert_error(r: requests.Response, status: int, type_suffix: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    payload: dict[str, Any] = r.json()
    error: dict[str, Any] = payload["error"]
    assert error["status"] == status
    assert error["type"] == ERRORS + type_suffix
    assert error["title"] and error["detail"]
    assert payload["meta"]["requestId"].startswith("req_")
    return error


@pytest.fixture
def emu(unkey_emulator: UnkeyEmulator) -> UnkeyEmulator:
    return unkey_emulator


# --- 200 -----------------------------------------------------------------------------------------------
def test_migrates_keys_and_stores_every_field_as_received(emu: UnkeyEmulator) -> None:
    full = key(
        1,
        name="Alice's key",
        externalId="user_1",
        meta={"plan": "pro", "nested": {"a": [1, 2]}},
        roles=["admin", "reader"],
        permissions=["documents.read", "documents.*"],
        expires=4_102_444_800_000,
        enabled=False,
        credits={"remaining": 10, "refill": {"interval": "monthly", "amount": 10, "refillDay": 31}},
        ratelimits=[{"name": "requests", "limit": 10, "duration": 60_000, "autoApply": True}],
    )
    r = migrate(emu, full, key(2))
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"
    payload = r.json()
    assert payload["meta"]["requestId"].startswith("req_")
    assert payload["data"]["failed"] == []
    migrated = payload["data"]["migrated"]
    assert [m["hash"] for m in migrated] == [full["hash"], key(2)["hash"]]
    for m in migrated:
        assert m["keyId"].startswith("key_") and len(m["keyId"]) == 26 and set(m["keyId"][4:]) <= B58
    assert migrated[0]["keyId"] != migrated[1]["keyId"]

    stored = emu.keys[full["hash"]]
    assert stored.key_id == migrated[0]["keyId"]
    assert (stored.api_id, stored.workspace_id, stored.migration_id) == ("api_test", "ws_default", "mig_test")
    assert stored.request_fields() == full
    assert stored.externalId == stored.external_id == "user_1"
    assert stored.enabled is False and stored.credits_remaining == 10
    bare = emu.keys[key(2)["hash"]]
    assert bare.request_fields() == key(2)
    assert bare.name is None and bare.enabled is None
    assert len(emu.keys) == 2


def test_a_specific_create_permission_is_enough(make_emulator: Callable[..., UnkeyEmulator]) -> None:
    emu = make_emulator()
    emu.add_root_key("unkey_root_scoped", permissions=["api.api_test.create_key"])
    r = migrate(emu, key(1), headers={"Authorization": "Bearer unkey_root_scoped"})
    assert r.status_code == 200 and len(r.json()["data"]["migrated"]) == 1


def test_a_hash_existing_in_any_workspace_fails_and_the_rest_migrates(emu: UnkeyEmulator) -> None:
    emu.add_existing_hash(key("taken")["hash"], workspace_id="ws_other")
    r = migrate(emu, key("taken"), key("free"))
    assert r.status_code == 200
    data = r.json()["data"]
    assert data["failed"] == [key("taken")["hash"]]
    assert [m["hash"] for m in data["migrated"]] == [key("free")["hash"]]
    assert emu.keys[key("taken")["hash"]].workspace_id == "ws_other"  # untouched


def test_a_retry_of_the_same_batch_is_all_failed_with_200(emu: UnkeyEmulator) -> None:
    batch = [key(i) for i in range(5)]
    first = migrate(emu, *batch)
    assert first.status_code == 200 and len(first.json()["data"]["migrated"]) == 5
    before = {h: k.key_id for h, k in emu.keys.items()}
    second = migrate(emu, *batch)
    assert second.status_code == 200
    assert second.json()["data"] == {"migrated": [], "failed": [k["hash"] for k in batch]}
    assert {h: k.key_id for h, k in emu.keys.items()} == before


def test_keys_of_another_workspace_block_the_hash_too(make_emulator: Callable[..., UnkeyEmulator]) -> None:
    emu = make_emulator()
    emu.add_root_key("unkey_root_b", workspace_id="ws_b")
    emu.add_api("api_b_keys", workspace_id="ws_b")
    emu.add_migration("mig_b", workspace_id="ws_b")
    other = post(
        emu,
        MIGRATE,
        body(key(1), api_id="api_b_keys", migration_id="mig_b"),
        headers={"Authorization": "Bearer unkey_root_b"},
    )
    assert other.status_code == 200
    r = migrate(emu, key(1))
    assert r.json()["data"] == {"migrated": [], "failed": [key(1)["hash"]]}
    assert emu.keys[key(1)["hash"]].workspace_id == "ws_b"


# --- 400 -----------------------------------------------------------------------------------------------
def test_a_prefix_field_is_a_400_naming_its_location(emu: UnkeyEmulator) -> None:
    r = migrate(emu, key(1), key(2, prefix="sk"))
    error = assert_error(r, 400, "unkey/application/invalid_input")
    assert [e["location"] for e in error["errors"]] == ["body.keys[1].prefix"]
    assert emu.keys == {}  # all or nothing


def test_every_schema_violation_is_listed(emu: UnkeyEmulator) -> None:
    payload = body(key(1, roles=[""], permissions=["no spaces"]), {"name": "no hash"}, api_id="a")
    r = post(emu, MIGRATE, payload)
    error = assert_error(r, 400, "unkey/application/invalid_input")
    locations = {e["location"] for e in error["errors"]}
    assert locations == {
        "body.apiId",
        "body.keys[0].roles[0]",
        "body.keys[0].permissions[0]",
        "body.keys[1].hash",
    }
    assert all(e["message"] for e in error["errors"])


@pytest.mark.parametrize(
    ("payload", "location"),
    [
        (b"{not json", "body"),
        (b"", "body"),
        (b"[]", "body"),
        (
            b'{"migrationId": "mig_test", "apiId": "api_test", "keys": [{"hash": "abc", "expires": NaN}]}',
            "body",
        ),
        (b'{"migrationId": "mig_\xff", "apiId": "api_test", "keys": [{"hash": "abc"}]}', "body"),
        (b'{"migrationId": "mig_test", "apiId": "api_test", "keys": []}', "body.keys"),
    ],
)
def test_malformed_bodies_are_400(emu: UnkeyEmulator, payload: bytes, location: str) -> None:
    error = assert_error(post(emu, MIGRATE, payload), 400, "unkey/application/invalid_input")
    assert location in {e["location"] for e in error["errors"]}


def test_monthly_refill_without_refill_day_is_400_although_the_schema_allows_it(emu: UnkeyEmulator) -> None:
    bad = key(2, credits={"remaining": 5, "refill": {"interval": "monthly", "amount": 5}})
    assert rules.schema_violations(body(bad)) == []
    error = assert_error(migrate(emu, key(1), bad), 400, "unkey/application/invalid_input")
    assert [e["location"] for e in error["errors"]] == ["body.keys[1].credits.refill.refillDay"]
    assert emu.keys == {}


def test_a_float_integer_is_400(emu: UnkeyEmulator) -> None:
    error = assert_error(migrate(emu, key(1, expires=1.0)), 400, "unkey/application/invalid_input")
    assert [e["location"] for e in error["errors"]] == ["body.keys[0].expires"]


def test_a_missing_authorization_header_is_400(emu: UnkeyEmulator) -> None:
    error = assert_error(migrate(emu, key(1), headers={}), 400, "unkey/authentication/missing")
    assert error["errors"][0]["location"] == "header.Authorization"


@pytest.mark.parametrize(
    "value", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer    ", "bearer unkey_root_test", ROOT]
)
def test_a_malformed_authorization_header_is_400(emu: UnkeyEmulator, value: str) -> None:
    assert_error(
        migrate(emu, key(1), headers={"Authorization": value}), 400, "unkey/authentication/malformed"
    )
    assert emu.keys == {}


# --- 401 / 403 / 404 -----------------------------------------------------------------------------------
def test_an_unknown_root_key_is_401(emu: UnkeyEmulator) -> None:
    r = migrate(emu, key(1), headers={"Authorization": "Bearer unkey_nope"})
    assert_error(r, 401, "unkey/authentication/key_not_found")
    assert emu.keys == {}


@pytest.mark.parametrize(
    "permissions",
    [["api.*.verify_key", "api.*.read_api"], ["api.api_other.create_key"], []],
)
def test_a_root_key_without_create_permission_is_403(
    make_emulator: Callable[..., UnkeyEmulator], permissions: list[str]
) -> None:
    emu = make_emulator()
    emu.add_root_key("unkey_root_weak", permissions=permissions)
    r = migrate(emu, key(1), headers={"Authorization": "Bearer unkey_root_weak"})
    assert_error(r, 403, "unkey/authorization/insufficient_permissions")
    assert emu.keys == {}


API_GONE = "The requested API does not exist or has been deleted."
MIGRATION_GONE = "The requested Migration does not exist or has been deleted."


def test_an_unknown_api_is_404(emu: UnkeyEmulator) -> None:
    r = post(emu, MIGRATE, body(key(1), api_id="api_missing"))
    assert assert_error(r, 404, "unkey/data/api_not_found")["detail"] == API_GONE


def test_an_api_of_another_workspace_is_404(emu: UnkeyEmulator) -> None:
    emu.add_api("api_elsewhere", workspace_id="ws_other")
    r = post(emu, MIGRATE, body(key(1), api_id="api_elsewhere"))
    error = assert_error(r, 404, "unkey/data/api_not_found")
    assert (error["title"], error["detail"]) == ("Not Found", API_GONE)  # masked as unknown
    assert emu.keys == {}


def test_an_unknown_migration_is_404_migration_not_found(emu: UnkeyEmulator) -> None:
    r = post(emu, MIGRATE, body(key(1), migration_id="mig_missing"))
    error = assert_error(r, 404, "unkey/data/migration_not_found")
    assert (error["title"], error["detail"]) == ("Not Found", MIGRATION_GONE)


def test_a_migration_of_another_workspace_is_404(emu: UnkeyEmulator) -> None:
    emu.add_migration("mig_elsewhere", workspace_id="ws_other")
    r = post(emu, MIGRATE, body(key(1), migration_id="mig_elsewhere"))
    assert assert_error(r, 404, "unkey/data/migration_not_found")["detail"] == MIGRATION_GONE


def test_the_api_is_checked_before_the_migration(emu: UnkeyEmulator) -> None:
    r = post(emu, MIGRATE, body(key(1), api_id="api_missing", migration_id="mig_missing"))
    assert assert_error(r, 404, "unkey/data/api_not_found")["detail"] == API_GONE


def test_a_deleted_api(emu: UnkeyEmulator) -> None:
    migrated = migrate(emu, key(1)).json()["data"]["migrated"]
    assert verify(emu, plaintext(1))["code"] == "VALID"
    emu.delete_api("api_test")
    # migrateKeys and getApi: 404, worded as for an unknown API (Unkey's FindLiveApiByID skips it).
    gone = migrate(emu, key(2))
    assert assert_error(gone, 404, "unkey/data/api_not_found")["detail"] == API_GONE
    got = post(emu, GET_API, {"apiId": "api_test"})
    assert assert_error(got, 404, "unkey/data/api_not_found")["detail"] == API_GONE
    # verifyKey: its keys are not found (200), before any permission check...
    assert verify(emu, plaintext(1)) == {"valid": False, "code": "NOT_FOUND"}
    emu.add_root_key("unkey_root_other_api", permissions=("api.api_other.verify_key",))
    r = post(emu, VERIFY, {"key": plaintext(1)}, headers={"Authorization": "Bearer unkey_root_other_api"})
    assert r.json()["data"] == {"valid": False, "code": "NOT_FOUND"}
    # ...and stay stored: their hashes still exist, so migrating one elsewhere lands in failed.
    assert emu.keys[key(1)["hash"]].key_id == migrated[0]["keyId"]
    emu.add_api("api_new")
    again = post(emu, MIGRATE, body(key(1), api_id="api_new"))
    assert again.json()["data"] == {"migrated": [], "failed": [key(1)["hash"]]}
    emu.delete_api("api_test")  # deleting twice changes nothing
    with pytest.raises(KeyError):
        emu.delete_api("api_never_added")


def test_a_deleted_api_leaves_a_seam_key_where_it_was(make_emulator: Callable[..., UnkeyEmulator]) -> None:
    emu = make_emulator(algorithm="seam")
    secret = "pre_short_longtoken"
    migrate(emu, {"hash": seam_hash(secret)})
    emu.delete_api("api_test")
    assert verify(emu, secret) == {"valid": False, "code": "NOT_FOUND"}
    assert list(emu.keys) == [seam_hash(secret)]  # the rehash of the VALID verification never came


# --- 408 / 413 / 429 / 500 -----------------------------------------------------------------------------
def test_past_the_server_timeout_is_408_with_nothing_stored(
    make_emulator: Callable[..., UnkeyEmulator],
) -> None:
    emu = make_emulator(server_timeout=0.3)
    emu.set_faults(latency_per_key=0.6)
    t0 = time.monotonic()
    # 60 s of latency > 0.3 s. An answer at all shows the server did not sit out the whole latency: the
    # client gives up after 10 s (no upper bound on the time taken: the machine may be busy).
    r = migrate(emu, *[key(i) for i in range(100)])
    assert_error(r, 408, "user/bad_request/request_timeout")
    assert time.monotonic() - t0 >= 0.3
    assert emu.keys == {}
    emu.set_faults(latency_per_key=0.0)
    assert migrate(emu, key(1)).status_code == 200


def test_a_body_over_10_mib_is_413_unread(emu: UnkeyEmulator) -> None:
    big = (
        b'{"migrationId":"mig_test","apiId":"api_test","keys":[{"hash":"'
        + b"a" * rules.MAX_BODY_BYTES
        + b'"}]}'
    )
    r = post(emu, MIGRATE, big)
    assert_error(r, 413, "user/bad_request/request_body_too_large")
    assert r.headers["Connection"] == "close"
    (record,) = emu.requests
    assert record.status == 413 and record.hashes == ()
    assert emu.keys == {}
    assert migrate(emu, key(1)).status_code == 200  # the server is fine afterwards


def test_a_chunked_body_over_10_mib_is_413(emu: UnkeyEmulator) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"migrationId":"mig_test","apiId":"api_test","keys":[{"hash":"'
        for _ in range(11):
            yield b"a" * (1024 * 1024)
        yield b'"}]}'

    r = requests.post(f"{emu.url}{MIGRATE}", data=chunks(), headers=AUTH, timeout=10)
    assert_error(r, 413, "user/bad_request/request_body_too_large")
    assert emu.keys == {}


def test_a_small_chunked_body_is_read(emu: UnkeyEmulator) -> None:
    raw = json.dumps(body(key(1))).encode()
    r = requests.post(f"{emu.url}{MIGRATE}", data=iter([raw[:10], raw[10:]]), headers=AUTH, timeout=10)
    assert r.status_code == 200 and len(r.json()["data"]["migrated"]) == 1


QUOTA_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")
RATE_LIMITED = "This workspace has exceeded its API rate limit of {}. Please try again later."


def quota(r: requests.Response) -> tuple[str, str, str] | None:
    """``(limit, remaining, reset)`` from the RateLimit-* headers, or ``None`` when none was sent."""
    present = [name for name in QUOTA_HEADERS if name in r.headers]
    if not present:
        return None
    assert present == list(QUOTA_HEADERS), f"only {present} of the RateLimit-* headers: {r.headers}"
    return r.headers["RateLimit-Limit"], r.headers["RateLimit-Remaining"], r.headers["RateLimit-Reset"]


def assert_limited(r: requests.Response, limit: int, reset: int, window: str = "1m0s") -> None:
    """The limiter's 429: every rate-limit header, nothing remaining, ``Retry-After`` = ``RateLimit-Reset``,
    Unkey's detail."""
    error = assert_error(r, 429, "user/too_many_requests/workspace_rate_limited")
    assert (error["title"], error["detail"]) == (
        "Too Many Requests",
        RATE_LIMITED.format(f"{limit}/{window}"),
    )
    assert quota(r) == (str(limit), "0", str(reset))
    assert r.headers["Retry-After"] == str(reset)


def test_the_workspace_rate_limit_is_429_then_recovers_gradually(
    make_emulator: Callable[..., UnkeyEmulator],
) -> None:
    clock = FakeClock()  # on a window's edge: windows are aligned to Unix time
    emu = make_emulator(rate_limit=2, rate_limit_window=60, rate_limit_clock=clock)
    emu.add_root_key("unkey_root_same_ws")  # same workspace: shares the limit
    emu.add_root_key("unkey_root_other_ws", workspace_id="ws_other")
    emu.add_api("api_other_ws", workspace_id="ws_other")
    emu.add_migration("mig_other_ws", workspace_id="ws_other")
    first = migrate(emu, key(1))
    assert first.status_code == 200 and quota(first) == ("2", "1", "60")
    assert "Retry-After" not in first.headers
    clock.advance(10.5)
    second = migrate(emu, key(2), headers={"Authorization": "Bearer unkey_root_same_ws"})
    # Whole seconds to the window's end, truncated (49.5 s left), not a timestamp.
    assert second.status_code == 200 and quota(second) == ("2", "0", "49")
    assert_limited(migrate(emu, key(3)), limit=2, reset=49)
    assert key(3)["hash"] not in emu.keys
    other = post(
        emu,
        MIGRATE,
        body(key(4), api_id="api_other_ws", migration_id="mig_other_ws"),
        headers={"Authorization": "Bearer unkey_root_other_ws"},
    )
    assert other.status_code == 200  # another workspace has its own count
    assert quota(other) == ("2", "1", "49")
    clock.now = W0 + 59.5
    assert_limited(migrate(emu, key(3)), limit=2, reset=0)  # the window's last second: 0
    clock.now = W0 + 60.0
    assert_limited(migrate(emu, key(3)), limit=2, reset=60)  # the full previous window still weighs
    clock.now = W0 + 90.0  # half-way: floor(2 * 0.5) = 1, so one request fits
    recovered = migrate(emu, key(3))
    assert recovered.status_code == 200 and quota(recovered) == ("2", "0", "30")
    assert_limited(post(emu, VERIFY, {"key": plaintext(1)}), limit=2, reset=30)


def test_a_limit_of_zero_is_429_without_headers(make_emulator: Callable[..., UnkeyEmulator]) -> None:
    emu = make_emulator(rate_limit=0)
    for r in (
        migrate(emu, key(1)),
        post(emu, VERIFY, {"key": "k"}),
        post(emu, GET_API, {"apiId": "api_test"}),
    ):
        error = assert_error(r, 429, "user/too_many_requests/workspace_rate_limited")
        assert error["detail"] == RATE_LIMITED.format("0/1m0s")
        assert quota(r) is None and "Retry-After" not in r.headers
    assert emu.keys == {}


def _weak_root(emu: UnkeyEmulator) -> dict[str, str]:
    emu.add_root_key("unkey_root_powerless", permissions=())
    return {"Authorization": "Bearer unkey_root_powerless"}


#: One request per route and answer a client can get once its request passed validation and
#: authentication (it counts against the limit): (name, status, send).
AUTHENTICATED_ANSWERS: list[tuple[str, int, Callable[[UnkeyEmulator], requests.Response]]] = [
    ("migrate 200", 200, lambda emu: migrate(emu, key(1))),
    ("migrate 200 all failed", 200, lambda emu: migrate(emu, key(1))),
    (
        "migrate 400 refill",  # the handler's own check, after the limiter
        400,
        lambda emu: migrate(
            emu, key(2, credits={"remaining": 1, "refill": {"interval": "monthly", "amount": 1}})
        ),
    ),
    ("migrate 403", 403, lambda emu: migrate(emu, key(2), headers=_weak_root(emu))),
    ("migrate 404 api", 404, lambda emu: post(emu, MIGRATE, body(key(2), api_id="api_missing"))),
    ("migrate 404 migration", 404, lambda emu: post(emu, MIGRATE, body(key(2), migration_id="mig_nope"))),
    ("migrate 500 duplicate", 500, lambda emu: migrate(emu, key(2), key(2))),
    ("migrate 500 null credits", 500, lambda emu: migrate(emu, key(2, credits={"remaining": None}))),
    ("verify 200 valid", 200, lambda emu: post(emu, VERIFY, {"key": plaintext(1)})),
    ("verify 200 not found", 200, lambda emu: post(emu, VERIFY, {"key": "sk_nope"})),
    (
        "verify 200 unknown migration",
        200,
        lambda emu: post(emu, VERIFY, {"key": "sk_nope", "migrationId": "mig_nope"}),
    ),
    ("verify 403", 403, lambda emu: post(emu, VERIFY, {"key": plaintext(1)}, headers=_weak_root(emu))),
    ("getApi 200", 200, lambda emu: post(emu, GET_API, {"apiId": "api_test"})),
    ("getApi 403", 403, lambda emu: post(emu, GET_API, {"apiId": "api_test"}, headers=_weak_root(emu))),
    ("getApi 404", 404, lambda emu: post(emu, GET_API, {"apiId": "api_missing"})),
]


@pytest.mark.parametrize("limit", [None, 100])
def test_every_counted_answer_carries_the_quota_while_the_limit_is_on(
    make_emulator: Callable[..., UnkeyEmulator], limit: int | None
) -> None:
    clock = FakeClock()
    emu = make_emulator(rate_limit=limit, rate_limit_window=60, rate_limit_clock=clock)
    for n, (name, status, send) in enumerate(AUTHENTICATED_ANSWERS, start=1):
        clock.advance(1.0)
        r = send(emu)
        assert r.status_code == status, (name, r.text)
        assert "Retry-After" not in r.headers, name
        if limit is None:
            assert quota(r) is None, name
        else:
            # One unit each, in the window that began at W0: n used, n seconds into it.
            assert quota(r) == (str(limit), str(limit - n), str(60 - n)), name


def test_answers_before_the_limiter_carry_no_quota_and_cost_nothing(
    make_emulator: Callable[..., UnkeyEmulator],
) -> None:
    clock = FakeClock()
    emu = make_emulator(rate_limit=5, rate_limit_window=60, rate_limit_clock=clock)
    answers = [
        migrate(emu, key(1), headers={}),  # 400: no Authorization
        # Unkey validates the body against its OpenAPI spec before it authenticates.
        migrate(emu, key(2, prefix="sk")),  # 400: the schema
        post(emu, MIGRATE, b"{"),  # 400: not JSON
        post(emu, VERIFY, {"key": ""}),  # 400: the schema
        post(emu, GET_API, {"apiId": "x"}),  # 400: the schema
        migrate(emu, key(2, prefix="sk"), headers={"Authorization": "Bearer nope"}),  # 400 before 401
        migrate(emu, key(1), headers={"Authorization": "Basic x"}),  # 400: malformed
        migrate(emu, key(1), headers={"Authorization": "Bearer nope"}),  # 401
        post(emu, MIGRATE, b" " * (rules.MAX_BODY_BYTES + 1)),  # 413: never read
        requests.get(f"{emu.url}/v2/liveness", timeout=10),
        post(emu, "/v2/keys.nope", {}),  # 404 route
    ]
    assert [r.status_code for r in answers] == [400, 400, 400, 400, 400, 400, 400, 401, 413, 200, 404]
    assert [r.json()["error"]["type"].rsplit("/", 1)[-1] for r in answers[:6]] == [
        "missing",
        *["invalid_input"] * 5,
    ]
    assert all(quota(r) is None for r in answers)
    first = migrate(emu, key(1))
    assert quota(first) == ("5", "4", "60")  # the first request counted


def test_set_rate_limit_switches_the_limit_while_running(make_emulator: Callable[..., UnkeyEmulator]) -> None:
    clock = FakeClock()
    emu = make_emulator(rate_limit_clock=clock)
    with requests.Session() as session:
        assert quota(migrate(emu, key(1), session=session)) is None  # no limit: nothing counted
        emu.set_rate_limit(1, window=30)
        assert (emu.rate_limit, emu.rate_limit_window) == (1, 30)
        on = migrate(emu, key(2), session=session)
        assert on.status_code == 200 and quota(on) == ("1", "0", "30")
        assert_limited(migrate(emu, key(3), session=session), limit=1, reset=30, window="30s")
        emu.set_rate_limit(3)  # a new limit: what was counted stays counted (the 429 was not)
        again = migrate(emu, key(3), session=session)
        assert again.status_code == 200 and quota(again) == ("3", "1", "30")
        emu.set_rate_limit(None)
        off = migrate(emu, key(4), session=session)
        assert off.status_code == 200 and quota(off) is None
        emu.set_rate_limit(0)
        zero = migrate(emu, key(5), session=session)
        assert zero.status_code == 429 and quota(zero) is None
        emu.rate_limit = 4  # the property is the same switch
        emu.rate_limit_window = 2
        assert (emu.rate_limit, emu.rate_limit_window) == (4, 2)
        short = migrate(emu, key(5), session=session)  # a new window length counts afresh
        assert short.status_code == 200 and quota(short) == ("4", "3", "2")
    with pytest.raises(ValueError, match="rate_limit"):
        emu.set_rate_limit(-1)
    with pytest.raises(ValueError, match="rate_limit_window"):
        emu.set_rate_limit(1, window=0)
    assert (emu.rate_limit, emu.rate_limit_window) == (4, 2)


@pytest.mark.parametrize("limit", [None, 7])
def test_every_injected_429_carries_every_rate_limit_header(
    make_emulator: Callable[..., UnkeyEmulator], limit: int | None
) -> None:
    clock = FakeClock(W0 + 12.25)
    emu = make_emulator(rate_limit=limit, rate_limit_clock=clock)
    reported = str(0 if limit is None else limit)
    emu.set_faults(rate_limit_storm=1, storm_retry_after=4)
    storm = migrate(emu, key(1))
    assert_error(storm, 429, "user/too_many_requests/workspace_rate_limited")
    assert quota(storm) == (reported, "0", "4") and storm.headers["Retry-After"] == "4"
    emu.set_faults(error_rate=1.0, error_statuses=(429,))
    # As the limiter would answer now: the whole seconds to the current window's end (47.75 s).
    injected = post(emu, GET_API, {"apiId": "api_test"})
    assert_error(injected, 429, "user/too_many_requests/workspace_rate_limited")
    assert quota(injected) == (reported, "0", "47") and injected.headers["Retry-After"] == "47"
    emu.set_faults(error_statuses=(503,))
    injected = migrate(emu, key(1))
    assert injected.status_code == 503 and quota(injected) is None and "Retry-After" not in injected.headers


MARKER_CLOCK = FakeClock(W0 + 1.0)


@pytest.mark.unkey_emulator(rate_limit=1, rate_limit_window=600, rate_limit_clock=MARKER_CLOCK)
def test_the_fixture_switches_the_rate_limit_on_from_its_marker(unkey_emulator: UnkeyEmulator) -> None:
    assert (unkey_emulator.rate_limit, unkey_emulator.rate_limit_window) == (1, 600)
    ok = migrate(unkey_emulator, key(1))
    assert ok.status_code == 200 and quota(ok) == ("1", "0", "599")
    assert_limited(migrate(unkey_emulator, key(2)), limit=1, reset=599, window="10m0s")


def test_the_fixture_has_no_rate_limit_by_default(unkey_emulator: UnkeyEmulator) -> None:
    assert unkey_emulator.rate_limit is None
    r = migrate(unkey_emulator, key(1))
    assert r.status_code == 200 and quota(r) is None


def test_unauthenticated_requests_do_not_count_against_the_limit(
    make_emulator: Callable[..., UnkeyEmulator],
) -> None:
    emu = make_emulator(rate_limit=1, rate_limit_window=30, rate_limit_clock=FakeClock())
    for _ in range(3):
        assert migrate(emu, key(1), headers={"Authorization": "Bearer nope"}).status_code == 401
    assert migrate(emu, key(1)).status_code == 200
    assert migrate(emu, key(2)).status_code == 429


def test_a_duplicate_hash_in_one_request_is_500_with_nothing_stored(emu: UnkeyEmulator) -> None:
    r = migrate(emu, key(1), key(2), key(1))
    assert_error(r, 500, "unkey/application/unexpected_error")
    assert emu.keys == {}


def test_a_duplicate_role_is_500_with_nothing_stored(emu: UnkeyEmulator) -> None:
    r = migrate(emu, key(1), key(2, roles=["admin", "admin"]))
    assert_error(r, 500, "unkey/application/unexpected_error")
    assert emu.keys == {}


def test_a_hash_longer_than_its_column_is_500(emu: UnkeyEmulator) -> None:
    r = migrate(emu, key(1), {"hash": "h" * 257})
    assert_error(r, 500, "unkey/application/unexpected_error")
    assert emu.keys == {}
    assert migrate(emu, {"hash": "h" * 256}).status_code == 200


def test_a_400_wins_over_a_500(emu: UnkeyEmulator) -> None:
    bad = key(2, credits={"remaining": 5, "refill": {"interval": "monthly", "amount": 5}})
    assert migrate(emu, key(1), key(1), bad).status_code == 400


PANIC = "An unexpected error occurred while processing your request."


@pytest.mark.parametrize(
    "credits",
    [
        {"remaining": None},
        {"remaining": None, "refill": {"interval": "daily", "amount": 5}},
        {"remaining": None, "refill": {"interval": "monthly", "amount": 5, "refillDay": 1}},
    ],
)
def test_a_null_credits_remaining_panics_the_server_into_a_500_for_the_whole_request(
    emu: UnkeyEmulator, credits: dict[str, Any]
) -> None:
    nulled = key("null", credits=credits)
    assert rules.schema_violations(body(nulled)) == []  # the schema allows it ("unlimited")
    r = migrate(emu, key(1), key(2, credits={"remaining": 5}), nulled)
    error = assert_error(r, 500, "unkey/application/unexpected_error")
    assert error["title"] == "Internal Server Error" and error["detail"] == PANIC
    assert "errors" not in error
    assert r.headers["Content-Type"] == "application/problem+json"
    assert emu.keys == {}  # all or nothing: the valid keys of the request were not created either
    plain = migrate(emu, key(1), nulled, headers={**AUTH, "Accept": "application/json"})
    assert plain.status_code == 500 and plain.headers["Content-Type"] == "application/json"
    assert emu.keys == {}
    # The same keys without the null are migrated.
    ok = migrate(emu, key(1), key(2, credits={"remaining": 5}), key("null"))
    assert ok.status_code == 200 and len(ok.json()["data"]["migrated"]) == 3


def test_a_400_wins_over_the_null_credits_500(emu: UnkeyEmulator) -> None:
    nulled = key("null", credits={"remaining": None})
    # A schema failure anywhere in the request.
    r = migrate(emu, nulled, key(1, prefix="sk"))
    assert [e["location"] for e in assert_error(r, 400, "unkey/application/invalid_input")["errors"]] == [
        "body.keys[1].prefix"
    ]
    # The server's own 400 (a monthly refill without refillDay), before or after the null.
    monthly = key(2, credits={"remaining": 5, "refill": {"interval": "monthly", "amount": 5}})
    for keys in ([nulled, monthly], [monthly, nulled]):
        error = assert_error(migrate(emu, *keys), 400, "unkey/application/invalid_input")
        assert [e["location"] for e in error["errors"]] == [
            f"body.keys[{keys.index(monthly)}].credits.refill.refillDay"
        ]
    # Authentication, permission and existence come first too.
    assert migrate(emu, nulled, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert post(emu, MIGRATE, body(nulled, migration_id="mig_nope")).status_code == 404
    # Among 500s the answer is the panic's.
    error = assert_error(migrate(emu, key(1), key(1), nulled), 500, "unkey/application/unexpected_error")
    assert error["detail"] == PANIC
    assert emu.keys == {}


# --- verifyKey -----------------------------------------------------------------------------------------
def test_verify_a_sha256_key(emu: UnkeyEmulator) -> None:
    r = migrate(
        emu,
        key(1, name="n", meta={"m": 1}, roles=["r"], permissions=["p.read"], externalId="user_1"),
    )
    key_id = r.json()["data"]["migrated"][0]["keyId"]
    data = verify(emu, plaintext(1))
    assert data["valid"] is True and data["code"] == "VALID" and data["keyId"] == key_id
    assert data["name"] == "n" and data["meta"] == {"m": 1} and data["enabled"] is True
    assert data["roles"] == ["r"] and data["permissions"] == ["p.read"]
    assert data["identity"]["externalId"] == "user_1" and data["identity"]["id"].startswith("id_")
    assert "credits" not in data and "expires" not in data
    assert verify(emu, plaintext(1), migration_id=None)["keyId"] == key_id  # the native hash
    assert verify(emu, plaintext(2)) == {"valid": False, "code": "NOT_FOUND"}


def test_a_hex_hash_never_verifies_in_a_sha256_migration(emu: UnkeyEmulator) -> None:
    hex_hash = hashlib.sha256(plaintext(1).encode()).hexdigest()
    assert migrate(emu, {"hash": hex_hash}).status_code == 200  # the server stores any string
    assert verify(emu, plaintext(1))["code"] == "NOT_FOUND"


@pytest.mark.parametrize("algorithm", ["seam", rules.ALGORITHM_SEAM])
def test_verify_a_seam_key_and_its_rehash(
    make_emulator: Callable[..., UnkeyEmulator], algorithm: str
) -> None:
    emu = make_emulator(algorithm=algorithm)
    secret = "mycompany_BRTRKFsL_51FwqftsmMDHHbJAMEXXHCgG"
    stored_hash = seam_hash(secret)
    assert stored_hash == hashlib.sha256(b"51FwqftsmMDHHbJAMEXXHCgG").hexdigest()
    key_id = migrate(emu, {"hash": stored_hash}).json()["data"]["migrated"][0]["keyId"]
    # Before its first verification the key is only findable through its migration.
    assert verify(emu, secret, migration_id=None)["code"] == "NOT_FOUND"
    assert emu.keys[stored_hash].native_hash is None
    data = verify(emu, secret)
    assert data["valid"] is True and data["keyId"] == key_id
    # Rehashed: the store's hash index holds the key under its native hash, and the seam hash is gone.
    native = sha256_base64(secret)
    assert list(emu.keys) == [native]
    rehashed = emu.keys[native]
    assert (rehashed.key_id, rehashed.hash, rehashed.native_hash) == (key_id, stored_hash, native)
    assert verify(emu, secret, migration_id=None)["keyId"] == key_id
    assert verify(emu, secret)["keyId"] == key_id
    assert list(emu.keys) == [native]  # rehashed once
    assert verify(emu, "mycompany_BRTRKFsL_wrongLongToken")["code"] == "NOT_FOUND"
    # The native hash now exists: migrating it fails.
    assert migrate(emu, {"hash": native}).json()["data"]["failed"] == [native]


def test_a_seam_hash_migrated_again_after_the_rehash_creates_a_second_key(
    make_emulator: Callable[..., UnkeyEmulator],
) -> None:
    emu = make_emulator(algorithm="seam")
    secret = "acme_sHoRt_TheLongTokenOfTheKey"
    seam = {"hash": seam_hash(secret), "name": "original"}
    first = migrate(emu, seam)
    assert first.status_code == 200
    (original,) = first.json()["data"]["migrated"]
    # Before any verification, a retry reports the hash as failed.
    assert migrate(emu, seam).json()["data"] == {"migrated": [], "failed": [seam["hash"]]}
    assert verify(emu, secret)["keyId"] == original["keyId"]  # the first verification rehashes
    assert seam["hash"] not in emu.keys
    # From now on the seam hash exists nowhere: migrating it again is a new key, not a failure.
    again = migrate(emu, {**seam, "name": "second"})
    assert again.status_code == 200
    data = again.json()["data"]
    assert data["failed"] == []
    (second,) = data["migrated"]
    assert second["hash"] == seam["hash"] and second["keyId"] != original["keyId"]
    assert {h: (k.key_id, k.name) for h, k in emu.keys.items()} == {
        sha256_base64(secret): (original["keyId"], "original"),
        seam["hash"]: (second["keyId"], "second"),
    }
    # The plaintext still finds the original key, by its native hash, with or without the migration.
    for migration_id in ("mig_test", None):
        found = verify(emu, secret, migration_id=migration_id)
        assert (found["code"], found["keyId"], found["name"]) == ("VALID", original["keyId"], "original")
    assert emu.keys[seam["hash"]].native_hash is None  # the second key is never reached


def test_a_seam_key_found_through_another_migration_is_not_rehashed(
    make_emulator: Callable[..., UnkeyEmulator],
) -> None:
    emu = make_emulator(algorithm="seam")
    emu.add_migration("mig_seam_other", algorithm="seam")
    secret = "pre_short_longtoken"
    key_id = migrate(emu, {"hash": seam_hash(secret)}).json()["data"]["migrated"][0]["keyId"]
    # Unkey clears a pending migration only when the verification names that migration.
    assert verify(emu, secret, migration_id="mig_seam_other")["keyId"] == key_id
    assert emu.keys[seam_hash(secret)].native_hash is None
    assert verify(emu, secret)["keyId"] == key_id
    assert list(emu.keys) == [sha256_base64(secret)]


def test_verify_with_an_unknown_migration_is_200_not_found(
    make_emulator: Callable[..., UnkeyEmulator],
) -> None:
    emu = make_emulator(algorithm="seam")
    emu.add_migration("mig_elsewhere", workspace_id="ws_other", algorithm="seam")
    secret = "pre_short_longtoken"
    migrate(emu, {"hash": seam_hash(secret)})
    for migration_id in ("mig_nope", "mig_elsewhere"):
        r = post(emu, VERIFY, {"key": secret, "migrationId": migration_id})
        assert r.status_code == 200, r.text
        assert r.headers["Content-Type"] == "application/json"
        assert r.json()["data"] == {"valid": False, "code": "NOT_FOUND"}
        assert r.json()["meta"]["requestId"].startswith("req_")
    assert emu.keys[seam_hash(secret)].native_hash is None  # nothing was rehashed
    # Only a key not found by its native hash consults the migration: a native key still verifies.
    native_id = migrate(emu, key(1)).json()["data"]["migrated"][0]["keyId"]
    assert verify(emu, plaintext(1), migration_id="mig_nope")["keyId"] == native_id


def test_a_disabled_seam_key_is_not_rehashed(make_emulator: Callable[..., UnkeyEmulator]) -> None:
    emu = make_emulator(algorithm="seam")
    secret = "pre_short_longtoken"
    migrate(emu, {"hash": seam_hash(secret), "enabled": False})
    assert verify(emu, secret)["code"] == "DISABLED"
    assert emu.keys[seam_hash(secret)].native_hash is None


def test_verify_codes(emu: UnkeyEmulator) -> None:
    now_ms = int(time.time() * 1000)
    migrate(
        emu,
        key("disabled", enabled=False),
        key("expired", expires=now_ms - 1000),
        key("later", expires=now_ms + 3_600_000),
        key("empty", credits={"remaining": 0}),
        key("one", credits={"remaining": 1}),
        key("unlimited"),  # unlimited credits are a key without credits
    )
    disabled = verify(emu, plaintext("disabled"))
    assert (disabled["valid"], disabled["code"], disabled["enabled"]) == (False, "DISABLED", False)
    assert disabled["keyId"] == emu.keys[key("disabled")["hash"]].key_id
    assert verify(emu, plaintext("expired"))["code"] == "EXPIRED"
    later = verify(emu, plaintext("later"))
    assert later["code"] == "VALID" and later["expires"] == now_ms + 3_600_000
    assert verify(emu, plaintext("empty"))["code"] == "USAGE_EXCEEDED"
    first = verify(emu, plaintext("one"))
    assert (first["code"], first["credits"]) == ("VALID", 0)
    second = verify(emu, plaintext("one"))
    assert (second["valid"], second["code"], second["credits"]) == (False, "USAGE_EXCEEDED", 0)
    for _ in range(2):
        unlimited = verify(emu, plaintext("unlimited"))
        assert unlimited["code"] == "VALID" and "credits" not in unlimited


def test_verify_costs_credits(emu: UnkeyEmulator) -> None:
    migrate(emu, key(1, credits={"remaining": 5}))
    r = post(emu, VERIFY, {"key": plaintext(1), "credits": {"cost": 3}})
    assert r.json()["data"]["credits"] == 2
    r = post(emu, VERIFY, {"key": plaintext(1), "credits": {"cost": 3}})
    assert r.json()["data"]["code"] == "USAGE_EXCEEDED"
    assert emu.keys[key(1)["hash"]].credits_remaining == 2


def test_verify_does_not_see_other_workspaces(emu: UnkeyEmulator) -> None:
    emu.add_existing_hash(key(1)["hash"], workspace_id="ws_other")
    assert verify(emu, plaintext(1), migration_id=None) == {"valid": False, "code": "NOT_FOUND"}


def test_verify_errors(make_emulator: Callable[..., UnkeyEmulator]) -> None:
    emu = make_emulator()
    migrate(emu, key(1))
    assert_error(post(emu, VERIFY, {"key": ""}), 400, "unkey/application/invalid_input")
    error = assert_error(
        post(emu, VERIFY, {"key": "k", "prefix": "x"}), 400, "unkey/application/invalid_input"
    )
    assert [e["location"] for e in error["errors"]] == ["body.prefix"]
    assert_error(post(emu, VERIFY, {"key": "k"}, headers={}), 400, "unkey/authentication/missing")
    assert_error(
        post(emu, VERIFY, {"key": "k"}, headers={"Authorization": "Bearer x"}),
        401,
        "unkey/authentication/key_not_found",
    )
    emu.add_root_key("unkey_root_create_only", permissions=["api.*.create_key"])
    r = post(emu, VERIFY, {"key": plaintext(1)}, headers={"Authorization": "Bearer unkey_root_create_only"})
    assert_error(r, 403, "unkey/authorization/insufficient_permissions")
    emu.add_root_key("unkey_root_other_api", permissions=["api.api_other.verify_key"])
    r = post(emu, VERIFY, {"key": plaintext(1)}, headers={"Authorization": "Bearer unkey_root_other_api"})
    assert_error(r, 403, "unkey/authorization/insufficient_permissions")
    emu.add_root_key("unkey_root_this_api", permissions=["api.api_test.verify_key"])
    r = post(emu, VERIFY, {"key": plaintext(1)}, headers={"Authorization": "Bearer unkey_root_this_api"})
    assert r.json()["data"]["code"] == "VALID"


# --- getApi / liveness / unknown routes ----------------------------------------------------------------
def test_get_api(make_emulator: Callable[..., UnkeyEmulator]) -> None:
    emu = make_emulator()
    emu.add_api("api_named", name="payments-production")
    emu.add_api("api_elsewhere", workspace_id="ws_other")
    r = post(emu, GET_API, {"apiId": "api_named"})
    assert r.status_code == 200 and r.json()["data"] == {"id": "api_named", "name": "payments-production"}
    assert post(emu, GET_API, {"apiId": "api_test"}).json()["data"] == {"id": "api_test", "name": "api_test"}
    assert_error(post(emu, GET_API, {"apiId": "api_missing"}), 404, "unkey/data/api_not_found")
    assert_error(post(emu, GET_API, {"apiId": "api_elsewhere"}), 404, "unkey/data/api_not_found")
    assert_error(post(emu, GET_API, {"apiId": "api"}), 400, "unkey/application/invalid_input")
    assert_error(post(emu, GET_API, {"apiId": "api-with-dash"}), 400, "unkey/application/invalid_input")
    assert_error(
        post(emu, GET_API, {"apiId": "api_test"}, headers={"Authorization": "Bearer x"}),
        401,
        "unkey/authentication/key_not_found",
    )
    emu.add_root_key("unkey_root_no_read", permissions=["api.*.create_key"])
    no_read = {"Authorization": "Bearer unkey_root_no_read"}
    # Permission is checked before existence.
    assert_error(
        post(emu, GET_API, {"apiId": "api_missing"}, headers=no_read),
        403,
        "unkey/authorization/insufficient_permissions",
    )
    emu.add_root_key("unkey_root_read_one", permissions=["api.api_named.read_api"])
    read_one = {"Authorization": "Bearer unkey_root_read_one"}
    assert post(emu, GET_API, {"apiId": "api_named"}, headers=read_one).status_code == 200
    assert post(emu, GET_API, {"apiId": "api_test"}, headers=read_one).status_code == 403


def test_liveness_needs_no_auth_and_ignores_faults(emu: UnkeyEmulator) -> None:
    emu.set_faults(error_rate=1.0, reset_rate=1.0, latency=5.0)
    r = requests.get(f"{emu.url}/v2/liveness", timeout=2)
    assert r.status_code == 200
    assert r.json()["data"] == {"message": "OK"} and r.json()["meta"]["requestId"].startswith("req_")


@pytest.mark.parametrize(("method", "path"), [("POST", "/v2/keys.nope"), ("GET", MIGRATE), ("DELETE", "/")])
def test_unknown_routes_are_404(emu: UnkeyEmulator, method: str, path: str) -> None:
    r = requests.request(method, f"{emu.url}{path}", json={}, headers=AUTH, timeout=5)
    assert_error(r, 404, "unkey/data/route_not_found")


# --- content types -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        ("application/problem+json", "application/problem+json"),
        ("*/*", "application/problem+json"),
        ("application/json, application/problem+json;q=0.5", "application/problem+json"),
        ("application/*", "application/problem+json"),
        (None, "application/problem+json"),  # no Accept header accepts anything
        ("application/json", "application/json"),
        ("application/problem+json;q=0", "application/json"),
    ],
)
def test_error_content_type_follows_accept(emu: UnkeyEmulator, accept: str | None, content_type: str) -> None:
    headers = {"Authorization": "Bearer nope", "Accept": accept}  # None drops the header in requests
    r = migrate(emu, key(1), headers=headers)
    assert r.status_code == 401
    assert r.headers["Content-Type"] == content_type
    ok = migrate(emu, key(1), headers={**AUTH, "Accept": accept})
    assert ok.status_code == 200 and ok.headers["Content-Type"] == "application/json"


# --- faults --------------------------------------------------------------------------------------------
def test_latency_faults_add_time(emu: UnkeyEmulator) -> None:
    emu.set_faults(latency=0.2)
    t0 = time.monotonic()
    assert migrate(emu, key(1)).status_code == 200
    assert time.monotonic() - t0 >= 0.2
    emu.set_faults(latency=0.0, latency_per_key=0.002)
    t0 = time.monotonic()
    assert migrate(emu, *[key(i) for i in range(10, 110)]).status_code == 200
    assert time.monotonic() - t0 >= 0.2
    records = emu.requests
    assert [r.fault for r in records] == ["latency", "latency"]
    assert all(r.duration >= 0.2 for r in records)
    emu.set_faults(latency_per_key=0.0)
    assert migrate(emu, key(2)).status_code == 200
    assert emu.requests[-1].fault is None


def _statuses_under_error_rate(emu: UnkeyEmulator, n: int) -> list[int]:
    statuses = []
    with requests.Session() as session:
        for i in range(n):
            statuses.append(migrate(emu, key(f"e{i}"), session=session).status_code)
    return statuses


def test_error_rate_is_deterministic_under_the_seed(make_emulator: Callable[..., UnkeyEmulator]) -> None:
    faults = Faults(error_rate=0.5, error_statuses=(500, 502, 503))
    runs = [_statuses_under_error_rate(make_emulator(seed=seed, faults=faults), 40) for seed in (7, 7, 8)]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    assert set(runs[0]) == {200, 500, 502, 503}
    emu = make_emulator(seed=7, faults=faults)
    statuses = _statuses_under_error_rate(emu, 40)
    assert statuses == runs[0]
    # An injected error commits nothing.
    stored = set(emu.keys)
    for i, status in enumerate(statuses):
        assert (key(f"e{i}")["hash"] in stored) == (status == 200)
    errors = [r for r in emu.requests if r.status != 200]
    assert errors and all(r.fault == "error" for r in errors)


def test_injected_errors_have_their_types(make_emulator: Callable[..., UnkeyEmulator]) -> None:
    emu = make_emulator(faults=Faults(error_rate=1.0, error_statuses=(502,)))
    assert_error(migrate(emu, key(1)), 502, "unkey/application/service_unavailable")
    emu.set_faults(error_statuses=(500,))
    assert_error(migrate(emu, key(1)), 500, "unkey/application/unexpected_error")
    assert emu.keys == {}


def test_a_rate_limit_storm(emu: UnkeyEmulator) -> None:
    emu.set_faults(rate_limit_storm=3, storm_retry_after=2)
    for _ in range(3):
        r = migrate(emu, key(1))
        assert_error(r, 429, "user/too_many_requests/workspace_rate_limited")
        assert r.headers["Retry-After"] == "2"
    assert emu.faults.rate_limit_storm == 0
    assert migrate(emu, key(1)).status_code == 200
    assert [r.fault for r in emu.requests] == ["rate_limit_storm"] * 3 + [None]


def test_a_reset_connection_raises_connection_error(emu: UnkeyEmulator) -> None:
    emu.set_faults(reset_rate=1.0)
    with requests.Session() as session, pytest.raises(requests.ConnectionError):
        migrate(emu, key(1), session=session)
    assert emu.keys == {}
    assert emu.status_counts["reset"] == 1
    (record,) = emu.requests
    assert (record.status, record.fault, record.hashes) == ("reset", "reset", ())
    assert emu.hash_counts == {}
    emu.set_faults(reset_rate=0.0)
    assert migrate(emu, key(1)).status_code == 200


def test_a_drop_after_commit_loses_the_response_but_keeps_the_keys(emu: UnkeyEmulator) -> None:
    emu.set_faults(drop_after_commit_rate=1.0)
    batch = [key(1), key(2)]
    with requests.Session() as session:
        with pytest.raises(requests.ConnectionError):
            migrate(emu, *batch, session=session)
        assert set(emu.keys) == {k["hash"] for k in batch}
        assert emu.status_counts["dropped_after_commit"] == 1
        emu.set_faults(drop_after_commit_rate=0.0)
        retry = migrate(emu, *batch, session=session)
    assert retry.status_code == 200
    assert retry.json()["data"] == {"migrated": [], "failed": [k["hash"] for k in batch]}
    assert emu.hash_counts == {k["hash"]: 2 for k in batch}


def test_a_drop_needs_a_commit(emu: UnkeyEmulator) -> None:
    emu.set_faults(drop_after_commit_rate=1.0)
    assert migrate(emu, key(1), key(1)).status_code == 500  # nothing committed: answered
    emu.add_existing_hash(key(2)["hash"])
    assert migrate(emu, key(2)).status_code == 200  # all failed: nothing committed


def test_set_faults_while_running_from_another_thread(emu: UnkeyEmulator) -> None:
    statuses: list[int] = []
    reached, switched = threading.Event(), threading.Event()

    def client() -> None:
        try:
            with requests.Session() as session:
                for i in range(30):
                    if i == 10:
                        reached.set()
                        switched.wait()
                    statuses.append(migrate(emu, key(f"t{i}"), session=session).status_code)
        finally:
            reached.set()  # a client that failed early must not leave the test waiting

    t = threading.Thread(target=client)
    t.start()
    reached.wait()
    emu.set_faults(error_rate=1.0, error_statuses=(503,))
    switched.set()
    t.join()
    assert statuses[:10] == [200] * 10 and statuses[10:] == [503] * 20
    assert emu.faults.error_rate == 1.0


def test_the_faults_given_are_copied(emu: UnkeyEmulator) -> None:
    faults = Faults(rate_limit_storm=1)
    with UnkeyEmulator.quick(faults=faults) as other:
        assert migrate(other, key(1)).status_code == 429
        assert migrate(other, key(1)).status_code == 200
    assert faults.rate_limit_storm == 1  # the emulator counted down its own copy


def test_set_faults_validates(emu: UnkeyEmulator) -> None:
    with pytest.raises(TypeError):
        emu.set_faults(no_such_fault=1)
    with pytest.raises(ValueError, match="error_rate"):
        emu.set_faults(error_rate=1.5)
    with pytest.raises(ValueError):
        Faults(latency=-1)
    assert emu.faults == Faults()


# --- the log -------------------------------------------------------------------------------------------
def test_the_request_log_and_counters(emu: UnkeyEmulator) -> None:
    t0 = time.monotonic()
    first = migrate(emu, key(1), key(2))
    migrate(emu, key(2), key(3))
    migrate(emu, key(1), headers={"Authorization": "Bearer nope"})
    post(emu, VERIFY, {"key": plaintext(1)})
    records = emu.requests
    assert [(r.method, r.path, r.status) for r in records] == [
        ("POST", MIGRATE, 200),
        ("POST", MIGRATE, 200),
        ("POST", MIGRATE, 401),
        ("POST", VERIFY, 200),
    ]
    assert records[0].request_id == first.json()["meta"]["requestId"]
    assert records[0].hashes == (key(1)["hash"], key(2)["hash"])
    assert records[3].hashes == ()
    assert all(t0 <= r.started <= r.finished <= time.monotonic() for r in records)
    assert emu.hash_counts == {key(1)["hash"]: 2, key(2)["hash"]: 2, key(3)["hash"]: 1}
    assert emu.status_counts == {200: 3, 401: 1}
    emu.reset_log()
    assert emu.requests == [] and emu.hash_counts == {} and emu.status_counts == {}
    assert len(emu.keys) == 3  # the store stays


# --- concurrency and life cycle ------------------------------------------------------------------------
def test_concurrent_disjoint_batches_are_each_stored_once(emu: UnkeyEmulator) -> None:
    n_threads, n_requests, batch = 8, 5, 100
    key_ids: list[str] = []
    lock = threading.Lock()

    def client(t: int) -> None:
        with requests.Session() as session:
            for r in range(n_requests):
                keys = [key(f"{t}-{r}-{i}") for i in range(batch)]
                resp = migrate(emu, *keys, session=session)
                assert resp.status_code == 200
                with lock:
                    key_ids.extend(m["keyId"] for m in resp.json()["data"]["migrated"])

    threads = [threading.Thread(target=client, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = n_threads * n_requests * batch
    assert len(key_ids) == len(set(key_ids)) == total
    assert len(emu.keys) == total
    assert sorted(k.key_id for k in emu.keys.values()) == sorted(key_ids)
    assert set(emu.hash_counts.values()) == {1}


def test_concurrent_overlapping_batches_migrate_each_hash_once(emu: UnkeyEmulator) -> None:
    shared = [key(f"s{i}") for i in range(200)]
    results: list[dict[str, Any]] = []

    def client() -> None:
        results.append(migrate(emu, *shared).json()["data"])

    threads = [threading.Thread(target=client) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    migrated = [m["hash"] for r in results for m in r["migrated"]]
    assert sorted(migrated) == sorted(k["hash"] for k in shared)
    assert sum(len(r["failed"]) for r in results) == 5 * len(shared)


def test_stop_closes_idle_keep_alive_connections() -> None:
    emu = UnkeyEmulator.quick().start()
    session = requests.Session()
    assert migrate(emu, key(1), session=session).status_code == 200
    emu.stop()
    assert not emu.running
    with pytest.raises(requests.ConnectionError):
        migrate(emu, key(2), session=session)
    session.close()
    emu.stop()  # idempotent


def test_life_cycle_and_set_up() -> None:
    emu = UnkeyEmulator.quick()
    with pytest.raises(RuntimeError):
        _ = emu.url
    with emu:
        assert emu.running and emu.url.startswith("http://127.0.0.1:")
        with pytest.raises(RuntimeError):
            emu.start()
        assert requests.get(f"{emu.url}/v2/liveness", timeout=5).status_code == 200
    assert not emu.running
    with pytest.raises(ValueError, match="algorithm"):
        emu.add_migration("mig_x", algorithm="md5")
    with pytest.raises(ValueError):
        UnkeyEmulator(rate_limit_window=0)
    emu.add_existing_hash("abc")
    with pytest.raises(ValueError):
        emu.add_existing_hash("abc")
