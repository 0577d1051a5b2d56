"""What :class:`~airflow_provider_unkey.client.UnkeyClient`'s calls return: one frozen dataclass per call.

:class:`MigrateKeysResult` (``keys.migrateKeys``), :class:`VerifyKeyResult` (``keys.verifyKey``) and
:class:`ApiInfo` (``apis.getApi``). ``airflow_provider_unkey.client`` re-exports them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ApiInfo", "MigrateKeysResult", "VerifyKeyResult"]


@dataclass(frozen=True, slots=True)
class MigrateKeysResult:
    """The outcome of one ``keys.migrateKeys`` call.

    :param request_id: ``meta.requestId`` of the response that was used.
    :param migrated: ``(hash, keyId)`` pairs that Unkey created.
    :param failed: hashes that Unkey did not create because a key with that hash already exists.
    :param attempts: how many HTTP attempts the call took.
    :param unanswered_attempts: attempts that were sent but got no response (reset, timeout). When
        non-zero, the server may have created keys on such an attempt; a later attempt then reports
        those hashes under :attr:`failed`.
    """

    request_id: str
    migrated: list[tuple[str, str]]
    failed: list[str]
    attempts: int = 1
    unanswered_attempts: int = 0


@dataclass(frozen=True, slots=True)
class VerifyKeyResult:
    """The outcome of one ``keys.verifyKey`` call.

    :param valid: whether the key may be used.
    :param code: ``VALID``, ``NOT_FOUND``, ``DISABLED``, ``EXPIRED``, ...
    :param key_id: the key's id (absent for ``NOT_FOUND``).
    :param request_id: ``meta.requestId``.
    :param data: the whole ``data`` object.
    """

    valid: bool
    code: str
    key_id: str | None
    request_id: str
    data: dict[str, Any] = field(repr=False)


@dataclass(frozen=True, slots=True)
class ApiInfo:
    """An Unkey API (``apis.getApi``)."""

    id: str
    name: str
