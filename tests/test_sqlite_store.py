"""The local SQLite store: versions open and close with changes, "as of T" lookups use the
indexes, replays change nothing, and the file survives a reopen."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cloudinv.core.models import ChangeEvent, ResourceSnapshot, ScanError, ScanManifest
from cloudinv.sinks.sqlite_store import SqliteStore, list_as_of_query
from cloudinv.sinks.store import (
    ChangeFilters,
    ChangeQuery,
    InventoryStore,
    StoreError,
    VersionQuery,
)
from cloudinv.streams.changes import ChangeDetector, DeletionRequest

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
ACCOUNT = "111111111111"
OTHER = "222222222222"


def snap(
    i: int,
    at: datetime,
    *,
    rtype: str = "AWS::EC2::SecurityGroup",
    account: str = ACCOUNT,
    region: str = "us-east-1",
    **config: Any,
) -> ResourceSnapshot:
    return ResourceSnapshot.build(
        account_id=account,
        region=region,
        resource_type=rtype,
        resource_id=f"r-{i}",
        arn=f"arn:aws:test:{region}:{account}:thing/r-{i}",
        configuration={"Id": f"r-{i}", **config},
        scan_id=f"scan-{at.isoformat()}",
        captured_at=at,
    )


def detect(detector: ChangeDetector, *snapshots: ResourceSnapshot) -> list[ChangeEvent]:
    out = []
    for s in snapshots:
        change = detector.observe(s)
        if change is not None:
            out.append(change)
    return out


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    async with SqliteStore.in_data_dir(tmp_path) as s:
        yield s


async def test_it_is_an_inventory_store_in_wal_mode(store: SqliteStore, tmp_path: Path) -> None:
    assert isinstance(store, InventoryStore)
    path = tmp_path / "store" / "inventory.sqlite3"
    assert store.path == path and path.exists()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_versions_as_of_history_and_current(store: SqliteStore) -> None:
    d = ChangeDetector()
    first = detect(d, snap(1, T0, Port=22), snap(2, T0, Port=80))
    assert await store.put_changes(first) == 2
    second = detect(
        d, snap(1, T0 + timedelta(hours=1), Port=443), snap(2, T0 + timedelta(hours=1), Port=80)
    )
    assert [c.change_type for c in second] == ["modified"]
    assert await store.put_changes(second) == 1

    key = snap(1, T0).key
    between = await store.as_of(key, T0 + timedelta(minutes=30))
    assert between is not None and between.configuration["Port"] == 22
    assert between.valid_from == T0 and between.valid_to == T0 + timedelta(hours=1)
    now = await store.current(key)
    assert now is not None and now.configuration["Port"] == 443 and now.valid_to is None
    assert await store.as_of(key, T0 - timedelta(seconds=1)) is None
    assert [v.configuration["Port"] for v in await store.history(key)] == [22, 443]

    at_between = await store.list_as_of(
        VersionQuery(
            at=T0 + timedelta(minutes=30),
            resource_type="AWS::EC2::SecurityGroup",
            account_id=ACCOUNT,
        )
    )
    assert [(v.resource_id, v.configuration["Port"]) for v in at_between] == [
        ("r-1", 22),
        ("r-2", 80),
    ]
    current = await store.list_as_of(VersionQuery(resource_type="AWS::EC2::SecurityGroup"))
    assert [v.configuration["Port"] for v in current] == [443, 80]


async def test_replays_and_redetections_change_nothing(store: SqliteStore) -> None:
    d = ChangeDetector()
    batch = detect(d, *(snap(i, T0, v=1) for i in range(5)))
    batch += detect(d, snap(0, T0 + timedelta(minutes=5), v=2))
    assert await store.put_changes(batch) == 6
    assert await store.put_changes(batch) == 0
    assert await store.put_changes(batch[::-1]) == 0

    # The same modification found again by a fresh detector (the store had not caught up):
    # same before/after state, later capture.
    fresh = ChangeDetector()
    fresh.warm([batch[0].key], {})  # it believes key 0 was never stored
    again = detect(fresh, snap(0, T0 + timedelta(minutes=6), v=2))
    assert await store.put_changes(again) == 0
    assert len(await store.history(batch[0].key)) == 2
    page = await store.changes(ChangeQuery(limit=100))
    assert len(page.items) == 6 and page.next_cursor is None


async def test_deletion_closes_and_recreation_opens_a_new_version(store: SqliteStore) -> None:
    d = ChangeDetector()
    key = snap(1, T0).key
    await store.put_changes(detect(d, snap(1, T0, v=1)))
    scan2 = T0 + timedelta(hours=1)
    deletion = d.request_deletion(
        DeletionRequest(
            key=key,
            resource_type="AWS::EC2::SecurityGroup",
            account_id=ACCOUNT,
            region="us-east-1",
            scan_id="scan-2",
            scan_started_at=scan2,
        )
    )
    assert deletion is not None and deletion.change_type == "deleted"
    assert await store.put_changes([deletion]) == 1
    assert await store.current(key) is None
    assert await store.as_of(key, scan2 + timedelta(seconds=1)) is None
    assert (await store.as_of(key, scan2 - timedelta(seconds=1))) is not None
    assert (
        await store.current_keys_in_scope(ACCOUNT, "us-east-1", "AWS::EC2::SecurityGroup") == set()
    )
    latest = await store.latest([key, "arn:unknown"])
    assert set(latest) == {key} and latest[key].valid_to == scan2

    back = detect(d, snap(1, T0 + timedelta(hours=2), v=1))
    assert [c.change_type for c in back] == ["created"]
    assert await store.put_changes(back) == 1
    assert [v.valid_to for v in await store.history(key)] == [scan2, None]
    assert await store.current_keys_in_scope(ACCOUNT, "us-east-1", "AWS::EC2::SecurityGroup") == {
        key
    }


async def test_list_as_of_filters_and_pages(store: SqliteStore) -> None:
    d = ChangeDetector()
    snaps = [snap(i, T0, account=ACCOUNT if i % 2 else OTHER) for i in range(10)]
    snaps += [snap(100 + i, T0, rtype="AWS::S3::Bucket", region="global") for i in range(3)]
    await store.put_changes(detect(d, *snaps))
    sg_mine = await store.list_as_of(
        VersionQuery(
            at=T0, resource_type="AWS::EC2::SecurityGroup", account_id=ACCOUNT, region="us-east-1"
        )
    )
    assert sorted(v.resource_id for v in sg_mine) == [f"r-{i}" for i in (1, 3, 5, 7, 9)]
    assert len(await store.list_as_of(VersionQuery(at=T0, account_id=OTHER))) == 5
    assert len(await store.list_as_of(VersionQuery(at=T0, resource_type="AWS::S3::Bucket"))) == 3
    assert await store.list_as_of(VersionQuery(at=T0 - timedelta(seconds=1))) == []

    seen: list[str] = []
    after = None
    while True:
        page = await store.list_as_of(VersionQuery(at=T0, limit=4, after_key=after))
        if not page:
            break
        seen += [v.key for v in page]
        after = page[-1].key
    assert seen == sorted(s.key for s in snaps)


async def test_a_batch_is_written_within_sqlites_limit_of_bound_values(
    store: SqliteStore,
) -> None:
    """Rows go in as multi-row INSERTs of bound values; a SQLite built with a low limit on
    them gets more, smaller statements, and every row is stored."""
    await store._db.on_writer(lambda conn: conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 25))
    d = ChangeDetector()
    created = detect(d, *(snap(i, T0, Size=1) for i in range(7)))
    modified = detect(d, *(snap(i, T0 + timedelta(hours=1), Size=2) for i in range(7)))
    assert await store.put_changes(created + modified) == 14
    for change in modified:
        history = await store.history(change.key)
        assert [v.configuration["Size"] for v in history] == [1, 2]
        assert history[0].valid_to == history[1].valid_from
    page = await store.changes(ChangeQuery(limit=100))
    assert sorted(c.change_id for c in page.items) == sorted(
        c.change_id for c in created + modified
    )


async def test_as_of_lookups_use_the_indexes(store: SqliteStore) -> None:
    t = T0
    plans = {
        "as_of": await store.explain(
            "SELECT * FROM versions WHERE key = ? AND valid_from <= ? "
            "ORDER BY valid_from DESC LIMIT 1",
            ("k", 1),
        ),
    }
    filters: dict[str, tuple[str | None, str | None, str | None]] = {
        "type+account+region": ("AWS::S3::Bucket", ACCOUNT, "global"),
        "type+account": ("AWS::S3::Bucket", ACCOUNT, None),
        "account": (None, ACCOUNT, None),
    }
    for name, (rtype, account, region) in filters.items():
        sql, params = list_as_of_query(
            VersionQuery(
                at=t,
                resource_type=rtype,
                account_id=account,
                region=region,
                limit=10,
                after_key=None,
            )
        )
        plans[name] = await store.explain(sql, params)
    for name, plan in plans.items():
        text = " | ".join(plan)
        assert "USING" in text and "INDEX" in text, (name, text)
        assert "SCAN versions" not in text.replace("USING", ""), (name, text)


async def test_changes_pages_and_filters(store: SqliteStore) -> None:
    d = ChangeDetector()
    changes = []
    for minute in range(5):
        at = T0 + timedelta(minutes=minute)
        changes += detect(d, *(snap(i, at, v=minute) for i in range(3)))
    await store.put_changes(changes)
    got: list[ChangeEvent] = []
    cursor = None
    while True:
        page = await store.changes(ChangeQuery(limit=4, cursor=cursor))
        got += page.items
        cursor = page.next_cursor
        if cursor is None:
            break
    assert [c.change_id for c in got] == [c.change_id for c in changes]
    window = await store.changes(
        ChangeQuery(since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=3))
    )
    assert {c.captured_at for c in window.items} == {
        T0 + timedelta(minutes=1),
        T0 + timedelta(minutes=2),
    }
    one_key = await store.changes(ChangeQuery(filters=ChangeFilters(key=changes[0].key)))
    assert [c.change_type for c in one_key.items] == ["created"] + ["modified"] * 4
    created = await store.changes(ChangeQuery(filters=ChangeFilters(change_types=("created",))))
    assert len(created.items) == 3
    with pytest.raises(StoreError, match="cursor"):
        await store.changes(ChangeQuery(cursor="nonsense"))


async def test_scans_are_recorded_idempotently(store: SqliteStore) -> None:
    manifests = [
        ScanManifest(
            scan_id="s1",
            account_id=ACCOUNT,
            region="us-east-1",
            resource_type="AWS::EC2::Instance",
            status="complete",
            started_at=T0,
            finished_at=T0 + timedelta(seconds=3),
            keys=["a", "b"],
        ),
        ScanManifest(
            scan_id="s1",
            account_id=ACCOUNT,
            region="eu-west-1",
            resource_type="AWS::EC2::Instance",
            status="failed",
            started_at=T0,
            finished_at=T0 + timedelta(seconds=5),
            errors=[ScanError(code="AccessDenied", message="no")],
        ),
    ]
    await store.record_scans(manifests)
    await store.record_scans(manifests)
    scans = await store.scans()
    assert [(s.region, s.status, s.count) for s in scans] == [
        ("eu-west-1", "failed", 0),
        ("us-east-1", "complete", 2),
    ]
    assert scans[0].errors[0].code == "AccessDenied"
    assert [s.region for s in await store.scans(region="us-east-1")] == ["us-east-1"]


async def test_reads_run_while_a_big_write_is_in_flight(store: SqliteStore) -> None:
    d = ChangeDetector()
    await store.put_changes(detect(d, snap(0, T0)))
    big = detect(d, *(snap(i, T0, blob="x" * 200) for i in range(1, 3000)))
    write = asyncio.ensure_future(store.put_changes(big))
    ticks = 0
    while not write.done():
        ticks += 1
        assert await store.current(snap(0, T0).key) is not None
        await asyncio.sleep(0)
    assert await write == 2999
    assert ticks > 1  # the event loop kept running during the write


async def test_reopen_keeps_everything_and_close_is_final(tmp_path: Path) -> None:
    d = ChangeDetector()
    store = SqliteStore.in_data_dir(tmp_path)
    await store.open()
    await store.put_changes(detect(d, snap(1, T0)))
    await store.close()
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await store.current("x")
    async with SqliteStore.in_data_dir(tmp_path) as again:
        assert await again.current(snap(1, T0).key) is not None
