"""Every body the emulator answers validates against Unkey's published OpenAPI spec.

Statuses the spec does not declare for an endpoint (408, 413, an injected 502/503, a 404 for an
unknown route) are checked against the spec's error envelope of that status class.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from airflow_provider_unkey import rules
from airflow_provider_unkey.testing import UnkeyEmulator, seam_hash, sha256_base64
from tests.spec import assert_valid_request, assert_valid_response, response_schema_name, schema_errors
from tests.testing.clocks import W0, FakeClock

ROOT = "unkey_root_test"
AUTH = {"Authorization": f"Bearer {ROOT}"}
MIGRATE = "/v2/keys.migrateKeys"
VERIFY = "/v2/keys.verifyKey"
GET_API = "/v2/apis.getApi"
LIVENESS = "/v2/liveness"
RATE_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "Retry-After")

#: The spec's envelope for statuses an endpoint does not declare.
FALLBACK_SCHEMAS = {
    404: "NotFoundErrorResponse",
    408: "InternalServerErrorResponse",
    413: "InternalServerErrorResponse",
    502: "ServiceUnavailableErrorResponse",
    503: "ServiceUnavailableErrorResponse",
}


def assert_contract(path: str, r: requests.Response, method: str = "post") -> None:
    """The body validates against the spec's schema for ``method path`` and the status."""
    payload = r.json()
    try:
        response_schema_name(path, r.status_code, method)
    except (AssertionError, KeyError):
        # Not declared for this path: the generic error envelope of the status.
        schema = FALLBACK_SCHEMAS[r.status_code]
        errors = schema_errors(schema, payload)
        assert not errors, f"{r.status_code} of {path} does not validate as {schema}: {errors[:5]}"
        return
    assert_valid_response(path, r.status_code, payload, method)


def key(i: int | str, **fields: Any) -> dict[str, Any]:
    return {"hash": sha256_base64(f"sk_{i}"), **fields}


def migrate_body(
    *keys: dict[str, Any], api_id: str = "api_test", migration_id: str = "mig_test"
) -> dict[str, Any]:
    return {"migrationId": migration_id, "apiId": api_id, "keys": list(keys)}


@pytest.fixture
def emu() -> Iterator[UnkeyEmulator]:
    with UnkeyEmulator.quick(rate_limit=1000, rate_limit_window=0.5, server_timeout=0.2) as emu:
        emu.add_root_key("unkey_root_powerless", permissions=())
        emu.add_api("api_elsewhere", workspace_id="ws_other")
        yield emu


def _post(
    emu: UnkeyEmulator, path: str, payload: Any, headers: dict[str, str] | None = None
) -> requests.Response:
    kwargs: dict[str, Any] = {"headers": AUTH if headers is None else headers, "timeout": 10}
    kwargs["data" if isinstance(payload, bytes) else "json"] = payload
    return requests.post(f"{emu.url}{path}", **kwargs)


POWERLESS = {"Authorization": "Bearer unkey_root_powerless"}
UNKNOWN = {"Authorization": "Bearer unkey_root_unknown"}
FULL_KEY = key(
    "full",
    name="n",
    externalId="user_1",
    meta={"plan": "pro"},
    roles=["admin"],
    permissions=["documents.read"],
    expires=4_102_444_800_000,
    enabled=True,
    credits={"remaining": 5, "refill": {"interval": "daily", "amount": 5}},
    ratelimits=[{"name": "requests", "limit": 10, "duration": 60_000, "autoApply": True}],
)

Step = Callable[[UnkeyEmulator], object]
Scenario = Callable[[UnkeyEmulator], requests.Response]


def steps(*actions: Step) -> Scenario:
    """Run ``actions`` in order; the scenario's response is the last one's."""

    def run(emu: UnkeyEmulator) -> requests.Response:
        result: object = None
        for action in actions:
            result = action(emu)
        assert isinstance(result, requests.Response)
        return result

    return run


def send(path: str, payload: Any, headers: dict[str, str] | None = None) -> Step:
    return lambda emu: _post(emu, path, payload, headers)


def migrate(*keys: dict[str, Any], headers: dict[str, str] | None = None, **ids: str) -> Step:
    return send(MIGRATE, migrate_body(*keys, **ids), headers)


def faults(**fields: Any) -> Step:
    return lambda emu: emu.set_faults(**fields)


def rate_limit(limit: int) -> Step:
    return lambda emu: emu.set_rate_limit(limit)


def delete_api(emu: UnkeyEmulator) -> None:
    emu.delete_api("api_test")


def add_seam_migration(emu: UnkeyEmulator) -> None:
    emu.add_migration("mig_seam", algorithm="seam")


