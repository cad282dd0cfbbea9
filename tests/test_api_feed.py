"""The live change feed (``GET /v1/changes/stream``) over a real server.

The feed tails the inventory store, so these tests write the store directly, as the change
stage's sink does: snapshots go through the real ``ChangeDetector`` and its ChangeEvents are
written with ``SqliteStore.put_changes`` (the pipeline end to end is in
``test_api_inventory``/``test_api_auth``, whose stores the Faust worker filled).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from cloudinv.api import sse
from cloudinv.core.models import ChangeEvent, ResourceSnapshot
from cloudinv.streams.changes import ChangeDetector, DeletionRequest
from tests.api_helpers import Api, SseEvent, read_sse, running_api

A = "111111111111"
B = "222222222222"
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


class Writer:
    """Changes as the change stage makes and stores them."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.detector = ChangeDetector()
        self.clock = T0
        self.written: list[ChangeEvent] = []

    def snapshot(
        self, i: int, *, account: str = A, rtype: str = "AWS::EC2::SecurityGroup", **config: Any
    ) -> ResourceSnapshot:
        self.clock += timedelta(seconds=1)
        return ResourceSnapshot.build(
            account_id=account,
            region="us-east-1",
            resource_type=rtype,
            resource_id=f"r-{i}",
            arn=f"arn:aws:ec2:us-east-1:{account}:thing/r-{i}",
            configuration={"Id": f"r-{i}", **config},
            scan_id="scan",
            captured_at=self.clock,
        )

    async def write(self, *snapshots: ResourceSnapshot) -> list[ChangeEvent]:
        changes = [c for s in snapshots if (c := self.detector.observe(s)) is not None]
        return await self.store(changes)

    async def store(self, changes: list[ChangeEvent]) -> list[ChangeEvent]:
        assert await self.api.inventory.put_changes(changes) == len(changes)
        self.written += changes
        return changes

    async def many(self, n: int, start: int = 0, **config: Any) -> list[ChangeEvent]:
        return await self.write(*(self.snapshot(start + i, **config) for i in range(n)))


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(tmp_path, {"admin": None, "a": [A]}) as running:
        yield running


@pytest.fixture
def writer(api: Api) -> Writer:
    return Writer(api)


def changes_of(events: list[SseEvent]) -> list[tuple[int, ChangeEvent]]:
    return [
        (int(e.id or 0), ChangeEvent.model_validate_json(e.data))
        for e in events
        if e.event == "change"
    ]


def count_changes(n: int) -> Any:
    return lambda events: sum(1 for e in events if e.event == "change") >= n


async def open_stream(
    http: aiohttp.ClientSession, api: Api, query: str = "", scope: str = "admin", **headers: str
) -> aiohttp.ClientResponse:
    resp = await http.get(
        f"{api.base}/v1/changes/stream{query}", headers={**api.auth(scope), **headers}
    )
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "text/event-stream"
    return resp


async def subscribed(api: Api, n: int = 1) -> None:
    """Wait until the feed has n subscribers (a client is live only once subscribed)."""
    async with asyncio.timeout(5):
        while True:
            if sse.feed_subscribers(api.app) >= n:
                return
            await asyncio.sleep(0.01)


async def test_new_changes_reach_a_client_within_a_second(api: Api, writer: Writer) -> None:
    async with aiohttp.ClientSession() as http:
        resp = await open_stream(http, api)
        await subscribed(api)
        for round_ in range(3):
            started = time.monotonic()
            written = await writer.many(4, start=10 * round_)
            got = changes_of(await read_sse(resp, until=count_changes(4), timeout=5))
            assert time.monotonic() - started < 1.0
            assert [c.change_id for _, c in got] == [c.change_id for c in written]
            assert got[0][1] == written[0]
        resp.close()


