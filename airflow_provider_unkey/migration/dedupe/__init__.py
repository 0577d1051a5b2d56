"""Deduplicate: say, for each digest, the source row where it first appeared, across the whole source.

Nothing here imports Airflow. :class:`DigestSet` keeps the digests seen so far in sorted runs at 40
bytes a key, within a memory budget past which the runs spill to disk (:class:`SortedRuns`); the
ledger's index of known hashes uses the same runs.
"""

from __future__ import annotations

from airflow_provider_unkey.migration.dedupe.digests import DigestSet, digest_prefix
from airflow_provider_unkey.migration.dedupe.spill import DEFAULT_MEMORY_BUDGET, SortedRuns, check_budget

__all__ = ["DEFAULT_MEMORY_BUDGET", "DigestSet", "SortedRuns", "check_budget", "digest_prefix"]
