"""Sending encoded CloudTrail events to the CloudTrail topic.

:meth:`CloudTrailPublisher.publish` packs the events of one file into per-partition batches
shared with every other file published at the same time (keyed by principal, partitioned as
aiokafka's default partitioner does, so a principal's events stay in order on one partition)
and returns, once the broker acknowledged them, the last offset written to each partition.
That is not yet "stored": the caller hands those offsets to
:class:`~cloudinv.producers.cloudtrail.ack.CommitWatch` before it deletes an SQS message or
marks a file done. Many files publish concurrently; none waits for another.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError
from aiokafka.partitioner import DefaultPartitioner

from cloudinv.core.errors import CloudinvError
from cloudinv.core.topics import Topic, topic_name

__all__ = ["CloudTrailPublisher", "PublishError"]

log = logging.getLogger(__name__)

_DEFAULT_PARTITIONER = DefaultPartitioner()


class PublishError(CloudinvError):
    """Events could not be delivered to Kafka after retries."""


class _OpenBatch:
    """A batch being filled, and the broker's base offset for it once delivered."""

    def __init__(self, builder: Any) -> None:
        self.builder = builder
        self.count = 0
        self.sent: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def append(self, key: bytes, value: bytes) -> bool:
        if self.builder.append(key=key, value=value, timestamp=None) is None:
            return False
        self.count += 1
        return True


class CloudTrailPublisher:
    """An aiokafka producer for the CloudTrail topic. Use as ``async with``."""

    def __init__(
        self,
        client_kwargs: dict[str, Any],
        topic_prefix: str,
        *,
        linger_ms: int = 20,
        attempts: int = 5,
    ) -> None:
        self.topic = topic_name(Topic.CLOUDTRAIL, topic_prefix)
        self._producer = AIOKafkaProducer(
            **client_kwargs,
            linger_ms=linger_ms,
            max_batch_size=1024 * 1024,
            acks="all",
            request_timeout_ms=30000,
        )
        self._attempts = attempts
        self._partitions: list[int] = []
        self._partition_cache: dict[bytes, int] = {}
        self._linger_s = linger_ms / 1000
        self._open: dict[int, _OpenBatch] = {}
        self._flush_handle: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self.published = 0

    async def start(self) -> None:
        for attempt in range(1, self._attempts + 1):
            try:
                await self._producer.start()
                return
            except KafkaConnectionError as exc:
                if attempt == self._attempts:
                    raise PublishError(
                        f"cannot reach Kafka to publish CloudTrail events ({exc}); check "
                        "kafka.bootstrap or that the running instance is up"
                    ) from None
                await asyncio.sleep(min(2**attempt * 0.2, 5))

    async def stop(self, timeout: float = 5.0) -> None:
        """Flush and stop; with the broker gone, give up after ``timeout`` seconds (what was
        not acknowledged end to end is published again by its source)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush()
        try:
            await asyncio.wait_for(self._producer.stop(), timeout)
        except TimeoutError:
            log.warning("the CloudTrail producer did not flush within %.0fs; stopped", timeout)
        for task in list(self._sending):
            task.cancel()

    async def __aenter__(self) -> CloudTrailPublisher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def publish(self, messages: Sequence[tuple[bytes, bytes]]) -> dict[int, int]:
        """Send (key, value) pairs; return once every one is acknowledged by the broker,
        with the last offset written to each partition (what :class:`~cloudinv.producers.
        cloudtrail.ack.CommitWatch` waits for).

        Messages of every concurrent caller go into shared per-partition batches (partitioned
        by key exactly as aiokafka's default partitioner does), sent when full or after
        ``linger_ms``: a file of nine events costs a share of a request, not a request per
        partition.
        """
        if not messages:
            return {}
        partition_of = await self._partitioner()
        mine: dict[int, tuple[_OpenBatch, int]] = {}
        waits: set[_OpenBatch] = set()
        for key, value in messages:
            partition = partition_of(key)
            batch = self._open.get(partition)
            if batch is None or not batch.append(key, value):
                if batch is not None:
                    self._send(partition, batch)
                batch = self._open[partition] = _OpenBatch(self._producer.create_batch())
                if not batch.append(key, value):
                    raise PublishError(f"a CloudTrail event of {len(value)} bytes is too large")
            mine[partition] = (batch, batch.count - 1)
            waits.add(batch)
        self._schedule_flush()
        results = await asyncio.gather(*(b.sent for b in waits), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            first = failures[0]
            if isinstance(first, KafkaError | OSError | PublishError):
                raise PublishError(
                    f"{len(failures)} of {len(results)} batches of CloudTrail events were not "
                    f"acknowledged by Kafka: {first!r}"
                )
            raise first
        self.published += len(messages)
        return {p: batch.sent.result() + index for p, (batch, index) in mine.items()}

    def _schedule_flush(self) -> None:
        if self._flush_handle is None and self._open:
            loop = asyncio.get_running_loop()
            self._flush_handle = loop.call_later(self._linger_s, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        batches, self._open = self._open, {}
        for partition, batch in batches.items():
            self._send(partition, batch)

    def _send(self, partition: int, batch: _OpenBatch) -> None:
        if self._open.get(partition) is batch:
            del self._open[partition]
        task = asyncio.create_task(self._deliver(partition, batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _deliver(self, partition: int, batch: _OpenBatch) -> None:
        try:
            future = await self._send_batch(batch.builder, partition)
            metadata = await future
            batch.sent.set_result(int(metadata.offset))
        except BaseException as exc:  # handed to every caller waiting on this batch
            if not batch.sent.done():
                batch.sent.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise

    async def _partitioner(self) -> Any:
        partitions = sorted(await self._producer.partitions_for(self.topic))
        if partitions != self._partitions:
            self._partitions = partitions
            self._partition_cache.clear()
        cache = self._partition_cache

        def partition_of(key: bytes) -> int:
            # Keys (principals) repeat; murmur2 is pure Python in aiokafka.
            found = cache.get(key)
            if found is None:
                if len(cache) > 100_000:
                    cache.clear()
                found = cache[key] = _DEFAULT_PARTITIONER(key, partitions, partitions)
            return found

        return partition_of

    async def _send_batch(self, batch: Any, partition: int) -> asyncio.Future[Any]:
        for attempt in range(1, self._attempts + 1):
            try:
                future: asyncio.Future[Any] = await self._producer.send_batch(
                    batch, self.topic, partition=partition
                )
                return future
            except (KafkaTimeoutError, KafkaConnectionError) as exc:
                if attempt == self._attempts:
                    raise PublishError(
                        f"Kafka did not accept a batch for {self.topic}: {exc}"
                    ) from None
                await asyncio.sleep(min(2**attempt * 0.2, 5))
        raise AssertionError("unreachable")