async def test_reconnecting_with_last_event_id_misses_nothing_and_repeats_nothing(
    api: Api, writer: Writer
) -> None:
    async with aiohttp.ClientSession() as http:
        resp = await open_stream(http, api)
        await subscribed(api)
        await writer.many(5)
        first = changes_of(await read_sse(resp, until=count_changes(5)))
        resp.close()
        last_id = first[-1][0]

        # Missed while away: modifications of the same resources, and new ones.
        missed = await writer.many(5, colour="red") + await writer.many(3, start=5)
        resp = await open_stream(http, api, **{"Last-Event-ID": str(last_id)})
        # More arrive while the client is catching up.
        during = asyncio.create_task(writer.many(6, start=20))
        got = changes_of(await read_sse(resp, until=count_changes(14), timeout=10))
        await during
        resp.close()
    expected = missed + during.result()
    assert [c.change_id for _, c in got] == [c.change_id for c in expected]
    ids = [i for i, _ in first + got]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert [c.change_id for _, c in first + got] == [c.change_id for c in writer.written]


async def test_last_event_id_as_a_parameter_and_bad_ids(api: Api, writer: Writer) -> None:
    written = await writer.many(4)
    async with aiohttp.ClientSession() as http:
        resp = await open_stream(http, api, "?last_event_id=0")
        got = changes_of(await read_sse(resp, until=count_changes(4)))
        resp.close()
        assert [c.change_id for _, c in got] == [c.change_id for c in written]
        for headers, query, parameter in (
            ({"Last-Event-ID": "abc"}, "", "Last-Event-ID"),
            ({}, "?last_event_id=-1", "last_event_id"),
            ({}, "?since=2026-11-01", "since"),
            ({}, "?change_type=moved", "change_type"),
        ):
            async with http.get(
                f"{api.base}/v1/changes/stream{query}", headers={**api.auth(), **headers}
            ) as bad:
                assert bad.status == 400
                assert (await bad.json(content_type=None))["parameter"] == parameter


async def test_a_change_committed_after_newer_ones_is_still_delivered(
    api: Api, writer: Writer
) -> None:
    """A deletion carries its scan's start time, earlier than changes already stored; the
    feed follows commit order, so a client does not miss it (a tail by time would)."""
    (created,) = await writer.write(writer.snapshot(1))
    scan_started = writer.clock + timedelta(seconds=1)
    await writer.many(3, start=2)  # captured after the scan started
    async with aiohttp.ClientSession() as http:
        resp = await open_stream(http, api, **{"Last-Event-ID": "1"})
        got = changes_of(await read_sse(resp, until=count_changes(3)))
        deletion = writer.detector.request_deletion(
            DeletionRequest(
                key=created.key,
                resource_type=created.resource_type,
                account_id=A,
                region="us-east-1",
                scan_id="later",
                scan_started_at=scan_started,
            )
        )
        assert deletion is not None and deletion.captured_at < writer.written[-1].captured_at
        await writer.store([deletion])
        got += changes_of(await read_sse(resp, until=count_changes(1)))
        resp.close()
    assert [c.change_id for _, c in got] == [c.change_id for c in writer.written[1:]]
    assert got[-1][1].change_type == "deleted"


async def test_filters(api: Api, writer: Writer) -> None:
    async with aiohttp.ClientSession() as http:
        only_b = await open_stream(http, api, f"?account={B}&change_type=created,modified")
        instances = await open_stream(http, api, "?type=AWS::EC2::Instance")
        await subscribed(api, 2)
        await writer.write(
            writer.snapshot(1),
            writer.snapshot(2, account=B),
            writer.snapshot(3, rtype="AWS::EC2::Instance"),
            writer.snapshot(2, account=B, colour="blue"),
        )
        got_b = changes_of(await read_sse(only_b, until=count_changes(2)))
        got_i = changes_of(await read_sse(instances, until=count_changes(1)))
        only_b.close()
        instances.close()
    assert [(c.account_id, c.change_type) for _, c in got_b] == [(B, "created"), (B, "modified")]
    assert [c.resource_type for _, c in got_i] == ["AWS::EC2::Instance"]


