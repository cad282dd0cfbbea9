"""The DynamoDB inventory store against moto's server: the behavioural tests of the SQLite
store run unchanged on it (imported below, so they are collected here with this module's
``store`` fixture), plus what is particular to DynamoDB: table creation and checks, no Scan
ever, replayed batches, batches larger than a transaction, throttling and unprocessed items.

Every store here writes one request at a time (``write_concurrency=1``): moto's server is not
safe under concurrent writes. Its TransactWriteItems deep-copies the target table once per item
(for rollback) while other request threads write, fails with "dictionary changed size during
iteration" (a 500, which botocore retries) and restores its copy, losing the other writes. Its
cost also grows with table size x items per transaction: every test uses its own tables."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from cloudinv.core.settings import Settings
from cloudinv.sinks.dynamodb_store import DynamoStore, table_names
from cloudinv.sinks.events_store import EventFilters, EventsStoreError
from cloudinv.sinks.factory import inventory_store
from cloudinv.sinks.sqlite_store import SqliteStore
from cloudinv.sinks.store import (
    ChangeFilters,
    ChangeQuery,
    InventoryStore,
    StoreError,
    VersionQuery,
)
from cloudinv.streams.changes import ChangeDetector, DeletionRequest
from tests.test_sqlite_store import (
    ACCOUNT,
    OTHER,
    T0,
    detect,
    snap,
)
from tests.test_sqlite_store import (
    test_changes_pages_and_filters as test_changes_pages_and_filters,
)
from tests.test_sqlite_store import (
    test_deletion_closes_and_recreation_opens_a_new_version as test_deletion_closes_and_recreation_opens_a_new_version,  # noqa: E501
)
from tests.test_sqlite_store import (
    test_list_as_of_filters_and_pages as test_list_as_of_filters_and_pages,
)
from tests.test_sqlite_store import (
    test_replays_and_redetections_change_nothing as test_replays_and_redetections_change_nothing,
)
from tests.test_sqlite_store import (
    test_scans_are_recorded_idempotently as test_scans_are_recorded_idempotently,
)
from tests.test_sqlite_store import (
    test_versions_as_of_history_and_current as test_versions_as_of_history_and_current,
)


def prefix() -> str:
    return f"t{random.randrange(16**8):08x}"


@pytest.fixture
async def store(moto_endpoint: str) -> AsyncIterator[DynamoStore]:
    async with DynamoStore(
        prefix(), region="us-east-1", endpoint_url=moto_endpoint, write_concurrency=1
    ) as s:
        yield s
    # Whatever the test did, it never scanned a table.
    assert "Scan" not in s.stats.calls, s.stats.calls
    assert s.stats.calls["DescribeTable"] > 0  # the hook counting calls saw them


async def test_it_is_an_inventory_store_and_creates_its_tables(
    store: DynamoStore, moto_endpoint: str
) -> None:
    assert isinstance(store, InventoryStore)
    described = {}
    for name, table in table_names(store.table_prefix).items():
        described[name] = await store._call("describe_table", TableName=table)
    versions = described["versions"]["Table"]
    assert versions["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert {i["IndexName"] for i in versions["GlobalSecondaryIndexes"]} == {
        "all_by_account",
        "all_by_scope",
        "open_by_account",
        "open_by_scope",
    }
    # Opening again finds and checks the tables instead of creating them.
    async with DynamoStore(
        store.table_prefix, region="us-east-1", endpoint_url=moto_endpoint
    ) as again:
        assert again.stats.calls["CreateTable"] == 0
        assert again.stats.calls["DescribeTable"] == 5
    relationships = described["relationships"]["Table"]
    assert {i["IndexName"] for i in relationships["GlobalSecondaryIndexes"]} == {"by_target"}


async def test_a_table_of_another_shape_is_refused(moto_endpoint: str) -> None:
    name = prefix()
    async with DynamoStore(
        name, region="us-east-1", endpoint_url=moto_endpoint, write_concurrency=1
    ) as s:
        await s._call("delete_table", TableName=table_names(name)["scans"])
        await s._call(
            "create_table",
            TableName=table_names(name)["scans"],
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        )
    with pytest.raises(StoreError, match=r"scans has key .*expected HASH 'id'"):
        await DynamoStore(
            name, region="us-east-1", endpoint_url=moto_endpoint, write_concurrency=1
        ).open()
    with pytest.raises(StoreError, match="does not exist"):
        await DynamoStore(
            prefix(),
            region="us-east-1",
            endpoint_url=moto_endpoint,
            write_concurrency=1,
            create_tables=False,
        ).open()


async def test_close_is_final(moto_endpoint: str) -> None:
    s = DynamoStore(prefix(), region="us-east-1", endpoint_url=moto_endpoint, write_concurrency=1)
    await s.open()
    await s.put_changes(detect(ChangeDetector(), snap(1, T0)))
    await s.close()
    await s.close()
    with pytest.raises(StoreError, match="closed"):
        await s.current("x")
    async with DynamoStore(
        s.table_prefix, region="us-east-1", endpoint_url=moto_endpoint, write_concurrency=1
    ) as again:
        assert await again.current(snap(1, T0).key) is not None


async def test_same_answers_as_the_sqlite_store(store: DynamoStore, tmp_path: Any) -> None:
    """One history written to both stores, every read compared."""
    d = ChangeDetector()
    batches = [
        detect(d, *(snap(i, T0, account=ACCOUNT if i % 3 else OTHER, v=0) for i in range(12)))
    ]
    for step in range(1, 4):
        at = T0 + timedelta(hours=step)
        batches.append(
            detect(
                d,
                *(
                    snap(i, at, account=ACCOUNT if i % 3 else OTHER, v=step % 2 * i)
                    for i in range(0, 12, step)
                ),
            )
        )
    async with SqliteStore.in_data_dir(tmp_path) as local:
        for batch in batches:
            assert await store.put_changes(batch) == await local.put_changes(batch)
        keys = [snap(i, T0, account=ACCOUNT if i % 3 else OTHER).key for i in range(12)]
        for key in keys:
            assert await store.history(key) == await local.history(key)
            for minutes in (-1, 0, 30, 60, 90, 150, 400):
                at = T0 + timedelta(minutes=minutes)
                assert await store.as_of(key, at) == await local.as_of(key, at)
        assert await store.latest(keys) == await local.latest(keys)
        for minutes in (-1, 0, 30, 90, 150, 400, None):
            at = None if minutes is None else T0 + timedelta(minutes=minutes)
            for account in (ACCOUNT, OTHER, None):
                args: dict[str, Any] = {"at": at, "account_id": account}
                assert await store.list_as_of(VersionQuery(**args)) == await local.list_as_of(
                    VersionQuery(**args)
                )
                assert await store.list_as_of(VersionQuery(**args, limit=2, after_key=keys[3])) == (
                    await local.list_as_of(VersionQuery(**args, limit=2, after_key=keys[3]))
                )
        for since in (None, T0 + timedelta(hours=1)):
            for f in (ChangeFilters(), ChangeFilters(account_id=OTHER), ChangeFilters(key=keys[0])):
                ours = await store.changes(ChangeQuery(since=since, filters=f, limit=1000))
                theirs = await local.changes(ChangeQuery(since=since, filters=f, limit=1000))
                assert ours.items == theirs.items


async def test_a_replayed_batch_is_skipped_without_new_writes(store: DynamoStore) -> None:
    d = ChangeDetector()
    batch = detect(d, *(snap(i, T0) for i in range(30)))
    batch += detect(d, *(snap(i, T0 + timedelta(minutes=1), v=2) for i in range(0, 30, 2)))
    assert await store.put_changes(batch) == 45
    writes = store.stats.calls["TransactWriteItems"]
    assert writes > 0
    assert await store.put_changes(batch) == 0
    assert await store.put_changes(list(reversed(batch))) == 0
    assert store.stats.calls["TransactWriteItems"] == writes
    page = await store.changes(ChangeQuery(limit=1000))
    assert len(page.items) == 45 and len({c.change_id for c in page.items}) == 45


async def test_many_changes_of_one_key_in_one_batch(store: DynamoStore) -> None:
    """More changes of one key than a transaction holds: applied in order, in several."""
    d = ChangeDetector()
    batch = []
    for minute in range(120):
        batch += detect(d, snap(1, T0 + timedelta(minutes=minute), v=minute))
    assert await store.put_changes(batch) == 120
    history = await store.history(snap(1, T0).key)
    assert [v.configuration["v"] for v in history] == list(range(120))
    assert all(a.valid_to == b.valid_from for a, b in itertools.pairwise(history))
    assert history[-1].valid_to is None
    assert await store.current_keys_in_scope(ACCOUNT, "us-east-1", "AWS::EC2::SecurityGroup") == {
        snap(1, T0).key
    }
    assert await store.put_changes(batch) == 0


async def test_a_big_configuration_is_compressed_and_an_impossible_one_refused(
    store: DynamoStore,
) -> None:
    d = ChangeDetector()
    big = detect(d, snap(1, T0, blob="abc" * 100_000))
    assert await store.put_changes(big) == 1
    current = await store.current(snap(1, T0).key)
    assert current is not None and len(current.configuration["blob"]) == 300_000
    noise = random.Random(1).randbytes(600_000).hex()
    huge = detect(d, snap(2, T0, blob=noise))
    assert await store.put_changes(huge) == 0
    assert store.stats.oversize_skipped == 1
    assert await store.current(snap(2, T0).key) is None


async def test_bad_cursor_and_limits(store: DynamoStore) -> None:
    for bad in ("nonsense", "c1.bm9wZQ", "c1.!!!"):
        with pytest.raises(StoreError, match="cursor"):
            await store.changes(ChangeQuery(cursor=bad))
    with pytest.raises(ValueError, match="limit"):
        await store.list_as_of(VersionQuery(limit=0))
    with pytest.raises(ValueError, match="limit"):
        await store.changes(ChangeQuery(limit=0))


async def test_factory_chooses_by_storage_targets(moto_endpoint: str, tmp_path: Any) -> None:
    local = inventory_store(Settings(storage={"data_dir": tmp_path}))
    assert isinstance(local, SqliteStore) and local.path.is_relative_to(tmp_path)
    remote = inventory_store(
        Settings(
            storage={
                "targets": ["local", "dynamodb"],
                "dynamodb_table_prefix": "cinv",
                "dynamodb_region": "eu-west-1",
                "dynamodb_write_concurrency": 2,
            },
            aws={"endpoint_url": moto_endpoint},
        )
    )
    assert isinstance(remote, DynamoStore)
    from cloudinv.sinks.dynamodb_events_store import DynamoEventsStore
    from cloudinv.sinks.events_store import EventsStore
    from cloudinv.sinks.factory import events_store

    assert isinstance(events_store(Settings(storage={"data_dir": tmp_path})), EventsStore)
    remote_events = events_store(
        Settings(storage={"targets": ["dynamodb"], "dynamodb_table_prefix": "cinv"})
    )
    assert isinstance(remote_events, DynamoEventsStore)
    assert remote_events.events_table == "cinv-events"
    assert remote.tables["versions"] == "cinv-versions"
    assert (remote.region, remote.endpoint_url, remote.write_concurrency) == (
        "eu-west-1",
        moto_endpoint,
        2,
    )


# -- throttling and unprocessed items, through a proxy in front of moto ------------------------


class Throttler:
    """A proxy to moto that throttles: the first ``n`` of each DynamoDB operation named in
    ``fail`` are answered with a throttling error (for transactions, a cancellation whose
    reasons are ThrottlingError), and BatchWriteItem requests are cut to their first item per
    table, the rest answered as UnprocessedItems, ``n`` times."""

    def __init__(self, upstream: str, n: int, fail: set[str]) -> None:
        self.upstream = upstream
        self.n = n
        self.fail = fail
        self.seen: dict[str, int] = {}
        self.throttled: dict[str, int] = {}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        op = request.headers.get("X-Amz-Target", "").rpartition(".")[2]
        body = await request.read()
        self.seen[op] = self.seen.get(op, 0) + 1
        if op in self.fail and self.throttled.get(op, 0) < self.n:
            self.throttled[op] = self.throttled.get(op, 0) + 1
            if op == "TransactWriteItems":
                n_items = len(orjson.loads(body)["TransactItems"])
                error = {
                    "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
                    "message": "Transaction cancelled, please refer cancellation reasons",
                    "CancellationReasons": [{"Code": "ThrottlingError"}] * n_items,
                }
            else:
                error = {
                    "__type": "com.amazonaws.dynamodb.v20120810#"
                    "ProvisionedThroughputExceededException",
                    "message": "throttled by the test proxy",
                }
            return web.Response(
                status=400, body=orjson.dumps(error), content_type="application/x-amz-json-1.0"
            )
        unprocessed: dict[str, Any] = {}
        if op == "BatchWriteItem" and self.throttled.get("unprocessed", 0) < self.n:
            payload = orjson.loads(body)
            for table, requests in payload["RequestItems"].items():
                if len(requests) > 1:
                    unprocessed[table] = requests[1:]
                    payload["RequestItems"][table] = requests[:1]
            if unprocessed:
                self.throttled["unprocessed"] = self.throttled.get("unprocessed", 0) + 1
                body = orjson.dumps(payload)
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in ("host", "content-length", "transfer-encoding")
        }
        async with (
            aiohttp.ClientSession() as http,
            http.post(self.upstream + request.path, data=body, headers=headers) as upstream,
        ):
            data = await upstream.read()
            if unprocessed and upstream.status == 200:
                answer = orjson.loads(data)
                answer["UnprocessedItems"] = unprocessed
                data = orjson.dumps(answer)
            return web.Response(
                status=upstream.status, body=data, content_type="application/x-amz-json-1.0"
            )


@pytest.fixture
async def throttler(moto_endpoint: str) -> AsyncIterator[tuple[Throttler, str]]:
    proxy = Throttler(moto_endpoint, n=2, fail={"TransactWriteItems", "Query"})
    app = web.Application(client_max_size=64 * 1024**2)
    app.router.add_route("POST", "/{tail:.*}", proxy.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield proxy, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_throttling_and_unprocessed_items_are_retried(
    throttler: tuple[Throttler, str],
) -> None:
    proxy, endpoint = throttler
    async with DynamoStore(
        prefix(), region="us-east-1", endpoint_url=endpoint, write_concurrency=1
    ) as s:
        d = ChangeDetector()
        batch = detect(d, *(snap(i, T0, account=f"{i:012d}") for i in range(8)))
        assert await s.put_changes(batch) == 8
        # Accounts went to the registry with BatchWriteItem: cut short twice, retried.
        assert proxy.throttled["unprocessed"] == 2 and s.stats.unprocessed_retries >= 2
        # Transactions cancelled for throttling twice, then applied.
        assert proxy.throttled["TransactWriteItems"] == 2 and s.stats.transaction_retries == 2
        # Queries throttled: botocore's retries took them.
        assert proxy.throttled["Query"] == 2
        assert len(await s.list_as_of(VersionQuery(at=T0))) == 8
        assert await s.put_changes(batch) == 0
        await asyncio.sleep(0)


# -- the worker writes to DynamoDB when the settings say so -----------------------------------


async def test_the_worker_stores_changes_in_dynamodb_end_to_end(
    broker: str,
    moto_endpoint: str,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``build_worker_app`` with ``storage.targets = dynamodb`` from the environment:
    snapshots and a complete manifest through the real broker, then a second scan that
    modifies one resource and misses another, which is deleted."""
    from datetime import UTC, datetime

    from cloudinv.core.models import ScanManifest
    from cloudinv.producers.publisher import KafkaPublisher
    from cloudinv.streams.app import StreamConfig
    from cloudinv.streams.worker import build_worker_app

    table_prefix = prefix()
    monkeypatch.chdir(tmp_path)
    for name, value in {
        "TARGETS": "dynamodb",
        "DYNAMODB_TABLE_PREFIX": table_prefix,
        "DYNAMODB_REGION": "us-east-1",
        "DYNAMODB_ENDPOINT_URL": moto_endpoint,
        "DYNAMODB_WRITE_CONCURRENCY": "1",
    }.items():
        monkeypatch.setenv(f"CLOUDINV_STORAGE__{name}", value)
    account = f"3{random.randrange(10**10, 10**11)}"
    config = StreamConfig(
        bootstrap=broker,
        data_dir=tmp_path,
        app_id=f"test-dynamo-{account}",
        topic_prefix=f"d{account}",
        partitions=2,
    )
    app = build_worker_app(config)
    rtype = "AWS::EC2::SecurityGroup"

    async def scan(n: int, at: datetime, modified: int | None) -> None:
        snaps = [snap(i, at, account=account, v=2 if i == modified else 1) for i in range(n)]
        manifest = ScanManifest(
            scan_id=f"scan-{at.isoformat()}",
            account_id=account,
            region="us-east-1",
            resource_type=rtype,
            status="complete",
            started_at=at,
            finished_at=at + timedelta(seconds=1),
            keys=[s.key for s in snaps],
        )
        publisher = KafkaPublisher({"bootstrap_servers": broker}, config.topic_prefix)
        await publisher.start()
        try:
            for item in [*snaps, manifest]:
                await publisher.publish(item)
        finally:
            await publisher.stop()

    async with DynamoStore(
        table_prefix, region="us-east-1", endpoint_url=moto_endpoint, write_concurrency=1
    ) as s:

        async def wait_for(count: int) -> list[Any]:
            async with asyncio.timeout(60):
                while True:
                    page = await s.changes(ChangeQuery(limit=100))
                    if len(page.items) >= count:
                        await asyncio.sleep(0.5)
                        return (await s.changes(ChangeQuery(limit=100))).items
                    await asyncio.sleep(0.2)

        await app.start()
        try:
            async with asyncio.timeout(60):
                while True:
                    if app.consumer.assignment():
                        break
                    await asyncio.sleep(0.1)
            first = datetime.now(UTC)
            await scan(5, first, None)
            assert [c.change_type for c in await wait_for(5)] == ["created"] * 5
            second = datetime.now(UTC)
            await scan(4, second, modified=2)
            changes = await wait_for(7)
            # CloudTrail events go to the DynamoDB events store too.
            from cloudinv.core.codec import encode
            from cloudinv.producers.cloudtrail.publish import CloudTrailPublisher
            from cloudinv.sinks.dynamodb_events_store import DynamoEventsStore
            from tests.api_helpers import fixture_events

            events = fixture_events(account, every=20)
            async with CloudTrailPublisher({"bootstrap_servers": broker}, config.topic_prefix) as p:
                await p.publish([(e.principal.label.encode(), encode(e)) for e in events])
            async with DynamoEventsStore(
                table_prefix, region="us-east-1", endpoint_url=moto_endpoint
            ) as stored_events:
                async with asyncio.timeout(60):
                    while True:
                        if await stored_events.count(EventFilters(account_id=account)) >= len(
                            events
                        ):
                            break
                        await asyncio.sleep(0.2)
                page = await stored_events.events(EventFilters(account_id=account), limit=1000)
                assert sorted(e.event_id for e in page.items) == sorted(e.event_id for e in events)
        finally:
            await app.stop()
        assert sorted((c.change_type, c.resource_id) for c in changes[5:]) == [
            ("deleted", "r-4"),
            ("modified", "r-2"),
        ]
        assert await s.current_keys_in_scope(account, "us-east-1", rtype) == {
            snap(i, first, account=account).key for i in range(4)
        }
        assert len(await s.scans(account_id=account)) == 2
        # Nothing went to the local SQLite stores.
        assert not (tmp_path / "store" / "inventory.sqlite3").exists()
        assert not (tmp_path / "store" / "events.sqlite3").exists()


