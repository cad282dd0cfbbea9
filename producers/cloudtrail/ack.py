"""End-to-end acknowledgement: has the stream worker committed past what a source produced?

A source that cannot simply be read again (an SQS message, a backfilled file) may let go of
its work only once the events it led to are stored, not when the broker acknowledged them:
the embedded broker keeps everything in memory, and even a real cluster's log is no store.
The stream worker commits a partition's offset only after the batch before it is written
(:mod:`cloudinv.streams.activity`), so "the worker's consumer group (``kafka.consumer_group``,
the Faust app id) has committed past offset N of partition P" means "stored".

:class:`CommitWatch` polls the group's committed offsets (``OffsetFetch`` through aiokafka's
admin client) and the topic's end offsets, a few times a second and only while someone waits,
and resolves each waiter once every partition it produced to is committed past its last
offset. Whatever the broker, a waiter fails with :class:`AckLost` — its source must publish
again — when the broker may have lost the events: it became unreachable and came back (an
embedded broker restarts empty), a partition's end offset or the group's committed offset went
backwards (the log or the group was recreated). A replay is harmless: every sink is
idempotent by event id.

The surest sign of a new broker is its cluster id (the embedded broker gets a new one at every
start; a real cluster keeps its own, and a recreated one has another): the watch learns it when
it starts, reads it before and after each poll's offsets, and treats a change as a loss. The
other signs (unreachable and back, offsets going backwards) remain for a broker that does not
say its cluster id.

Offsets from two lives of a broker cannot be compared: a file whose events went to several
partitions may have some acknowledged by the broker before it died and the rest by the one
that replaced it, and the new one's committed offsets soon pass the old one's. Each such
loss of the broker starts a new :attr:`CommitWatch.generation`; a source reads it before it
publishes and passes it to :meth:`~CommitWatch.wait`, which fails at once with
:class:`AckLost` when the generation moved in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from cloudinv.core.kafka import cluster_id

__all__ = ["AckLost", "CommitWatch", "Offsets"]

log = logging.getLogger(__name__)

Offsets = Mapping[int, int]
"""Partition → the last offset a source produced there."""

_WARN_EVERY_S = 30.0


class AckLost(Exception):
    """The events may be gone from the broker before the worker stored them: publish again."""


@dataclass(eq=False)
class _Waiter:
    offsets: dict[int, int]
    future: asyncio.Future[None]
    since: float = field(default_factory=time.monotonic)


class CommitWatch:
    """Waits for the consumer group ``group_id`` to commit past produced offsets of
    ``topic``. Use as ``async with``; :meth:`wait` is the one call sources make."""

    def __init__(
        self,
        client_kwargs: dict[str, Any],
        topic: str,
        group_id: str,
        *,
        poll_s: float = 0.2,
    ) -> None:
        self.topic = topic
        self.group_id = group_id
        self.poll_s = poll_s
        self._kwargs = dict(client_kwargs)
        self._waiters: set[_Waiter] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._committed: dict[int, int] = {}
        self._ends: dict[int, int] = {}
        self._unreachable_since: float | None = None
        self._cluster: str | None = None
        """The cluster id of the broker the offsets below come from (``None``: not known)."""
        self._last_warning = 0.0
        self.acknowledged = 0
        self.lost = 0
        self.last_error: str | None = None
        self.generation = 0
        """How many times the broker was found to have lost (or maybe lost) what it held."""

    async def __aenter__(self) -> CommitWatch:
        # Learn which broker this is before any source publishes: a broker replaced between
        # a publish and the first poll is then still seen (its cluster id differs).
        try:
            admin, _ = await asyncio.wait_for(self._connect(), 10)
            self._cluster = await asyncio.wait_for(cluster_id(admin), 10)
        except (KafkaError, OSError, TimeoutError) as exc:
            self._unreachable(exc)
            await self._disconnect()
        self._task = asyncio.create_task(self._run(), name=f"commit-watch {self.topic}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for waiter in self._waiters:
            if not waiter.future.done():
                waiter.future.set_exception(AckLost("stopped before the worker committed"))
                waiter.future.exception()  # retrieved: nobody may be waiting any more
        self._waiters.clear()
        await self._disconnect()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def oldest_wait_s(self) -> float:
        """How long the oldest waiter has waited (0 when none)."""
        if not self._waiters:
            return 0.0
        return time.monotonic() - min(w.since for w in self._waiters)

    async def wait(self, offsets: Offsets, generation: int | None = None) -> None:
        """Return once the group committed past every ``offsets``; raise :class:`AckLost`
        when the events may have to be published again. ``generation``: :attr:`generation`
        read before publishing them (a loss since then fails the wait at once)."""
        if not offsets:
            return
        if self._task is None:
            raise RuntimeError("CommitWatch is not running (use it as async with)")
        if generation is not None and generation != self.generation:
            self.lost += 1
            raise AckLost("the broker lost what it held while these events were published")
        waiter = _Waiter(dict(offsets), asyncio.get_running_loop().create_future())
        self._waiters.add(waiter)
        self._wake.set()
        try:
            await waiter.future
        finally:
            self._waiters.discard(waiter)

    # -- polling ------------------------------------------------------------------------------

    async def _connect(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._admin is None or self._consumer is None:
            admin = AIOKafkaAdminClient(**self._kwargs, request_timeout_ms=5000)
            consumer = AIOKafkaConsumer(
                **self._kwargs, group_id=None, enable_auto_commit=False, request_timeout_ms=5000
            )
            try:
                await asyncio.wait_for(admin.start(), 10)
                await asyncio.wait_for(consumer.start(), 10)
            except BaseException:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(admin.close(), 2)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(consumer.stop(), 2)
                raise
            self._admin, self._consumer = admin, consumer
        return self._admin, self._consumer

    async def _disconnect(self) -> None:
        admin, consumer = self._admin, self._consumer
        self._admin = self._consumer = None
        if admin is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(admin.close(), 2)
        if consumer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), 2)

    async def _run(self) -> None:
        while True:
            if not self._waiters:
                self._wake.clear()
                await self._wake.wait()
            try:
                await asyncio.wait_for(self._poll(), 10)
            except Exception as exc:  # this task must outlive any client error
                if not isinstance(exc, KafkaError | OSError | TimeoutError):
                    # Not a known client error (an aiokafka assertion on an odd answer from a
                    # restarted broker): treated as unreachable, never the end of this task,
                    # or every source would wait for ever.
                    log.warning("cloudtrail: reading committed offsets failed", exc_info=exc)
                self._unreachable(exc)
                await self._disconnect()
                await asyncio.sleep(min(1.0, self.poll_s * 5))
                continue
            await asyncio.sleep(self.poll_s)

    async def _poll(self) -> None:
        admin, consumer = await self._connect()
        partitions = sorted({p for w in self._waiters for p in w.offsets} | set(self._committed))
        tps = [TopicPartition(self.topic, p) for p in partitions]
        cluster_before = await cluster_id(admin)
        committed_raw = await admin.list_consumer_group_offsets(self.group_id, partitions=tps)
        ends_raw = await consumer.end_offsets(tps)
        cluster_after = await cluster_id(admin)
        known = self._cluster
        if known is None:
            known = self._cluster = cluster_before
        if cluster_before != known or cluster_after != known:
            # Another broker (the embedded one restarted empty, or a recreated cluster): what
            # the old one held may be gone, and these offsets may come from either.
            self._cluster = cluster_after
            self._reachable(quiet=True)
            self._fail_all(f"the broker was replaced (cluster id {known!r}, now {cluster_after!r})")
            return
        committed = {
            tp.partition: meta.offset
            for tp, meta in committed_raw.items()
            if tp.topic == self.topic and meta is not None and meta.offset >= 0
        }
        ends = {tp.partition: int(end) for tp, end in ends_raw.items()}
        self._reachable()
        lost_partitions = {
            p for p, before in self._ends.items() if p in ends and ends[p] < before
        } | {p for p, before in self._committed.items() if committed.get(p, -1) < before}
        if lost_partitions:
            self._fail_all(
                f"partition(s) {sorted(lost_partitions)} of {self.topic} went back (the broker "
                "or the consumer group was recreated)"
            )
        self._committed = committed
        self._ends = {p: max(ends.get(p, 0), 0) for p in partitions}
        for waiter in list(self._waiters):
            if waiter.future.done():
                continue
            # (A partition's end offset is not compared with the waiter's: Tansu answers
            # ListOffsets with the last batch's base offset + 1, short of its true end.)
            if all(committed.get(p, -1) > offset for p, offset in waiter.offsets.items()):
                self._resolve(waiter, None)

    def _resolve(self, waiter: _Waiter, error: AckLost | None) -> None:
        if error is None:
            self.acknowledged += 1
            waiter.future.set_result(None)
        else:
            self.lost += 1
            waiter.future.set_exception(error)
        self._waiters.discard(waiter)

    def _fail_all(self, reason: str) -> None:
        self.generation += 1
        pending = [w for w in self._waiters if not w.future.done()]
        if pending:
            log.warning("cloudtrail: %d source(s) will publish again: %s", len(pending), reason)
        for waiter in pending:
            self._resolve(waiter, AckLost(reason))
        self._committed.clear()
        self._ends.clear()

    def _unreachable(self, exc: BaseException) -> None:
        now = time.monotonic()
        self.last_error = f"cannot read the committed offsets of {self.group_id}: {exc!r}"
        if self._unreachable_since is None:
            self._unreachable_since = now
        if now - self._last_warning >= _WARN_EVERY_S:
            self._last_warning = now
            log.warning(
                "cloudtrail: %s; %d source(s) wait (warned again in %.0fs at most)",
                self.last_error,
                len(self._waiters),
                _WARN_EVERY_S,
            )

    def _reachable(self, *, quiet: bool = False) -> None:
        if self._unreachable_since is not None:
            # The broker may have restarted empty (the embedded one does): what it had not
            # delivered to the worker may be gone.
            self._unreachable_since = None
            self.last_error = None
            if not quiet:
                self._fail_all("the broker was unreachable and came back")
