"""The CloudTrail events store and the activity agent: every event counted once, queryable by
principal, service, account, time, event name and request parameters — from the store
alone, and end to end from moto's S3 through SQS, the tailer, the real broker and Faust."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from cloudinv.core.codec import decode, encode
from cloudinv.core.models import CloudTrailEvent, Principal
from cloudinv.core.settings import AlertSettings
from cloudinv.core.topics import Topic, topic_name
from cloudinv.producers.cloudtrail.normalize import normalize_record
from cloudinv.producers.cloudtrail.tailer import tail
from cloudinv.sinks.events_store import (
    ActivityUpdate,
    EventFilters,
    EventsStore,
    EventsStoreError,
    events_store_path,
    flatten_params,
)
from cloudinv.streams import alerts
from cloudinv.streams.activity import bind
from cloudinv.streams.app import StreamConfig, create_app
from tests.cloudtrail_helpers import (
    MotoTrail,
    consume,
    create_topics,
    fixture_records,
    log_bytes,
    log_key,
)


def expected_label(record: dict[str, Any]) -> str:
    """Who made the call, computed here independently of the product code."""
    identity = record["userIdentity"]
    if identity["type"] == "Root":
        return f"root:{identity['accountId']}"
    if identity["type"] == "AWSService":
        return str(identity["invokedBy"])
    return str(identity["arn"])


def expected_counts(records: list[dict[str, Any]]) -> dict[str, Counter[str]]:
    return {
        "principal": Counter(expected_label(r) for r in records),
        "service": Counter(r["eventSource"].split(".")[0] for r in records),
        "account": Counter(r["recipientAccountId"] for r in records),
        "event_name": Counter(r["eventName"] for r in records),
    }


async def assert_queryable(store: EventsStore, records: list[dict[str, Any]]) -> None:
    """Every fixture event is found by principal, service and account, with right counts."""
    want = expected_counts(records)
    assert await store.count() == len(records)
    for label, n in want["principal"].items():
        assert await store.count(EventFilters(principal=label)) == n, label
        page = await store.events(EventFilters(principal=label), limit=1000)
        assert len(page.items) == n
        assert {e.principal.label for e in page.items} == {label}
    for service, n in want["service"].items():
        assert await store.count(EventFilters(service=service)) == n, service
    for account, n in want["account"].items():
        assert await store.count(EventFilters(account_id=account)) == n
    for name, n in want["event_name"].items():
        assert await store.count(EventFilters(event_name=name)) == n
    # The union of per-principal pages is every event exactly once.
    ids: list[str] = []
    for label in want["principal"]:
        ids += [
            e.event_id
            for e in (await store.events(EventFilters(principal=label), limit=1000)).items
        ]
    assert sorted(ids) == sorted(r["eventID"] for r in records)

    principals = {p.label: p for p in await store.principals()}
    assert {k: p.events for k, p in principals.items()} == dict(want["principal"])
    assert principals["root:111100000000"].type == "Root"
    services = {s.service: s.events for s in await store.services()}
    assert services == dict(want["service"])
    day = await store.activity(granularity="day")
    assert sum(b.events for b in day) == len(records)
    assert sum(b.errors for b in day) == sum(1 for r in records if "errorCode" in r)
    for label, n in want["principal"].items():
        hours = await store.activity(principal=label, granularity="hour")
        assert sum(b.events for b in hours) == n
        assert sum(sum(b.by_event_name.values()) for b in hours) == n
    for service, n in want["service"].items():
        days = await store.activity(service=service, granularity="day")
        assert sum(b.events for b in days) == n


@pytest.fixture
def records() -> list[dict[str, Any]]:
    return fixture_records()


@pytest.fixture
def events(records: list[dict[str, Any]]) -> list[CloudTrailEvent]:
    return [normalize_record(r) for r in records]


async def test_store_counts_each_event_once(
    tmp_path: Path, records: list[dict[str, Any]], events: list[CloudTrailEvent]
) -> None:
    async with EventsStore(tmp_path / "events.sqlite3") as store:
        first = await store.write_batch(events[:100])
        assert (first.received, first.inserted) == (100, 100)
        # Overlapping batch, with duplicates inside it too.
        second = await store.write_batch(events[50:] + events[60:70])
        assert (second.received, second.inserted) == (102, 42)
        replay = await store.write_batch(events)
        assert (replay.inserted, replay.updates) == (0, [])
        await assert_queryable(store, records)


async def test_activity_updates_carry_the_new_totals(
    tmp_path: Path, events: list[CloudTrailEvent]
) -> None:
    async with EventsStore(tmp_path / "events.sqlite3") as store:
        await store.write_batch(events[:70])
        result = await store.write_batch(events[70:])
        updates = {(u.granularity, u.kind, u.key): u for u in result.updates}
        ec2_day = updates[("day", "service", "ec2")]
        assert ec2_day.bucket.events == sum(1 for e in events if e.service == "ec2")
        assert ec2_day.topic_key == "service:ec2"
        assert ec2_day.bucket.start == datetime(2017, 6, 1, tzinfo=UTC)
        hour = await store.activity(service="ec2", granularity="hour")
        assert [b.events for b in hour] == [updates[("hour", "service", "ec2")].bucket.events]


async def test_time_ranges_paging_and_filters(
    tmp_path: Path, events: list[CloudTrailEvent]
) -> None:
    # Spread the fixture over three days.
    shifted = [
        e.model_copy(update={"event_time": e.event_time + timedelta(days=i % 3)})
        for i, e in enumerate(events)
    ]
    per_day = Counter(e.event_time.date() for e in shifted)
    async with EventsStore(tmp_path / "events.sqlite3") as store:
        await store.write_batch(shifted)
        d1, d2, d3 = sorted(per_day)
        # A date as `until` includes that whole day (the replaced tool dropped it).
        assert await store.count(EventFilters(since=d1, until=d2)) == per_day[d1] + per_day[d2]
        assert await store.count(EventFilters(since=d3)) == per_day[d3]
        at = datetime(d2.year, d2.month, d2.day, tzinfo=UTC)
        assert await store.count(EventFilters(until=at)) == per_day[d1]
        days = await store.activity(since=d2, until=d3, granularity="day")
        assert [b.events for b in days] == [per_day[d2], per_day[d3]]
        assert await store.count(EventFilters(errors_only=True)) == 1
        assert await store.count(EventFilters(read_only=False)) == sum(
            1 for e in events if not e.read_only
        )

        # Paging: newest first, every event once.
        seen: list[CloudTrailEvent] = []
        cursor = None
        while True:
            page = await store.events(limit=25, cursor=cursor)
            seen += page.items
            cursor = page.next_cursor
            if cursor is None:
                break
        assert len(seen) == len({e.event_id for e in seen}) == 142
        times = [e.event_time for e in seen]
        assert times == sorted(times, reverse=True)
        with pytest.raises(EventsStoreError, match="cursor"):
            await store.events(cursor="garbage!")


async def test_request_parameter_filters(tmp_path: Path, events: list[CloudTrailEvent]) -> None:
    run = next(e for e in events if e.event_name == "RunInstances")
    assert run.request_parameters is not None
    pairs = flatten_params(run.request_parameters)
    path, value = next((p, v) for p, v in pairs if p == "instanceType")
    async with EventsStore(tmp_path / "events.sqlite3") as store:
        await store.write_batch(events)
        found = await store.events(EventFilters(params=((path, value),)))
        assert run.event_id in {e.event_id for e in found.items}
        expected = sum(
            1 for e in events if (e.request_parameters or {}).get("instanceType") == value
        )
        assert await store.count(EventFilters(params=((path, value),))) == expected
        assert (
            await store.count(EventFilters(event_name="RunInstances", params=((path, value),))) == 1
        )
        assert await store.count(EventFilters(params=((path, "no-such-type"),))) == 0
        assert path in await store.parameter_paths()
        # Nested list items are found under their list's path.
        volumes = next(e for e in events if e.event_name == "DescribeVolumeStatus")
        nested = [p for p in flatten_params(volumes.request_parameters) if "." in p[0]]
        if nested:
            assert await store.count(EventFilters(params=tuple(nested[:1]))) >= 1


async def test_encoded_events_are_stored_like_models(
    tmp_path: Path, records: list[dict[str, Any]], events: list[CloudTrailEvent]
) -> None:
    """The worker hands the store the topic's bytes; the result must equal the model path."""
    odd = [
        # Principal shapes the fixture lacks, and a naive timestamp.
        events[0].model_copy(
            update={
                "event_id": "odd-1",
                "principal": events[0].principal.model_copy(update={"type": "Root", "arn": None}),
            }
        ),
        events[1].model_copy(update={"event_id": "odd-2", "principal": Principal()}),
    ]
    async with (
        EventsStore(tmp_path / "a.sqlite3") as by_model,
        EventsStore(tmp_path / "b.sqlite3") as by_bytes,
    ):
        await by_model.write_batch(events + odd)
        naive = encode(odd[1]).replace(b'Z"', b'"', 1)
        result = await by_bytes.write_batch([encode(e) for e in events] + [encode(odd[0]), naive])
        assert (result.inserted, result.rejected) == (144, [])
        assert await by_bytes.principals() == await by_model.principals()
        assert await by_bytes.activity(granularity="hour") == await by_model.activity(
            granularity="hour"
        )
        for e in events + odd:
            assert await by_bytes.event(e.event_id) == e
        labels = {p.label for p in await by_bytes.principals()}
        assert {"root:111100000000", "unknown"} <= labels


