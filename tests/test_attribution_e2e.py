"""End to end: a RunInstances event on the CloudTrail topic yields a ChangeEvent for that
instance, attributed to the event's principal, without waiting for a scheduled scan; and the
attribution join catches what that race misses: a scan that saw the change first (the stored
change is updated in place, and the change log and the changes topic carry the update), and
deletions, whether a scan or a re-describe finds them.

Real parts: moto (the account), the Tansu broker, the reactor consuming the CloudTrail topic
and re-describing through the scan engine, a Faust worker running change detection into the
SQLite store.
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from cloudinv.catalog.event_resources import attribution_of
from cloudinv.core.codec import decode, encode
from cloudinv.core.models import (
    ChangeEvent,
    CloudTrailEvent,
    Principal,
    ResourceSnapshot,
    ScanManifest,
)
from cloudinv.core.settings import AwsSettings
from cloudinv.core.topics import Topic, topic_name
from cloudinv.producers.credentials import AwsAccess
from cloudinv.producers.publisher import KafkaPublisher
from cloudinv.producers.reactor import ChangeReactor
from cloudinv.producers.schedule import ScanScheduler
from cloudinv.sinks.sqlite_store import SqliteStore
from cloudinv.sinks.store import ChangeFilters, ChangeQuery
from cloudinv.streams.app import StreamConfig, create_app
from cloudinv.streams.changes import bind
from tests.moto_helpers import MemberAccount


async def test_run_instances_event_yields_an_attributed_change(
    moto_endpoint: str, broker: str, unique: str, tmp_path: Path
) -> None:
    member = MemberAccount.create(moto_endpoint, 4)
    account = member.account
    ec2 = member.client("ec2", "eu-west-1")
    image = ec2.register_image(Name="img", RootDeviceName="/dev/sda1")["ImageId"]
    ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)

    aws = member.aws(["eu-west-1"])
    access = member.access(aws)
    async with JoinWorker(broker, unique, tmp_path, name="attr") as worker:
        store, publisher = worker.store, worker.publisher
        reactor = worker.reactor(
            aws,
            access,
            group_id=f"reactor-{unique}",
            auto_offset_reset="earliest",
            debounce_s=0.5,
        )
        stop = asyncio.Event()
        reactor_task = asyncio.create_task(reactor.run(stop))
        try:
            # The scheduled baseline: the one existing instance is "created" without attribution.
            scheduler = ScanScheduler(
                aws, publisher, interval_s=3600, access=access, types=["AWS::EC2::Instance"]
            )
            await scheduler.run_round()
            async with asyncio.timeout(60):
                while True:
                    if (await store.changes(ChangeQuery(limit=10))).items:
                        break
                    await asyncio.sleep(0.2)

            # Someone launches an instance; CloudTrail records it; the tailer would publish this.
            started = datetime.now(UTC)
            new = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]
            event = trail_event(
                "RunInstances",
                "ec2",
                started,
                user="alice",
                account=account,
                response_elements={"instancesSet": {"items": [{"instanceId": new["InstanceId"]}]}},
            )
            await worker.trail(event)

            async with asyncio.timeout(60):
                while True:
                    page = await store.changes(ChangeQuery(since=started, limit=100))
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
            assert change.attribution.source_ip == event.source_ip
            assert scheduler.stats.rounds == 1  # no scheduled scan was needed
        finally:
            stop.set()
            await asyncio.wait_for(reactor_task, 30)


# -- the attribution join, end to end: a real broker and Faust worker, the SQLite store --------

ACCOUNT = "222233334444"


class JoinWorker:
    """The change stage on a real broker with the SQLite store; publishes like the producers."""

    def __init__(self, broker: str, unique: str, tmp_path: Path, name: str = "join") -> None:
        self.broker = broker
        self.config = StreamConfig(
            bootstrap=broker,
            data_dir=tmp_path,
            app_id=f"{name}-{unique}",
            topic_prefix=f"{name[0]}{unique}",
            partitions=2,
        )
        self.path = tmp_path / "inventory.sqlite3"
        self.app = create_app(self.config)
        self.stage = bind(self.app, self.config, store_factory=lambda: SqliteStore(self.path))
        self.publisher = KafkaPublisher({"bootstrap_servers": broker}, self.config.topic_prefix)
        self.store = SqliteStore(self.path)

    async def __aenter__(self) -> JoinWorker:
        await self.app.start()
        await self.publisher.start()
        await self.store.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.publisher.stop()
        await self.store.close()
        await self.app.stop()

    def reactor(self, aws: AwsSettings, access: AwsAccess, **options: Any) -> ChangeReactor:
        """The re-describe reactor of ``aws``, publishing to this worker's topics."""
        return ChangeReactor(
            aws,
            self.publisher,
            {"bootstrap_servers": self.broker},
            self.config.topic_prefix,
            access=access,
            **options,
        )

    async def publish(self, *items: ResourceSnapshot | ScanManifest) -> None:
        for item in items:
            await self.publisher.publish(item)
        await self.publisher.flush()

    async def trail(self, *events: CloudTrailEvent) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.broker)
        await producer.start()
        try:
            for event in events:
                await producer.send_and_wait(
                    topic_name(Topic.CLOUDTRAIL, self.config.topic_prefix),
                    value=encode(event),
                    key=event.principal.label.encode(),
                )
        finally:
            await producer.stop()

    async def change_of(
        self, key: str, change_type: str, *, attributed: bool = True
    ) -> ChangeEvent:
        """Wait for the stored change (attributed, unless told otherwise)."""
        async with asyncio.timeout(60):
            while True:
                page = await self.store.changes(
                    ChangeQuery(filters=ChangeFilters(key=key), limit=100)
                )
                for change in page.items:
                    if change.change_type == change_type and (
                        not attributed or change.attribution is not None
                    ):
                        return change
                await asyncio.sleep(0.2)

    async def topic_changes(self, change_id: str, want: int) -> list[ChangeEvent]:
        """Messages of the changes topic with this change id, once there are ``want``."""
        consumer = AIOKafkaConsumer(
            topic_name(Topic.CHANGES, self.config.topic_prefix),
            bootstrap_servers=self.broker,
            auto_offset_reset="earliest",
            group_id=None,
        )
        await consumer.start()
        found: list[ChangeEvent] = []
        try:
            async with asyncio.timeout(60):
                while len(found) < want:
                    batch = await consumer.getmany(timeout_ms=500)
                    for records in batch.values():
                        found += [
                            c
                            for c in (decode(ChangeEvent, r.value) for r in records)
                            if c.change_id == change_id
                        ]
        finally:
            await consumer.stop()
        return found


