"""The CloudTrail role (``cloudinv cloudtrail run``): the tailer of every configured queue
(SQS: S3 notifications of the trail bucket, EventBridge CloudTrail events) and the
re-describe reactor (write events -> attributed snapshots), in one process apart from the
producers and workers.

Scale it like the others: more copies share the queues (SQS hands each message to one
receiver) and the reactor's consumer group (``<kafka.consumer_group>.reactor``: the CloudTrail
topic's partitions are split between them). ``tail`` / ``react`` run only one half, for
deployments that size them apart.

Stopping (SIGTERM) never loses work: a tailer stops receiving at once and finishes the
messages in flight (each deleted only once the stream workers' group, kafka.consumer_group,
committed past its events; one cut short stays in the queue and comes back); the reactor
commits the CloudTrail offsets only after the snapshots of a batch are published, so a
batch cut short is read again by whoever owns the partition next.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloudinv.core.kafka import client_kwargs, ensure_topics
from cloudinv.core.settings import Settings
from cloudinv.producers.cloudtrail.ack import CommitWatch
from cloudinv.producers.cloudtrail.logfile import RejectionLog
from cloudinv.producers.cloudtrail.publish import CloudTrailPublisher
from cloudinv.producers.cloudtrail.tailer import CloudTrailTailer, TailerConfig
from cloudinv.producers.publisher import KafkaPublisher
from cloudinv.producers.reactor import ChangeReactor

__all__ = ["CloudTrailRole"]

log = logging.getLogger(__name__)


@dataclass
class CloudTrailRole:
    """Runs the tailers and the reactor until ``stop`` (see the module docstring)."""

    settings: Settings
    bootstrap: str
    queue_urls: list[str]
    tail: bool = True
    react: bool = True
    data_dir: Path | None = None
    tailers: list[CloudTrailTailer] = field(default_factory=list)
    reactor: ChangeReactor | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    connected: bool = False
    """The Kafka clients are started (readiness)."""

    async def run(self, stop: asyncio.Event) -> None:
        settings = self.settings
        kafka = client_kwargs(settings.kafka, self.bootstrap)
        prefix = settings.kafka.topic_prefix
        await ensure_topics(settings.kafka, self.bootstrap)
        async with contextlib.AsyncExitStack() as stack:
            if self.tail:
                publisher = await stack.enter_async_context(CloudTrailPublisher(kafka, prefix))
                # A message is deleted only once the stream workers' group committed past
                # its events (the broker may not keep them): see producers/cloudtrail/ack.py.
                ack = await stack.enter_async_context(
                    CommitWatch(kafka, publisher.topic, settings.kafka.consumer_group)
                )
                rejections = RejectionLog(self.data_dir or settings.data_dir)
                for url in self.queue_urls:
                    config = TailerConfig(
                        queue_url=url,
                        region=settings.cloudtrail.region,
                        endpoint_url=settings.aws.effective_endpoint(),
                        verify_digests=settings.cloudtrail.verify_digests,
                    )
                    self.tailers.append(CloudTrailTailer(config, publisher, rejections, ack=ack))
            if self.react:
                snapshots = KafkaPublisher(kafka, prefix)
                await snapshots.start()
                stack.push_async_callback(snapshots.stop)
                self.reactor = ChangeReactor(
                    settings.aws,
                    snapshots,
                    kafka,
                    prefix,
                    group_id=settings.kafka.group_for("reactor"),
                    fetch_max_wait_ms=settings.kafka.fetch_max_wait_ms,
                )
                await self.reactor.prepare()
            self.tasks = [
                asyncio.create_task(t.run(stop), name=f"tailer {t.config.queue_url}")
                for t in self.tailers
            ]
            if self.reactor is not None:
                self.tasks.append(asyncio.create_task(self.reactor.run(stop), name="reactor"))
            self.connected = True
            try:
                # One part failing stops the role (its supervisor restarts it), not limps on.
                done, _ = await asyncio.wait(self.tasks, return_when=asyncio.FIRST_EXCEPTION)
                stop.set()
                await asyncio.gather(*self.tasks, return_exceptions=True)
                for task in done:
                    if not task.cancelled() and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
            finally:
                self.connected = False
                for task in self.tasks:
                    task.cancel()
                await asyncio.gather(*self.tasks, return_exceptions=True)

    def failed(self) -> str | None:
        """Why the role is not live (a part stopped with an error), else ``None``."""
        for task in self.tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                return f"{task.get_name()} stopped: {task.exception()!r}"
        return None
