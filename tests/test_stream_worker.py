"""A real Faust worker against the real (Tansu) broker: a message passes through an agent,
a ``group_by`` repartition, and a table."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiokafka import AIOKafkaProducer

from cloudinv.core.codec import encode
from cloudinv.core.models import ResourceSnapshot
from cloudinv.core.topics import Topic, topic_name
from cloudinv.streams.app import StreamConfig, create_app
from cloudinv.streams.inventory import bind


def _snapshot(i: int, rtype: str) -> ResourceSnapshot:
    return ResourceSnapshot.build(
        account_id="111111111111",
        region="us-east-1",
        resource_type=rtype,
        resource_id=f"r-{i}",
        arn=f"arn:aws:test:us-east-1:111111111111:thing/r-{i}",
        configuration={"i": i},
        scan_id="scan-1",
    )


async def test_snapshots_flow_through_agent_into_table(
    broker: str, unique: str, tmp_path: Path
) -> None:
    config = StreamConfig(
        bootstrap=broker,
        data_dir=tmp_path,
        app_id=f"test-worker-{unique}",
        topic_prefix=f"t{unique}",
        partitions=2,
    )
    app = create_app(config)
    stage = bind(app, config)
    await app.start()
    try:
        producer = AIOKafkaProducer(bootstrap_servers=broker)
        await producer.start()
        try:
            for i in range(6):
                rtype = "AWS::EC2::Instance" if i % 3 else "AWS::S3::Bucket"
                snap = _snapshot(i, rtype)
                await producer.send_and_wait(
                    topic_name(Topic.SNAPSHOTS, config.topic_prefix),
                    value=encode(snap),
                    key=snap.key.encode(),
                )
        finally:
            await producer.stop()

        async def counted() -> dict[str, int]:
            while True:
                counts = dict(stage.snapshots_by_type.items())
                if sum(counts.values()) >= 6:
                    return counts
                await asyncio.sleep(0.2)

        counts = await asyncio.wait_for(counted(), timeout=60)
        assert counts == {"AWS::EC2::Instance": 4, "AWS::S3::Bucket": 2}
    finally:
        await app.stop()
