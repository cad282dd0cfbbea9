"""The one wire codec: every message model round-trips through a real topic on the broker,
and bad bytes fail loudly instead of turning into half-filled models."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pydantic import BaseModel, ValidationError

from cloudinv.core.codec import MODEL_BY_TOPIC, codec_for, decode, encode, schema_for
from cloudinv.core.models import (
    Attribution,
    ChangeEvent,
    CloudTrailEvent,
    JsonPatchOp,
    Principal,
    ResourceSnapshot,
    ScanError,
    ScanManifest,
)
from cloudinv.core.topics import Topic, topic_name

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
ARN = "arn:aws:ec2:us-east-1:111111111111:security-group/sg-1"


def samples() -> dict[Topic, BaseModel]:
    snap = ResourceSnapshot.build(
        account_id="111111111111",
        region="us-east-1",
        resource_type="AWS::EC2::SecurityGroup",
        resource_id="sg-1",
        arn=ARN,
        name="web",
        tags={"env": "prod"},
        configuration={"GroupId": "sg-1", "IpPermissions": [{"FromPort": 22}], "When": T0},
        scan_id="scan-1",
        captured_at=T0,
    )
    return {
        Topic.SNAPSHOTS: snap,
        Topic.SCANS: ScanManifest(
            scan_id="scan-1",
            account_id="111111111111",
            region="eu-west-1",
            resource_type="AWS::EC2::Instance",
            status="failed",
            started_at=T0,
            finished_at=T0 + timedelta(seconds=2.5),
            keys=[],
            errors=[ScanError(code="AccessDenied", message="no", operation="DescribeInstances")],
        ),
        Topic.CHANGES: ChangeEvent(
            change_id="c1",
            key=ARN,
            resource_type="AWS::EC2::SecurityGroup",
            resource_id="sg-1",
            account_id="111111111111",
            region="us-east-1",
            change_type="modified",
            prior_configuration={"IpPermissions": []},
            configuration={"IpPermissions": [{"FromPort": 22}]},
            before_hash="a" * 64,
            after_hash="b" * 64,
            patch=[
                JsonPatchOp(op="add", path="/IpPermissions/0", value={"FromPort": 22}),
                JsonPatchOp(op="move", path="/a", from_="/b"),
            ],
            changed_paths=["/IpPermissions"],
            captured_at=T0,
            detected_at=T0 + timedelta(seconds=1),
            attribution=Attribution(
                event_id="e1",
                event_name="AuthorizeSecurityGroupIngress",
                event_time=T0,
                principal_arn="arn:aws:iam::111111111111:user/alice",
                source_ip="192.0.2.1",
            ),
        ),
        Topic.CLOUDTRAIL: CloudTrailEvent(
            event_id="e1",
            event_time=T0,
            event_source="ec2.amazonaws.com",
            service="ec2",
            event_name="RunInstances",
            region="us-east-1",
            account_id="111111111111",
            principal=Principal(type="IAMUser", arn="arn:aws:iam::111111111111:user/alice"),
            read_only=False,
            request_parameters={"instanceType": "t3.micro"},
        ),
    }


def test_every_topic_with_a_model_has_a_sample() -> None:
    assert set(MODEL_BY_TOPIC) == set(samples())


@pytest.mark.parametrize("which", list(samples()))
def test_codec_round_trip_in_memory(which: Topic) -> None:
    message = samples()[which]
    codec = codec_for(which)
    assert codec.loads(codec.dumps(message)) == message
    assert decode(type(message), encode(message)) == message


def test_patch_op_travels_with_rfc6902_from_key() -> None:
    change = samples()[Topic.CHANGES]
    assert b'"from":"/b"' in encode(change)


def test_naive_timestamps_are_taken_as_utc() -> None:
    naive = samples()[Topic.SCANS].model_dump() | {"started_at": "2026-11-01T12:00:00"}
    assert ScanManifest.model_validate(naive).started_at.tzinfo is not None


def test_bad_bytes_raise_validation_errors() -> None:
    with pytest.raises(ValidationError):
        decode(ResourceSnapshot, b'{"account_id": "nope"}')
    with pytest.raises(ValidationError):
        decode(ResourceSnapshot, b"not json")


def test_config_hash_ignores_key_order_but_not_values() -> None:
    common = dict(
        account_id="111111111111",
        region="us-east-1",
        resource_type="AWS::S3::Bucket",
        resource_id="b",
        arn="arn:aws:s3:::b",
        scan_id="s",
    )
    a = ResourceSnapshot.build(configuration={"x": 1, "y": [1, 2]}, **common)
    b = ResourceSnapshot.build(configuration={"y": [1, 2], "x": 1}, **common)
    c = ResourceSnapshot.build(configuration={"y": [2, 1], "x": 1}, **common)
    d = ResourceSnapshot.build(configuration={"x": 1, "y": [1, 2]}, tags={"k": "v"}, **common)
    assert a.config_hash == b.config_hash
    assert len({a.config_hash, c.config_hash, d.config_hash}) == 3


async def test_round_trip_through_a_real_topic(broker: str, unique: str) -> None:
    """Faust's schema serializes, the broker stores, and the same schema deserializes."""
    prefix = f"codec{unique}"
    messages = samples()
    producer = AIOKafkaProducer(bootstrap_servers=broker)
    await producer.start()
    try:
        for which, message in messages.items():
            schema = schema_for(which)
            value = schema.value_serializer.dumps(message)
            await producer.send_and_wait(topic_name(which, prefix), value=value, key=b"k")
    finally:
        await producer.stop()

    for which, message in messages.items():
        consumer = AIOKafkaConsumer(
            topic_name(which, prefix),
            bootstrap_servers=broker,
            auto_offset_reset="earliest",
            group_id=None,
        )
        await consumer.start()
        try:
            record = await asyncio.wait_for(consumer.getone(), timeout=20)
        finally:
            await consumer.stop()
        assert record.value is not None
        assert schema_for(which).value_serializer.loads(record.value) == message
