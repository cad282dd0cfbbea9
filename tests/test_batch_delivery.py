"""Batch delivery (cloudinv.streams.batch_delivery) on the real broker: several batch-fed agents
and a per-message agent reading one topic, each getting every message, offsets committed only once
all are done, and a per-message co-reader whose buffer fills up does not stop the
fetcher (the stall of bench/changes.py --with-inventory)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from faust.types import TP

from cloudinv.streams import batch_delivery
from cloudinv.streams.app import StreamConfig, create_app

PARTITIONS = 2
RAW = {
    "key_type": bytes,
    "value_type": bytes,
    "key_serializer": "raw",
    "value_serializer": "raw",
    "partitions": PARTITIONS,
}


async def create_topic(broker: str, name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=broker)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, PARTITIONS, 1)])
    finally:
        await admin.close()


async def produce(broker: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=broker)
    await producer.start()
    try:
        for i, value in enumerate(values):
            await producer.send(topic, value=value, partition=i % PARTITIONS)
        await producer.flush()
    finally:
        await producer.stop()


async def committed(broker: str, group: str, topic: str) -> int:
    reader = AIOKafkaConsumer(bootstrap_servers=broker, group_id=group)
    await reader.start()
    try:
        return sum(
            [await reader.committed(TopicPartition(topic, p)) or 0 for p in range(PARTITIONS)]
        )
    finally:
        await reader.stop()


async def wait_until(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    try:
        async with asyncio.timeout(timeout):
            while True:
                if check():
                    return
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"never happened: {what}") from None


@asynccontextmanager
async def running(app: faust.App) -> AsyncIterator[faust.App]:
    await app.start()
    try:
        await wait_until(lambda: bool(app.consumer.assignment()), "partitions assigned")
        yield app
    finally:
        await app.stop()


def batch_agent(
    app: faust.App, topic: str, name: str, received: list[bytes], held: list[Any] | None = None
) -> batch_delivery.BatchQueue:
    """A batch-fed agent that records every value and acks each batch, or keeps it in
    ``held`` if given."""
    channel = batch_delivery.BatchTopic(app, topics=[topic], **RAW)
    queues = batch_delivery.enable(app, (topic,))
    assert queues is not None
    queue = queues[topic]

    async def consume(stream: Any) -> None:
        while True:
            batch = await queue.get(100)
            received.extend(message.value for message in batch.messages)
            if held is None:
                queue.ack(batch)
            else:
                held.append(batch)

    app.agent(channel, name=name)(consume)
    return queue


def plain_agent(app: faust.App, topic: str, received: list[bytes], gate: asyncio.Event) -> None:
    """A per-message agent that reads nothing until ``gate`` is set."""

    async def consume(stream: Any) -> None:
        await gate.wait()
        async for value in stream:
            received.append(value)

    app.agent(app.topic(topic, **RAW), name="plain")(consume)


def make_app(broker: str, tmp_path: Path, unique: str, buffer: int | None = None) -> faust.App:
    config = StreamConfig(
        bootstrap=broker, data_dir=tmp_path, app_id=f"test-batch-{unique}", partitions=PARTITIONS
    )
    app = create_app(config)
    if buffer is not None:
        app.conf.stream_buffer_maxsize = buffer
    return app


async def test_every_batch_fed_agent_and_the_plain_one_get_every_message_and_commit_waits(
    broker: str, unique: str, tmp_path: Path
) -> None:
    topic = f"batched-{unique}"
    await create_topic(broker, topic)
    values = [f"v{i}".encode() for i in range(300)]
    app = make_app(broker, tmp_path, unique)
    first: list[bytes] = []
    second: list[bytes] = []
    plain: list[bytes] = []
    held: list[Any] = []
    open_gate = asyncio.Event()
    open_gate.set()
    q1 = batch_agent(app, topic, "first", first)
    q2 = batch_agent(app, topic, "second", second, held)
    plain_agent(app, topic, plain, open_gate)
    async with running(app):
        await produce(broker, topic, values)
        await wait_until(
            lambda: len(first) == len(second) == len(plain) == len(values), "all delivered"
        )
        # Every reader got every message once.
        assert sorted(first) == sorted(second) == sorted(plain) == sorted(values)
        assert q1.delivered == len(values) and q2.delivered == 0
        # The worker's metrics count each message read once, whoever reads it.
        monitor: Any = app.monitor
        assert monitor.messages_received_by_topic[topic] == len(values)
        # The second agent has not acknowledged its batches: nothing may be committed.
        await app.consumer.commit()
        assert await committed(broker, app.conf.id, topic) == 0
        for batch in held:
            q2.ack(batch)
        assert q2.delivered == len(values)
        await app.consumer.commit()
        assert await committed(broker, app.conf.id, topic) == len(values)
        assert q1.dropped_acks == q2.dropped_acks == 0


async def test_a_plain_co_reader_with_a_full_buffer_does_not_stop_the_fetcher(
    broker: str, unique: str, tmp_path: Path
) -> None:
    # The plain agent's buffer (16 events) fills while it waits: Faust takes the partition
    # out of the fetch and puts it back once the buffer drains. That put an aiokafka
    # TopicPartition among the consumer's active partitions, which stopped the fetcher.
    topic = f"pressure-{unique}"
    await create_topic(broker, topic)
    values = [f"v{i}".encode() for i in range(400)]
    app = make_app(broker, tmp_path, unique, buffer=16)
    batched: list[bytes] = []
    plain: list[bytes] = []
    plain_gate = asyncio.Event()
    queue = batch_agent(app, topic, "batched", batched)
    plain_agent(app, topic, plain, plain_gate)
    async with running(app):
        await produce(broker, topic, values)
        consumer: Any = app.consumer
        await wait_until(lambda: bool(consumer._buffered_partitions), "a partition paused")
        plain_gate.set()
        await wait_until(
            lambda: len(batched) == len(plain) == len(values), "all delivered after the pause"
        )
        assert sorted(batched) == sorted(plain) == sorted(values)
        assert queue.delivered == len(values)
        assert all(type(tp) is TP for tp in consumer._get_active_partitions())
        assert not consumer._crashed.is_set()


async def test_the_fetch_wait_of_the_config_reaches_aiokafka_with_batch_delivery_too(
    broker: str, unique: str, tmp_path: Path
) -> None:
    # Faust passes a fixed fetch_max_wait_ms=1500 to aiokafka. On Tansu a fetch is answered only
    # when its wait runs out, so that was each hop's latency (bench/cloudtrail.py). The value of
    # StreamConfig must reach the fetcher, also when batch delivery swaps the consumer class.
    topic = f"fetch-wait-{unique}"
    await create_topic(broker, topic)
    config = StreamConfig(
        bootstrap=broker,
        data_dir=tmp_path,
        app_id=f"test-fetch-wait-{unique}",
        partitions=PARTITIONS,
        fetch_max_wait_ms=70,
    )
    app = create_app(config)
    received: list[bytes] = []
    batch_agent(app, topic, "batched", received)
    async with running(app):
        consumer: Any = app.consumer._thread._consumer
        assert consumer._fetch_max_wait_ms == 70
        # A source acknowledged end to end waits for the worker's commit: every second.
        assert app.conf.broker_commit_interval == 1.0
        assert consumer._fetcher._fetch_max_wait_ms == 70
        values = [f"w{i}".encode() for i in range(20)]
        await produce(broker, topic, values)
        await wait_until(lambda: sorted(received) == sorted(values), "all delivered")
    # Another app keeps its own value: the class is made per app.
    other = create_app(StreamConfig(bootstrap=broker, data_dir=tmp_path, app_id=f"other-{unique}"))
    assert other.transport.Consumer.thread_class.fetch_max_wait_ms == 100


def test_the_fetch_wait_is_a_kafka_setting() -> None:
    from pydantic import ValidationError

    from cloudinv.core.settings import KafkaSettings

    assert KafkaSettings().fetch_max_wait_ms == 100
    assert KafkaSettings(fetch_max_wait_ms=500).fetch_max_wait_ms == 500
    try:
        KafkaSettings(fetch_max_wait_ms=0)
    except ValidationError as exc:
        assert "fetch_max_wait_ms" in str(exc)
    else:
        raise AssertionError("a fetch wait of 0 was accepted")
