"""The emulator's endpoints: ``keys.migrateKeys``, ``keys.verifyKey``, ``apis.getApi`` and ``liveness``.

A route gets a schema-valid, authenticated, rate-counted request with its decoded body (see
:mod:`airflow_provider_unkey.testing.pipeline`) and answers the way the real server does (see
``BEHAVIOUR.md`` next to Unkey's OpenAPI spec), validating migration requests with
:mod:`airflow_provider_unkey.rules`.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any, Final, Protocol

from airflow_provider_unkey import rules
from airflow_provider_unkey.testing import replies
from airflow_provider_unkey.testing.faults import FaultSource
from airflow_provider_unkey.testing.replies import (
    API_NOT_FOUND_DETAIL,
    ERR_API_NOT_FOUND,
    ERR_INSUFFICIENT_PERMISSIONS,
    ERR_MIGRATION_NOT_FOUND,
    ERR_UNEXPECTED,
    MIGRATION_NOT_FOUND_DETAIL,
    PANIC_DETAIL,
)
from airflow_provider_unkey.testing.schemas import INVALID_JSON, get_api_violations, verify_violations
from airflow_provider_unkey.testing.store import (
    Api,
    RootKey,
    Store,
    StoredKey,
    random_ids,
    seam_hash,
    sha256_base64,
)
from airflow_provider_unkey.testing.transport import DROP, Reply, Request

PATH_MIGRATE: Final = "/v2/keys.migrateKeys"
PATH_VERIFY: Final = "/v2/keys.verifyKey"
PATH_GET_API: Final = "/v2/apis.getApi"
PATH_LIVENESS: Final = "/v2/liveness"

_NULL_REMAINING: Final = ".credits.remaining"  # where rules.server_violations reports the panic


def _refused_body(
    req: Request, body: Any, path: str, violations_of: Callable[[Any], list[rules.Violation]]
) -> Reply | None:
    """The 400 for a body that is not JSON or fails the route's schema; ``None`` for a good one."""
    if body is INVALID_JSON:
        return replies.invalid_json(req)
    violations = violations_of(body)
    if violations:
        return replies.bad_request(
            req, f"POST request body for '{path}' failed to validate schema", violations
        )
    return None


#: Each route's schema check (Unkey's OpenAPI validation of the request body).
_SCHEMAS: Final[dict[str, Callable[[Any], list[rules.Violation]]]] = {
    PATH_MIGRATE: rules.schema_violations,
    PATH_VERIFY: verify_violations,
    PATH_GET_API: get_api_violations,
}

#: A route: the request, its decoded body (valid: :meth:`Routes.refused_body` passed it) and its root key.
Route = Callable[[Request, Any, RootKey], Reply]


class Settings(Protocol):
    """The emulator's settings a route reads at the time of each request."""

    server_timeout: float
    freeze_gc: bool


