"""Shared by the CloudTrail tests: the real fixture, log-file shapes, a trail bucket in moto
that notifies an SQS queue, and reading a topic back."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from cloudinv.core.kafka import ensure_topics
from cloudinv.core.settings import KafkaSettings

FIXTURE = Path(__file__).resolve().parent / "data/cloudtrail/sample-cloudtrail-event.json"
ACCOUNT = "111100000000"


def fixture_records() -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = orjson.loads(FIXTURE.read_bytes())["Records"]
    return records


def log_bytes(records: Sequence[dict[str, Any]], *, compress: bool = True) -> bytes:
    data = orjson.dumps({"Records": list(records)})
    return gzip.compress(data) if compress else data


def log_key(
    n: int = 0, *, account: str = ACCOUNT, region: str = "us-east-1", day: str = "2017/06/01"
) -> str:
    stamp = day.replace("/", "")
    return (
        f"AWSLogs/{account}/CloudTrail/{region}/{day}/"
        f"{account}_CloudTrail_{region}_{stamp}T2155Z_{n:016x}.json.gz"
    )


@dataclass
class MotoTrail:
    """A trail bucket whose ObjectCreated notifications go to an SQS queue, in moto."""

    endpoint: str
    bucket: str
    queue_url: str
    s3: Any
    sqs: Any

    @classmethod
    def create(cls, endpoint: str, name: str, visibility_s: int = 30) -> MotoTrail:
        kwargs: dict[str, Any] = {"endpoint_url": endpoint, "region_name": "us-east-1"}
        s3 = boto3.client("s3", **kwargs)
        sqs = boto3.client("sqs", **kwargs)
        queue_url = sqs.create_queue(
            QueueName=f"ct-{name}", Attributes={"VisibilityTimeout": str(visibility_s)}
        )["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        bucket = f"trail-{name}"
        s3.create_bucket(Bucket=bucket)
        s3.put_bucket_notification_configuration(
            Bucket=bucket,
            NotificationConfiguration={
                "QueueConfigurations": [{"QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"]}]
            },
        )
        return cls(endpoint=endpoint, bucket=bucket, queue_url=queue_url, s3=s3, sqs=sqs)

    async def put(self, key: str, body: bytes) -> None:
        await asyncio.to_thread(self.s3.put_object, Bucket=self.bucket, Key=key, Body=body)

    async def send(self, body: bytes | str) -> None:
        text = body.decode() if isinstance(body, bytes) else body
        await asyncio.to_thread(self.sqs.send_message, QueueUrl=self.queue_url, MessageBody=text)

    def messages_in_flight(self) -> int:
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessagesNotVisible"])

    def messages_left(self) -> int:
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(
            attrs["ApproximateNumberOfMessagesNotVisible"]
        )


async def create_topics(bootstrap: str, prefix: str, partitions: int = 2) -> None:
    await ensure_topics(
        KafkaSettings(bootstrap=bootstrap, topic_prefix=prefix, partitions=partitions), bootstrap
    )


async def consume(bootstrap: str, topic: str, count: int, timeout: float = 30) -> list[Any]:
    """Read ``count`` messages from the start of ``topic`` (fails after ``timeout``); then
    wait briefly to catch any extra ones."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    out: list[Any] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(out) < count and loop.time() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                out.extend(records)
        extra_until = loop.time() + 1.0
        while loop.time() < extra_until:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                out.extend(records)
    finally:
        await consumer.stop()
    return out


class CommittingGroup:
    """A consumer group that reads a topic and commits what it read: the part of the stream
    worker that the end-to-end acknowledgement watches (a real aiokafka group on the real
    broker), without the rest of the worker. ``paused`` holds commits back."""

    def __init__(self, bootstrap: str, topic: str, group_id: str) -> None:
        self.consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=group_id,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=10000,
            heartbeat_interval_ms=1000,
        )
        self.messages: list[Any] = []
        self.paused = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> CommittingGroup:
        await self.consumer.start()
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.consumer.stop()

    async def _run(self) -> None:
        uncommitted = False
        while True:
            batches = await self.consumer.getmany(timeout_ms=200)
            for records in batches.values():
                self.messages.extend(records)
                uncommitted = True
            if uncommitted and not self.paused.is_set():
                await self.consumer.commit()
                uncommitted = False


async def commit_offsets(
    bootstrap: str, topic: str, group_id: str, offsets: dict[int, int]
) -> None:
    """Commit offsets for a group as a worker would (a real OffsetCommit on the broker)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in offsets]
        consumer.assign(tps)
        await consumer.commit({TopicPartition(topic, p): o for p, o in offsets.items()})
    finally:
        await consumer.stop()
