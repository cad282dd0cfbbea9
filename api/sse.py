"""Server-Sent Events from a store's ordered log: the one SSE mechanism of the API.

The live change feed (``/v1/changes/stream``) and the alert stream (``/v1/alerts/stream``)
are both an :class:`EventLog`: items numbered by a sequence that only grows (the store's
commit order), a head, and a read of the items after a number. Each event's ``id`` is the
item's sequence number.

One poller per application and log (:class:`Feed`) tails the store every
``POLL_INTERVAL_S`` and hands each new item to every subscriber whose filter matches; it
runs only while someone listens, so a thousand clients cost one query per interval.

A client reconnecting with ``Last-Event-ID`` (the header browsers send, or the
``last_event_id`` parameter) first receives what it missed, read from the store, then the
live items, without gap or duplicate: it subscribes before reading the last part of the
backlog, and everything is sent strictly in sequence order, skipping what was already sent.

Slow clients never slow the pipeline or other clients: the poller never waits on a client;
each has a bounded buffer (``CLIENT_BUFFER`` items). When it overflows, the client gets the
items buffered so far, then a ``resume`` event carrying the id to resume from, and the
connection closes; it reconnects (EventSource does by itself) and catches up from the store.
Every write is bounded in time (``WRITE_TIMEOUT_S``); a comment is sent every
``HEARTBEAT_S`` while nothing else is.

aiohttp-sse was considered for the framing and heartbeats: it writes one event per call and
pings from a task of its own, where this writes a page of events in one write and keeps every
write (heartbeats included) in the one loop that bounds it in time; the framing is three
lines (:func:`frame`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import orjson
from aiohttp import web

from cloudinv.api.endpoints import BadRequest

__all__ = [
    "FEEDS_KEY",
    "EventLog",
    "Feed",
    "Feeds",
    "close_feeds",
    "event_stream",
    "feed_subscribers",
    "frame",
    "last_event_id",
]

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.25
HEARTBEAT_S = 15.0
CLIENT_BUFFER = 1000
"""Items buffered per client; at least ``PAGE``, or one burst would overflow every client."""
WRITE_TIMEOUT_S = 30.0
PAGE = 500
"""Items read from the store per query, by the poller and by a catching-up client."""
RETRY_MS = 2000


class Sequenced(Protocol):
    @property
    def seq(self) -> int: ...


T = TypeVar("T", bound=Sequenced)


@dataclass(frozen=True)
class EventLog(Generic[T]):
    """A store's ordered log as an event stream: ``event`` names the SSE event type,
    ``data`` gives an item's JSON."""

    event: str
    head: Callable[[], Awaitable[int]]
    after: Callable[[int, int], Awaitable[Sequence[T]]]
    data: Callable[[T], bytes]


def frame(event: str, seq: int, data: bytes) -> bytes:
    """One SSE event (``data`` is one line of JSON)."""
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (seq, event.encode(), data)


def _resume_frame(last: int) -> bytes:
    data = orjson.dumps(
        {
            "last_event_id": str(last),
            "detail": "this client fell behind the stream; reconnect with Last-Event-ID to "
            "resume where it stopped",
        }
    )
    return frame("resume", last, data)


@dataclass(eq=False)
class Subscriber(Generic[T]):
    """One client's bounded buffer of matching items after ``start``."""

    start: int
    match: Callable[[T], bool]
    limit: int
    queue: deque[T] = field(default_factory=deque)
    overflowed: bool = False
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, item: T) -> None:
        if self.overflowed or not self.match(item):
            return
        if len(self.queue) >= self.limit:
            self.overflowed = True
        else:
            self.queue.append(item)
        self.wakeup.set()


class Feed(Generic[T]):
    """The one poller of a log in an application, and its subscribers."""

    def __init__(self, source: EventLog[T]) -> None:
        self.source = source
        self.position = 0
        self._subscribers: set[Subscriber[T]] = set()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.closed = False

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    async def subscribe(self, match: Callable[[T], bool]) -> Subscriber[T]:
        """A subscriber receiving every matching item after its ``start``."""
        async with self._lock:
            if self._task is None or self._task.done():
                self.position = await self.source.head()
                self._task = asyncio.create_task(
                    self._run(), name=f"{self.source.event}-feed-poller"
                )
        # No await between reading the position and joining: nothing falls in between.
        subscriber = Subscriber(start=self.position, match=match, limit=CLIENT_BUFFER)
        self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber[T]) -> None:
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
                items = await self.source.after(self.position, PAGE)
            except Exception:
                if not failing:  # once per outage, not every poll
                    log.exception("%s feed: reading the store failed; retrying", self.source.event)
                failing = True
                await asyncio.sleep(POLL_INTERVAL_S)
                continue
            failing = False
            for item in items:
                for subscriber in list(self._subscribers):
                    subscriber.offer(item)
            if items:
                self.position = items[-1].seq
            if len(items) < PAGE:
                await asyncio.sleep(POLL_INTERVAL_S)