def _small_receive_buffer(addr_info: Any) -> socket.socket:
    family, type_, proto, _, _ = addr_info
    sock = socket.socket(family=family, type=type_, proto=proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    return sock


async def test_a_slow_client_is_told_to_resume_and_slows_nobody(
    api: Api, writer: Writer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A buffer holds at least one poll's page, or a burst would overflow every client.
    monkeypatch.setattr(sse, "PAGE", 50)
    monkeypatch.setattr(sse, "CLIENT_BUFFER", 100)
    padding = "x" * 40_000
    n = 400
    # The slow client's socket gets a small fixed receive buffer. Linux autotunes a loopback
    # connection's buffers up to tcp_rmem's max (32 MiB here), which could hold the whole
    # burst: then nothing overflows and the test would wait for a resume that never comes.
    # With it, what the kernel can hold (the server's send buffer, at most tcp_wmem's max,
    # 4 MiB) is well under the 16 MB burst.
    slow_connector = aiohttp.TCPConnector(socket_factory=_small_receive_buffer)
    async with (
        aiohttp.ClientSession(connector=slow_connector) as slow_http,
        aiohttp.ClientSession() as http,
    ):
        slow = await open_stream(slow_http, api)
        fast = await open_stream(http, api)
        await subscribed(api, 2)
        # The fast client gets every batch promptly although the slow one reads nothing.
        got_fast: list[tuple[int, ChangeEvent]] = []
        for start in range(0, n, 50):
            started = time.monotonic()
            await writer.many(50, start=start, padding=padding)
            batch = await read_sse(fast, until=count_changes(50), timeout=10)
            assert [e.event for e in batch] == ["change"] * 50
            assert time.monotonic() - started < 2.0
            got_fast += changes_of(batch)
        assert [c.change_id for _, c in got_fast] == [c.change_id for c in writer.written]
        fast.close()

        # The slow client: what fitted, then a resume event, then the end of the stream.
        events = await read_sse(slow, until=lambda e: False, timeout=30)
        assert events[-1].event == "resume"
        resume = orjson.loads(events[-1].data)
        assert resume["last_event_id"] == events[-1].id
        before = changes_of(events)
        assert 0 < len(before) < n
        assert before[-1][0] == int(resume["last_event_id"])
        slow.close()

        again = await open_stream(slow_http, api, **{"Last-Event-ID": resume["last_event_id"]})
        after = changes_of(await read_sse(again, until=count_changes(n - len(before))))
        again.close()
    assert [c.change_id for _, c in before + after] == [c.change_id for c in writer.written]


async def test_heartbeats_and_one_poller_for_every_client(
    api: Api, writer: Writer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sse, "HEARTBEAT_S", 0.2)

    def pollers() -> set[asyncio.Task[Any]]:
        return {t for t in asyncio.all_tasks() if t.get_name() == "change-feed-poller"}

    others = pollers()  # of earlier tests' servers, about to stop
    async with aiohttp.ClientSession() as http:
        clients = [await open_stream(http, api) for _ in range(3)]
        await subscribed(api, 3)
        mine = pollers() - others
        assert len(mine) == 1
        lines = []
        async with asyncio.timeout(3):
            while b": keepalive\n" not in lines:
                lines.append(await clients[0].content.readline())
        written = await writer.many(2)
        for resp in clients:
            got = changes_of(await read_sse(resp, until=count_changes(2)))
            assert [c.change_id for _, c in got] == [c.change_id for c in written]
            resp.close()
    # Nobody listens: the poller stops.
    await asyncio.wait_for(asyncio.shield(mine.pop()), timeout=5)


async def test_close_feeds_ends_open_streams_at_shutdown(api: Api) -> None:
    async with aiohttp.ClientSession() as http:
        resp = await open_stream(http, api)
        await subscribed(api)
        await sse.close_feeds(api.app)
        # The stream ends (the read returns at end of stream, well before the timeout).
        assert await read_sse(resp, until=lambda e: False, timeout=3) == []
        resp.close()
