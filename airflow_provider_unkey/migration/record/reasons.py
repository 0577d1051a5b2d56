"""Why a row was not migrated, and where in the pipeline that was decided.

Both the outcome files and the ledger record these values, so they live here, apart from either.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Reason", "Stage"]


class Reason(StrEnum):
    """Why a row was not migrated (a small closed set)."""

    INVALID = "invalid"  #: failed validation before anything was sent
    DUPLICATE_IN_SOURCE = "duplicate_in_source"  #: an earlier source row has the same hash
    ALREADY_EXISTS = "already_exists"  #: Unkey answered it in ``failed``: the hash exists in Unkey
    UNCONFIRMED = "unconfirmed"  #: in ``failed`` on a retry after a lost response: probably created by us
    REJECTED_BY_API = "rejected_by_api"  #: Unkey refused the key itself (a 400 or a 500 for it alone)
    GAVE_UP = "gave_up"  #: retries ran out (rate limit, server or network errors)
    NOT_SENT = "not_sent"  #: the run stopped (a fatal error) before this row was sent


class Stage(StrEnum):
    """Where in the pipeline a row's outcome was decided."""

    VALIDATE = "validate"
    DEDUPLICATE = "deduplicate"
    SEND = "send"