MIGRATE_SEAM = migrate({"hash": seam_hash("pre_a_b")}, migration_id="mig_seam")
VERIFY_SEAM = send(VERIFY, {"key": "pre_a_b", "migrationId": "mig_seam"})

MONTHLY_NO_DAY = key(1, credits={"remaining": 1, "refill": {"interval": "monthly", "amount": 1}})

#: name -> (endpoint, expected status, scenario); each runs against a fresh emulator.
SCENARIOS: dict[str, tuple[str, int, Scenario]] = {
    "migrate 200": (MIGRATE, 200, steps(migrate(FULL_KEY, key(2)))),
    "migrate 200 all failed": (MIGRATE, 200, steps(migrate(key(1)), migrate(key(1)))),
    "migrate 400 schema": (MIGRATE, 400, steps(migrate(key(1, prefix="sk")))),
    "migrate 400 json": (MIGRATE, 400, steps(send(MIGRATE, b"{"))),
    "migrate 400 refill": (MIGRATE, 400, steps(migrate(MONTHLY_NO_DAY))),
    "migrate 400 auth missing": (MIGRATE, 400, steps(migrate(key(1), headers={}))),
    "migrate 400 auth malformed": (
        MIGRATE,
        400,
        steps(migrate(key(1), headers={"Authorization": "Basic x"})),
    ),
    "migrate 401": (MIGRATE, 401, steps(migrate(key(1), headers=UNKNOWN))),
    "migrate 403": (MIGRATE, 403, steps(migrate(key(1), headers=POWERLESS))),
    "migrate 404 api": (MIGRATE, 404, steps(migrate(key(1), api_id="api_elsewhere"))),
    "migrate 404 migration": (MIGRATE, 404, steps(migrate(key(1), migration_id="mig_nope"))),
    "migrate 404 deleted api": (MIGRATE, 404, steps(delete_api, migrate(key(1)))),
    "migrate 408": (MIGRATE, 408, steps(faults(latency=0.5), migrate(key(1)))),
    "migrate 413": (MIGRATE, 413, steps(send(MIGRATE, b" " * (rules.MAX_BODY_BYTES + 1)))),
    "migrate 429": (MIGRATE, 429, steps(rate_limit(0), migrate(key(1)))),
    "migrate 429 storm": (MIGRATE, 429, steps(faults(rate_limit_storm=1), migrate(key(1)))),
    "migrate 500 duplicate hash": (MIGRATE, 500, steps(migrate(key(1), key(1)))),
    "migrate 500 duplicate role": (MIGRATE, 500, steps(migrate(key(1, roles=["a", "a"])))),
    "migrate 500 null credits": (
        MIGRATE,
        500,
        steps(
            migrate(key(1), key(2, credits={"remaining": None, "refill": {"interval": "daily", "amount": 1}}))
        ),
    ),
    "migrate 500 injected": (
        MIGRATE,
        500,
        steps(faults(error_rate=1.0, error_statuses=(500,)), migrate(key(1))),
    ),
    "migrate 502 injected": (
        MIGRATE,
        502,
        steps(faults(error_rate=1.0, error_statuses=(502,)), migrate(key(1))),
    ),
    "migrate 503 injected": (
        MIGRATE,
        503,
        steps(faults(error_rate=1.0, error_statuses=(503,)), migrate(key(1))),
    ),
    "verify 200 valid": (
        VERIFY,
        200,
        steps(migrate(FULL_KEY), send(VERIFY, {"key": "sk_full", "migrationId": "mig_test"})),
    ),
    "verify 200 seam": (VERIFY, 200, steps(add_seam_migration, MIGRATE_SEAM, VERIFY_SEAM)),
    "verify 200 disabled": (
        VERIFY,
        200,
        steps(migrate(key(1, enabled=False)), send(VERIFY, {"key": "sk_1"})),
    ),
    "verify 200 expired": (VERIFY, 200, steps(migrate(key(1, expires=1000)), send(VERIFY, {"key": "sk_1"}))),
    "verify 200 usage exceeded": (
        VERIFY,
        200,
        steps(migrate(key(1, credits={"remaining": 0})), send(VERIFY, {"key": "sk_1"})),
    ),
    "verify 200 not found": (VERIFY, 200, steps(send(VERIFY, {"key": "sk_unknown"}))),
    "verify 400": (VERIFY, 400, steps(send(VERIFY, {"key": ""}))),
    "verify 401": (VERIFY, 401, steps(send(VERIFY, {"key": "k"}, UNKNOWN))),
    "verify 403": (VERIFY, 403, steps(send(VERIFY, {"key": "k"}, POWERLESS))),
    "verify 200 unknown migration": (
        VERIFY,
        200,
        steps(migrate(key(1)), send(VERIFY, {"key": "sk_2", "migrationId": "mig_nope"})),
    ),
    # The first verification rehashes the key; migrating its seam hash again creates a second key.
    "verify 200 seam after rehash": (
        VERIFY,
        200,
        steps(add_seam_migration, MIGRATE_SEAM, VERIFY_SEAM, MIGRATE_SEAM, VERIFY_SEAM),
    ),
    "verify 200 deleted api": (
        VERIFY,
        200,
        steps(migrate(key(1)), delete_api, send(VERIFY, {"key": "sk_1"})),
    ),
    "verify 429": (VERIFY, 429, steps(rate_limit(0), send(VERIFY, {"key": "k"}))),
    "getApi 200": (GET_API, 200, steps(send(GET_API, {"apiId": "api_test"}))),
    "getApi 400": (GET_API, 400, steps(send(GET_API, {"apiId": "x"}))),
    "getApi 401": (GET_API, 401, steps(send(GET_API, {"apiId": "api_test"}, UNKNOWN))),
    "getApi 403": (GET_API, 403, steps(send(GET_API, {"apiId": "api_test"}, POWERLESS))),
    "getApi 404": (GET_API, 404, steps(send(GET_API, {"apiId": "api_elsewhere"}))),
    "getApi 404 deleted": (GET_API, 404, steps(delete_api, send(GET_API, {"apiId": "api_test"}))),
    "getApi 429": (GET_API, 429, steps(rate_limit(0), send(GET_API, {"apiId": "api_test"}))),
    "getApi 503 injected": (
        GET_API,
        503,
        steps(faults(error_rate=1.0, error_statuses=(503,)), send(GET_API, {"apiId": "api_test"})),
    ),
    "unknown route 404": ("/v2/keys.nope", 404, steps(send("/v2/keys.nope", {}))),
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_response_validates_against_the_spec(emu: UnkeyEmulator, name: str) -> None:
    path, status, scenario = SCENARIOS[name]
    r = scenario(emu)
    assert r.status_code == status, r.text
    if status == 200:
        assert r.headers["Content-Type"] == "application/json"
    else:
        assert r.headers["Content-Type"] == "application/problem+json"  # requests sends Accept: */*
    assert_contract(path, r)


@pytest.mark.parametrize(("path", "payload"), [(MIGRATE, migrate_body(key(2))), (VERIFY, {"key": "sk_1"})])
def test_the_rate_limiters_429_is_unkeys(path: str, payload: dict[str, Any]) -> None:
    clock = FakeClock(W0 + 20.5)
    with UnkeyEmulator.quick(rate_limit=1, rate_limit_clock=clock) as emu:
        assert _post(emu, MIGRATE, migrate_body(key(1))).status_code == 200
        r = _post(emu, path, payload)
    assert r.status_code == 429
    assert r.headers["Content-Type"] == "application/problem+json"
    assert {name: r.headers.get(name) for name in RATE_HEADERS} == {
        "RateLimit-Limit": "1",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": "39",  # 39.5 s to the window's end, truncated
        "Retry-After": "39",
    }
    error = r.json()["error"]
    assert error == {
        "title": "Too Many Requests",
        "detail": "This workspace has exceeded its API rate limit of 1/1m0s. Please try again later.",
        "status": 429,
        "type": "https://unkey.com/docs/errors/user/too_many_requests/workspace_rate_limited",
    }
    assert_contract(path, r)


def test_liveness_validates_against_the_spec(emu: UnkeyEmulator) -> None:
    r = requests.get(f"{emu.url}{LIVENESS}", timeout=5)
    assert r.status_code == 200
    assert_contract(LIVENESS, r, method="get")


def test_the_verify_response_with_every_field_validates(emu: UnkeyEmulator) -> None:
    _post(emu, MIGRATE, migrate_body(FULL_KEY))
    data = _post(emu, VERIFY, {"key": "sk_full", "migrationId": "mig_test"}).json()["data"]
    assert {
        "keyId",
        "name",
        "meta",
        "expires",
        "credits",
        "enabled",
        "roles",
        "permissions",
        "identity",
    } <= set(data)


def test_the_scenarios_send_valid_requests(emu: UnkeyEmulator) -> None:
    # The 200 scenarios would be worthless if their own requests were off-spec.
    assert_valid_request(MIGRATE, migrate_body(FULL_KEY, key(2)))
    assert_valid_request(VERIFY, {"key": "sk_full", "migrationId": "mig_test", "credits": {"cost": 1}})
    assert_valid_request(GET_API, {"apiId": "api_test"})
    # The null-credits 500 is the server's, not a schema failure: the spec allows the request.
    assert_valid_request(MIGRATE, migrate_body(key(2, credits={"remaining": None})))
    assert_valid_request(VERIFY, {"key": "sk_2", "migrationId": "mig_nope"})
