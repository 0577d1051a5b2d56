"""What each answer means for the keys of a batch: one outcome for every key sent.

Nothing here imports Airflow. :class:`AnswerRecorder` turns what the
:class:`~airflow_provider_unkey.migration.send.sending.MigrationEngine` learnt of a batch (Unkey's
``migrated`` and ``failed``, a key a 400 named, retries that ran out, a rate limit that outlasted the
run's time) into rows of the :class:`~airflow_provider_unkey.migration.record.OutcomeWriter`, with a
detail that says why.
"""

from __future__ import annotations

import logging

from airflow_provider_unkey.exceptions import UnkeyAPIError, UnkeyError
from airflow_provider_unkey.migration.record import OutcomeWriter, Reason, Stage
from airflow_provider_unkey.migration.send.batching import Batch

log = logging.getLogger(__name__)

#: Added to a failure's detail when a request carrying the key got no response.
_MAYBE_CREATED = (
    "; a request carrying this key got no response, so Unkey may have created it (a rerun reports it as"
    " already_exists)"
)


class AnswerRecorder:
    """Records the outcome of each key of a batch the engine has done with.

    :param writer: where outcomes go.
    :param resumed_try: this run resumes a task instance whose try ``resumed_try`` stopped: hashes
        Unkey reports as existing are ``unconfirmed``, not ``already_exists``.
    :param time_budget: the run's time budget, named when a batch is given up for it.
    """

    def __init__(self, writer: OutcomeWriter, resumed_try: int | None, time_budget: float | None) -> None:
        self.writer = writer
        self.resumed_try = resumed_try
        self.time_budget = time_budget

    def answered(
        self,
        batch: Batch,
        migrated: list[tuple[str, str]],
        failed: list[str],
        request_id: str,
        unanswered: int,
    ) -> None:
        if not failed and not unanswered and len(migrated) == len(batch):
            # The common answer: every key created, in the order sent.
            created = [h for h, _ in migrated]
            if created == batch.hashes:
                self.writer.migrated(created, [k for _, k in migrated], batch.rows, request_id)
                return
        index = {h: i for i, h in enumerate(batch.hashes)}
        done: set[int] = set()
        m_hashes, m_ids, m_rows = [], [], []
        for h, key_id in migrated:
            i = index.get(h)
            if i is None or i in done:
                log.warning("Unkey answered request %s with a hash it was not sent; ignored", request_id)
                continue
            done.add(i)
            m_hashes.append(h)
            m_ids.append(key_id)
            m_rows.append(batch.rows[i])
        self.writer.migrated(m_hashes, m_ids, m_rows, request_id)
        f_idx = []
        for h in failed:
            i = index.get(h)
            if i is not None and i not in done:
                done.add(i)
                f_idx.append(i)
        if unanswered:
            detail = (
                f"Unkey reported the hash as existing after {unanswered} attempt(s) whose response was lost: "
                "the key was most likely created by this run, but Unkey does not return its keyId"
            )
            reason = Reason.UNCONFIRMED
        elif self.resumed_try is not None:
            detail = (
                f"Unkey reported the hash as existing, and the ledger holds no outcome for it: try "
                f"{self.resumed_try} of this task stopped with requests in flight, so it most likely "
                "created this key, but Unkey does not return its keyId"
            )
            reason = Reason.UNCONFIRMED
        else:
            detail, reason = "a key with this hash already exists in Unkey", Reason.ALREADY_EXISTS
        self.writer.failed(
            [batch.hashes[i] for i in f_idx],
            [batch.rows[i] for i in f_idx],
            reason,
            Stage.SEND,
            detail,
            request_id,
        )
        missing = [i for i in range(len(batch)) if i not in done]
        if missing:
            self.writer.failed(
                [batch.hashes[i] for i in missing],
                [batch.rows[i] for i in missing],
                Reason.REJECTED_BY_API,
                Stage.SEND,
                "Unkey's answer listed this hash neither as migrated nor as failed",
                request_id,
            )

    def rejected(self, batch: Batch, indexes: set[int], exc: UnkeyAPIError) -> None:
        for i in sorted(indexes):
            prefix = f"body.keys[{i}]"
            own = [
                e
                for e in exc.errors
                if e.location == prefix
                or e.location.startswith(prefix + ".")
                or e.location.startswith(prefix + "[")
            ]
            if own:
                detail = "; ".join(
                    f"{e.location.removeprefix(prefix).lstrip('.') or 'key'}: {e.message}" for e in own
                )
            else:
                detail = f"Unkey answered {exc.status}: {exc.detail or exc.title}"
            if batch.maybe_committed or exc.unanswered_attempts:
                detail += _MAYBE_CREATED
            self.writer.failed(
                [batch.hashes[i]], [batch.rows[i]], Reason.REJECTED_BY_API, Stage.SEND, detail, exc.request_id
            )

    def out_of_time(self, batch: Batch) -> None:
        detail = (
            f"the workspace rate limit refused its request {batch.refused} time(s) (429), and the run's"
            f" time budget of {self.time_budget:g} s ran out before it could be sent again"
        )
        if batch.maybe_committed:
            detail += _MAYBE_CREATED
        self.writer.failed(batch.hashes, batch.rows, Reason.GAVE_UP, Stage.SEND, detail)

    def gave_up(self, batch: Batch, exc: UnkeyError) -> None:
        request_id = exc.request_id if isinstance(exc, UnkeyAPIError) else None
        detail = f"retries exhausted after {exc.attempts} attempt(s): {exc}"
        if exc.unanswered_attempts:
            detail += f"; {exc.unanswered_attempts} attempt(s) got no response"
        if exc.unanswered_attempts or batch.maybe_committed:
            detail += _MAYBE_CREATED
        self.writer.failed(batch.hashes, batch.rows, Reason.GAVE_UP, Stage.SEND, detail, request_id)
