"""The engine's one error classifier: what each status or transport error means for a batch."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_provider_unkey.client import RetryPolicy, UnkeyClient
from airflow_provider_unkey.exceptions import FieldError, UnkeyTransportError, error_class_for
from airflow_provider_unkey.migration.engine import (
    ACTIONS,
    SPLIT_WITHOUT_RETRY,
    Action,
    Batcher,
    MigrationEngine,
    classify,
)
from airflow_provider_unkey.migration.record.outcomes import OutcomeWriter
from airflow_provider_unkey.migration.send.failures import _named_keys

A, S, R, G, W = Action.ABORT, Action.SPLIT, Action.REJECT, Action.GIVE_UP, Action.WAIT

# status: (a batch of several keys, a single key)
EXPECTED = {
    400: (S, R),
    401: (A, A),
    403: (A, A),
    404: (A, A),
    408: (S, R),
    409: (G, G),  # not in the API's table: nothing to learn from splitting
    413: (S, R),
    418: (G, G),
    429: (W, W),  # nothing was processed: sent again through the pacer, never given up for it
    500: (S, R),
    501: (S, R),  # any other 5xx is a 500
    502: (G, G),
    503: (G, G),
    504: (G, G),
    505: (S, R),
}


@pytest.mark.parametrize(("status", "expected"), sorted(EXPECTED.items()))
def test_each_status_has_one_meaning(status: int, expected: tuple[Action, Action]) -> None:
    exc = error_class_for(status)(status, title="t", detail="d")
    assert (classify(exc, 5), classify(exc, 1)) == expected


@pytest.mark.parametrize("sent", [True, False])
def test_transport_errors_give_up(sent: bool) -> None:
    exc = UnkeyTransportError("connection reset", sent=sent)
    assert classify(exc, 5) is classify(exc, 1) is G


def test_the_table_is_all_there_is() -> None:
    assert {s: ACTIONS[s] for s in ACTIONS} == {s: EXPECTED[s] for s in ACTIONS}
    # Split at once, without retries, only where a batch is split anyway.
    assert all(ACTIONS[s][0] is S for s in SPLIT_WITHOUT_RETRY)
    assert {408, 500} == SPLIT_WITHOUT_RETRY


def test_the_engine_retries_batches_by_the_table(tmp_path: Path) -> None:
    client = UnkeyClient("unkey_root_x", "http://127.0.0.1:9", retry=RetryPolicy(max_attempts=3))
    writer = OutcomeWriter(tmp_path)
    engine = MigrationEngine(client, "mig", "api", Batcher("mig", "api", 10, 4096), writer)
    writer.close()
    assert engine.batch_retry.no_retry_statuses >= SPLIT_WITHOUT_RETRY
    assert not engine.single_retry.no_retry_statuses & SPLIT_WITHOUT_RETRY
    client.close()


def test_a_400_names_its_keys_within_the_batch() -> None:
    errors = (
        FieldError("body.keys[1].name", "too short"),
        FieldError("body.keys[3]", "bad"),
        FieldError("body.keys[7].roles[0]", "outside this batch of 5"),
        FieldError("body.apiId", "not a key"),
    )
    bad_request = error_class_for(400)(400, errors=errors)
    assert _named_keys(bad_request, 5) == {1, 3}
    assert _named_keys(error_class_for(500)(500, errors=errors), 5) == set()  # only a 400 names keys
    assert _named_keys(UnkeyTransportError("reset", sent=True), 5) == set()
