"""The one SQLite mechanism under the three SQLite stores (sinks/sqlite_db.py): every store
refuses a file from a newer cloudinv, opens once however many tasks ask at the same time,
and says clearly when it is closed or read-only. Real files in a temporary directory."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from cloudinv.sinks.alerts_store import AlertsStore
from cloudinv.sinks.events_store import EventsStore, EventsStoreError
from cloudinv.sinks.sqlite_db import SqliteBacked
from cloudinv.sinks.sqlite_store import SqliteStore
from cloudinv.sinks.store import StoreError

STORES: dict[str, tuple[Callable[[Path], SqliteBacked], type[Exception], str]] = {
    "inventory": (SqliteStore, StoreError, "store-write"),
    "events": (EventsStore, EventsStoreError, "events-write"),
    "alerts": (AlertsStore, StoreError, "alerts-write"),
}


@pytest.fixture(params=sorted(STORES))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_a_file_from_a_newer_cloudinv_is_refused_and_left_as_it_is(
    kind: str, tmp_path: Path
) -> None:
    make, error, _ = STORES[kind]
    path = tmp_path / "store.sqlite3"
    async with make(path):
        pass
    with sqlite3.connect(path) as conn:
        current = conn.execute("PRAGMA user_version").fetchone()[0]
        assert current >= 1, "every store stamps its schema version"
        conn.execute(f"PRAGMA user_version = {current + 1}")
    store = make(path)
    with pytest.raises(error, match=r"newer than this cloudinv.*upgrade cloudinv"):
        await store.open()
    await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == current + 1


async def test_concurrent_first_calls_open_the_file_once(kind: str, tmp_path: Path) -> None:
    make, _, writer_prefix = STORES[kind]

    def writers() -> set[threading.Thread]:
        # Other tests' stores may still be running in this process: count only new ones.
        return {t for t in threading.enumerate() if t.name.startswith(writer_prefix)}

    before = writers()
    store = make(tmp_path / "store.sqlite3")
    try:
        await asyncio.gather(*(store.open() for _ in range(8)))
        assert len(writers() - before) == 1, [t.name for t in writers() - before]
    finally:
        await store.close()
    assert not writers() - before, "close stops the writer thread"


async def test_a_closed_store_says_so(kind: str, tmp_path: Path) -> None:
    make, error, _ = STORES[kind]
    store = make(tmp_path / "store.sqlite3")
    await store.open()
    await store.close()
    await store.close()  # again: nothing to do
    with pytest.raises(error, match="closed"):
        await store.open()


async def test_the_read_only_events_store_creates_the_file_and_refuses_writes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "new" / "events.sqlite3"
    async with EventsStore(path, readonly=True) as store:
        assert await store.count() == 0
        with pytest.raises(EventsStoreError, match="read-only"):
            await store.write_batch([b"{}"])
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == EventsStore.SCHEMA.version
