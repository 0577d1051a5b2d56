"""What a failed request means: the one table (:data:`ACTIONS`), :func:`classify`, and the abort.

Nothing here imports Airflow. After the client's retries, a failed request either stops the run
(:class:`MigrationAborted`, with what to fix), splits its batch to isolate the keys at fault, rejects
its single key, or gives up. A 400 whose ``errors[]`` names key indexes drops those keys at once
(:func:`_named_keys`).
"""

from __future__ import annotations

import re
from enum import StrEnum

from airflow_provider_unkey.exceptions import (
    UnkeyAPIError,
    UnkeyAuthenticationError,
    UnkeyError,
    UnkeyPermissionError,
    UnkeyTransportError,
)
from airflow_provider_unkey.migration.record import MigrationSummary

_KEY_INDEX = re.compile(r"^body\.keys\[(\d+)\]")


class Action(StrEnum):
    """What the engine does with a batch whose request failed (after the client's retries)."""

    ABORT = "abort"  #: stop the run: nothing more is sent; this batch and the rest are not_sent
    SPLIT = "split"  #: send the batch again as two halves, to isolate the keys at fault
    REJECT = "reject"  #: the single key is refused: rejected_by_api
    GIVE_UP = "give_up"  #: retries ran out on a problem of the service or the network: gave_up
    #: the workspace rate limit refused the request, so nothing was processed: send it again when the
    #: pace allows, without using up an attempt (only the run's time budget bounds the waits)
    WAIT = "wait"


#: The one table of what a failed request means: status -> (batch of several keys, single key).
#: 400: the body is refused (a 400 whose errors[] names keys drops those first). 401/403/404: the root
#: key, its permission, the API or the migration is wrong; no batch can succeed. 408 (the 60 s server
#: timeout), 413 and 500 (a duplicate role, a null remaining...): about this batch's content or size.
#: 502-504 after the retries: the service is unwell, and splitting would only multiply requests. 429:
#: the workspace rate limit refused the request before anything was processed; it waits and goes again.
ACTIONS: dict[int, tuple[Action, Action]] = {
    400: (Action.SPLIT, Action.REJECT),
    401: (Action.ABORT, Action.ABORT),
    403: (Action.ABORT, Action.ABORT),
    404: (Action.ABORT, Action.ABORT),
    408: (Action.SPLIT, Action.REJECT),
    413: (Action.SPLIT, Action.REJECT),
    429: (Action.WAIT, Action.WAIT),
    500: (Action.SPLIT, Action.REJECT),
    502: (Action.GIVE_UP, Action.GIVE_UP),
    503: (Action.GIVE_UP, Action.GIVE_UP),
    504: (Action.GIVE_UP, Action.GIVE_UP),
}
#: Any other 5xx is treated as a 500; any other status, and a transport error, as a give-up.
_OTHER_SERVER_ERROR = ACTIONS[500]
#: Statuses on which a batch of several keys is split after its first attempt rather than retried:
#: a retry would fail the same way (and a 408 costs up to 60 s an attempt).
SPLIT_WITHOUT_RETRY = frozenset({408, 500})


def classify(exc: UnkeyAPIError | UnkeyTransportError, keys: int) -> Action:
    """What to do with a batch of ``keys`` keys whose request ended in ``exc``."""
    if isinstance(exc, UnkeyAPIError):
        row = ACTIONS.get(exc.status) or (_OTHER_SERVER_ERROR if exc.status >= 500 else None)
        if row is not None:
            return row[0] if keys > 1 else row[1]
    return Action.GIVE_UP


def _named_keys(exc: UnkeyAPIError | UnkeyTransportError, keys: int) -> set[int]:
    """The key indexes a 400's ``errors[]`` names (``body.keys[3].name``), within the batch."""
    if not isinstance(exc, UnkeyAPIError) or exc.status != 400:
        return set()
    named = {int(m.group(1)) for e in exc.errors if (m := _KEY_INDEX.match(e.location))}
    return {i for i in named if i < keys}


class MigrationAborted(UnkeyError):
    """The run stopped: Unkey refused the root key, its permissions, the API or the migration.

    :param message: what to fix.
    :param cause: the API error that stopped the run.
    """

    def __init__(self, message: str, cause: UnkeyAPIError) -> None:
        super().__init__(message)
        self.cause = cause
        #: What the run did before it stopped; set by
        #: :func:`~airflow_provider_unkey.migration.run.run_migration`.
        self.summary: MigrationSummary | None = None


def _what_to_fix(exc: UnkeyAPIError, migration_id: str, api_id: str) -> str:
    if isinstance(exc, UnkeyAuthenticationError):
        return (
            "Unkey does not know the root key (401): put a valid root key in the Unkey connection's password."
        )
    if isinstance(exc, UnkeyPermissionError):
        return (
            f"The root key may not create keys in API {api_id!r} (403): give it the permission "
            f"api.*.create_key or api.{api_id}.create_key."
        )
    if exc.code == "migration_not_found":
        return (
            f"Unkey does not know migration id {migration_id!r} (404): use the migration id that Unkey "
            "support set up for your workspace."
        )
    return f"Unkey does not know API {api_id!r} in the root key's workspace (404): check api_id."
