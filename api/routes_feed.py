"""``GET /v1/changes/stream``: the live change feed as Server-Sent Events.

One poller per application tails the store (every ``POLL_INTERVAL_S``) in commit order and
hands each new change to every subscriber whose filters match; it runs only while someone
listens. Each event's ``id`` is the store's sequence number of the change, so ids only grow.

A client reconnecting with ``Last-Event-ID`` (the header browsers send, or the
``last_event_id`` parameter) first receives what it missed, read from the store, then the
live changes, without gap or duplicate: it subscribes before reading the last part of the
backlog, and everything is sent strictly in sequence order, skipping what was already sent.

Slow clients never slow the pipeline or other clients: the poller never waits on a client;
each has a bounded buffer (``CLIENT_BUFFER`` changes). When it overflows, the client gets the
changes buffered so far, then a ``resume`` event carrying the id to resume from, and the
connection closes; it reconnects (EventSource does by itself) and catches up from the store.
A comment is sent every ``HEARTBEAT_S`` while nothing else is.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from weakref import WeakKeyDictionary

import orjson
from aiohttp import web
from pydantic import Field

from cloudinv.api.endpoints import BadRequest, endpoint
from cloudinv.api.routes_changes import ChangeFilterQuery
from cloudinv.api.routes_common import (
    AccountView,
    LogRow,
    account_view,
    change_log,
    inventory_store,
)
from cloudinv.sinks.store import ChangeLog

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.25
HEARTBEAT_S = 15.0
CLIENT_BUFFER = 1000
"""Changes buffered per client; at least ``PAGE``, or one burst would overflow every client."""
WRITE_TIMEOUT_S = 30.0
PAGE = 500
"""Changes read from the store per query, by the poller and by a catching-up client."""
RETRY_MS = 2000


class FeedQuery(ChangeFilterQuery):
    last_event_id: int | None = Field(
        default=None,
        ge=0,
        description="resume after this event id (as the Last-Event-ID header does)",
    )


@dataclass(frozen=True)
class FeedFilter:
    view: AccountView
    resource_type: str | None = None
    region: str | None = None
    key: str | None = None
    change_types: tuple[str, ...] | None = None
    principal: str | None = None

    def __call__(self, row: LogRow) -> bool:
        if not self.view.allows(row.account_id):
            return False
        if self.resource_type is not None and row.resource_type != self.resource_type:
            return False
        if self.region is not None and row.region != self.region:
            return False
        if self.key is not None and row.key != self.key:
            return False
        if self.change_types is not None and row.change_type not in self.change_types:
            return False
        if self.principal is not None:
            who = orjson.loads(row.event).get("attribution") or {}
            return self.principal in (who.get("principal_arn"), who.get("principal_name"))
        return True


@dataclass(eq=False)
class Subscriber:
    """One client's bounded buffer of matching changes after ``start``."""

    start: int
    match: Callable[[LogRow], bool]
    limit: int
    queue: deque[LogRow] = field(default_factory=deque)
    overflowed: bool = False
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, row: LogRow) -> None:
        if self.overflowed or not self.match(row):
            return
        if len(self.queue) >= self.limit:
            self.overflowed = True
        else:
            self.queue.append(row)
        self.wakeup.set()


class ChangeFeed:
    """The one poller of an application and its subscribers."""

    def __init__(self, reader: ChangeLog) -> None:
        self.reader = reader
        self.position = 0
        self._subscribers: set[Subscriber] = set()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.closed = False

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    async def subscribe(self, match: Callable[[LogRow], bool]) -> Subscriber:
        """A subscriber receiving every matching change after its ``start``."""
        async with self._lock:
            if self._task is None or self._task.done():
                self.position = await self.reader.change_log_head()
                self._task = asyncio.create_task(self._run(), name="change-feed-poller")
        # No await between reading the position and joining: nothing falls in between.
        subscriber = Subscriber(start=self.position, match=match, limit=CLIENT_BUFFER)
        self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)

    def close(self) -> None:
        """End every client's stream (server shutdown): each returns at once."""
        self.closed = True
        for subscriber in list(self._subscribers):
            subscriber.wakeup.set()

    async def _run(self) -> None:
        failing = False
        while self._subscribers:
            try:
                rows = await self.reader.change_log_after(self.position, PAGE)
            except Exception:
                if not failing:  # once per outage, not every poll
                    log.exception("change feed: reading the store failed; retrying")
                failing = True
                await asyncio.sleep(POLL_INTERVAL_S)
                continue
            failing = False
            for row in rows:
                for subscriber in list(self._subscribers):
                    subscriber.offer(row)
            if rows:
                self.position = rows[-1].seq
            if len(rows) < PAGE:
                await asyncio.sleep(POLL_INTERVAL_S)


_FEEDS: WeakKeyDictionary[web.Application, ChangeFeed] = WeakKeyDictionary()


def feed_of(app: web.Application, reader: ChangeLog) -> ChangeFeed:
    feed = _FEEDS.get(app)
    if feed is None:
        feed = _FEEDS[app] = ChangeFeed(reader)
    return feed