async def test_messages_that_are_not_events_are_left_out(
    tmp_path: Path, events: list[CloudTrailEvent]
) -> None:
    bad_principal = orjson.loads(encode(events[0]))
    bad_principal["principal"] = {"type": 3}
    wire = orjson.loads(encode(events[3]))
    # Shapes the store's fast path must not take (the body is stored as it came, and the
    # API validates it again on every read).
    bad_nested = [
        {**wire, "event_id": "r1", "resources": [{"arn": 5}]},
        {**wire, "event_id": "r2", "resources": ["arn:aws:s3:::b"]},
        {**wire, "event_id": "r3", "resources": None},
        {**wire, "event_id": "r4", "additional_event_data": "MFAUsed"},
        {**wire, "event_id": "r5", "event_time": "yesterday"},
    ]
    async with EventsStore(tmp_path / "events.sqlite3") as store:
        result = await store.write_batch(
            [
                b"not json",
                b'{"event_id": 1}',
                orjson.dumps({**orjson.loads(encode(events[1])), "extra": True}),
                orjson.dumps(bad_principal),
                encode(events[2]),
                *(orjson.dumps(b) for b in bad_nested),
            ]
        )
        assert result.inserted == 1
        assert len(result.rejected) == 4 + len(bad_nested)
        assert all(r.startswith("not a CloudTrailEvent") for r in result.rejected)
        assert await store.count() == 1


