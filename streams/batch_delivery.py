"""Batch delivery: a topic's fetched messages handed over a fetch at a time, not one by one.

Faust delivers every message on its own: the consumer's drain loop awaits a two-task
``wait_first`` per message, the conductor builds an Event, the stream takes it from a queue
and runs its processors, and ``take_events`` acknowledges each one. Measured on the snapshot
topic that cost about 70 µs of CPU per message, three times what detecting an unchanged
resource costs. For the few hot topics whose agents work on batches anyway,
:func:`enable` swaps the app's consumer for :class:`BatchingConsumer`, which diverts their
messages, one list per partition and fetch, to a :class:`BatchQueue` that the agent reads.
Every other topic keeps Faust's per-message path, unchanged.

Subscriptions, partition assignment (co-partitioned topics included), offsets and commits
stay Faust's: the agent is still declared on its topic (a :class:`BatchTopic`) and never
reads its stream. Several agents may read one topic in batches: each :func:`enable` call
gives its agent queues of its own, and every queue gets every batch (the CloudTrail topic
feeds both the activity store and the event alerts). Other agents reading the same topic
through a plain topic still get every message through Faust's path. A message's offset is
committed only once every queue's agent and every other reader are done with it (Faust's
per-message reference count: one reference per queue, one per other channel). The agent
acknowledges a batch with :meth:`BatchQueue.ack` once it is done with it; Faust commits acked
offsets as usual. A rebalance drops batches not yet taken, and acknowledgments of batches
taken before it are dropped too (the partition's new owner reads them again: delivery stays
at least once, and the stages are idempotent).

Only Faust's aiokafka transport is supported (the one cloudinv uses); with another,
:func:`enable` returns ``None`` and the agent keeps reading its stream.

This copies a private Faust method and reads private names, so faust-streaming is pinned
exactly, and tests/test_dependency_canaries.py fails when an upgrade changes any of them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import faust
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

__all__ = ["Batch", "BatchQueue", "BatchTopic", "BatchingConsumer", "enable"]

log = logging.getLogger(__name__)

QUEUE_BATCHES = 8
"""Batches waiting per topic before the drain loop waits for the agent (back-pressure)."""


@dataclass(slots=True)
class Batch:
    """Messages of one partition from one fetch, in offset order."""

    messages: list[Any]
    """Faust ``Message`` s: ``value`` (raw bytes), ``topic``, ``partition``, ``offset``."""
    generation: int
    """The consumer group generation they were fetched in."""


class BatchQueue:
    """The batches of one topic, for its agent."""

    def __init__(self, app: faust.App, topic: str, maxsize: int = QUEUE_BATCHES) -> None:
        self.app = app
        self.topic = topic
        self._queue: asyncio.Queue[Batch] = asyncio.Queue(maxsize=maxsize)
        self._held: Batch | None = None
        self.delivered = 0
        self.dropped_acks = 0

    async def put(self, batch: Batch) -> None:
        await self._queue.put(batch)

    async def get(self, limit: int) -> Batch:
        """The next batch, with the batches already waiting behind it, up to ``limit``."""
        batch = self._held if self._held is not None else await self._queue.get()
        self._held = None
        queue = self._queue
        while not queue.empty() and len(batch.messages) < limit:
            more = queue.get_nowait()
            if more.generation != batch.generation:
                # Never mixed: the older part's acks are dropped, the newer part's are not.
                self._held = more
                break
            batch = Batch(batch.messages + more.messages, batch.generation)
        return batch

    def clear(self) -> None:
        """Drop batches not taken yet (their partitions are being revoked)."""
        self._held = None
        while not self._queue.empty():
            self._queue.get_nowait()

    def ack(self, batch: Batch) -> None:
        """Mark ``batch`` done, so that Faust may commit its offsets.

        Dropped if a rebalance began since it was fetched: the partitions may be another
        worker's now, and it will read them again.
        """
        consumer = self.app.consumer
        if batch.generation != self.app.consumer_generation_id or not consumer.flow_active:
            self.dropped_acks += len(batch.messages)
            return
        for message in batch.messages:
            # Released, not acked outright: other agents may still hold the message
            # (Faust acks it, for commit, when the last holder releases it).
            message.ack(consumer)
        self.delivered += len(batch.messages)


class BatchTopic(faust.Topic):  # type: ignore[misc]
    """The topic of an agent fed by a :class:`BatchQueue` (Faust clones keep the class):
    its channels are left out of per-message delivery."""


class BatchingConsumer(faust_aiokafka.Consumer):  # type: ignore[misc]
    """Faust's aiokafka consumer, diverting the messages of some topics to batch queues."""

    batch_queues: ClassVar[dict[str, list[BatchQueue]]] = {}
    """Topic → the queues of its batch-fed agents; set per app by :func:`enable` (on a
    subclass of its own)."""

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - Faust's loop
        # Faust's Consumer._drain_messages (faust-streaming 0.15), with messages of topics
        # in batch_queues collected per partition and put on their queue after each fetch.
        queues = self.batch_queues
        counters: Any = self  # Faust's attributes, untyped
        monitor: Any = self.app.monitor
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        flag_consumer_fetching = CONSUMER_FETCHING
        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(flag_consumer_fetching)
                ait = getmany(timeout=1.0)
                await self.sleep(0)
                if not self.should_stop:
                    generation = self.app.consumer_generation_id
                    batches: dict[Any, list[Any]] = {}
                    others: dict[Any, Any] = {}
                    async for tp, message in ait:
                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is not None and offset < r_offset:
                            continue
                        gap = offset - (r_offset or 0)
                        if gap > 1 and r_offset and acks_enabled_for(message.topic):
                            await self._add_gap(tp, r_offset + 1, offset)
                        if tp.topic in queues:
                            # One reference per queue, each released by BatchQueue.ack.
                            message.incref(len(queues[tp.topic]))
                            batches.setdefault(tp, []).append(message)
                            if tp not in others:
                                # Faust's TP, not the fetch's aiokafka TopicPartition: the
                                # handler's buffer-pressure callbacks put it back in the
                                # consumer's active partitions, which must hold TPs only (an
                                # aiokafka one failed an assertion there and stopped the
                                # fetcher: the stall of bench/changes.py --with-inventory).
                                others[tp] = self._other_channels_callback(TP(*tp))
                            deliver = others[tp]
                            if deliver is not None:
                                await self.wait_first(deliver(message), self.suspend_flow.wait())
                            set_read_offset(tp, offset)
                            continue
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0
                        if commit_every is not None and counters._n_acked >= commit_every:
                            counters._n_acked = 0
                            await self.commit()
                        await self.wait_first(callback(message), self.suspend_flow.wait())
                        set_read_offset(tp, offset)
                    for tp, messages in batches.items():
                        # What the streams' sensors count per message (Monitor.on_message_in
                        # and on_stream_event_in), once per batch: worker metrics by topic.
                        # Messages also delivered to a plain stream are counted by it.
                        subscribers = queues[tp.topic]
                        if others[tp] is None:
                            monitor.messages_received_total += len(messages)
                            monitor.messages_received_by_topic[tp.topic] += len(messages)
                            monitor.tp_read_offsets[TP(*tp)] = messages[-1].offset
                        monitor.events_total += len(messages) * len(subscribers)
                        for queue in subscribers:
                            # Abandoned if the flow stops (a rebalance) while it is full.
                            await self.wait_first(
                                queue.put(Batch(messages, generation)),
                                self.suspend_flow.wait(),
                            )
                    unset_flag(flag_consumer_fetching)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(flag_consumer_fetching)

    def _other_channels_callback(self, tp: Any) -> Any:
        """Faust's delivery to the channels of ``tp`` that are not batch-fed, or None."""
        conductor: Any = self.app.topics
        channels = {
            channel
            for channel in conductor._tp_index.get(tp, ())
            if not isinstance(channel, BatchTopic)
        }
        if not channels:
            return None
        # One compiled handler per partition and set of channels, as Faust keeps: its
        # buffer-pressure callbacks pause and resume the partition in pairs.
        key = (tp, frozenset(channels))
        cache: dict[Any, Any] = self.__dict__.setdefault("_other_callbacks", {})
        if key not in cache:
            cache[key] = conductor._compiler.build(conductor, tp, channels)
        return cache[key]


