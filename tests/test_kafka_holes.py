"""The hole guard (cloudinv.core.kafka_holes): a consumer never reads past a batch the broker
has not made readable yet.

The first tests build record batches with aiokafka's own builder and feed them to aiokafka's
own PartitionRecords (no broker: the hole must be exact, and Tansu makes one only now and
then). The last one is the race itself on the real Tansu broker: eight producers write into
the same partitions while a consumer tails them; without the guard that tail missed 6 to 18
of 48,000 messages in each of three runs here (this test writes 96,000).
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any, NamedTuple

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.consumer import fetcher
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords

from cloudinv.core import kafka_holes
from cloudinv.core.kafka import COMPACTED_TOPICS


class _TP(NamedTuple):
    topic: str
    partition: int


def _batch(base_offset: int, count: int) -> bytes:
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    for i in range(count):
        builder.append(
            i, timestamp=None, key=b"k", value=f"v{base_offset + i}".encode(), headers=[]
        )
    data = bytearray(builder.build())
    # The broker sets the base offset (the first 8 bytes; the CRC does not cover them).
    data[0:8] = struct.pack(">q", base_offset)
    return bytes(data)


def _read(topic: str, fetch_offset: int, *batches: bytes) -> tuple[list[int], int]:
    """The offsets one fetch of ``batches`` delivers, and the position after it."""
    records = fetcher.PartitionRecords(
        _TP(topic, 0),
        MemoryRecords(b"".join(batches)),
        None,
        fetch_offset,
        None,
        None,
        True,
        0,
    )
    offsets = [record.offset for record in records]
    return offsets, records.next_fetch_offset


@pytest.fixture
def guarded(monkeypatch: pytest.MonkeyPatch) -> None:
    kafka_holes.install()
    monkeypatch.setattr(kafka_holes, "_since", {})


def test_a_fetch_stops_at_a_hole_and_the_position_stays_there(guarded: None) -> None:
    held = kafka_holes.stats.held
    offsets, position = _read("cloudinv.cloudtrail", 0, _batch(0, 6), _batch(12, 6))
    assert offsets == [0, 1, 2, 3, 4, 5]
    assert position == 6  # the next fetch asks for 6 again
    assert kafka_holes.stats.held == held + 1
    # The broker made 6-11 readable: the next fetch from 6 gets everything.
    offsets, position = _read("cloudinv.cloudtrail", 6, _batch(6, 6), _batch(12, 6))
    assert offsets == list(range(6, 18)) and position == 18


def test_a_hole_at_the_start_of_a_fetch_delivers_nothing(guarded: None) -> None:
    offsets, position = _read("cloudinv.snapshots", 6, _batch(12, 6))
    assert offsets == [] and position == 6


def test_a_fetch_from_the_middle_of_a_batch_is_no_hole(guarded: None) -> None:
    offsets, position = _read("cloudinv.changes", 3, _batch(0, 6), _batch(6, 2))
    assert offsets == [3, 4, 5, 6, 7] and position == 8


def test_compacted_topics_are_read_as_they_come(guarded: None) -> None:
    for topic in ("app-table-changelog", "cloudinv.activity", "activity", "other.activity"):
        offsets, _ = _read(topic, 0, _batch(0, 2), _batch(5, 2))
        assert offsets == [0, 1, 5, 6], topic
    # The list of compacted cloudinv topics is the one topics are created with.
    assert {t.value for t in COMPACTED_TOPICS} == set(kafka_holes._COMPACTED_SUFFIXES)
    assert not kafka_holes.is_compacted("cloudinv.cloudtrail")


def test_a_hole_that_stays_is_read_past_after_the_patience_with_a_warning(
    guarded: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    now = [1000.0]
    monkeypatch.setattr(kafka_holes.time, "monotonic", lambda: now[0])
    read_past = kafka_holes.stats.read_past
    assert _read("cloudinv.cloudtrail", 0, _batch(0, 2), _batch(5, 2))[0] == [0, 1]
    now[0] += kafka_holes.PATIENCE_S / 2
    assert _read("cloudinv.cloudtrail", 2, _batch(5, 2))[0] == []
    now[0] += kafka_holes.PATIENCE_S / 2 + 0.1
    with caplog.at_level(logging.WARNING, logger="cloudinv.core.kafka_holes"):
        offsets, position = _read("cloudinv.cloudtrail", 2, _batch(5, 2))
    assert offsets == [5, 6] and position == 7
    assert kafka_holes.stats.read_past == read_past + 1
    assert "offsets 2 to 4 of cloudinv.cloudtrail[0]" in caplog.text


async def test_a_tail_of_concurrent_producers_on_tansu_misses_nothing(
    broker: str, unique: str
) -> None:
    kafka_holes.install()
    topic, partitions, producers, batches, per_batch = f"holes-{unique}", 4, 8, 2000, 6
    admin = AIOKafkaAdminClient(bootstrap_servers=broker)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()

    acked: set[bytes] = set()

    async def produce(n: int) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=broker, acks="all")
        await producer.start()
        try:
            sent: list[tuple[Any, list[bytes]]] = []
            for b in range(batches):
                batch = producer.create_batch()
                values = [f"p{n}-b{b}-{i}".encode() for i in range(per_batch)]
                for value in values:
                    batch.append(key=value, value=value, timestamp=None)
                batch.close()
                sent.append(
                    (await producer.send_batch(batch, topic, partition=b % partitions), values)
                )
            for future, values in sent:
                await future
                acked.update(values)
        finally:
            await producer.stop()

    consumer = AIOKafkaConsumer(bootstrap_servers=broker, enable_auto_commit=False)
    await consumer.start()
    read: set[bytes] = set()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        writing = asyncio.gather(*(produce(n) for n in range(producers)))
        async with asyncio.timeout(180):
            while not (writing.done() and read >= acked):
                for messages in (await consumer.getmany(timeout_ms=200)).values():
                    read.update(m.value for m in messages)
                if writing.done() and read < acked:
                    # Short, yet past every partition's end: a hole was read past.
                    ends = await consumer.end_offsets(tps)
                    positions = [await consumer.position(tp) for tp in tps]
                    if all(p >= ends[tp] for p, tp in zip(positions, tps, strict=True)):
                        break
        await writing
    finally:
        await consumer.stop()
    assert len(acked) == producers * batches * per_batch
    missing = acked - read
    assert not missing, (
        f"{len(missing)} acknowledged messages never read, e.g. {sorted(missing)[:6]}"
    )
