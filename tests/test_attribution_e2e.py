"""End to end: a RunInstances event on the CloudTrail topic yields a ChangeEvent for that
instance, attributed to the event's principal, without waiting for a scheduled scan.

Real parts: moto (the account), the Tansu broker, the reactor consuming the CloudTrail topic
and re-describing through the scan engine, a Faust worker running change detection into the
SQLite store.
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime
from pathlib import Path

import boto3
from aiobotocore.session import get_session
from aiokafka import AIOKafkaProducer

from cloudinv.core.codec import encode
from cloudinv.core.models import CloudTrailEvent, Principal
from cloudinv.core.settings import AccountRole, AwsSettings
from cloudinv.core.topics import Topic, topic_name
from cloudinv.producers.credentials import AwsAccess
from cloudinv.producers.publisher import KafkaPublisher
from cloudinv.producers.reactor import ChangeReactor
from cloudinv.producers.schedule import ScanScheduler
from cloudinv.sinks.sqlite_store import SqliteStore
from cloudinv.streams.app import StreamConfig, create_app
from cloudinv.streams.changes import bind


async def test_run_instances_event_yields_an_attributed_change(
    moto_endpoint: str, broker: str, unique: str, tmp_path: Path
) -> None:
    account = f"4{random.randrange(10**10, 10**11)}"
    role = f"arn:aws:iam::{account}:role/cloudinv-reader"
    creds = boto3.client("sts", endpoint_url=moto_endpoint, region_name="us-east-1").assume_role(
        RoleArn=role, RoleSessionName="seed"
    )["Credentials"]
    ec2 = boto3.client(
        "ec2",
        endpoint_url=moto_endpoint,
        region_name="eu-west-1",
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )
    image = ec2.register_image(Name="img", RootDeviceName="/dev/sda1")["ImageId"]
    ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)

    config = StreamConfig(
        bootstrap=broker,
        data_dir=tmp_path,
        app_id=f"attr-{unique}",
        topic_prefix=f"a{unique}",
        partitions=2,
    )
    app = create_app(config)
    bind(app, config, store_factory=lambda: SqliteStore(tmp_path / "inventory.sqlite3"))
    await app.start()
    aws = AwsSettings(
        accounts=[AccountRole(role_arn=role)], regions=["eu-west-1"], endpoint_url=moto_endpoint
    )
    session = get_session()
    session.set_credentials("testing", "testing")
    access = AwsAccess.from_settings(aws, base_session=session)
    publisher = KafkaPublisher({"bootstrap_servers": broker}, config.topic_prefix)
    await publisher.start()
    reactor = ChangeReactor(
        aws,
        publisher,
        {"bootstrap_servers": broker},
        config.topic_prefix,
        access=access,
        group_id=f"reactor-{unique}",
        auto_offset_reset="earliest",
        debounce_s=0.5,
    )
    stop = asyncio.Event()
    reactor_task = asyncio.create_task(reactor.run(stop))
    store = SqliteStore(tmp_path / "inventory.sqlite3")
    await store.open()
    try:
        # The scheduled baseline: the one existing instance is "created" without attribution.
        scheduler = ScanScheduler(
            aws, publisher, interval_s=3600, access=access, types=["AWS::EC2::Instance"]
        )
        await scheduler.run_round()
        async with asyncio.timeout(60):
            while True:
                if (await store.changes(limit=10)).items:
                    break
                await asyncio.sleep(0.2)

        # Someone launches an instance; CloudTrail records it; the tailer would publish this.
        started = datetime.now(UTC)
        new = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]
        event = CloudTrailEvent(
            event_id=f"ev-{unique}",
            event_time=started,
            event_source="ec2.amazonaws.com",
            service="ec2",
            event_name="RunInstances",
            region="eu-west-1",
            account_id=account,
            principal=Principal(
                type="IAMUser", arn=f"arn:aws:iam::{account}:user/alice", name="alice"
            ),
            source_ip="203.0.113.9",
            read_only=False,
            response_elements={"instancesSet": {"items": [{"instanceId": new["InstanceId"]}]}},
        )
        producer = AIOKafkaProducer(bootstrap_servers=broker)
        await producer.start()
        try:
            await producer.send_and_wait(
                topic_name(Topic.CLOUDTRAIL, config.topic_prefix),
                value=encode(event),
                key=b"alice",
            )
        finally:
            await producer.stop()

        async with asyncio.timeout(60):
            while True:
                page = await store.changes(since=started, limit=100)
                mine = [c for c in page.items if c.resource_id == new["InstanceId"]]
                if mine:
                    break
                await asyncio.sleep(0.2)
        (change,) = mine
        assert change.change_type == "created"
        assert change.attribution is not None
        assert change.attribution.event_id == event.event_id
        assert change.attribution.event_name == "RunInstances"
        assert change.attribution.principal_arn == f"arn:aws:iam::{account}:user/alice"
        assert change.attribution.source_ip == "203.0.113.9"
        assert scheduler.stats.rounds == 1  # no scheduled scan was needed
    finally:
        stop.set()
        await asyncio.wait_for(reactor_task, 30)
        await publisher.stop()
        await store.close()
        await app.stop()