class Feeds:
    """The application's feeds, one per log, made on first use (under ``FEEDS_KEY``)."""

    def __init__(self) -> None:
        self._feeds: dict[str, Feed[Any]] = {}

    def get(self, source: EventLog[T]) -> Feed[T]:
        feed = self._feeds.get(source.event)
        if feed is None:
            feed = self._feeds[source.event] = Feed(source)
        return feed

    def close(self) -> None:
        for feed in self._feeds.values():
            feed.close()

    def subscribers(self) -> int:
        return sum(feed.subscribers for feed in self._feeds.values())


FEEDS_KEY = web.AppKey("feeds", Feeds)


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
    client: _Client, source: EventLog[T], match: Callable[[T], bool], last: int, upto: int | None
) -> int:
    """Send the matching items after ``last`` (up to ``upto``, or until the store has no
    full page more); returns the position reached."""
    while True:
        items = list(await source.after(last, PAGE))
        if upto is not None:
            items = [i for i in items if i.seq <= upto]
        if not items:
            return last
        frames = [frame(source.event, i.seq, source.data(i)) for i in items if match(i)]
        if frames:
            await client.send(b"".join(frames))
        last = items[-1].seq
        if len(items) < PAGE:
            return last


async def _stream(
    client: _Client, feed: Feed[T], match: Callable[[T], bool], last: int | None
) -> None:
    source = feed.source
    await client.send(b"retry: %d\n\n" % RETRY_MS)
    if last is not None:
        last = min(last, await source.head())
        # The bulk of the backlog first, without holding a buffer for the live items.
        last = await _catch_up(client, source, match, last, None)
    subscriber = await feed.subscribe(match)
    try:
        if last is None:
            last = subscriber.start
            await client.send(b"id: %d\n\n" % last)
        else:
            last = await _catch_up(client, source, match, last, subscriber.start)
        while not client.gone and not feed.closed:
            subscriber.wakeup.clear()
            if subscriber.queue:
                frames: list[bytes] = []
                while subscriber.queue and len(frames) < PAGE:
                    item = subscriber.queue.popleft()
                    if item.seq > last:  # already sent while catching up
                        frames.append(frame(source.event, item.seq, source.data(item)))
                        last = item.seq
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


def last_event_id(request: web.Request, from_query: int | None) -> int | None:
    """Where a reconnecting client resumes: the ``Last-Event-ID`` header, else the query's
    ``last_event_id``; None for a new client."""
    header = request.headers.get("Last-Event-ID")
    if header is None or not header.strip():
        return from_query
    text = header.strip()
    if not text.isdigit():
        raise BadRequest(
            "Last-Event-ID", f"Last-Event-ID {text[:40]!r} is not an id of this stream", "an id"
        )
    return int(text)


async def event_stream(
    request: web.Request, source: EventLog[T], match: Callable[[T], bool], last: int | None
) -> web.StreamResponse:
    """Serve ``source`` to one client as Server-Sent Events, from after ``last`` (or from
    now), until the client leaves or the server shuts down."""
    feed = request.app[FEEDS_KEY].get(source)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    try:
        await _stream(_Client(request, response), feed, match, last)
    except (ConnectionError, TimeoutError) as exc:
        log.debug("%s stream client left: %r", source.event, exc)
    return response


async def close_feeds(app: web.Application) -> None:
    """An ``on_shutdown`` callback: end the open streams so that shutdown need not wait for
    aiohttp's shutdown timeout (a stream never ends by itself)."""
    app[FEEDS_KEY].close()


def feed_subscribers(app: web.Application) -> int:
    """How many clients the application's streams serve (for tests and status)."""
    return app[FEEDS_KEY].subscribers()
