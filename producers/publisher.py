"""Publishing to Kafka: the one producer mechanism of every cloudinv producer.

:class:`KafkaPublisher` packs messages into per-partition batches of aiokafka's producer,
shared by every concurrent caller (partitioned by key exactly as aiokafka's default
partitioner does, so one key's messages stay in order on one partition) and sent when full or
after ``linger_ms``: a message costs a share of a request, and nobody waits for a round trip
per message. Two ways in:

- :meth:`KafkaPublisher.publish` (scan producers, the reactor): a snapshot keyed by resource
  key or a manifest keyed by scope, not awaited; :meth:`KafkaPublisher.flush` waits until
  Kafka acknowledged everything published so far.
- :meth:`KafkaPublisher.send_many` (CloudTrail, through
  :class:`~cloudinv.producers.cloudtrail.publish.CloudTrailPublisher`): encoded (key, value)
  pairs, returning once acknowledged with the last offset written to each partition, which
  the end-to-end acknowledgement waits for.

A broker that is briefly unreachable is retried with backoff; what still cannot be delivered
raises :class:`PublishError`, so the caller reports it (or leaves its source for a replay)
instead of silently dropping data.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError
from aiokafka.partitioner import DefaultPartitioner

from cloudinv.core.bounded import finish_within
from cloudinv.core.errors import CloudinvError
from cloudinv.core.models import ResourceSnapshot, ScanManifest
from cloudinv.core.retry import retry
from cloudinv.core.topics import Topic, topic_name
from cloudinv.core.wire import encode

__all__ = ["KafkaPublisher", "PublishError", "PublishStats", "Publishable"]

log = logging.getLogger(__name__)

Publishable = ResourceSnapshot | ScanManifest

_DEFAULT_PARTITIONER = DefaultPartitioner()
_PARTITION_CACHE_SIZE = 100_000


class PublishError(CloudinvError):
    """Messages could not be delivered to Kafka after retries."""


@dataclass
class PublishStats:
    snapshots: int = 0
    manifests: int = 0
    events: int = 0
    """Messages acknowledged through :meth:`KafkaPublisher.send_many`."""
    retries: int = 0


class _OpenBatch:
    """A batch being filled for one partition, and the broker's base offset once delivered."""

    def __init__(self, builder: Any) -> None:
        self.builder = builder
        self.count = 0
        self.sent: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def append(self, key: bytes, value: bytes) -> bool:
        if self.builder.append(key=key, value=value, timestamp=None) is None:
            return False
        self.count += 1
        return True