def bucket(name: str, at: datetime, tags: dict[str, str], scan_id: str) -> ResourceSnapshot:
    return ResourceSnapshot.build(
        account_id=ACCOUNT,
        region="global",
        resource_type="AWS::S3::Bucket",
        resource_id=name,
        arn=f"arn:aws:s3:::{name}",
        name=name,
        configuration={"Name": name, "Tagging": [{"Key": k, "Value": v} for k, v in tags.items()]},
        scan_id=scan_id,
        captured_at=at,
    )


def snapshot_of_volume(snap: str, at: datetime, scan_id: str, **extra: Any) -> ResourceSnapshot:
    return ResourceSnapshot.build(
        account_id=ACCOUNT,
        region="eu-west-1",
        resource_type="AWS::EC2::Snapshot",
        resource_id=snap,
        arn=f"arn:aws:ec2:eu-west-1:{ACCOUNT}:snapshot/{snap}",
        configuration={"SnapshotId": snap, "State": "completed"},
        scan_id=scan_id,
        captured_at=at,
        **extra,
    )


def instance(iid: str, at: datetime, state: str, scan_id: str, **extra: Any) -> ResourceSnapshot:
    return ResourceSnapshot.build(
        account_id=ACCOUNT,
        region="eu-west-1",
        resource_type="AWS::EC2::Instance",
        resource_id=iid,
        arn=f"arn:aws:ec2:eu-west-1:{ACCOUNT}:instance/{iid}",
        configuration={"InstanceId": iid, "State": {"Name": state}},
        scan_id=scan_id,
        captured_at=at,
        **extra,
    )


def trail_event(
    name: str,
    source: str,
    at: datetime,
    *,
    user: str = "bob",
    account: str = ACCOUNT,
    **fields: Any,
) -> CloudTrailEvent:
    """A write event of ``user`` in ``account``, as the tailer publishes it."""
    return CloudTrailEvent(
        event_id=f"{name}-{random.random()}",
        event_time=at.replace(microsecond=0),  # CloudTrail's precision
        event_source=f"{source}.amazonaws.com",
        service=source,
        event_name=name,
        region="eu-west-1" if source != "s3" else "us-east-1",
        account_id=account,
        principal=Principal(type="IAMUser", arn=f"arn:aws:iam::{account}:user/{user}", name=user),
        source_ip="198.51.100.3",
        read_only=False,
        **fields,
    )


