"""Sending encoded CloudTrail events to the CloudTrail topic.

:class:`CloudTrailPublisher` is the one Kafka publisher (:class:`~cloudinv.producers.publisher.
KafkaPublisher`) bound to the CloudTrail topic: the events of one file go into per-partition
batches shared with every other file published at the same time (keyed by principal, so a
principal's events stay in order on one partition), and :meth:`CloudTrailPublisher.publish`
returns, once the broker acknowledged them, the last offset written to each partition. That
is not yet "stored": the caller hands those offsets to
:class:`~cloudinv.producers.cloudtrail.ack.CommitWatch` before it deletes an SQS message or
marks a file done. Many files publish concurrently; none waits for another.

A short command (``cloudtrail backfill``) need not wait for the broker before it reads:
:meth:`CloudTrailPublisher.start_soon` connects in the background while the first files are
read and parsed, and :meth:`~CloudTrailPublisher.publish` waits for the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from cloudinv.core.topics import Topic, topic_name
from cloudinv.producers.publisher import KafkaPublisher, PublishError

__all__ = ["CloudTrailPublisher", "PublishError"]


class CloudTrailPublisher:
    """The publisher of the CloudTrail topic. Use as ``async with``."""

    def __init__(
        self,
        client_kwargs: dict[str, Any],
        topic_prefix: str,
        *,
        linger_ms: int = 20,
        attempts: int = 5,
    ) -> None:
        self.kafka = KafkaPublisher(
            client_kwargs, topic_prefix, linger_ms=linger_ms, attempts=attempts
        )
        self.topic = topic_name(Topic.CLOUDTRAIL, topic_prefix)
        self._starting: asyncio.Task[None] | None = None

    @property
    def published(self) -> int:
        """Events acknowledged by the broker so far."""
        return self.kafka.stats.events

    async def start(self) -> None:
        await self.kafka.start()

    def start_soon(self) -> asyncio.Task[None]:
        """Connect in the background and return at once (:meth:`publish` waits for the
        connection). The task fails with :class:`PublishError` when Kafka cannot be reached:
        the caller watches it, to stop at once with that error rather than let every file
        retry."""
        if self._starting is None:
            self._starting = asyncio.create_task(self.start(), name="cloudtrail publisher start")
        return self._starting

    async def stop(self, timeout: float = 5.0) -> None:
        """Flush and stop; with the broker gone, give up after ``timeout`` seconds (what was
        not acknowledged end to end is published again by its source)."""
        starting, self._starting = self._starting, None
        if starting is not None and not starting.done():
            starting.cancel()
        if starting is not None:
            with contextlib.suppress(asyncio.CancelledError, PublishError):
                await starting
        await self.kafka.stop(timeout)

    async def __aenter__(self) -> CloudTrailPublisher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def publish(self, messages: Sequence[tuple[bytes, bytes]]) -> dict[int, int]:
        """Send one file's (key, value) pairs; return once every one is acknowledged by the
        broker, with the last offset written to each partition (what :class:`~cloudinv.
        producers.cloudtrail.ack.CommitWatch` waits for)."""
        starting = self._starting
        if starting is not None and not starting.done():
            await asyncio.shield(starting)  # one file's wait must not cancel the connection
        elif starting is not None:
            starting.result()  # raises the connection's PublishError
        return await self.kafka.send_many(self.topic, messages)
