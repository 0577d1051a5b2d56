"""The emulator's state: keys, root keys, APIs, migrations, identities.

:class:`Store` holds what Unkey's database would (one lock around everything a request reads or
commits); it knows nothing about HTTP.

The workspace rate limiter (:mod:`~airflow_provider_unkey.testing.ratelimit`) and the request log
(:mod:`~airflow_provider_unkey.testing.request_log`) have modules of their own; their names stay
importable from here.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from airflow_provider_unkey import rules
from airflow_provider_unkey.testing.ratelimit import (
    DEFAULT_RATE_LIMIT_WINDOW,
    RATE_LIMITED_DETAIL,
    Quota,
    RateLimiter,
    _milliseconds,
    _whole_seconds_until,
    check_rate_limit,
    go_duration,
    window_milliseconds,
)
from airflow_provider_unkey.testing.request_log import RequestLog, RequestRecord

__all__ = [
    "DEFAULT_RATE_LIMIT_WINDOW",
    "DEFAULT_ROOT_KEY_PERMISSIONS",
    "RATE_LIMITED_DETAIL",
    "Api",
    "Migration",
    "Quota",
    "RateLimiter",
    "RequestLog",
    "RequestRecord",
    "RootKey",
    "Store",
    "StoredKey",
    "_milliseconds",
    "_whole_seconds_until",
    "check_rate_limit",
    "go_duration",
    "random_id",
    "random_ids",
    "seam_hash",
    "sha256_base64",
    "window_milliseconds",
]

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
