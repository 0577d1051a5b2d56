"""VerifyKeysOperator: known plaintext test keys verified against the emulator after a migration."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_unkey._compat import AirflowException, AirflowFailException
from airflow_provider_unkey.client import UnkeyClient
from airflow_provider_unkey.operators.verify_keys import VerifyKeysOperator, masked
from airflow_provider_unkey.testing import UnkeyEmulator

ROOT_KEY = "unkey_root_verify"
MIGRATION = "mig_verify"


def b64(plaintext: str) -> str:
    return base64.b64encode(hashlib.sha256(plaintext.encode()).digest()).decode()


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[UnkeyEmulator]:
    with UnkeyEmulator.quick(root_key=ROOT_KEY, api_id="api_verify", migration_id=MIGRATION) as emu:
        monkeypatch.setenv(
            "AIRFLOW_CONN_UNKEY_DEFAULT",
            json.dumps({"conn_type": "unkey", "host": emu.url, "password": ROOT_KEY}),
        )
        with UnkeyClient(ROOT_KEY, emu.url, allow_insecure_http=True) as client:
            client.migrate_keys(
                MIGRATION,
                "api_verify",
                [
                    {"hash": b64("sk_test_alpha_0001")},
                    {"hash": b64("sk_test_bravo_0002")},
                    {"hash": b64("sk_test_off_0003"), "enabled": False},
                ],
            )
        yield emu


def run(**kwargs: Any) -> dict[str, Any]:
    op = VerifyKeysOperator(task_id="verify", migration_id=MIGRATION, **kwargs)
    return op.execute({})  # type: ignore[arg-type]


def test_every_key_valid(emulator: UnkeyEmulator) -> None:
    summary = run(keys={"alpha": "sk_test_alpha_0001", "bravo": "sk_test_bravo_0002"})
    assert (summary["checked"], summary["passed"], summary["failed"]) == (2, 2, 0)
    by_key = {r["key"]: r for r in summary["results"]}
    assert by_key["alpha"]["key_id"] == emulator.keys[b64("sk_test_alpha_0001")].key_id
    assert all(r["code"] == "VALID" and r["request_id"] for r in summary["results"])


def test_expected_codes_other_than_valid(emulator: UnkeyEmulator) -> None:
    summary = run(
        keys=["sk_test_alpha_0001", "sk_test_off_0003", "sk_test_never_9999"],
        expected_codes={"sk_test_off_0003": "DISABLED", "sk_test_never_9999": "NOT_FOUND"},
    )
    assert summary["passed"] == 3
    assert [r["key"] for r in summary["results"]] == ["sk_…0001", "sk_…0003", "sk_…9999"]


def test_a_report_of_every_key_that_does_not_verify(emulator: UnkeyEmulator) -> None:
    with pytest.raises(AirflowFailException) as info:
        run(keys=["sk_test_alpha_0001", "sk_test_off_0003", "sk_test_never_9999", "sk_test_bravo_0002"])
    text = str(info.value)
    assert text.splitlines()[0] == "2 of 4 test keys did not verify as expected:"
    assert "sk_…0003  VALID     DISABLED" in text
    assert "sk_…9999  VALID     NOT_FOUND" in text
    assert "0001" not in text and "0002" not in text  # only the failures are listed
    for plaintext in ("sk_test_off_0003", "sk_test_never_9999"):
        assert plaintext not in text  # never the whole key


def test_seam_keys_verify_with_their_migration(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_unkey.rules.formats import ALGORITHM_SEAM
    from airflow_provider_unkey.testing.store import seam_hash

    with UnkeyEmulator.quick(root_key=ROOT_KEY, migration_id="mig_seam", algorithm=ALGORITHM_SEAM) as emu:
        monkeypatch.setenv(
            "AIRFLOW_CONN_UNKEY_DEFAULT",
            json.dumps({"conn_type": "unkey", "host": emu.url, "password": ROOT_KEY}),
        )
        key = "acme_Bx7tR2mQ_9FhWk3LpZ8vN4cJ6dS1gY5e"
        with UnkeyClient(ROOT_KEY, emu.url, allow_insecure_http=True) as client:
            client.migrate_keys("mig_seam", "api_test", [{"hash": seam_hash(key)}])
        op = VerifyKeysOperator(task_id="verify", migration_id="mig_seam", keys={"seam": key})
        assert op.execute({})["passed"] == 1  # type: ignore[arg-type]
        # Without the migration id, a seam key is found only once Unkey has rehashed it (above).
        assert VerifyKeysOperator(task_id="again", keys={"seam": key}).execute({})["passed"] == 1  # type: ignore[arg-type]
        other = VerifyKeysOperator(task_id="v", migration_id="mig_seam", keys={"other": key[:-1] + "x"})
        with pytest.raises(AirflowFailException, match=r"other +VALID +NOT_FOUND"):
            other.execute({})  # type: ignore[arg-type]


def test_calls_that_fail_are_reported_and_retryable(
    emulator: UnkeyEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_UNKEY_DEFAULT",
        json.dumps({"conn_type": "unkey", "host": emulator.url, "password": "unkey_root_wrong"}),
    )
    with pytest.raises(AirflowException) as info:
        run(keys={"alpha": "sk_test_alpha_0001"})
    assert not isinstance(info.value, AirflowFailException)
    assert "alpha" in str(info.value) and "ERROR" in str(info.value) and "root key" in str(info.value).lower()
    assert "unkey_root_wrong" not in str(info.value)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ("sk_one", "not one string"),
        ([], "keys is empty"),
        ({"a": ""}, r"keys\['a'\] must be a non-empty"),
    ],
)
def test_bad_keys(keys: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VerifyKeysOperator(task_id="v", keys=keys)._labelled()


def test_masked() -> None:
    assert masked("sk_live_abcdefgh12345678") == "sk_live_…5678"
    assert masked("sk_test_alpha_0001") == "sk_…0001"
    assert masked("abcdefghijklmnop") == "…mnop"
    assert masked("short") == "…"
    assert masked("a_b_c_d_e_f_g_h") == "a_…_g_h"