def _frame(row: LogRow) -> bytes:
    return b"id: %d\nevent: change\ndata: %s\n\n" % (row.seq, row.event)


def _resume_frame(last: int) -> bytes:
    data = orjson.dumps(
        {
            "last_event_id": str(last),
            "detail": "this client fell behind the feed; reconnect with Last-Event-ID to "
            "resume where it stopped",
        }
    )
    return b"id: %d\nevent: resume\ndata: %s\n\n" % (last, data)


class _Client:
    """Writes to one client; every write is bounded in time."""

    def __init__(self, request: web.Request, response: web.StreamResponse) -> None:
        self.request = request
        self.response = response
        self.last_write = time.monotonic()

    async def send(self, data: bytes) -> None:
        async with asyncio.timeout(WRITE_TIMEOUT_S):
            await self.response.write(data)
        self.last_write = time.monotonic()

    @property
    def gone(self) -> bool:
        transport = self.request.transport
        return transport is None or transport.is_closing()


async def _catch_up(
    client: _Client,
    reader: ChangeLog,
    match: Callable[[LogRow], bool],
    last: int,
    upto: int | None,
) -> int:
    """Send the matching changes after ``last`` (up to ``upto``, or until the store has no
    full page more); returns the position reached."""
    while True:
        rows = await reader.change_log_after(last, PAGE)
        if upto is not None:
            rows = [r for r in rows if r.seq <= upto]
        if not rows:
            return last
        frames = [_frame(r) for r in rows if match(r)]
        if frames:
            await client.send(b"".join(frames))
        last = rows[-1].seq
        if len(rows) < PAGE:
            return last


async def _stream(
    client: _Client,
    feed: ChangeFeed,
    match: Callable[[LogRow], bool],
    last: int | None,
) -> None:
    reader = feed.reader
    await client.send(b"retry: %d\n\n" % RETRY_MS)
    if last is not None:
        head = await reader.change_log_head()
        last = min(last, head)
        # The bulk of the backlog first, without holding a buffer for the live changes.
        last = await _catch_up(client, reader, match, last, None)
    subscriber = await feed.subscribe(match)
    try:
        if last is None:
            last = subscriber.start
            await client.send(b"id: %d\n\n" % last)
        else:
            last = await _catch_up(client, reader, match, last, subscriber.start)
        while not client.gone and not feed.closed:
            subscriber.wakeup.clear()
            if subscriber.queue:
                frames: list[bytes] = []
                while subscriber.queue and len(frames) < PAGE:
                    row = subscriber.queue.popleft()
                    if row.seq > last:  # already sent while catching up
                        frames.append(_frame(row))
                        last = row.seq
                if frames:
                    await client.send(b"".join(frames))
                continue
            if subscriber.overflowed:
                await client.send(_resume_frame(last))
                return
            idle = time.monotonic() - client.last_write
            if idle >= HEARTBEAT_S:
                await client.send(b": keepalive\n\n")
                continue
            try:
                async with asyncio.timeout(min(1.0, HEARTBEAT_S - idle)):
                    await subscriber.wakeup.wait()
            except TimeoutError:
                pass
    finally:
        feed.unsubscribe(subscriber)


def _last_event_id(request: web.Request, query: FeedQuery) -> int | None:
    header = request.headers.get("Last-Event-ID")
    if header is None or not header.strip():
        return query.last_event_id
    text = header.strip()
    if not text.isdigit():
        raise BadRequest(
            "Last-Event-ID", f"Last-Event-ID {text[:40]!r} is not an id of this feed", "an id"
        )
    return int(text)


@endpoint(
    "GET",
    "/v1/changes/stream",
    summary="Live changes as Server-Sent Events; reconnect with Last-Event-ID to resume",
    query=FeedQuery,
    tags=["changes"],
    raw=True,
)
async def change_stream(request: web.Request, query: FeedQuery) -> web.StreamResponse:
    last = _last_event_id(request, query)
    reader = change_log(inventory_store(request))
    if reader is None:
        raise web.HTTPNotImplemented(reason="this inventory store cannot be tailed")
    match = FeedFilter(
        view=account_view(request, query.account),
        resource_type=query.type,
        region=query.region,
        key=query.key,
        change_types=query.change_type,
        principal=query.principal,
    )
    feed = feed_of(request.app, reader)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    client = _Client(request, response)
    try:
        await _stream(client, feed, match, last)
    except (ConnectionError, TimeoutError) as exc:
        log.debug("change feed client left: %r", exc)
    return response


async def close_feeds(app: web.Application) -> None:
    """An ``on_shutdown`` callback: end the open streams so that shutdown need not wait for
    aiohttp's shutdown timeout (a stream never ends by itself)."""
    feed = _FEEDS.get(app)
    if feed is not None:
        feed.close()


def feed_subscribers(app: web.Application) -> int:
    """How many clients the application's feed serves (for tests and status)."""
    feed: Any = _FEEDS.get(app)
    return feed.subscribers if feed is not None else 0
