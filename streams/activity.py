"""Per-principal and per-service activity from CloudTrail: the agent that stores every event
once and publishes aggregate updates.

``store_cloudtrail`` reads the CloudTrail topic in batches and hands each batch to
:meth:`~cloudinv.sinks.cloudtrail_store.CloudTrailStore.write_batch`, which inserts the events
not already stored and adds exactly those to the hourly and daily aggregates in one transaction.
Counting from the deduplicated store (not from windowed tables over the raw stream) is what
makes a log file delivered twice, or a batch replayed after a crash (at-least-once
delivery), count once. Every aggregate bucket a batch changed is published on
the activity topic with its new totals, keyed by ``principal:<label>`` or ``service:<name>``.

The batches come from :mod:`cloudinv.streams.batch_delivery`, a fetch at a time: Faust's per-message
delivery cost more CPU per event than storing it (bench/cloudtrail.py). The event alerts
read the same topic through queues of their own. Offsets of a batch are committed only after
the batch is written (and the alerts are done with it). With a transport batch delivery does
not support, the agent reads its stream (``stream.take``) instead.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.serializers.schemas import Schema

from cloudinv.core.codec import PydanticCodec
from cloudinv.core.topics import Topic, topic_name
from cloudinv.sinks.cloudtrail_store import CloudTrailStore
from cloudinv.sinks.events_store import ActivityUpdate, EventsStore, events_store_path
from cloudinv.streams import batch_delivery
from cloudinv.streams.app import StreamConfig

__all__ = ["ActivityStage", "ActivityStats", "bind"]

log = logging.getLogger(__name__)


BATCH_SIZE = 2000
BATCH_WITHIN_S = 0.25


@dataclass
class ActivityStats:
    batches: int = 0
    received: int = 0
    inserted: int = 0
    rejected: int = 0
    updates_published: int = 0


@dataclass
class ActivityStage:
    store: CloudTrailStore
    agent: Any
    """The Faust agent ``store_cloudtrail``."""
    activity_topic: Any
    stats: ActivityStats = field(default_factory=ActivityStats)
    batch_queue: batch_delivery.BatchQueue | None = None
    """Where the agent's batches come from (None: its Faust stream)."""


def bind(
    app: faust.App,
    config: StreamConfig,
    *,
    store: CloudTrailStore | None = None,
    batch_size: int = BATCH_SIZE,
    within_s: float = BATCH_WITHIN_S,
) -> ActivityStage:
    """Declare the CloudTrail agent on ``app``; the store opens when the agent starts."""
    # Raw bytes: the store parses each event in its writer thread (orjson, checked field by
    # field), which is several times cheaper than building the model on the event loop.
    cloudtrail_name = topic_name(Topic.CLOUDTRAIL, config.topic_prefix)
    cloudtrail = batch_delivery.BatchTopic(
        app,
        topics=[cloudtrail_name],
        schema=_BrokerBytes(),
        partitions=config.partitions,
        replicas=config.replication_factor,
    )
    # None with a transport batch delivery does not support: the agent reads its stream.
    queue = (batch_delivery.enable(app, (cloudtrail_name,)) or {}).get(cloudtrail_name)
    # The activity topic's schema is built here rather than registered in cloudinv.core.codec:
    # the codec's meta-test (tests/test_codec.py) requires a sample for every registered
    # topic, and it has none for ActivityUpdate yet. The bytes are the same codec's.
    activity = app.topic(
        topic_name(Topic.ACTIVITY, config.topic_prefix),
        schema=faust.Schema(
            key_type=str, key_serializer="raw", value_serializer=PydanticCodec(ActivityUpdate)
        ),
        partitions=config.partitions,
        replicas=config.replication_factor,
    )
    stage = ActivityStage(
        store=store or EventsStore(events_store_path(config.data_dir)),
        agent=None,
        activity_topic=activity,
        batch_queue=queue,
    )

    async def store_cloudtrail(stream: faust.StreamT[bytes]) -> None:
        await stage.store.open()
        try:
            if queue is None:
                async for values in stream.take(batch_size, within=within_s):
                    await _write(stage, values)
            while queue is not None:
                batch = await queue.get(batch_size)
                await _write(stage, [message.value for message in batch.messages])
                queue.ack(batch)
        finally:
            # Runs when the worker stops (the agent is cancelled) after any write finished.
            await stage.store.close()

    stage.agent = app.agent(cloudtrail, name="store_cloudtrail")(store_cloudtrail)
    return stage


class _BrokerBytes(Schema):  # type: ignore[misc]
    """Key and value exactly as the broker gave them. The ``raw`` serializers would return
    the same bytes, through Faust's serializer registry (several calls per message, about
    5% of the worker's CPU per event, bench/cloudtrail.py)."""

    def __init__(self) -> None:
        super().__init__(
            key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
        )

    def loads_key(self, app: Any, message: Any, **_: Any) -> Any:
        return message.key

    def loads_value(self, app: Any, message: Any, **_: Any) -> Any:
        return message.value


async def _write(stage: ActivityStage, batch: Sequence[bytes]) -> None:
    result = await stage.store.write_batch(batch)
    stats = stage.stats
    if result.rejected:
        stats.rejected += len(result.rejected)
        log.warning(
            "cloudtrail: %d message(s) on the topic are not events; first: %s",
            len(result.rejected),
            result.rejected[0],
        )
    stats.batches += 1
    stats.received += result.received
    stats.inserted += result.inserted
    for update in result.updates:
        # Not awaited for the broker's ack: the producer batches these with linger.
        await stage.activity_topic.send(key=update.topic_key, value=update)
    stats.updates_published += len(result.updates)