async def test_events_store_cursor_limits_and_lookup(moto_endpoint: str) -> None:
    from cloudinv.core.models import CloudTrailEvent, Principal
    from cloudinv.sinks.dynamodb_events_store import DynamoEventsStore

    def event(i: int) -> CloudTrailEvent:
        return CloudTrailEvent(
            event_id=f"e{i}",
            event_time=T0 + timedelta(minutes=i),
            event_source="ec2.amazonaws.com",
            service="ec2",
            event_name="RunInstances" if i % 2 else "DescribeInstances",
            region="us-east-1",
            account_id=ACCOUNT,
            principal=Principal(type="IAMUser", arn=f"arn:aws:iam::{ACCOUNT}:user/u", name="u"),
            read_only=not i % 2,
            request_parameters={"instanceType": "t3.micro" if i < 3 else "m5.large"},
        )

    async with DynamoEventsStore(
        prefix(), region="us-east-1", endpoint_url=moto_endpoint, write_concurrency=1
    ) as s:
        result = await s.write_batch([event(i) for i in range(5)] + [b"{not json"])
        assert result.inserted == 5 and len(result.rejected) == 1
        assert {(u.granularity, u.kind) for u in result.updates} == {
            (g, k) for g in ("hour", "day") for k in ("principal", "service")
        }
        found = await s.event("e3")
        assert found is not None and found.event_name == "RunInstances"
        assert await s.event("nope") is None
        pages, cursor = [], None
        while True:
            page = await s.events(limit=2, cursor=cursor)
            pages.append([e.event_id for e in page.items])
            cursor = page.next_cursor
            if cursor is None:
                break
        assert pages == [["e4", "e3"], ["e2", "e1"], ["e0"]]
        assert await s.count(EventFilters(params=(("instanceType", "t3.micro"),))) == 3
        assert await s.count(EventFilters(read_only=False)) == 2
        window = EventFilters(since=T0 + timedelta(minutes=2), until=T0 + timedelta(minutes=4))
        assert await s.count(window) == 2
        # The request-parameter paths are kept, as in the SQLite store.
        assert await s.parameter_paths() == ["instanceType"]
        with pytest.raises(EventsStoreError, match="cursor"):
            await s.events(cursor="bogus")
        with pytest.raises(EventsStoreError, match="limit"):
            await s.events(limit=0)
        with pytest.raises(EventsStoreError, match="not both"):
            await s.activity(principal="x", service="ec2")
    assert "Scan" not in s.calls