def test_flatten_params() -> None:
    assert flatten_params({"a": {"b": [{"c": 1}, {"c": "x"}], "d": True}, "e": None}) == [
        ("a.b.c", "1"),
        ("a.b.c", "x"),
        ("a.d", "true"),
    ]


async def test_readonly_store_reads_while_writer_writes(
    tmp_path: Path, records: list[dict[str, Any]], events: list[CloudTrailEvent]
) -> None:
    path = tmp_path / "store" / "events.sqlite3"
    async with EventsStore(path) as writer, EventsStore(path, readonly=True) as reader:
        await writer.write_batch(events)
        await assert_queryable(reader, records)
        with pytest.raises(EventsStoreError, match="read-only"):
            await reader.write_batch(events)
        with pytest.raises(EventsStoreError, match="not both"):
            await reader.activity(principal="a", service="b")


# --- end to end ----------------------------------------------------------------------------


async def _wait_for(condition: Any, timeout: float = 60) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        if loop.time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.2)


async def test_fixture_through_s3_sqs_tailer_broker_agent_into_store(
    broker: str, moto_endpoint: str, unique: str, tmp_path: Path, records: list[dict[str, Any]]
) -> None:
    prefix = f"t{unique}"
    await create_topics(broker, prefix)
    trail = await asyncio.to_thread(MotoTrail.create, moto_endpoint, unique)
    body = log_bytes(records)
    await trail.put(log_key(1), body)
    # The same file delivered twice: again under another key, and a repeated notification.
    await trail.put(log_key(2), body)
    await trail.put(log_key(1), body)

    config = StreamConfig(
        bootstrap=broker,
        data_dir=tmp_path,
        app_id=f"test-activity-{unique}",
        topic_prefix=prefix,
        partitions=2,
    )
    app = create_app(config)
    stage = bind(app, config, within_s=0.1)
    # The event alerts read the same topic, as in cloudinv worker: each agent has its own
    # batch queue (cloudinv.streams.batch_delivery) and gets every event.
    alert_stage = alerts.bind(app, config, settings=AlertSettings(webhooks=[]))
    await app.start()
    try:
        stats = await tail(
            trail.queue_url,
            kafka_client_kwargs={"bootstrap_servers": broker},
            topic_prefix=prefix,
            # Deleted only once this Faust app committed past them (stored).
            consumer_group=config.app_id,
            data_dir=tmp_path,
            endpoint_url=moto_endpoint,
            region="us-east-1",
            until_idle=True,
            wait_time_s=1,
        )
        assert stats.events == 3 * 142 and stats.skipped == 1  # the s3:TestEvent
        assert await asyncio.to_thread(trail.messages_left) == 0

        async def all_received() -> bool:
            return stage.stats.received >= 3 * 142

        await _wait_for(all_received)
        assert stage.stats.inserted == 142
        queue = stage.batch_queue
        assert queue is not None

        async def all_acked() -> bool:
            return queue.delivered >= 3 * 142 and alert_stage.stats.events >= 3 * 142

        await _wait_for(all_acked)
        assert stage.stats.received == queue.delivered == 3 * 142
        assert alert_stage.stats.events == 3 * 142 and alert_stage.stats.undecodable == 0
    finally:
        await app.stop()

    path = events_store_path(tmp_path)
    async with EventsStore(path, readonly=True) as store:
        await assert_queryable(store, records)
        # Source files are kept, credentials are not.
        one = await store.event(records[0]["eventID"])
        assert one is not None and one.source_file is not None
        assert one.source_file.startswith(f"s3://{trail.bucket}/AWSLogs/")
    raw = await asyncio.to_thread(path.read_bytes)
    assert b"sessionToken" not in raw and b"ASIA1705E7D28634D84D" not in raw
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    # The activity topic holds the final totals of every bucket.
    updates = [
        decode(ActivityUpdate, m.value)
        for m in await consume(broker, topic_name(Topic.ACTIVITY, prefix), 1, timeout=10)
    ]
    latest: dict[tuple[str, str, str, datetime], int] = {}
    for u in updates:
        key = (u.granularity, u.kind, u.key, u.bucket.start)
        latest[key] = max(latest.get(key, 0), u.bucket.events)
    daily_services = {k[2]: n for k, n in latest.items() if k[:2] == ("day", "service")}
    assert daily_services == dict(expected_counts(records)["service"])
    daily_principals = {k[2]: n for k, n in latest.items() if k[:2] == ("day", "principal")}
    assert daily_principals == dict(expected_counts(records)["principal"])
    assert date(2017, 6, 1) in {k[3].date() for k in latest}


