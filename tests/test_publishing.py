"""Scheduled scans publish every snapshot and manifest to the real broker, keyed for order;
a broker that cannot be reached is a clear error, not a silent loss."""

from __future__ import annotations

import asyncio
import random

import pytest
from aiobotocore.session import get_session
from aiokafka import AIOKafkaConsumer

from cloudinv.core.codec import decode
from cloudinv.core.models import ResourceSnapshot, ScanManifest
from cloudinv.core.settings import AccountRole, AwsSettings
from cloudinv.core.topics import Topic, topic_name
from cloudinv.producers.credentials import AwsAccess
from cloudinv.producers.publisher import KafkaPublisher, PublishError
from cloudinv.producers.schedule import ScanScheduler
from cloudinv.runtime.processes import free_port
from cloudinv.simulator.estate import EstateCounts, EstateSpec, seed_estate

TYPES = ["AWS::EC2::Instance", "AWS::EC2::SecurityGroup", "AWS::S3::Bucket", "AWS::IAM::User"]


async def _drain(broker: str, topic: str, expected: int) -> list[tuple[bytes, bytes]]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=broker, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    records: list[tuple[bytes, bytes]] = []
    try:
        async with asyncio.timeout(30):
            while len(records) < expected:
                batch = await consumer.getmany(timeout_ms=500)
                for part in batch.values():
                    records.extend((r.key, r.value) for r in part)
    finally:
        await consumer.stop()
    return records


async def test_a_round_publishes_every_snapshot_and_manifest(
    broker: str, moto_endpoint: str, unique: str
) -> None:
    account = f"7{random.randrange(10**10, 10**11)}"
    info = await seed_estate(
        moto_endpoint,
        EstateSpec(
            accounts=[account],
            regions=["eu-west-1"],
            counts=EstateCounts(instances=2, buckets=2, users=2, db_instances=0, db_snapshots=0),
        ),
    )
    aws = AwsSettings(
        accounts=[AccountRole(role_arn=arn) for arn in info.role_arns],
        regions=["eu-west-1"],
        endpoint_url=moto_endpoint,
    )
    session = get_session()
    session.set_credentials("testing", "testing")
    publisher = KafkaPublisher({"bootstrap_servers": broker}, f"p{unique}")
    await publisher.start()
    try:
        scheduler = ScanScheduler(
            aws,
            publisher,
            interval_s=60,
            access=AwsAccess.from_settings(aws, base_session=session),
        )
        summary = await scheduler.run_round(TYPES)
    finally:
        await publisher.stop()

    assert summary.failed_scopes == 0
    assert summary.scopes == len(TYPES)  # 2 regional + 2 global types, one region
    manifests = [
        decode(ScanManifest, v)
        for _, v in await _drain(broker, topic_name(Topic.SCANS, f"p{unique}"), summary.scopes)
    ]
    snapshots = await _drain(broker, topic_name(Topic.SNAPSHOTS, f"p{unique}"), summary.snapshots)
    assert len(snapshots) == summary.snapshots
    decoded = [(k, decode(ResourceSnapshot, v)) for k, v in snapshots]
    assert all(k == s.key.encode() for k, s in decoded)  # keyed by resource key
    assert {s.key for _, s in decoded} == {k for m in manifests for k in m.keys}
    assert {m.scan_id for m in manifests} == {summary.scan_id}
    by_type = {m.resource_type: m.count for m in manifests}
    assert by_type["AWS::EC2::Instance"] == 2
    assert by_type["AWS::S3::Bucket"] == 2
    # After a round, its types are not due again until their interval has passed.
    assert not set(TYPES) & set(scheduler.due_types())


async def test_unreachable_broker_is_a_clear_error() -> None:
    publisher = KafkaPublisher(
        {"bootstrap_servers": f"127.0.0.1:{free_port()}"}, "nowhere", attempts=2
    )
    with pytest.raises(PublishError, match="cannot reach Kafka"):
        await publisher.start()


def test_unknown_type_in_interval_overrides_fails_at_start() -> None:
    from cloudinv.catalog.registry import UnknownResourceType

    aws = AwsSettings(regions=["us-east-1"])
    with pytest.raises(UnknownResourceType):
        ScanScheduler(
            aws,
            publisher=None,  # type: ignore[arg-type]
            interval_s=60,
            type_intervals_s={"AWS::EC2::Instanse": 60},
        )


async def test_one_keys_messages_stay_in_order_across_batches(broker: str, unique: str) -> None:
    """Messages of one key, from many concurrent callers and both ways in, land in the order
    they were handed over, however many batches they fill (values of 200 kB: several batches
    of at most 1 MB, delivered by separate tasks)."""
    from cloudinv.core.kafka import ensure_topics
    from cloudinv.core.settings import KafkaSettings

    prefix = f"o{unique}"
    await ensure_topics(KafkaSettings(bootstrap=broker, topic_prefix=prefix, partitions=2), broker)
    topic = topic_name(Topic.CLOUDTRAIL, prefix)
    padding = b"x" * 200_000
    async with KafkaPublisher({"bootstrap_servers": broker}, prefix) as publisher:
        offsets = await asyncio.gather(
            *(
                publisher.send_many(topic, [(b"one-principal", b"%04d" % i + padding)])
                for i in range(24)
            )
        )
    assert publisher.stats.events == 24
    [partition] = {p for o in offsets for p in o}
    assert [o[partition] for o in offsets] == sorted(o[partition] for o in offsets)
    records = await _drain(broker, topic, 24)
    assert [int(v[:4]) for _, v in records] == list(range(24))


async def test_the_scheduler_leaves_out_types_the_endpoint_cannot_serve(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Beside a running demo, `cloudinv producers` leaves out what its simulated AWS cannot
    serve (as scan --once skips them), with one line, instead of failing every round.
    No broker is needed: nothing is published (the publisher is never started)."""
    aws = AwsSettings(accounts=[], regions=["eu-west-1"], endpoint_url="http://127.0.0.1:9")
    scheduler = ScanScheduler(
        aws,
        KafkaPublisher({"bootstrap_servers": "127.0.0.1:9"}, "unused"),
        interval_s=60,
        types=["AWS::EC2::PlacementGroup", "AWS::EC2::Instance", "AWS::EC2::ReservedInstances"],
    )
    with caplog.at_level("WARNING", logger="cloudinv.producers.schedule"):
        left = scheduler.leave_out(
            {
                "AWS::EC2::PlacementGroup": "no handler",
                "AWS::EC2::ReservedInstances": "not implemented",
                "AWS::S3::Bucket": "not selected anyway",
            }
        )
    assert left == ["AWS::EC2::PlacementGroup", "AWS::EC2::ReservedInstances"]
    assert scheduler.types == ["AWS::EC2::Instance"]
    assert scheduler.due_types() == ["AWS::EC2::Instance"]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "2 type(s) left out" in lines[0] and "no handler" in lines[0]
    assert scheduler.leave_out({}) == [] and len(caplog.records) == 1
