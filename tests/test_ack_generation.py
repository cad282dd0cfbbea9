"""Offsets from two lives of a broker are not compared: a wait whose events were published
before the broker was lost fails with AckLost (its source publishes again), even when the
new broker's committed offsets would pass them. Runs a Tansu broker of its own (the suite's
shared one must not die), kills it and starts another on the same port."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from cloudinv.producers.cloudtrail.ack import AckLost, CommitWatch
from cloudinv.runtime.embedded import EmbeddedBroker
from cloudinv.runtime.processes import choose_port


async def test_a_wait_from_before_a_broker_loss_fails(tmp_path: Path) -> None:
    port = choose_port("127.0.0.1", None, "test broker", "--port")
    first = EmbeddedBroker(tmp_path / "one", port=port)
    (tmp_path / "one").mkdir()
    await first.start()
    bootstrap = first.bootstrap
    second: EmbeddedBroker | None = None
    try:
        async with CommitWatch({"bootstrap_servers": bootstrap}, "t", "g", poll_s=0.05) as watch:
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
            await producer.start()
            try:
                before = watch.generation
                sent = await producer.send_and_wait("t", b"x", key=b"k", partition=0)
            finally:
                await producer.stop()
            # Someone waits (an older file): the watch polls, sees the broker go and come back.
            older = asyncio.create_task(watch.wait({0: sent.offset + 1000}))
            await first.stop()
            (tmp_path / "two").mkdir()
            second = EmbeddedBroker(tmp_path / "two", port=port)
            await second.start()
            with pytest.raises(AckLost):
                await asyncio.wait_for(older, 60)
            assert watch.generation > before
            # Published before the loss, waited for after it: fails at once.
            with pytest.raises(AckLost, match="lost what it held"):
                await watch.wait({0: sent.offset}, before)
            # Published after it: waits as usual (nothing commits here, so it times out).
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(watch.wait({0: 0}, watch.generation), 1)
    finally:
        if second is not None:
            await second.stop()
        await first.stop()


async def test_a_broker_replaced_while_nobody_waited_is_still_seen(tmp_path: Path) -> None:
    """The watch polls only while someone waits. A broker replaced while every source was
    still publishing (nobody waiting, nothing committed yet, so no offset went backwards) is
    seen by its new cluster id: a wait for events the old broker took fails, even though
    the new broker's group has committed past their offsets."""
    port = choose_port("127.0.0.1", None, "test broker", "--port")
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    first = EmbeddedBroker(tmp_path / "one", port=port)
    await first.start()
    bootstrap = first.bootstrap
    second: EmbeddedBroker | None = None
    try:
        async with CommitWatch({"bootstrap_servers": bootstrap}, "t", "g", poll_s=0.05) as watch:
            before = watch.generation
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
            await producer.start()
            try:
                old = await producer.send_and_wait("t", b"x", key=b"k", partition=0)
            finally:
                await producer.stop()
            await first.stop()
            second = EmbeddedBroker(tmp_path / "two", port=port)
            await second.start()
            # The new broker's worker group commits past the old event's offset.
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
            await producer.start()
            try:
                for _ in range(old.offset + 3):
                    await producer.send_and_wait("t", b"y", key=b"k", partition=0)
            finally:
                await producer.stop()
            consumer = AIOKafkaConsumer(
                "t",
                bootstrap_servers=bootstrap,
                group_id="g",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
            )
            await consumer.start()
            try:
                await consumer.getmany(timeout_ms=5000)  # joined, partitions assigned
                await consumer.commit({TopicPartition("t", 0): old.offset + 3})
            finally:
                await consumer.stop()
            with pytest.raises(AckLost, match="replaced"):
                await asyncio.wait_for(watch.wait({0: old.offset}, before), 60)
            assert watch.generation > before
    finally:
        if second is not None:
            await second.stop()
        await first.stop()