async def test_events_stored_already_are_left_out_of_the_batch_and_counted_once(
    moto_endpoint: str,
) -> None:
    """A batch overlapping events already stored (a replay): their puts' conditions cancel
    the transaction, which is sent again without them; the aggregates count each event once."""
    from cloudinv.core.models import CloudTrailEvent, Principal
    from cloudinv.sinks.dynamodb_events_store import DynamoEventsStore

    def event(i: int) -> CloudTrailEvent:
        return CloudTrailEvent(
            event_id=f"o{i}",
            event_time=T0 + timedelta(minutes=i),
            event_source="ec2.amazonaws.com",
            service="ec2",
            event_name="RunInstances",
            region="us-east-1",
            account_id=ACCOUNT,
            principal=Principal(type="IAMUser", arn=f"arn:aws:iam::{ACCOUNT}:user/u", name="u"),
        )

    async with DynamoEventsStore(
        prefix(), region="us-east-1", endpoint_url=moto_endpoint, write_concurrency=1
    ) as s:
        assert (await s.write_batch([event(i) for i in range(5)])).inserted == 5
        again = await s.write_batch([event(i) for i in range(3, 8)])
        assert again.inserted == 3
        assert await s.count(EventFilters()) == 8
        days = await s.activity(
            service="ec2",
            granularity="day",
            since=T0 - timedelta(days=1),
            until=T0 + timedelta(days=1),
        )
        assert sum(bucket.events for bucket in days) == 8


