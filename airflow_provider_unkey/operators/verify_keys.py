"""``VerifyKeysOperator``: prove that migrated keys still work, by verifying known plaintext test keys."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_unkey._compat import AirflowException, AirflowFailException
from airflow_provider_unkey.hooks.unkey import UnkeyHook

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_unkey.client import UnkeyClient

#: What a working key answers.
VALID = "VALID"


def masked(key: str) -> str:
    """A plaintext key as a report may show it: a short prefix (up to an ``_``) and its last 4 characters.

    At least 8 characters stay hidden, and the prefix ends at an underscore, as key prefixes do.

    >>> masked("sk_live_abcdefgh12345678")
    'sk_live_…5678'
    """
    if len(key) <= 8:
        return "…" * bool(key)
    room = len(key) - 4 - 8  # what the prefix may show
    cut = key.rfind("_", 0, room)
    return f"{key[: cut + 1] if cut >= 0 else ''}…{key[-4:]}"


@dataclass(frozen=True, slots=True)
class Verification:
    """One test key's answer.

    :param key: the key's label (or its masked form, for a list of keys).
    :param code: what Unkey answered (``VALID``, ``NOT_FOUND``, ``DISABLED``, ...), or ``ERROR``.
    :param expected: what the key was expected to answer.
    :param key_id: the key's id, when Unkey found it.
    :param request_id: ``meta.requestId``, for Unkey's support.
    :param error: what went wrong, when the call itself failed.
    """

    key: str
    code: str
    expected: str
    key_id: str | None = None
    request_id: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.code == self.expected


def verify_keys(
    client: UnkeyClient,
    keys: Mapping[str, str],
    migration_id: str | None,
    *,
    expected: Mapping[str, str] | None = None,
    concurrency: int = 4,
) -> list[Verification]:
    """Verify every key with ``keys.verifyKey``, a few at a time; no key is skipped on an error.

    :param keys: label -> plaintext key.
    :param migration_id: the migration the keys came from, so that Unkey hashes them its way.
    :param expected: label -> the code that key should answer; ``VALID`` for the others.
    :return: one :class:`Verification` per key, in the order of ``keys``.
    """
    expected = expected or {}

    def one(label: str, key: str) -> Verification:
        want = expected.get(label, VALID)
        try:
            result = client.verify_key(key, migration_id=migration_id)
        except Exception as exc:  # one failed call is a line in the report, not the end of the proof
            return Verification(label, "ERROR", want, error=f"{type(exc).__name__}: {exc}")
        return Verification(label, result.code, want, result.key_id, result.request_id)

    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="unkey-verify") as pool:
        return list(pool.map(lambda item: one(*item), keys.items()))


def report(results: Sequence[Verification]) -> str:
    """A table of the keys that did not answer as expected, one line each."""
    bad = [r for r in results if not r.ok]
    width = max([len(r.key) for r in bad] + [3])
    lines = [
        f"{len(bad)} of {len(results)} test keys did not verify as expected:",
        f"  {'key':<{width}}  {'expected':<9} {'got':<16} detail",
    ]
    for r in bad:
        detail = r.error or (f"keyId {r.key_id}, " if r.key_id else "") + f"requestId {r.request_id}"
        lines.append(f"  {r.key:<{width}}  {r.expected:<9} {r.code:<16} {detail}")
    return "\n".join(lines)


class VerifyKeysOperator(BaseOperator):
    """Prove that migrated keys still work: verify known plaintext test keys with ``keys.verifyKey``.

    Put it after :class:`~airflow_provider_unkey.operators.migrate_keys.MigrateKeysOperator` with a few
    keys whose plaintext you hold for testing (never customers' keys: they would pass through the task).
    Every key is verified with the migration id, so Unkey hashes it with the migration's algorithm;
    the task fails with a report of every key that does not answer ``VALID`` (or the code you expect),
    and returns the answers otherwise. The keys are masked in the task log; the report names them by
    label, or by their prefix and last four characters.

    With the ``github.com/seamapi/prefixed-api-key`` algorithm a key's first successful verification
    makes Unkey replace its stored hash and clear its pending migration: verify dedicated test keys.

    :param keys: the plaintext test keys: a list, or a mapping of label -> key. Templated (a list
        from an upstream task's XCom works too).
    :param migration_id: the migration the keys came from. Templated. ``None`` verifies them as keys
        created in Unkey.
    :param expected_codes: label (or key, for a list) -> the code that key should answer, for test keys
        that should not be ``VALID`` (``DISABLED``, ``EXPIRED``, ``NOT_FOUND`` for a key never
        migrated, ...).
    :param unkey_conn_id: the ``unkey`` connection; its root key needs ``verify_key`` permission.
    :param max_concurrency: verifications in flight at once.
    :return: ``{"checked", "passed", "failed", "results"}``, ``results`` holding per key its label,
        ``code``, ``expected``, ``key_id`` and ``request_id``.
    :raises AirflowFailException: when any key answers otherwise than expected, with the report.
    :raises AirflowException: when the only failures are calls that got no answer (after the
        connection's retries): the task may be retried.
    """

    template_fields: Sequence[str] = ("keys", "migration_id")
    ui_color = "#e6f4ea"

    def __init__(
        self,
        *,
        keys: Sequence[str] | Mapping[str, str],
        migration_id: str | None = None,
        expected_codes: Mapping[str, str] | None = None,
        unkey_conn_id: str = UnkeyHook.default_conn_name,
        max_concurrency: int = 4,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(keys, str):
            raise ValueError(
                "keys must be a list of plaintext keys or a mapping of label -> key, not one string"
            )
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self.keys = keys
        self.migration_id = migration_id
        self.expected_codes = dict(expected_codes or {})
        self.unkey_conn_id = unkey_conn_id
        self.max_concurrency = max_concurrency

    def _labelled(self) -> dict[str, str]:
        """label -> key, the rendered ``keys`` checked."""
        from airflow.sdk.log import mask_secret

        keys = self.keys
        if isinstance(keys, Mapping):
            labelled = {str(label): key for label, key in keys.items()}
        elif isinstance(keys, Sequence) and not isinstance(keys, str):
            labelled = {}
            for key in keys:
                label = masked(str(key))
                if label in labelled:  # two keys alike at both ends: tell them apart by position
                    label = f"{label} (#{len(labelled)})"
                labelled[label] = key
            # A list's expected codes name keys by their plaintext; the report uses their labels.
            by_key = {key: label for label, key in labelled.items()}
            self.expected_codes = {by_key.get(k, k): v for k, v in self.expected_codes.items()}
        else:
            raise ValueError(f"keys must be a list or a mapping of plaintext keys, got {type(keys).__name__}")
        for label, key in labelled.items():
            if not isinstance(key, str) or not key:
                raise ValueError(
                    f"keys[{label!r}] must be a non-empty plaintext key, got {type(key).__name__}"
                )
            mask_secret(key)
        if not labelled:
            raise ValueError("keys is empty: give at least one plaintext test key to verify")
        return labelled

    def execute(self, context: Context) -> dict[str, Any]:
        keys = self._labelled()
        hook = UnkeyHook(self.unkey_conn_id, pool_size=self.max_concurrency)
        self.log.info(
            "Verifying %d test keys with migration %s: %s",
            len(keys),
            self.migration_id,
            ", ".join(keys),
        )
        try:
            results = verify_keys(
                hook.client,
                keys,
                self.migration_id,
                expected=self.expected_codes,
                concurrency=self.max_concurrency,
            )
        finally:
            hook.close()
        for r in results:
            self.log.info("%s: %s%s", r.key, r.code, f" ({r.key_id})" if r.key_id else "")
        failed = [r for r in results if not r.ok]
        summary = {
            "checked": len(results),
            "passed": len(results) - len(failed),
            "failed": len(failed),
            "results": [asdict(r) for r in results],
        }
        if any(r.code != "ERROR" for r in failed):
            raise AirflowFailException(report(results))
        if failed:  # only calls that failed (after the connection's retries): a retry may do better
            raise AirflowException(report(results))
        self.log.info("All %d test keys verified as expected", len(results))
        return summary
