"""The SQLite events store's pages as SQLite writes them (``events_json``), the query plans
behind every filter the events endpoint takes, the schema 1 -> 2 upgrade of an existing
file, and activity answered from the aggregates. Real SQLite files in a temporary
directory, with the shared fixture's real CloudTrail records."""

from __future__ import annotations

import itertools
import logging
import sqlite3
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from cloudinv.core.codec import encode
from cloudinv.core.models import CloudTrailEvent
from cloudinv.producers.cloudtrail.normalize import normalize_record
from cloudinv.sinks.events_store import (
    SCHEMA_VERSION,
    EventFilters,
    EventsStore,
    _index_for,
    _page_json_query,
    flatten_params,
)
from tests.cloudtrail_helpers import fixture_records

ACCOUNT = "111100000000"
ACCOUNTS = (ACCOUNT, "222200000000", "333300000000")


@pytest.fixture
def events() -> list[CloudTrailEvent]:
    base = [normalize_record(r) for r in fixture_records()]
    # Spread over three days and three accounts, and a second copy of some events at the
    # very same moment, so that pages end inside runs of equal times.
    spread = [
        e.model_copy(
            update={
                "event_time": e.event_time + timedelta(days=i % 3),
                "account_id": ACCOUNTS[i % 5 % 3],
            }
        )
        for i, e in enumerate(base)
    ]
    twins = [e.model_copy(update={"event_id": f"twin-{e.event_id}"}) for e in spread[::4]]
    return spread + twins


def _filter_cases(events: list[CloudTrailEvent]) -> list[EventFilters]:
    first = events[0]
    run = next(e for e in events if e.event_name == "RunInstances")
    param = flatten_params(run.request_parameters)[0]
    day = first.event_time.date()
    return [
        EventFilters(),
        EventFilters(principal=first.principal.label),
        EventFilters(principal=first.principal.label, since=day, until=day),
        EventFilters(user_name=(first.principal.name or "x").upper()),
        EventFilters(service="ec2"),
        EventFilters(service="ec2", account_id=first.account_id),
        EventFilters(event_name=run.event_name),
        EventFilters(account_id=first.account_id, since=day),
        EventFilters(region=first.region),
        EventFilters(errors_only=True),
        EventFilters(read_only=True, until=day),
        EventFilters(params=(param,)),
        EventFilters(service="no-such-service"),
        EventFilters(accounts=frozenset(ACCOUNTS[:2])),
        EventFilters(accounts=frozenset(ACCOUNTS[1:]), service="ec2", since=day),
        EventFilters(accounts=frozenset(ACCOUNTS[:2]), account_id=ACCOUNTS[2]),
    ]


def _matches(e: CloudTrailEvent, f: EventFilters) -> bool:
    """The filters of :func:`_filter_cases`, evaluated in Python."""
    day = (f.since, f.until)
    return (
        (f.principal is None or e.principal.label == f.principal)
        and (f.user_name is None or (e.principal.name or "").lower() == f.user_name.lower())
        and all(
            want is None or getattr(e, name) == want
            for name, want in (
                ("service", f.service),
                ("event_name", f.event_name),
                ("account_id", f.account_id),
                ("region", f.region),
                ("read_only", f.read_only),
            )
        )
        and (f.accounts is None or e.account_id in f.accounts)
        and (not f.errors_only or e.error_code is not None)
        and (day[0] is None or e.event_time.date() >= day[0])
        and (day[1] is None or e.event_time.date() <= day[1])
        and all(p in flatten_params(e.request_parameters) for p in f.params)
    )


