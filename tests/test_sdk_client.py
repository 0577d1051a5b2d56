"""Unkey's own Python SDK (``unkey.py``) as an independent client of the emulator.

If the emulator drifted from the real API's wire format, the SDK (generated from Unkey's spec by
Speakeasy) would fail to parse its answers or its requests would be refused.
"""

from __future__ import annotations

import base64
import hashlib

import pytest

from airflow_provider_unkey.testing import UnkeyEmulator

unkey_sdk = pytest.importorskip("unkey.py", reason="the unkey.py SDK is in the test extra")


def _b64(plaintext: str) -> str:
    return base64.b64encode(hashlib.sha256(plaintext.encode()).digest()).decode()


def test_sdk_migrates_and_verifies(unkey_emulator: UnkeyEmulator) -> None:
    unkey_emulator.add_existing_hash(_b64("sk_sdk_taken"))
    with unkey_sdk.Unkey(root_key="unkey_root_test", server_url=unkey_emulator.url) as unkey:
        res = unkey.keys.migrate_keys(
            migration_id="mig_test",
            api_id="api_test",
            keys=[
                {
                    "hash": _b64("sk_sdk_1"),
                    "name": "sdk one",
                    "meta": {"plan": "pro"},
                    "roles": ["admin"],
                    "permissions": ["docs.read"],
                    "credits": {"remaining": 10, "refill": {"interval": "daily", "amount": 10}},
                    "ratelimits": [{"name": "requests", "limit": 10, "duration": 60000, "auto_apply": True}],
                },
                {"hash": _b64("sk_sdk_taken")},
            ],
        )
        assert [m.hash for m in res.data.migrated] == [_b64("sk_sdk_1")]
        assert res.data.failed == [_b64("sk_sdk_taken")]
        key_id = res.data.migrated[0].key_id
        assert unkey_emulator.keys[_b64("sk_sdk_1")].key_id == key_id
        assert unkey_emulator.keys[_b64("sk_sdk_1")].ratelimits == [
            {"name": "requests", "limit": 10, "duration": 60000, "autoApply": True}
        ]

        verified = unkey.keys.verify_key(key="sk_sdk_1", migration_id="mig_test")
        assert verified.data.valid is True
        assert verified.data.code == "VALID"
        assert verified.data.key_id == key_id
        missing = unkey.keys.verify_key(key="sk_sdk_unknown", migration_id="mig_test")
        assert missing.data.valid is False and missing.data.code == "NOT_FOUND"


def test_sdk_sees_typed_errors(unkey_emulator: UnkeyEmulator) -> None:
    from unkey.py import errors

    with unkey_sdk.Unkey(root_key="unkey_root_test", server_url=unkey_emulator.url) as unkey:
        with pytest.raises(errors.NotFoundErrorResponse) as info:
            unkey.keys.migrate_keys(migration_id="mig_missing", api_id="api_test", keys=[{"hash": _b64("x")}])
        assert info.value.data.error.type.endswith("/data/migration_not_found")
        with pytest.raises(errors.BadRequestErrorResponse) as bad:
            unkey.keys.migrate_keys(
                migration_id="mig_test",
                api_id="api_test",
                keys=[{"hash": _b64("y"), "permissions": ["no spaces"]}],
            )
        assert any("permissions" in e.location for e in bad.value.data.error.errors)
    with (
        unkey_sdk.Unkey(root_key="unkey_root_wrong", server_url=unkey_emulator.url) as unkey,
        pytest.raises(errors.UnauthorizedErrorResponse),
    ):
        unkey.keys.migrate_keys(migration_id="mig_test", api_id="api_test", keys=[{"hash": _b64("z")}])
    assert unkey_emulator.keys == {}