def enable(app: faust.App, topics: Iterable[str]) -> dict[str, BatchQueue] | None:
    """Deliver ``topics`` of ``app`` in batches to one agent; call before the app starts.

    Returns new queues, one per topic, for the calling agent alone (every call adds queues:
    each gets every batch), or ``None`` (nothing changed) when the app's transport is not
    Faust's aiokafka one or its consumer already exists.
    """
    transport = app.transport
    consumer_class = getattr(transport, "Consumer", None)
    if app._consumer is not None or consumer_class is None:
        log.info("batch delivery not enabled: the app's consumer already exists")
        return None
    if not issubclass(consumer_class, faust_aiokafka.Consumer):
        log.info("batch delivery not enabled: transport %s", type(transport).__name__)
        return None
    batching: type[BatchingConsumer]
    if issubclass(consumer_class, BatchingConsumer):
        batching = consumer_class
    else:
        batching = type(
            "BatchingConsumer", (BatchingConsumer, consumer_class), {"batch_queues": {}}
        )
        transport.Consumer = batching
    queues = batching.batch_queues
    created: dict[str, BatchQueue] = {}
    for topic in topics:
        created[topic] = BatchQueue(app, topic)
        queues.setdefault(topic, []).append(created[topic])

    async def on_revoked(sender: Any, revoked: Any = None, **kwargs: Any) -> None:
        for queue in created.values():
            queue.clear()

    app.on_partitions_revoked.connect(on_revoked, weak=False)
    return created