class Routes:
    """The endpoints, over the emulator's store and faults."""

    def __init__(self, store: Store, faults: FaultSource, settings: Settings) -> None:
        self._store = store
        self._faults = faults
        self._settings = settings

    @staticmethod
    def refused_body(req: Request, body: Any) -> Reply | None:
        """The 400 for a body that is not JSON or fails its route's schema; ``None`` for a good one.

        Unkey's OpenAPI validation runs before authentication, so the pipeline asks this first: such a
        request is neither authenticated nor counted against the rate limit.
        """
        violations_of = _SCHEMAS.get(req.path)
        return None if violations_of is None else _refused_body(req, body, req.path, violations_of)

    @staticmethod
    def liveness(req: Request) -> Reply:
        """``/v2/liveness``: no authentication, never faulted."""
        return replies.ok(req, {"message": "OK"})

    def _api_in_reach(self, req: Request, root: RootKey, action: str, api_id: str) -> Api | Reply:
        """The API, or the 403 (permission first, as the real handlers check) or 404 to answer."""
        if not root.may(action, api_id):
            return replies.error(
                req,
                403,
                f"The root key needs 'api.*.{action}' or 'api.{api_id}.{action}'.",
                ERR_INSUFFICIENT_PERMISSIONS,
            )
        api = self._store.live_api(api_id, root.workspace_id)
        if api is None:
            # Unknown, deleted and another workspace's APIs alike (Unkey masks the last as a 404).
            return replies.error(req, 404, API_NOT_FOUND_DETAIL, ERR_API_NOT_FOUND)
        return api

    def migrate(self, req: Request, body: Any, root: RootKey) -> Reply:
        """``keys.migrateKeys``: all or nothing, hashes that exist anywhere in ``failed``."""
        api_id: str = body["apiId"]
        migration_id: str = body["migrationId"]
        api = self._api_in_reach(req, root, "create_key", api_id)
        if isinstance(api, Reply):
            return api
        migration = self._store.migrations.get(migration_id)
        if migration is None or migration.workspace_id != root.workspace_id:
            return replies.error(req, 404, MIGRATION_NOT_FOUND_DETAIL, ERR_MIGRATION_NOT_FOUND)
        # Every 400 wins over every 500: the server checks each key before it builds any row.
        server = rules.server_violations(body)
        bad = [v for v in server if v.status == 400]
        if bad:
            return replies.bad_request(req, "The request cannot be processed.", bad)
        if any(v.location.endswith(_NULL_REMAINING) for v in server):
            # "credits": {"remaining": null} (the rules' only 500 there): the handler dereferences it
            # while building the rows, before any insert, panics, and the recovery middleware answers
            # 500. Nothing of the request is committed.
            return replies.error(req, 500, PANIC_DETAIL, ERR_UNEXPECTED)
        if server:
            # The real server fails the insert and rolls the whole transaction back.
            first = server[0]
            return replies.error(
                req,
                500,
                f"An internal error occurred; nothing was migrated ({first.location} {first.message}).",
                ERR_UNEXPECTED,
            )

        keys: list[dict[str, Any]] = body["keys"]
        key_ids = random_ids("key_", len(keys))
        workspace_id = root.workspace_id
        migrated: list[dict[str, str]] = []
        failed: list[str] = []
        with self._store.lock:
            # The transaction: a request past the server timeout commits nothing.
            server_timeout = self._settings.server_timeout
            if time.monotonic() - req.started > server_timeout:
                return replies.timeout(req, server_timeout, None)
            store = self._store.keys
            for key, key_id in zip(keys, key_ids, strict=True):
                h = key["hash"]
                if h in store:
                    failed.append(h)
                    continue
                credits = key.get("credits")
                stored = StoredKey(
                    h,
                    key_id,
                    workspace_id,
                    api_id,
                    migration_id,
                    {name: value for name, value in key.items() if name != "hash"},
                    credits["remaining"] if credits is not None else None,
                )
                store[h] = stored
                migrated.append({"hash": h, "keyId": key_id})
        if migrated and self._settings.freeze_gc:
            gc.freeze()
        reply = replies.ok(req, {"migrated": migrated, "failed": failed})
        if migrated and self._faults.drop_after_commit():
            reply.action, reply.fault = DROP, "drop_after_commit"
        return reply

    def verify(self, req: Request, body: Any, root: RootKey) -> Reply:
        """``keys.verifyKey``: by native hash first, then by the seam hash of ``migrationId``."""
        if not root.may_at_all("verify_key"):
            return replies.error(
                req,
                403,
                "The root key needs 'api.*.verify_key' or 'api.<apiId>.verify_key'.",
                ERR_INSUFFICIENT_PERMISSIONS,
            )
        plaintext: str = body["key"]
        migration_id: str | None = body.get("migrationId")
        cost = body["credits"]["cost"] if "credits" in body else 1
        native = sha256_base64(plaintext)
        with self._store.lock:
            store = self._store.keys
            stored = store.get(native)
            seam_key: str | None = None  # the seam hash the key was found under
            if stored is None and migration_id is not None:
                # Only a key not found by its native hash consults the migration. An unknown migration
                # (or another workspace's) is no error: the key is simply not found.
                migration = self._store.migrations.get(migration_id)
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
                return replies.ok(req, {"valid": False, "code": "NOT_FOUND"})
            api = self._store.apis.get(stored.api_id) if stored.api_id is not None else None
            if api is not None and api.deleted:
                # The key of a deleted API: not found, before any permission check (Unkey's order).
                return replies.ok(req, {"valid": False, "code": "NOT_FOUND"})
            if not root.may("verify_key", stored.api_id):
                return replies.error(
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
                identity_id = self._store.identity_id(stored.workspace_id, stored.externalId)
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
            return replies.ok(req, data)

    def get_api(self, req: Request, body: Any, root: RootKey) -> Reply:
        """``apis.getApi``: the API's id and name."""
        api_id: str = body["apiId"]
        api = self._api_in_reach(req, root, "read_api", api_id)
        if isinstance(api, Reply):
            return api
        return replies.ok(req, {"id": api_id, "name": api.name})