async def test_a_writer_that_moved_the_key_first_makes_the_batch_plan_again(
    moto_endpoint: str,
) -> None:
    """Two writers of one key: the second one's transaction finds the version it closes
    already closed (its condition fails), plans the batch again from the store, and applies
    its change after the first writer's."""
    name = prefix()
    d = ChangeDetector()
    created = detect(d, snap(1, T0, v=1))
    first = detect(d, snap(1, T0 + timedelta(minutes=1), v=2))
    second = detect(d, snap(1, T0 + timedelta(minutes=2), v=3))
    async with (
        DynamoStore(name, region="us-east-1", endpoint_url=moto_endpoint, write_concurrency=1) as a,
        DynamoStore(name, region="us-east-1", endpoint_url=moto_endpoint, write_concurrency=1) as b,
    ):
        assert await a.put_changes(created) == 1
        interfered: list[int] = []

        async def other_writer_first(**_: Any) -> None:
            if not interfered:
                interfered.append(await b.put_changes(first))

        a._dynamo.before_call("TransactWriteItems", other_writer_first)
        assert await a.put_changes(second) == 1
        assert interfered == [1] and a.stats.conflict_reruns == 1
        history = await a.history(snap(1, T0).key)
        assert [v.configuration["v"] for v in history] == [1, 2, 3]
        assert [v.valid_to for v in history] == [
            T0 + timedelta(minutes=1),
            T0 + timedelta(minutes=2),
            None,
        ]
        assert len((await a.changes(ChangeQuery(limit=10))).items) == 3


