"""The ledger's files are durable before they appear: data fsynced, then renamed into place, then the
directory fsynced.

A file renamed into place before its data reached the disk can, after a power loss, be there and
empty (or torn): the record of keys Unkey created, lost although the ledger said it was written.
Every write path a run takes is checked (the attempt marker, each segment, the compacted file, and the
merge of an earlier try's segments), by recording the order of ``os.fsync``, ``os.replace`` /
``os.rename`` and ``os.unlink`` calls through wrappers that call the real functions.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_unkey.client import UnkeyClient
from airflow_provider_unkey.migration.engine import MigrationConfig, run_migration
from airflow_provider_unkey.migration.ledger import LedgerScope, LedgerWriter, read_ledger
from airflow_provider_unkey.migration.record.outcomes import Reason, Stage
from airflow_provider_unkey.testing import UnkeyEmulator
from tests.migration.ledger.test_ledger import batches, check, keys
from tests.migration.test_engine import API, FAST, MIGRATION, ROOT, b64

TRY1 = LedgerScope("dag", "run_durable", "migrate", -1, 1)
TRY2 = LedgerScope("dag", "run_durable", "migrate", -1, 2)


@dataclass(frozen=True)
class Event:
    kind: str  # "fsync", "rename" or "unlink"
    file: tuple[int, int] | None = None  # (st_dev, st_ino): fsync, rename (of its source)
    is_dir: bool = False  # fsync
    size: int = -1  # fsync, rename (of its source)
    src: str = ""  # rename
    dst: str = ""  # rename; unlink: the path removed


class DiskCalls:
    """Records fsync, rename and unlink calls in the order they happen, then calls the real ones."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()
        real_fsync, real_replace, real_rename, real_unlink = os.fsync, os.replace, os.rename, os.unlink

        def fsync(fd: Any) -> None:
            st = os.fstat(fd if isinstance(fd, int) else fd.fileno())
            self._add(Event("fsync", (st.st_dev, st.st_ino), stat.S_ISDIR(st.st_mode), st.st_size))
            real_fsync(fd)

        def renaming(real: Any) -> Any:
            def rename(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
                try:
                    st = os.stat(src)
                except OSError:  # the real call raises it
                    return real(src, dst, *args, **kwargs)  # type: ignore[no-any-return]
                real(src, dst, *args, **kwargs)
                self._add(
                    Event(
                        "rename",
                        (st.st_dev, st.st_ino),
                        size=st.st_size,
                        src=os.fspath(src),
                        dst=os.fspath(dst),
                    )
                )
                return None

            return rename

        def unlink(path: Any, *args: Any, **kwargs: Any) -> None:
            real_unlink(path, *args, **kwargs)  # raises when there was nothing to remove: not recorded
            self._add(Event("unlink", dst=os.fspath(path)))

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", renaming(real_replace))
        monkeypatch.setattr(os, "rename", renaming(real_rename))
        monkeypatch.setattr(os, "unlink", unlink)

    def _add(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def renames_into(self, directory: Path) -> list[Event]:
        return [e for e in self.events if e.kind == "rename" and Path(e.dst).parent == directory]

    def check(self, directory: Path) -> list[Event]:
        """Every file renamed into ``directory`` had its data fsynced (at its final size) before the
        rename, and the directory was fsynced after it, before anything else happened to the ledger.

        :return: the renames into ``directory``.
        """
        st = os.stat(directory)
        directory_file = (st.st_dev, st.st_ino)
        events = list(self.events)
        renamed = [e for e in events if e.kind == "rename" and Path(e.dst).parent == directory]
        ledger_files = {e.file for e in renamed}

        def about_the_ledger(e: Event) -> bool:
            if e.kind == "fsync":
                return e.file in ledger_files or e.file == directory_file
            return Path(e.dst).parent == directory

        for e in renamed:
            i = events.index(e)
            name = Path(e.dst).name
            synced = [f for f in events[:i] if f.kind == "fsync" and f.file == e.file and not f.is_dir]
            assert synced, f"{name} was renamed into place without its data fsynced first"
            assert synced[-1].size == e.size, f"{name} was fsynced before its last write"
            for after in events[i + 1 :]:
                if after.kind == "fsync" and after.file == directory_file:
                    break
                assert not about_the_ledger(after), (
                    f"after renaming {name} into place, {after} came before the directory was fsynced"
                )
            else:
                pytest.fail(f"the directory was never fsynced after renaming {name} into place")
        return renamed


def kind_of(e: Event) -> str:
    name, src = Path(e.dst).name, Path(e.src).name
    if name.startswith("_attempt-"):
        return "marker"
    if name.startswith("seg-"):
        return "segment"
    if src.endswith(".partial"):
        return "compacted"
    return "merged"


@pytest.fixture
def client(unkey_emulator: UnkeyEmulator) -> Iterator[UnkeyClient]:
    c = UnkeyClient(ROOT, unkey_emulator.url, retry=FAST, pool_size=4)
    yield c
    c.close()


def run_with_ledger(client: UnkeyClient, out: Path, ledger: LedgerWriter, start: int, stop: int) -> None:
    summary = run_migration(
        batches(keys(start, stop), size=20),
        client,
        MigrationConfig(MIGRATION, API, batch_size=16, max_concurrency=3, retry=FAST),
        out,
        ledger=ledger,
    )
    check(summary)
    assert summary.migrated == stop - start


def test_a_run_fsyncs_each_ledger_file_before_renaming_it_into_place(
    client: UnkeyClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = DiskCalls(monkeypatch)
    root = tmp_path / "ledger"
    # A small buffer: the background thread writes segments while the run goes on.
    ledger = LedgerWriter(root, TRY1, migration_id=MIGRATION, api_id=API, max_buffer_rows=25)
    run_with_ledger(client, tmp_path / "out", ledger, 0, 120)

    renamed = calls.check(root)
    kinds = [kind_of(e) for e in renamed]
    assert kinds[0] == "marker"
    assert "segment" in kinds
    assert kinds[-1] == "compacted"
    assert read_ledger(root).num_rows == 120


def test_merging_an_earlier_tries_segments_fsyncs_before_renaming(
    client: UnkeyClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "ledger"
    # Try 1 stopped without compacting: its segments stay for the next try to merge.
    first = LedgerWriter(root, TRY1, migration_id=MIGRATION, api_id=API, flush_interval=3600)
    first.record_migrated([b64("d1"), b64("d2")], ["key_1", "key_2"], [0, 1], "req_1")
    assert first.flush() == 2
    first.record_failed([b64("d3")], [2], Reason.ALREADY_EXISTS, Stage.SEND, ["exists"], "req_2")
    assert first.flush() == 1
    first.close(compact=False)

    calls = DiskCalls(monkeypatch)
    second = LedgerWriter(root, TRY2, migration_id=MIGRATION, api_id=API, max_buffer_rows=25)
    run_with_ledger(client, tmp_path / "out", second, 100, 160)

    kinds = [kind_of(e) for e in calls.check(root)]
    assert {"marker", "segment", "compacted", "merged"} <= set(kinds)
    assert kinds[-1] == "merged"
    assert read_ledger(root).num_rows == 3 + 60
    assert not list(root.glob("seg-*"))


def test_the_recorder_sees_a_rename_without_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check itself: a file renamed into place unsynced, or with no directory fsync, fails it."""
    calls = DiskCalls(monkeypatch)
    tmp, target = tmp_path / "_x.tmp", tmp_path / "x.parquet"
    tmp.write_bytes(b"data")
    os.replace(tmp, target)
    with pytest.raises(AssertionError, match="without its data fsynced"):
        calls.check(tmp_path)

    calls.events.clear()
    with open(tmp, "wb") as handle:
        handle.write(b"data")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, target)
    with pytest.raises(pytest.fail.Exception, match="never fsynced"):
        calls.check(tmp_path)