async def test_stored_json_is_the_models_json_whatever_the_producer_wrote(
    tmp_path: Path, events: list[CloudTrailEvent]
) -> None:
    """The API sends stored JSON as it is: it must be exactly what the model would write,
    also for bodies a producer wrote in another shape (fields left out, +00:00 times)."""
    sparse = orjson.dumps(
        {
            "event_id": "sparse-1",
            "event_time": "2017-06-01T10:00:00.250+00:00",
            "event_source": "ec2.amazonaws.com",
            "service": "ec2",
            "event_name": "DescribeInstances",
            "region": "us-east-1",
            "account_id": "111100000000",
            "principal": {"type": "IAMUser", "name": "Alice"},
            "resources": [],
        }
    )
    async with EventsStore(tmp_path / "events.sqlite3") as store:
        result = await store.write_batch([encode(e) for e in events[:20]] + [sparse])
        assert (result.inserted, result.rejected) == (21, [])
        page = await store.stored_events(limit=100)
        assert len(page.items) == 21
        for stored in page.items:
            model = stored.model()
            assert stored.json == model.__pydantic_serializer__.to_json(model, by_alias=True)
            assert (stored.event_id, stored.account_id) == (model.event_id, model.account_id)
        by_id = {s.event_id: s for s in page.items}
        assert orjson.loads(by_id["sparse-1"].json)["event_time"] == "2017-06-01T10:00:00.250000Z"
        assert [e.event_id for e in (await store.events(limit=100)).items] == list(by_id)


