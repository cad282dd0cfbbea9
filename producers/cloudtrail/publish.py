"""Sending encoded CloudTrail events to the CloudTrail topic, acknowledged per file.

:meth:`CloudTrailPublisher.publish` packs every event of one file into per-partition
batches (keyed by principal, partitioned as aiokafka's default partitioner does, so a
principal's events stay in order on one partition) and returns only when Kafka acknowledged
them all, so the caller can then delete the SQS message or mark the file done. Several
files may publish concurrently.
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

    async def stop(self) -> None:
        await self._producer.stop()

    async def __aenter__(self) -> CloudTrailPublisher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def publish(self, messages: Sequence[tuple[bytes, bytes]]) -> None:
        """Send (key, value) pairs; return once every one is acknowledged.

        Messages are appended to per-partition batches here (one future per batch rather
        than per message), partitioned by key exactly as aiokafka's default partitioner does.
        """
        if not messages:
            return
        partition_of = await self._partitioner()
        batches: dict[int, Any] = {}
        pending: list[asyncio.Future[Any]] = []
        for key, value in messages:
            partition = partition_of(key)
            batch = batches.get(partition)
            if batch is None:
                batch = batches[partition] = self._producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:
                pending.append(await self._send_batch(batch, partition))
                batch = batches[partition] = self._producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is None:
                    raise PublishError(f"a CloudTrail event of {len(value)} bytes is too large")
        for partition, batch in batches.items():
            if batch.record_count():
                pending.append(await self._send_batch(batch, partition))
        results = await asyncio.gather(*pending, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            first = failures[0]
            if isinstance(first, KafkaError | OSError):
                raise PublishError(
                    f"{len(failures)} of {len(results)} batches of CloudTrail events were not "
                    f"acknowledged by Kafka: {first!r}"
                )
            raise first
        self.published += len(messages)

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