class KafkaPublisher:
    """An aiokafka producer with shared per-partition batches; see the module docstring.
    Use as ``async with`` (or :meth:`start` / :meth:`stop`)."""

    def __init__(
        self,
        client_kwargs: dict[str, Any],
        topic_prefix: str,
        *,
        linger_ms: int = 20,
        max_in_flight: int = 5000,
        attempts: int = 5,
    ) -> None:
        self._producer = AIOKafkaProducer(
            **client_kwargs,
            linger_ms=linger_ms,
            max_batch_size=1024 * 1024,
            compression_type=None,
            acks="all",
            request_timeout_ms=30000,
        )
        self.topic_prefix = topic_prefix
        self._snapshots = topic_name(Topic.SNAPSHOTS, topic_prefix)
        self._scans = topic_name(Topic.SCANS, topic_prefix)
        self._attempts = attempts
        self._max_in_flight = max_in_flight
        self._linger_s = linger_ms / 1000
        self._partitions: dict[str, list[int]] = {}
        self._partition_cache: dict[tuple[str, bytes], int] = {}
        self._open: dict[tuple[str, int], _OpenBatch] = {}
        self._flush_handle: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self._enqueue: dict[tuple[str, int], asyncio.Lock] = {}
        """Per partition: batches are handed to aiokafka in the order they were filled."""
        self._unflushed: set[_OpenBatch] = set()
        """Batches holding messages of :meth:`publish` that :meth:`flush` has not seen."""
        self._unflushed_messages = 0
        self.stats = PublishStats()

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await retry(
                self._producer.start,
                attempts=self._attempts,
                first_delay_s=0.4,
                max_delay_s=5.0,
                retry_if=lambda exc: isinstance(exc, KafkaConnectionError),
            )
        except KafkaConnectionError as exc:
            raise PublishError(
                f"cannot reach Kafka to publish ({exc}); check kafka.bootstrap or "
                "that the running instance is up"
            ) from None

    async def stop(self, timeout: float = 30.0) -> None:
        """Send what is open, wait (up to ``timeout`` seconds, for a broker that is gone) until
        it is delivered, and stop. Raises :class:`PublishError` when messages
        published with :meth:`publish` since the last :meth:`flush` were not acknowledged (a source
        acknowledged end to end publishes again instead)."""
        failed = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            self._send_open()
            if self._sending:
                _, pending = await asyncio.wait(set(self._sending), timeout=timeout)
                if pending:
                    log.warning("Kafka did not take every batch within %.0fs; stopping", timeout)
            unflushed, self._unflushed = self._unflushed, set()
            failed = sum(
                1 for b in unflushed if not b.sent.done() or b.sent.exception() is not None
            )
        finally:
            stopped = await finish_within(self._producer.stop(), max(deadline - loop.time(), 0.5))
            if stopped is None or stopped.cancelled():
                log.warning("the Kafka producer did not stop within %.0fs", timeout)
            elif (error := stopped.exception()) is not None:
                raise error
            for task in list(self._sending):
                task.cancel()
        if failed:
            raise PublishError(
                f"{failed} batch(es) of snapshots or manifests were not acknowledged by Kafka "
                "before it stopped"
            )

    async def __aenter__(self) -> KafkaPublisher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- scan producers -------------------------------------------------------------------------

    async def publish(self, message: Publishable) -> None:
        """Queue a snapshot (keyed by resource key) or manifest (keyed by scope); not
        acknowledged until :meth:`flush`."""
        if isinstance(message, ResourceSnapshot):
            topic, key = self._snapshots, message.key
            self.stats.snapshots += 1
        else:
            topic, key = self._scans, message.scope
            self.stats.manifests += 1
        partition_of = await self._partitioner(topic)
        batch, _ = self._append(topic, partition_of(key.encode()), key.encode(), encode(message))
        self._unflushed.add(batch)
        self._unflushed_messages += 1
        self._schedule_send()
        if self._unflushed_messages >= self._max_in_flight:
            await self.flush()

    async def flush(self) -> None:
        """Wait until Kafka acknowledged every message of :meth:`publish` so far."""
        batches, self._unflushed = self._unflushed, set()
        self._unflushed_messages = 0
        if not batches:
            return
        self._send_open()
        await self._wait(batches, "messages")

    # -- CloudTrail (and any source that acknowledges end to end) ----------------------------

    async def send_many(
        self, topic: str, messages: Sequence[tuple[bytes, bytes]]
    ) -> dict[int, int]:
        """Send (key, value) pairs to ``topic``; return once the broker acknowledged every
        one, with the last offset written to each partition."""
        if not messages:
            return {}
        partition_of = await self._partitioner(topic)
        mine: dict[int, tuple[_OpenBatch, int]] = {}
        used: set[_OpenBatch] = set()
        for key, value in messages:
            partition = partition_of(key)
            mine[partition] = last = self._append(topic, partition, key, value)
            used.add(last[0])
        self._schedule_send()
        # Every batch these went into, not only each partition's last: an earlier one that
        # failed must fail the call (its events are not behind the offsets returned).
        await self._wait(used, "events")
        self.stats.events += len(messages)
        return {p: batch.sent.result() + index for p, (batch, index) in mine.items()}

    # -- batches --------------------------------------------------------------------------------

    def _append(
        self, topic: str, partition: int, key: bytes, value: bytes
    ) -> tuple[_OpenBatch, int]:
        slot = (topic, partition)
        batch = self._open.get(slot)
        if batch is None or not batch.append(key, value):
            if batch is not None:
                self._send(slot, batch)
            batch = self._open[slot] = _OpenBatch(self._producer.create_batch())
            if not batch.append(key, value):
                raise PublishError(f"a message of {len(value)} bytes is too large for {topic}")
        return batch, batch.count - 1

    async def _wait(self, batches: set[_OpenBatch], what: str) -> None:
        results = await asyncio.gather(*(b.sent for b in batches), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            first = failures[0]
            if isinstance(first, KafkaError | OSError | PublishError):
                raise PublishError(
                    f"{len(failures)} of {len(results)} batches of {what} were not "
                    f"acknowledged by Kafka: {first!r}"
                )
            raise first

    def _schedule_send(self) -> None:
        if self._flush_handle is None and self._open:
            loop = asyncio.get_running_loop()
            self._flush_handle = loop.call_later(self._linger_s, self._send_open)

    def _send_open(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        batches, self._open = self._open, {}
        for slot, batch in batches.items():
            self._send(slot, batch)

    def _send(self, slot: tuple[str, int], batch: _OpenBatch) -> None:
        if self._open.get(slot) is batch:
            del self._open[slot]
        task = asyncio.create_task(self._deliver(slot, batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _deliver(self, slot: tuple[str, int], batch: _OpenBatch) -> None:
        try:
            lock = self._enqueue.get(slot)
            if lock is None:
                lock = self._enqueue[slot] = asyncio.Lock()
            async with lock:  # FIFO: a key's messages keep their order
                future = await self._send_batch(batch.builder, *slot)
            metadata = await future
            batch.sent.set_result(int(metadata.offset))
        except BaseException as exc:  # handed to every caller waiting on this batch
            if not batch.sent.done():
                batch.sent.set_exception(exc)
                batch.sent.exception()  # retrieved: a publish() caller may never flush
            if isinstance(exc, asyncio.CancelledError):
                raise

    async def _send_batch(self, batch: Any, topic: str, partition: int) -> asyncio.Future[Any]:
        async def send() -> asyncio.Future[Any]:
            future: asyncio.Future[Any] = await self._producer.send_batch(
                batch, topic, partition=partition
            )
            return future

        def counted(exc: BaseException, attempt: int, delay: float) -> None:
            self.stats.retries += 1

        try:
            return await retry(
                send,
                attempts=self._attempts,
                first_delay_s=0.4,
                max_delay_s=5.0,
                retry_if=lambda exc: isinstance(exc, (KafkaTimeoutError, KafkaConnectionError)),
                on_retry=counted,
            )
        except (KafkaTimeoutError, KafkaConnectionError) as exc:
            raise PublishError(f"Kafka did not accept a batch for {topic}: {exc}") from None

    async def _partitioner(self, topic: str) -> Callable[[bytes], int]:
        partitions = sorted(await self._producer.partitions_for(topic))
        if partitions != self._partitions.get(topic):
            self._partitions[topic] = partitions
            self._partition_cache.clear()
        cache = self._partition_cache

        def partition_of(key: bytes) -> int:
            # Keys (principals) repeat; murmur2 is pure Python in aiokafka.
            found = cache.get((topic, key))
            if found is None:
                if len(cache) > _PARTITION_CACHE_SIZE:
                    cache.clear()
                found = cache[(topic, key)] = _DEFAULT_PARTITIONER(key, partitions, partitions)
            return found

        return partition_of