async def test_user_names_match_ignoring_case(
    tmp_path: Path, events: list[CloudTrailEvent]
) -> None:
    named = [e for e in events if e.principal.name]
    name = named[0].principal.name
    assert name is not None and name != name.upper()
    expected = sum(1 for e in events if (e.principal.name or "").lower() == name.lower())
    async with EventsStore(tmp_path / "events.sqlite3") as store:
        await store.write_batch(events)
        for spelling in (name, name.upper(), name.lower()):
            assert await store.count(EventFilters(user_name=spelling)) == expected, spelling
            page = await store.stored_events(EventFilters(user_name=spelling), limit=500)
            assert len(page.items) == expected


@pytest.mark.parametrize(
    ("filters", "index"),
    [
        ({"principal": "p"}, "events_by_principal"),
        ({"principal": "p", "account_id": "111100000000", "service": "ec2"}, "events_by_principal"),
        ({"user_name": "alice"}, "events_by_user_nocase"),
        ({"event_name": "RunInstances", "service": "ec2"}, "events_by_name"),
        ({"service": "ec2", "account_id": "111100000000"}, "events_by_account_service"),
        ({"service": "ec2"}, "events_by_service"),
        ({"event_name": "RunInstances", "account_id": "111100000000"}, "events_by_account_name"),
        ({"account_id": "111100000000"}, "events_by_account"),
        ({"since": date(2017, 6, 1)}, "events_by_time"),
        ({}, "events_by_time"),
    ],
)
async def test_events_queries_walk_the_index_of_their_most_selective_filter(
    tmp_path: Path, events: list[CloudTrailEvent], filters: dict[str, Any], index: str
) -> None:
    from cloudinv.sinks.events_store import _index_for, _where

    async with EventsStore(tmp_path / "events.sqlite3") as store:
        await store.write_batch(events)
        f = EventFilters(**filters)
        where, args = _where(f)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        sql = (
            f"EXPLAIN QUERY PLAN SELECT e.body FROM events e {_index_for(f)} {clause} "
            "ORDER BY e.event_time DESC, e.rowid DESC LIMIT 101"
        )
        with sqlite3.connect(tmp_path / "events.sqlite3") as conn:
            plan = " ".join(row[-1] for row in conn.execute(sql, args))
        assert f"INDEX {index}" in plan, plan
        assert "TEMP B-TREE" not in plan, plan  # rows come out in order: no sort