async def test_a_scan_that_beats_the_event_is_attributed_in_place_and_sent_again(
    broker: str, unique: str, tmp_path: Path
) -> None:
    name = f"bucket-{unique}"
    t = datetime.now(UTC) - timedelta(minutes=5)
    async with JoinWorker(broker, unique, tmp_path) as worker:
        await worker.publish(bucket(name, t, {"team": "a"}, "scan-1"))
        await worker.change_of(f"arn:aws:s3:::{name}", "created", attributed=False)
        # Someone retags the bucket; the scheduled scan sees it before CloudTrail delivers.
        retag = trail_event(
            "PutBucketTagging",
            "s3",
            t + timedelta(seconds=30),
            request_parameters={"bucketName": name},
        )
        await worker.publish(bucket(name, t + timedelta(seconds=32), {"team": "b"}, "scan-2"))
        first = await worker.change_of(f"arn:aws:s3:::{name}", "modified", attributed=False)
        assert first.attribution is None
        log_head = await worker.store.change_log_head()
        await worker.trail(retag)

        updated = await worker.change_of(f"arn:aws:s3:::{name}", "modified")
        assert updated.change_id == first.change_id
        assert updated.attribution is not None
        assert updated.attribution.event_id == retag.event_id
        assert updated.attribution.principal_arn == f"arn:aws:iam::{ACCOUNT}:user/bob"
        # The live feed tails the change log: the update is logged after what it had seen.
        logged = await worker.store.change_log_after(log_head, 100)
        assert [(row.change_type, b'"PutBucketTagging"' in row.event) for row in logged] == [
            ("modified", True)
        ]
        # Subscribers of the changes topic get the same change again, attributed.
        on_topic = await worker.topic_changes(first.change_id, 2)
        assert [c.attribution is not None for c in on_topic] == [False, True]
        versions = await worker.store.history(f"arn:aws:s3:::{name}")
        assert len(versions) == 2  # versions untouched by the update
        assert worker.stage.attributed_late >= 1


async def test_deletions_are_attributed_whether_a_scan_or_a_redescribe_finds_them(
    broker: str, unique: str, tmp_path: Path
) -> None:
    t = datetime.now(UTC) - timedelta(minutes=5)
    snap, gone, terminated = f"snap-{unique}", f"i-a{unique}", f"i-b{unique}"
    async with JoinWorker(broker, unique, tmp_path) as worker:
        await worker.publish(
            snapshot_of_volume(snap, t, "scan-1"),
            instance(gone, t, "running", "scan-1"),
            instance(terminated, t, "running", "scan-1"),
        )
        for iid in (gone, terminated):
            await worker.change_of(
                f"arn:aws:ec2:eu-west-1:{ACCOUNT}:instance/{iid}", "created", attributed=False
            )
        await worker.change_of(
            f"arn:aws:ec2:eu-west-1:{ACCOUNT}:snapshot/{snap}", "created", attributed=False
        )

        # 1. By a scan: the snapshot is deleted while a scheduled scan of its scope runs
        #    (the scan's start is before the event); the event comes after the manifest.
        started = t + timedelta(seconds=60)
        delete = trail_event(
            "DeleteSnapshot",
            "ec2",
            started + timedelta(seconds=1),
            request_parameters={"snapshotId": snap},
        )
        await worker.publish(
            ScanManifest(
                scan_id="scan-2",
                account_id=ACCOUNT,
                region="eu-west-1",
                resource_type="AWS::EC2::Snapshot",
                status="complete",
                started_at=started,
                finished_at=started + timedelta(seconds=3),
                keys=[],
            )
        )
        await worker.change_of(
            f"arn:aws:ec2:eu-west-1:{ACCOUNT}:snapshot/{snap}", "deleted", attributed=False
        )
        await worker.trail(delete)
        deleted = await worker.change_of(
            f"arn:aws:ec2:eu-west-1:{ACCOUNT}:snapshot/{snap}", "deleted"
        )
        assert deleted.attribution is not None and deleted.attribution.event_id == delete.event_id

        # 2. By a re-describe the event triggered: the snapshot carries the event (reactor).
        terminate = trail_event(
            "TerminateInstances",
            "ec2",
            t + timedelta(seconds=70),
            request_parameters={"instancesSet": {"items": [{"instanceId": terminated}]}},
        )
        await worker.publish(
            instance(
                terminated,
                t + timedelta(seconds=72),
                "terminated",
                "event-1",
                attribution=attribution_of(terminate),
            )
        )
        direct = await worker.change_of(
            f"arn:aws:ec2:eu-west-1:{ACCOUNT}:instance/{terminated}", "deleted"
        )
        assert direct.attribution is not None
        assert direct.attribution.event_id == terminate.event_id

        # 3. The event is known before a scheduled scan sees the instance terminated.
        stop = trail_event(
            "TerminateInstances",
            "ec2",
            t + timedelta(seconds=80),
            user="carol",
            request_parameters={"instancesSet": {"items": [{"instanceId": gone}]}},
        )
        await worker.trail(terminate, stop)  # the tailer publishes every event
        async with asyncio.timeout(60):
            while True:
                if worker.stage.write_events >= 3:
                    break
                await asyncio.sleep(0.2)
        await worker.publish(instance(gone, t + timedelta(seconds=90), "terminated", "scan-3"))
        joined = await worker.change_of(
            f"arn:aws:ec2:eu-west-1:{ACCOUNT}:instance/{gone}", "deleted"
        )
        assert joined.attribution is not None
        assert joined.attribution.principal_arn == f"arn:aws:iam::{ACCOUNT}:user/carol"

        figure = await worker.store.attribution_figure(t - timedelta(minutes=1))
        assert figure.matched == figure.attributed == 3