# -- the change log (the live feed's source) and current counts ------------------------------


def log_ids(rows: list[Any]) -> list[str]:
    return [orjson.loads(r.event)["change_id"] for r in rows]


async def test_change_log_in_commit_order_pages_and_counts_like_sqlite(
    store: DynamoStore, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One history (creations in two accounts and regions, modifications, many changes of
    one key in one batch, deletions, replays) in both stores: the same changes in the log,
    each key's in its order, numbered 1..n without gaps, paged across buckets; the same
    current counts."""
    monkeypatch.setattr("cloudinv.sinks.dynamodb_store._LOG_BUCKET", 7)  # many buckets, few changes
    d = ChangeDetector()
    batches = [
        detect(
            d,
            *(
                snap(i, T0, account=ACCOUNT if i % 3 else OTHER, region=f"r{i % 2}")
                for i in range(12)
            ),
        )
    ]
    one_key: list[Any] = []
    for minute in range(1, 40):
        one_key += detect(d, snap(1, T0 + timedelta(minutes=minute), region="r1", v=minute))
    batches.append(one_key + detect(d, snap(2, T0 + timedelta(minutes=3), region="r0", v=1)))
    deletions = []
    for i in (4, 5):
        gone = snap(i, T0, region=f"r{i % 2}")
        deletion = d.request_deletion(
            DeletionRequest(
                key=gone.key,
                resource_type=gone.resource_type,
                account_id=ACCOUNT,
                region=gone.region,
                scan_id="later",
                scan_started_at=T0 + timedelta(hours=1),
            )
        )
        assert deletion is not None
        deletions.append(deletion)
    batches.append(deletions)
    async with SqliteStore.in_data_dir(tmp_path) as local:
        assert await store.change_log_head() == 0
        assert await store.change_log_after(0, 10) == []
        assert await store.current_counts() == {}
        for batch in batches:
            assert await store.put_changes(batch) == await local.put_changes(batch)
            assert await store.put_changes(batch) == 0  # a replay: nothing logged, counted
        ours = await store.change_log_after(0, 1000)
        theirs = await local.change_log_after(0, 1000)
        assert [r.seq for r in ours] == list(range(1, len(theirs) + 1))
        assert await store.change_log_head() == len(theirs)
        assert await store.change_log_after(len(theirs), 10) == []
        assert sorted(log_ids(ours)) == sorted(log_ids(theirs))
        for key in {r.key for r in theirs}:
            assert log_ids([r for r in ours if r.key == key]) == log_ids(
                [r for r in theirs if r.key == key]
            )
        by_id = {orjson.loads(r.event)["change_id"]: r for r in theirs}
        for row in ours:
            other = by_id[orjson.loads(row.event)["change_id"]]
            assert (row.key, row.resource_type, row.account_id, row.region) == (
                other.key,
                other.resource_type,
                other.account_id,
                other.region,
            )
            assert row.change_type == other.change_type
            assert orjson.loads(row.event) == orjson.loads(other.event)
        # Pages of every size add up to the whole log.
        for size in (1, 5, 7, 8):
            paged: list[Any] = []
            while page := await store.change_log_after(paged[-1].seq if paged else 0, size):
                assert len(page) <= size
                paged += page
            assert paged == ours
        assert await store.change_log_after(0, 0) == []
        counts = await store.current_counts()
        assert counts == await local.current_counts()
        assert sum(counts.values()) == 10 and len(counts) == 4


async def test_a_gap_that_fills_late_is_not_skipped(moto_endpoint: str) -> None:
    """Two writers: the first reserves number 2, the second reserves 3 and commits it before
    the first commits 2. Meanwhile a reader stops before the gap (2 may still come), and the
    head stays at 1; once 2 is committed, both are read, in order."""
    name = prefix()
    d = ChangeDetector()
    created, late, early = (detect(d, snap(i, T0)) for i in (1, 2, 3))
    async with (
        DynamoStore(name, region="us-east-1", endpoint_url=moto_endpoint, write_concurrency=1) as a,
        DynamoStore(name, region="us-east-1", endpoint_url=moto_endpoint, write_concurrency=1) as b,
    ):
        assert await a.put_changes(created) == 1
        seen: list[Any] = []

        async def other_writer_first(**_: Any) -> None:
            if not seen:
                assert await b.put_changes(early) == 1
                seen.append((await b.change_log_after(1, 10), await b.change_log_head()))
                seen.append(await b.change_log_after(0, 10))

        a._dynamo.before_call("TransactWriteItems", other_writer_first)
        assert await a.put_changes(late) == 1
        assert seen[0] == ([], 1)
        assert log_ids(seen[1]) == [created[0].change_id]
        rows = await b.change_log_after(1, 10)
        assert [r.seq for r in rows] == [2, 3]
        assert log_ids(rows) == [late[0].change_id, early[0].change_id]
        assert await b.change_log_head() == 3 == await a.change_log_head()


async def test_an_old_gap_is_skipped_and_an_old_block_is_never_written(
    moto_endpoint: str,
) -> None:
    """A writer whose reserved numbers grew older than a third of the grace before it could
    write reserves new ones: the old ones stay a gap. A reader waits at that gap while it is
    young, and skips it once older than the grace."""
    name = prefix()
    d = ChangeDetector()
    change = detect(d, snap(1, T0))
    async with (
        DynamoStore(
            name,
            region="us-east-1",
            endpoint_url=moto_endpoint,
            write_concurrency=1,
            log_grace_s=0.6,
        ) as writer,
        DynamoStore(name, region="us-east-1", endpoint_url=moto_endpoint) as patient,
        DynamoStore(name, region="us-east-1", endpoint_url=moto_endpoint, log_grace_s=0.6) as brief,
    ):
        delayed: list[bool] = []

        async def slow_reservation(**_: Any) -> None:
            if not delayed:
                delayed.append(True)
                await asyncio.sleep(0.3)  # > grace / 3: the numbers are too old to write

        writer._dynamo.before_call("UpdateItem", slow_reservation)
        assert await writer.put_changes(change) == 1
        assert writer.stats.log_renumbered >= 1
        # Number 1 (and more if renumbered again) was reserved and never written.
        assert await patient.change_log_after(0, 10) == []
        assert await patient.change_log_head() == 0
        await asyncio.sleep(0.65)
        rows = await brief.change_log_after(0, 10)
        assert log_ids(rows) == [change[0].change_id]
        seq = rows[0].seq
        assert seq > 1
        assert await brief.change_log_head() == seq
        assert await brief.change_log_after(seq, 10) == []
        assert await patient.change_log_after(0, 10) == []  # 30 s: still waiting
        assert await writer.current_counts() == {
            ("AWS::EC2::SecurityGroup", ACCOUNT, "us-east-1"): 1
        }
