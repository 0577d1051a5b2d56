"""Statuses that will not change on a retry are not retried: 400, 401, 403, 404, 409, 413, 422, 501, 505.

Each is checked on the policy (:meth:`RetryPolicy.is_retryable`) and end to end: a real
:class:`UnkeyClient` against the emulator answering that status makes exactly one attempt. The 5xx that
are retried serve as the control that the same set-up does retry. (429 and 408 are left to their own
tests.)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from airflow_provider_unkey.client import UnkeyClient
from airflow_provider_unkey.exceptions import UnkeyAPIError, error_class_for
from airflow_provider_unkey.retries import RetryPolicy
from airflow_provider_unkey.testing import UnkeyEmulator, sha256_base64

ROOT, API, MIGRATION = "unkey_root_test", "api_test", "mig_test"
MIGRATE = "/v2/keys.migrateKeys"
#: Several attempts, milliseconds apart: a retried status shows as more than one request.
POLICY = RetryPolicy(max_attempts=4, max_elapsed=600.0, initial_wait=0.001, max_wait=0.002, jitter=0.0)

NOT_RETRIED = [400, 401, 403, 404, 409, 413, 422, 501, 505]
RETRIED = [500, 502, 503, 504]


def api_error(status: int) -> UnkeyAPIError:
    return error_class_for(status)(status, title="x", detail="y")


@pytest.mark.parametrize("status", NOT_RETRIED)
def test_the_policy_does_not_retry(status: int) -> None:
    for policy in (RetryPolicy(), POLICY):
        assert policy.is_retryable(api_error(status)) is False


@pytest.mark.parametrize("status", RETRIED)
def test_the_policy_retries_a_5xx_that_may_pass(status: int) -> None:
    assert RetryPolicy().is_retryable(api_error(status)) is True


@pytest.fixture
def client(unkey_emulator: UnkeyEmulator) -> Iterator[UnkeyClient]:
    c = UnkeyClient(ROOT, unkey_emulator.url, retry=POLICY, pool_size=2)
    yield c
    c.close()


def attempts_against(emu: UnkeyEmulator, client: UnkeyClient, status: int) -> tuple[UnkeyAPIError, int]:
    emu.set_faults(error_rate=1.0, error_statuses=(status,))
    with pytest.raises(UnkeyAPIError) as caught:
        client.migrate_keys(MIGRATION, API, [{"hash": sha256_base64(f"sk_retry_{status}")}])
    assert caught.value.status == status
    sent = [r for r in emu.requests if r.path == MIGRATE]
    assert all(r.status == status for r in sent)
    return caught.value, len(sent)


@pytest.mark.parametrize("status", NOT_RETRIED)
def test_the_client_makes_exactly_one_attempt(
    unkey_emulator: UnkeyEmulator, client: UnkeyClient, status: int
) -> None:
    exc, sent = attempts_against(unkey_emulator, client, status)
    assert exc.attempts == 1
    assert sent == 1
    assert unkey_emulator.keys == {}


@pytest.mark.parametrize("status", RETRIED)
def test_the_client_retries_a_5xx_until_its_attempts_run_out(
    unkey_emulator: UnkeyEmulator, client: UnkeyClient, status: int
) -> None:
    exc, sent = attempts_against(unkey_emulator, client, status)
    assert exc.attempts == sent == POLICY.max_attempts