async def test_a_snapshot_created_and_deleted_between_scans_gets_both_versions(
    moto_endpoint: str, broker: str, unique: str, tmp_path: Path
) -> None:
    """The demo's short-lived snapshots: both events arrive, the re-describe finds nothing;
    the created version comes from the creation event, the deletion from the scan after."""
    member = MemberAccount.create(moto_endpoint, 5)
    account = member.account
    ec2 = member.client("ec2", "eu-west-1")
    volume = ec2.create_volume(AvailabilityZone="eu-west-1a", Size=1)["VolumeId"]
    snap = ec2.create_snapshot(VolumeId=volume)["SnapshotId"]
    ec2.delete_snapshot(SnapshotId=snap)
    created_at = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=20)

    create = trail_event(
        "CreateSnapshot",
        "ec2",
        created_at,
        user="dana",
        account=account,
        request_parameters={"volumeId": volume},
        response_elements={"snapshotId": snap, "volumeId": volume, "status": "pending"},
    )
    delete = trail_event(
        "DeleteSnapshot",
        "ec2",
        created_at + timedelta(seconds=10),
        user="dana",
        account=account,
        request_parameters={"snapshotId": snap},
    )

    aws = member.aws(["eu-west-1"])
    access = member.access(aws)
    key = f"arn:aws:ec2:eu-west-1:{account}:snapshot/{snap}"
    async with JoinWorker(broker, unique, tmp_path, name="short") as worker:
        store, publisher = worker.store, worker.publisher
        reactor = worker.reactor(aws, access)
        await worker.trail(create, delete)  # the tailer's part: the join reads them
        # Both events in one debounce window: the re-describe no longer finds the snapshot.
        await reactor.handle([create, delete])
        assert reactor.stats.built_from_events == 1

        created = await worker.change_of(key, "created", attributed=False)
        assert created.origin == "event"
        assert created.configuration is not None
        assert created.configuration["volumeId"] == volume
        assert created.attribution is not None
        assert created.attribution.event_id == create.event_id

        # The re-describe's manifest, or the next scheduled scan's, deletes it; the join
        # attributes the deletion to DeleteSnapshot.
        scheduler = ScanScheduler(
            aws, publisher, interval_s=3600, access=access, types=["AWS::EC2::Snapshot"]
        )
        async with asyncio.timeout(90):
            while True:
                page = await store.changes(ChangeQuery(filters=ChangeFilters(key=key), limit=10))
                deleted = [c for c in page.items if c.change_type == "deleted" and c.attribution]
                if deleted:
                    break
                await scheduler.run_round()
                await asyncio.sleep(0.5)
        assert deleted[0].attribution is not None
        assert deleted[0].attribution.event_id == delete.event_id
        versions = await store.history(key)
        assert len(versions) == 1 and versions[0].valid_to is not None
