"""Publishing collected snapshots and scan manifests to Kafka.

:class:`KafkaPublisher` batches through aiokafka's producer (linger, no awaited round trip
per message) and keys every snapshot by resource key and every manifest by scope, so one
resource's history stays in order on one partition. A broker that is briefly unreachable is
retried with backoff; a batch that still cannot be delivered raises, so the scan reports it
instead of silently dropping data.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError

from cloudinv.core.codec import encode
from cloudinv.core.errors import CloudinvError
from cloudinv.core.models import ResourceSnapshot, ScanManifest
from cloudinv.core.topics import Topic, topic_name

log = logging.getLogger(__name__)

Publishable = ResourceSnapshot | ScanManifest


class PublishError(CloudinvError):
    """Messages could not be delivered to Kafka after retries."""


@dataclass
class PublishStats:
    snapshots: int = 0
    manifests: int = 0
    retries: int = 0


class KafkaPublisher:
    """Send snapshots and manifests; :meth:`flush` waits until Kafka acknowledged them all."""

    def __init__(
        self,
        client_kwargs: dict[str, Any],
        topic_prefix: str,
        *,
        max_in_flight: int = 5000,
        attempts: int = 5,
    ) -> None:
        self._producer = AIOKafkaProducer(
            **client_kwargs,
            linger_ms=20,
            max_batch_size=1024 * 1024,
            compression_type=None,
            acks="all",
            request_timeout_ms=30000,
        )
        self._snapshots = topic_name(Topic.SNAPSHOTS, topic_prefix)
        self._scans = topic_name(Topic.SCANS, topic_prefix)
        self._pending: list[asyncio.Future[Any]] = []
        self._max_in_flight = max_in_flight
        self._attempts = attempts
        self.stats = PublishStats()

    async def start(self) -> None:
        for attempt in range(1, self._attempts + 1):
            try:
                await self._producer.start()
                return
            except KafkaConnectionError as exc:
                if attempt == self._attempts:
                    raise PublishError(
                        f"cannot reach Kafka to publish snapshots ({exc}); check "
                        "kafka.bootstrap or that the running instance is up"
                    ) from None
                await asyncio.sleep(min(2**attempt * 0.2, 5))

    async def stop(self) -> None:
        try:
            await self.flush()
        finally:
            await self._producer.stop()

    async def publish(self, message: Publishable) -> None:
        if isinstance(message, ResourceSnapshot):
            topic, key = self._snapshots, message.key
            self.stats.snapshots += 1
        else:
            topic, key = self._scans, message.scope
            self.stats.manifests += 1
        await self._send(topic, key.encode(), encode(message))
        if len(self._pending) >= self._max_in_flight:
            await self.flush()

    async def _send(self, topic: str, key: bytes, value: bytes) -> None:
        for attempt in range(1, self._attempts + 1):
            try:
                self._pending.append(await self._producer.send(topic, value=value, key=key))
                return
            except (KafkaTimeoutError, KafkaConnectionError) as exc:
                if attempt == self._attempts:
                    raise PublishError(
                        f"Kafka did not accept a message for {topic}: {exc}"
                    ) from None
                self.stats.retries += 1
                await asyncio.sleep(min(2**attempt * 0.2, 5))

    async def flush(self) -> None:
        """Wait for every message sent so far to be acknowledged."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        results = await asyncio.gather(*pending, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            first = failures[0]
            if isinstance(first, KafkaError | OSError):
                raise PublishError(
                    f"{len(failures)} of {len(results)} messages were not acknowledged by "
                    f"Kafka: {first}"
                )
            raise first