async def test_json_pages_are_the_stored_events_in_order_with_the_same_cursors(
    tmp_path: Path, events: list[CloudTrailEvent]
) -> None:
    async with EventsStore(tmp_path / "events.sqlite3") as store:
        await store.write_batch(events)
        for filters in _filter_cases(events):
            expected = await store.count(filters)
            seen: list[str] = []
            cursor: str | None = None
            pages = 0
            while True:
                body, json_cursor = await store.events_json(filters, limit=7, cursor=cursor)
                stored = await store.stored_events(filters, limit=7, cursor=cursor)
                assert body == b"[" + b",".join(e.json for e in stored.items) + b"]", filters
                assert json_cursor == stored.next_cursor, filters
                items = orjson.loads(body)
                assert [i["event_id"] for i in items] == [e.event_id for e in stored.items]
                seen += [i["event_id"] for i in items]
                pages += 1
                cursor = json_cursor
                if cursor is None:
                    break
            assert len(seen) == len(set(seen)) == expected, filters
            assert expected == sum(1 for e in events if _matches(e, filters)), filters
            assert pages == max(1, -(-expected // 7)), "no empty page after a full one"
        # A page that holds exactly what is left has no next cursor; none matching: [].
        total = await store.count()
        body, cursor = await store.events_json(limit=total)
        assert (len(orjson.loads(body)), cursor) == (total, None)
        assert await store.events_json(EventFilters(service="none")) == (b"[]", None)


async def test_every_body_is_stored_as_the_models_json(
    tmp_path: Path, events: list[CloudTrailEvent]
) -> None:
    """Reads send stored bodies unchecked, so a body in another shape (fields left out, a
    +00:00 time) is stored as the model writes it."""
    sparse = {
        "event_id": "sparse-1",
        "event_time": "2017-06-01T10:00:00.250+00:00",
        "event_source": "ec2.amazonaws.com",
        "service": "ec2",
        "event_name": "DescribeInstances",
        "region": "us-east-1",
        "account_id": ACCOUNT,
        "principal": {"type": "IAMUser", "name": "Alice"},
        "resources": [],
    }
    async with EventsStore(tmp_path / "events.sqlite3") as store:
        result = await store.write_batch([orjson.dumps(sparse), encode(events[0])])
        assert (result.inserted, result.rejected) == (2, [])
    with sqlite3.connect(tmp_path / "events.sqlite3") as conn:
        bodies = dict(conn.execute("SELECT event_id, body FROM events"))
    model = CloudTrailEvent.model_validate(sparse)
    assert bodies["sparse-1"] == model.__pydantic_serializer__.to_json(model, by_alias=True)
    assert bodies[events[0].event_id] == encode(events[0]), "the wire bytes, kept as they are"


def _plan(path: Path, filters: EventFilters) -> str:
    sql, args = _page_json_query(filters, None, 100)
    with sqlite3.connect(path) as conn:
        return " | ".join(row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", args))


async def test_every_filter_combination_walks_an_index_in_time_order(
    tmp_path: Path, events: list[CloudTrailEvent]
) -> None:
    """Each combination of the endpoint's filters reads one index in the page's order: no
    scan of the table, and no sort of the matching events (the only sort is of the page's
    own rows, for their numbering). Without a filter of its own, the time index is walked
    newest first, as far as the page needs. Request parameters alone are looked up by
    value."""
    path = tmp_path / "events.sqlite3"
    async with EventsStore(path) as store:
        await store.write_batch(events)
    values: dict[str, Any] = {
        "principal": "arn:aws:iam::111100000000:user/alice",
        "user_name": "alice",
        "event_name": "RunInstances",
        "service": "ec2",
        "account_id": ACCOUNT,
        "region": "us-east-1",
        "errors_only": True,
        "read_only": False,
        "accounts": frozenset(ACCOUNTS[:2]),
    }
    times: list[dict[str, Any]] = [
        {},
        {"since": date(2017, 6, 1)},
        {"since": date(2017, 6, 1), "until": date(2017, 6, 1)},
    ]
    checked = 0
    for size in range(3):
        for names in itertools.combinations(values, size):
            for time in times:
                filters = EventFilters(**{n: values[n] for n in names}, **time)
                plan = _plan(path, filters)
                index = _index_for(filters).removeprefix("INDEXED BY ")
                assert f"USING INDEX {index}" in plan or f"COVERING INDEX {index}" in plan, (
                    filters,
                    plan,
                )
                steps = plan.split(" | ")
                assert not [s for s in steps if s == "SCAN e"], (filters, plan)  # table scan
                assert plan.count("TEMP B-TREE") == 1, (filters, plan)  # the page's own
                checked += 1
    assert checked == 3 * (1 + 9 + 36)
    param_plan = _plan(path, EventFilters(params=(("instanceType", "t2.micro"),)))
    assert "SEARCH event_params" in param_plan, param_plan
    assert "SCAN e" not in param_plan.split(" | "), param_plan


async def test_activity_principals_and_services_answer_from_the_aggregates(
    tmp_path: Path, events: list[CloudTrailEvent]
) -> None:
    path = tmp_path / "events.sqlite3"
    first = events[0]

    async def answers(store: EventsStore) -> list[Any]:
        return [
            await store.activity(principal=first.principal.label, granularity="hour"),
            await store.activity(service="ec2", account_id=first.account_id, granularity="day"),
            await store.activity(granularity="day"),
            await store.principals(),
            await store.services(),
        ]

    async with EventsStore(path) as store:
        await store.write_batch(events)
        before = await answers(store)
        assert all(before)
    # With the events themselves gone, the aggregates still answer the same.
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM events")
    async with EventsStore(path) as store:
        assert await store.count() == 0
        assert await answers(store) == before


def _as_schema_1(path: Path, bodies: dict[str, bytes], version: int = 1) -> None:
    """What cloudinv before schema 2 left: bodies stored as producers wrote them, and no
    indexes by account and service or event name."""
    with sqlite3.connect(path) as conn:
        conn.execute("DROP INDEX events_by_account_service")
        conn.execute("DROP INDEX events_by_account_name")
        for event_id, body in bodies.items():
            conn.execute("UPDATE events SET body = ? WHERE event_id = ?", (body, event_id))
        conn.execute(f"PRAGMA user_version = {version}")


@pytest.mark.parametrize("version", [1, 0])
async def test_an_older_file_is_upgraded_once_and_loses_nothing(
    tmp_path: Path, events: list[CloudTrailEvent], caplog: pytest.LogCaptureFixture, version: int
) -> None:
    path = tmp_path / "events.sqlite3"
    sparse, foreign = events[0], events[1]
    # An older producer's body: fields left out, a +00:00 time; and one the model no
    # longer takes (an unknown field), which must be kept as it was.
    sparse_body = orjson.dumps(
        {
            k: v
            for k, v in orjson.loads(encode(sparse)).items()
            if v is not None and k != "source_file"
        }
        | {"event_time": sparse.event_time.isoformat().replace("Z", "+00:00")}
    )
    foreign_body = orjson.dumps(orjson.loads(encode(foreign)) | {"future_field": 1})
    async with EventsStore(path) as store:
        await store.write_batch(events)
        before = (await store.count(), await store.principals(), await store.services())
    _as_schema_1(path, {sparse.event_id: sparse_body, foreign.event_id: foreign_body}, version)

    with caplog.at_level(logging.INFO, logger="cloudinv.sinks.events_store"):
        async with EventsStore(path, readonly=True) as store:
            assert (await store.count(), await store.principals(), await store.services()) == (
                before
            )
            body, _ = await store.events_json(limit=10_000)
    lines = [r.getMessage() for r in caplog.records if "schema" in r.getMessage()]
    assert lines == [
        f"events store {path}: schema {version} -> {SCHEMA_VERSION}: indexes by account and "
        f"service or event name added, 1 of {len(events)} stored events rewritten as the "
        "model's JSON; 1 that the model no longer accepts kept as they were"
    ]
    assert caplog.records[-1].levelno == logging.WARNING
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        indexes = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert {"events_by_account_service", "events_by_account_name"} <= indexes
        stored = dict(conn.execute("SELECT event_id, body FROM events"))
    assert stored[sparse.event_id] == sparse.__pydantic_serializer__.to_json(sparse, by_alias=True)
    assert stored[foreign.event_id] == foreign_body
    assert stored[sparse.event_id] in body

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="cloudinv.sinks.events_store"):
        async with EventsStore(path) as store:
            assert await store.count() == before[0]
    assert not [r for r in caplog.records if "schema" in r.getMessage()], "migrated once"
