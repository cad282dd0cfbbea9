"""Change detection: the detector's rules without Kafka, then end to end against moto and the
real broker: scan, change four things, scan again, and get exactly those four changes.

The end-to-end tests share one scenario (module fixture): a real scan of a small moto estate
through the real scan engine, published with the real publisher, detected and stored by a
real Faust worker with the local SQLite store.
"""

from __future__ import annotations

import asyncio
import copy
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import jsonpatch  # type: ignore[import-untyped,unused-ignore]
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from cloudinv.core.codec import decode, encode
from cloudinv.core.models import ChangeEvent, ResourceSnapshot, ScanError, ScanManifest
from cloudinv.core.settings import AccountRole, AwsSettings
from cloudinv.core.topics import Topic, topic_name
from cloudinv.producers.engine import scan
from cloudinv.producers.publisher import KafkaPublisher
from cloudinv.sinks.sqlite_store import SqliteStore
from cloudinv.sinks.store import ChangeQuery, ResourceVersion, VersionQuery
from cloudinv.streams import changes as changes_module
from cloudinv.streams.app import StreamConfig, create_app
from cloudinv.streams.batch_delivery import Batch, BatchingConsumer, BatchQueue
from cloudinv.streams.changes import ChangeDetector, ChangeStage, DeletionRequest, bind, change_id
from cloudinv.streams.worker import build_worker_app

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
ACCOUNT = "111111111111"


def apply(doc: Any, change: ChangeEvent) -> Any:
    """Apply a change's patch (as it travels on the wire) with an independent library."""
    wire = orjson.loads(encode(change))
    return jsonpatch.apply_patch(copy.deepcopy(doc or {}), wire["patch"])


# -- the detector alone ---------------------------------------------------------------------------


def instance(at: datetime, state: str = "running", **extra: Any) -> ResourceSnapshot:
    return ResourceSnapshot.build(
        account_id=ACCOUNT,
        region="us-east-1",
        resource_type="AWS::EC2::Instance",
        resource_id="i-1",
        arn=f"arn:aws:ec2:us-east-1:{ACCOUNT}:instance/i-1",
        configuration={"InstanceId": "i-1", "State": {"Name": state}, **extra},
        scan_id="s",
        captured_at=at,
    )


def test_unchanged_reordered_and_stale_snapshots_are_not_changes() -> None:
    d = ChangeDetector()
    tags = [{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"}]
    first = d.observe(instance(T0, Tags=tags))
    assert first is not None and first.change_type == "created"
    assert d.observe(instance(T0 + timedelta(minutes=1), Tags=tags[::-1])) is None
    assert d.observe(instance(T0 - timedelta(minutes=1), Tags=[])) is None  # older: stale
    assert (d.stats.unchanged, d.stats.stale) == (1, 1)


def test_volatile_fields_declared_with_the_type_are_ignored() -> None:
    d = ChangeDetector()

    def table(at: datetime, items: int, billing: str) -> ResourceSnapshot:
        return ResourceSnapshot.build(
            account_id=ACCOUNT,
            region="us-east-1",
            resource_type="AWS::DynamoDB::Table",
            resource_id="t",
            arn=f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/t",
            configuration={"TableName": "t", "ItemCount": items, "Billing": billing},
            scan_id="s",
            captured_at=at,
        )

    assert d.observe(table(T0, 1, "PAY")) is not None
    assert d.observe(table(T0 + timedelta(minutes=1), 500, "PAY")) is None
    change = d.observe(table(T0 + timedelta(minutes=2), 9, "PROVISIONED"))
    assert change is not None and change.changed_paths == ["/Billing"]
    assert "ItemCount" not in (change.configuration or {})


def test_terminated_instances_are_deleted_once_and_reappearing_ones_created() -> None:
    d = ChangeDetector()
    created = d.observe(instance(T0))
    deleted = d.observe(instance(T0 + timedelta(minutes=1), "terminated"))
    assert created is not None and deleted is not None
    assert deleted.change_type == "deleted" and deleted.before_hash == created.after_hash
    assert deleted.configuration is None and apply(created.configuration, deleted) == {}
    assert d.observe(instance(T0 + timedelta(minutes=2), "terminated")) is None
    again = d.observe(instance(T0 + timedelta(minutes=3)))
    assert again is not None and again.change_type == "created" and again.before_hash is None
    assert again.change_id != created.change_id  # anchored on the deletion time


def test_deletion_requests_respect_what_was_seen_after_the_scan_began() -> None:
    d = ChangeDetector()
    d.observe(instance(T0))

    def request(started: datetime) -> DeletionRequest:
        return DeletionRequest(
            key=instance(T0).key,
            resource_type="AWS::EC2::Instance",
            account_id=ACCOUNT,
            region="us-east-1",
            scan_id="s2",
            scan_started_at=started,
        )

    assert d.request_deletion(request(T0 - timedelta(seconds=1))) is None  # seen since
    assert d.request_deletion(request(T0)) is None
    deleted = d.request_deletion(request(T0 + timedelta(hours=1)))
    assert deleted is not None and deleted.captured_at == T0 + timedelta(hours=1)
    assert d.request_deletion(request(T0 + timedelta(hours=2))) is None  # already deleted
    assert d.request_deletion(request(T0).model_copy(update={"key": "arn:unknown"})) is None


def test_change_ids_are_deterministic_and_the_fast_path_agrees() -> None:
    a, b = ChangeDetector(), ChangeDetector()
    snaps = [instance(T0, Size=1), instance(T0 + timedelta(minutes=1), Size=2)]
    found_a = [c for s in snaps if (c := a.observe(s))]
    found_b = [c for s in snaps if (c := b.observe_wire(s.model_dump(mode="json")))]
    assert [c.change_id for c in found_a] == [c.change_id for c in found_b]
    first, second = found_a
    assert second.change_id == change_id(first.key, first.after_hash, second.after_hash, T0)
    # An unchanged snapshot on the wire is recognized by its hash alone.
    assert (
        b.observe_wire(instance(T0 + timedelta(minutes=2), Size=2).model_dump(mode="json")) is None
    )


def test_a_detector_warmed_from_stored_versions_reports_nothing_old() -> None:
    d = ChangeDetector()
    created = d.observe(instance(T0, Size=1))
    assert created is not None and created.configuration is not None
    stored = ResourceVersion(
        key=created.key,
        resource_type=created.resource_type,
        resource_id=created.resource_id,
        account_id=created.account_id,
        region=created.region,
        configuration=created.configuration,
        config_hash=created.after_hash or "",
        valid_from=created.captured_at,
        change_id=created.change_id,
    )
    fresh = ChangeDetector()
    assert fresh.missing([created.key]) == [created.key]
    fresh.warm([created.key], {created.key: stored})
    assert fresh.missing([created.key]) == []
    assert fresh.observe(instance(T0 + timedelta(hours=1), Size=1)) is None
    assert fresh.observe(instance(T0 - timedelta(hours=1), Size=7)) is None  # replayed, older
    modified = fresh.observe(instance(T0 + timedelta(hours=2), Size=2))
    assert modified is not None and modified.before_hash == created.after_hash

    gone = ChangeDetector()
    gone.warm(
        [created.key],
        {created.key: stored.model_copy(update={"valid_to": T0 + timedelta(hours=3)})},
    )
    back = gone.observe(instance(T0 + timedelta(hours=4), Size=1))
    assert back is not None and back.change_type == "created"


class FakeService:
    """Stands for the StoreService: ``latest`` answers from a dict, and may call back."""

    def __init__(self, versions: dict[str, ResourceVersion], during: Callable[[], None]) -> None:
        self.versions = versions
        self.during = during
        self.calls = 0

    async def get(self) -> FakeService:
        return self

    async def latest(self, keys: list[str]) -> dict[str, ResourceVersion]:
        self.calls += 1
        if self.calls == 1:
            self.during()
        return {k: v for k, v in self.versions.items() if k in keys}


class Event:
    """What the agent reads from Faust: a message's raw value and where it came from."""

    def __init__(self, value: bytes) -> None:
        self.value = value
        self.topic = "t"
        self.partition = 0
        self.offset = 0


def wire(snapshot: ResourceSnapshot) -> Event:
    return Event(snapshot.model_dump_json().encode())


async def run_batch(
    detector: ChangeDetector, service: Any, events: list[Event]
) -> list[ChangeEvent]:
    emitted: list[ChangeEvent] = []

    async def emit(changes: list[ChangeEvent]) -> None:
        emitted.extend(changes)

    items = changes_module._decode(detector, events, changes_module._decode_snapshot)
    await changes_module._compare(detector, service, items, emit)
    return emitted


async def test_a_batch_keeps_the_order_of_each_key_around_the_fast_path() -> None:
    d = ChangeDetector()
    d.observe(instance(T0, Size=1))
    # Size 2 needs a diff; the snapshot after it has the old configuration again and would
    # match the known hash: it must not be taken before the one it follows.
    batch = [
        wire(instance(T0 + timedelta(minutes=1), Size=2)),
        wire(instance(T0 + timedelta(minutes=2), Size=1)),
    ]
    changes = await run_batch(d, FakeService({}, lambda: None), batch)
    assert [c.configuration["Size"] for c in changes if c.configuration] == [2, 1]


async def test_a_batch_reloads_state_dropped_by_a_rebalance_while_reading_the_store() -> None:
    d = ChangeDetector()
    first = d.observe(instance(T0, Size=1, SubnetIds=["a", "b"]))
    assert first is not None and first.configuration is not None
    stored = ResourceVersion(
        key=first.key,
        resource_type=first.resource_type,
        resource_id=first.resource_id,
        account_id=first.account_id,
        region=first.region,
        configuration=first.configuration,
        config_hash=first.after_hash or "",
        valid_from=T0,
        change_id=first.change_id,
    )
    service = FakeService({first.key: stored}, d.forget)
    other = ResourceSnapshot.build(
        account_id=ACCOUNT,
        region="us-east-1",
        resource_type="AWS::EC2::Instance",
        resource_id="i-2",
        arn=f"arn:aws:ec2:us-east-1:{ACCOUNT}:instance/i-2",
        configuration={"InstanceId": "i-2"},
        scan_id="s",
        captured_at=T0,
    )
    # i-2 is unknown: loading it drops the cache (a rebalance); i-1 (listed in another order,
    # so it needs a full comparison) must be loaded again, not taken for a new resource.
    reordered = instance(T0 + timedelta(minutes=1), Size=1, SubnetIds=["b", "a"])
    assert reordered.config_hash != instance(T0, Size=1, SubnetIds=["a", "b"]).config_hash
    changes = await run_batch(d, service, [wire(other), wire(reordered)])
    assert [(c.resource_id, c.change_type) for c in changes] == [("i-2", "created")]
    assert service.calls >= 2


async def test_a_batch_reloads_state_dropped_by_a_rebalance_between_its_chunks() -> None:
    """A long batch hands its changes over in chunks; a rebalance while a chunk is sent
    drops the cache, and the rest of the batch is compared with the store's versions
    again, not taken for new resources."""
    d = ChangeDetector()
    count = changes_module._YIELD_EVERY + 50

    def snap(i: int, at: datetime, size: int) -> ResourceSnapshot:
        return ResourceSnapshot.build(
            account_id=ACCOUNT,
            region="us-east-1",
            resource_type="AWS::EC2::Instance",
            resource_id=f"i-{i}",
            arn=f"arn:aws:ec2:us-east-1:{ACCOUNT}:instance/i-{i}",
            configuration={"InstanceId": f"i-{i}", "Size": size},
            scan_id="s",
            captured_at=at,
        )

    stored: dict[str, ResourceVersion] = {}
    for i in range(count):
        created = ChangeDetector().observe(snap(i, T0, 1))
        assert created is not None and created.configuration is not None
        stored[created.key] = ResourceVersion(
            key=created.key,
            resource_type=created.resource_type,
            resource_id=created.resource_id,
            account_id=created.account_id,
            region=created.region,
            configuration=created.configuration,
            config_hash=created.after_hash or "",
            valid_from=T0,
            change_id=created.change_id,
        )
    service = FakeService(stored, lambda: None)
    emitted: list[ChangeEvent] = []

    async def emit(changes: list[ChangeEvent]) -> None:
        emitted.extend(changes)
        if changes and len(emitted) == changes_module._YIELD_EVERY:
            d.forget()  # partitions revoked while the first chunk was sent

    later = T0 + timedelta(hours=1)
    events = [wire(snap(i, later, 2)) for i in range(count)]
    items = changes_module._decode(d, events, changes_module._decode_snapshot)
    await changes_module._compare(d, service, items, emit)
    assert [c.change_type for c in emitted] == ["modified"] * count
    assert service.calls == 2
    assert d.generation == 1


async def test_undecodable_messages_are_skipped_and_counted() -> None:
    d = ChangeDetector()
    changes = await run_batch(
        d,
        FakeService({}, lambda: None),
        [Event(b"not json"), Event(b'{"no": "arn"}'), wire(instance(T0))],
    )
    assert [c.change_type for c in changes] == ["created"]
    assert d.stats.invalid == 2


def test_the_store_sink_skips_and_counts_changes_it_cannot_read() -> None:
    d = ChangeDetector()
    change = d.observe(instance(T0))
    assert change is not None
    good = change.model_dump_json(by_alias=True).encode()
    missing_key = orjson.dumps({k: v for k, v in orjson.loads(good).items() if k != "key"})
    batch = changes_module._change_batch(
        d, [Event(b"not json"), Event(b"[1, 2]"), Event(missing_key), Event(good)]
    )
    # The readable change is kept with the very bytes it was read from (what the store keeps).
    assert list(batch) == [change]
    assert batch.wire == [good]
    assert d.stats.invalid == 3


def test_the_worker_app_runs_the_change_stage(tmp_path: Path) -> None:
    app = build_worker_app(StreamConfig(bootstrap="127.0.0.1:1", data_dir=tmp_path))
    assert {"detect_changes", "apply_deletions", "apply_scans", "store_changes"} <= set(app.agents)


# -- end to end: moto, the scan engine, the broker, a Faust worker, SQLite -------------------------

TYPES = ["AWS::EC2::Instance", "AWS::EC2::SecurityGroup", "AWS::S3::Bucket"]


class Estate:
    """A small estate in its own moto account, mutated with boto3 on a thread."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.account = f"6{random.randrange(10**10, 10**11)}"
        self.role_arn = f"arn:aws:iam::{self.account}:role/cloudinv-reader"
        sts = boto3.client("sts", endpoint_url=endpoint, region_name="us-east-1")
        creds = sts.assume_role(RoleArn=self.role_arn, RoleSessionName="seed")["Credentials"]
        self.session = boto3.Session(
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
            region_name="us-east-1",
        )
        self.ec2 = self.session.client("ec2", endpoint_url=endpoint)
        self.s3 = self.session.client("s3", endpoint_url=endpoint)
        self.instances: list[str] = []
        self.sg = ""
        self.subnet = ""
        self.buckets = [f"alpha-{self.account}", f"beta-{self.account}"]

    def seed(self) -> None:
        vpc = self.ec2.create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]["VpcId"]
        self.subnet = self.ec2.create_subnet(VpcId=vpc, CidrBlock="10.1.1.0/24")["Subnet"][
            "SubnetId"
        ]
        self.sg = self.ec2.create_security_group(GroupName="web", Description="web", VpcId=vpc)[
            "GroupId"
        ]
        self.open_port(443)
        run = self.ec2.run_instances(
            ImageId="ami-12345678",
            MinCount=3,
            MaxCount=3,
            SubnetId=self.subnet,
            SecurityGroupIds=[self.sg],
            TagSpecifications=[
                {
                    "ResourceType": "instance",
                    "Tags": [{"Key": "Name", "Value": "web"}, {"Key": "env", "Value": "prod"}],
                }
            ],
        )
        self.instances = [i["InstanceId"] for i in run["Instances"]]
        for bucket in self.buckets:
            self.s3.create_bucket(Bucket=bucket)
            self.tag_bucket(bucket, team="a")

    def open_port(self, port: int) -> None:
        self.ec2.authorize_security_group_ingress(
            GroupId=self.sg,
            IpPermissions=[
                {
                    "IpProtocol": "tcp",
                    "FromPort": port,
                    "ToPort": port,
                    "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
                }
            ],
        )

    def tag_bucket(self, bucket: str, team: str) -> None:
        self.s3.put_bucket_tagging(
            Bucket=bucket,
            Tagging={"TagSet": [{"Key": "team", "Value": team}, {"Key": "cost", "Value": "42"}]},
        )

    def create_instance(self) -> str:
        run = self.ec2.run_instances(
            ImageId="ami-12345678", MinCount=1, MaxCount=1, SubnetId=self.subnet
        )
        return str(run["Instances"][0]["InstanceId"])

    def terminate(self, instance_id: str) -> None:
        self.ec2.terminate_instances(InstanceIds=[instance_id])

    def instance_arn(self, instance_id: str) -> str:
        return f"arn:aws:ec2:us-east-1:{self.account}:instance/{instance_id}"

    def sg_arn(self) -> str:
        return f"arn:aws:ec2:us-east-1:{self.account}:security-group/{self.sg}"

    async def scan(self) -> tuple[list[ResourceSnapshot], list[ScanManifest]]:
        aws = AwsSettings(
            accounts=[AccountRole(role_arn=self.role_arn)],
            regions=["us-east-1"],
            endpoint_url=self.endpoint,
        )
        snapshots: list[ResourceSnapshot] = []
        manifests: list[ScanManifest] = []
        async for item in scan(aws, types=TYPES):
            if isinstance(item, ResourceSnapshot):
                snapshots.append(item)
            else:
                manifests.append(item)
        assert len(manifests) == 3 and all(m.can_delete for m in manifests)
        return snapshots, manifests


@dataclass
class Worker:
    """One Faust worker running the change stage, and a publisher feeding it."""

    broker: str
    config: StreamConfig
    app: Any = None
    stage: ChangeStage = field(init=False)
    sent_snapshots: int = 0
    sent_manifests: int = 0
    running: bool = False

    async def start(self) -> None:
        self.app = create_app(self.config)
        self.stage = bind(self.app, self.config)
        await self.app.start()
        self.running = True
        async with asyncio.timeout(60):
            while True:
                if self.app.consumer.assignment():
                    return
                await asyncio.sleep(0.1)

    async def stop(self) -> None:
        if self.running:
            self.running = False
            await self.app.stop()

    async def publish(
        self, snapshots: list[ResourceSnapshot], manifests: list[ScanManifest]
    ) -> None:
        publisher = KafkaPublisher({"bootstrap_servers": self.broker}, self.config.topic_prefix)
        await publisher.start()
        try:
            for snapshot in snapshots:
                await publisher.publish(snapshot)
            for manifest in manifests:
                await publisher.publish(manifest)
        finally:
            await publisher.stop()
        self.sent_snapshots += len(snapshots)
        self.sent_manifests += len(manifests)

    async def settle(self, timeout: float = 60) -> None:
        """Wait until everything published was detected, every request answered, all stored."""
        stage, stats = self.stage, self.stage.detector.stats

        def done() -> tuple[int, ...] | None:
            if (
                stats.snapshots >= self.sent_snapshots
                and stage.recorded_scans >= self.sent_manifests
                and stats.deletion_requests >= stage.deletion_requests_sent
                and stage.stored_changes >= stats.changes
            ):
                return (stats.snapshots, stats.changes, stage.deletion_requests_sent)
            return None

        async with asyncio.timeout(timeout):
            while True:
                first = done()
                if first is not None:
                    await asyncio.sleep(0.5)
                    if done() == first:
                        return
                await asyncio.sleep(0.1)

    async def store(self) -> SqliteStore:
        store = await self.stage.store.get()
        assert isinstance(store, SqliteStore)
        return store

    async def changes_since(self, since: datetime) -> list[ChangeEvent]:
        store = await self.store()
        return (await store.changes(ChangeQuery(since=since, limit=1000))).items


@dataclass
class Scenario:
    estate: Estate
    worker: Worker
    data_dir: Path
    first_scan: list[ResourceSnapshot]
    first_changes: list[ChangeEvent]
    between: datetime
    second_started: datetime
    second_changes: list[ChangeEvent]
    created_id: str
    terminated_id: str


async def _run(call: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(call, *args)


@pytest.fixture(scope="module")
async def scenario(
    broker: str, moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Scenario]:
    estate = Estate(moto_endpoint)
    await _run(estate.seed)
    data_dir = tmp_path_factory.mktemp("changes")
    suffix = estate.account
    worker = Worker(
        broker,
        StreamConfig(
            bootstrap=broker,
            data_dir=data_dir,
            app_id=f"test-changes-{suffix}",
            topic_prefix=f"c{suffix}",
            partitions=2,
        ),
    )
    await worker.start()
    try:
        first_scan, manifests = await estate.scan()
        await worker.publish(first_scan, manifests)
        await worker.settle()
        first_changes = await worker.changes_since(T0)
        between = datetime.now(UTC)
        await asyncio.sleep(0.01)

        created_id = await _run(estate.create_instance)
        terminated_id = estate.instances[0]
        await _run(estate.terminate, terminated_id)
        await _run(estate.open_port, 22)
        await _run(estate.tag_bucket, estate.buckets[0], "b")
        second_started = datetime.now(UTC)
        snapshots, manifests = await estate.scan()
        await worker.publish(snapshots, manifests)
        await worker.settle()
        yield Scenario(
            estate=estate,
            worker=worker,
            data_dir=data_dir,
            first_scan=first_scan,
            first_changes=first_changes,
            between=between,
            second_started=second_started,
            second_changes=await worker.changes_since(second_started),
            created_id=created_id,
            terminated_id=terminated_id,
        )
    finally:
        await worker.stop()


async def test_first_scan_creates_every_resource_once(scenario: Scenario) -> None:
    changes = scenario.first_changes
    assert sorted(c.key for c in changes) == sorted(s.key for s in scenario.first_scan)
    assert {c.change_type for c in changes} == {"created"}
    for change in changes:
        assert change.before_hash is None and change.prior_configuration is None
        assert apply({}, change) == change.configuration


async def test_second_scan_reports_exactly_the_four_changes(
    scenario: Scenario, broker: str
) -> None:
    estate = scenario.estate
    by_key = {c.key: c for c in scenario.second_changes}
    alpha = f"arn:aws:s3:::{estate.buckets[0]}"
    assert {k: c.change_type for k, c in by_key.items()} == {
        estate.instance_arn(scenario.created_id): "created",
        estate.instance_arn(scenario.terminated_id): "deleted",
        estate.sg_arn(): "modified",
        alpha: "modified",
    }
    for change in by_key.values():
        assert apply(change.prior_configuration, change) == (change.configuration or {})

    sg = by_key[estate.sg_arn()]
    assert [op.op for op in sg.patch] == ["add"]
    assert sg.patch[0].path.startswith("/IpPermissions/")
    assert sg.patch[0].value["FromPort"] == 22
    assert sg.patch[0].value["IpRanges"] == [{"CidrIp": "0.0.0.0/0"}]

    tagged = by_key[alpha]
    assert [(op.op, op.value) for op in tagged.patch] == [("replace", "b")]
    assert tagged.changed_paths == [tagged.patch[0].path]
    assert tagged.patch[0].path.startswith("/Tagging/") and tagged.patch[0].path.endswith("/Value")

    deleted = by_key[estate.instance_arn(scenario.terminated_id)]
    assert deleted.configuration is None and deleted.after_hash is None
    created_first = {c.key: c for c in scenario.first_changes}
    assert deleted.before_hash == created_first[deleted.key].after_hash
    assert sg.before_hash == created_first[sg.key].after_hash
    assert all(c.detected_at >= c.captured_at for c in by_key.values())

    # The changes topic carries exactly what the store holds, and nothing else.
    on_topic = await _read_changes(broker, scenario.worker.config.topic_prefix)
    assert {c.change_id for c in on_topic} == {
        c.change_id for c in scenario.first_changes + scenario.second_changes
    }


async def test_as_of_between_the_scans_returns_the_first_version(scenario: Scenario) -> None:
    store = await scenario.worker.store()
    estate = scenario.estate
    first = {c.key: c for c in scenario.first_changes}
    sg_then = await store.as_of(estate.sg_arn(), scenario.between)
    assert sg_then is not None and sg_then.config_hash == first[estate.sg_arn()].after_hash
    assert [p["FromPort"] for p in sg_then.configuration["IpPermissions"]] == [443]
    sg_now = await store.current(estate.sg_arn())
    assert sg_now is not None and sg_now.valid_from == sg_then.valid_to

    terminated = estate.instance_arn(scenario.terminated_id)
    assert await store.as_of(terminated, scenario.between) is not None
    assert await store.current(terminated) is None
    assert await store.as_of(estate.instance_arn(scenario.created_id), scenario.between) is None

    instances_then = await store.list_as_of(
        VersionQuery(
            at=scenario.between, resource_type="AWS::EC2::Instance", account_id=estate.account
        )
    )
    assert {v.resource_id for v in instances_then} == set(estate.instances)
    instances_now = await store.list_as_of(
        VersionQuery(resource_type="AWS::EC2::Instance", account_id=estate.account)
    )
    assert {v.resource_id for v in instances_now} == {
        *estate.instances[1:],
        scenario.created_id,
    }


async def test_snapshots_come_in_batches_and_offsets_are_committed(
    scenario: Scenario,
) -> None:
    worker = scenario.worker
    app, config = worker.app, worker.config
    assert isinstance(app.consumer, BatchingConsumer)
    snapshots = topic_name(Topic.SNAPSHOTS, config.topic_prefix)
    changes = topic_name(Topic.CHANGES, config.topic_prefix)
    queues = worker.stage.batch_queues
    # The snapshots, the changes the store sink reads, and the CloudTrail topic the
    # attribution join reads, come in batches.
    assert set(queues) == {snapshots, changes, topic_name(Topic.CLOUDTRAIL, config.topic_prefix)}
    assert queues[snapshots].delivered == worker.sent_snapshots
    assert queues[snapshots].dropped_acks == 0
    assert queues[changes].dropped_acks == 0
    # Faust commits what the batches acknowledged: a restarted worker resumes after them.
    await app.consumer.commit()  # False when the periodic commit already took everything
    reader = AIOKafkaConsumer(bootstrap_servers=worker.broker, group_id=config.app_id)
    await reader.start()
    try:
        committed = {
            topic: [
                await reader.committed(TopicPartition(topic, p)) or 0
                for p in {tp.partition for tp in app.consumer.assignment() if tp.topic == topic}
            ]
            for topic in (snapshots, changes)
        }
    finally:
        await reader.stop()
    assert sum(committed[snapshots]) == worker.sent_snapshots
    assert sum(committed[changes]) == worker.stage.stored_changes


async def test_a_batch_queue_merges_waiting_batches_of_one_generation_only() -> None:
    acked: list[int] = []
    consumer = SimpleNamespace(flow_active=True)
    app = SimpleNamespace(consumer=consumer, consumer_generation_id=2)
    queue = BatchQueue(app, "t")

    class Message:
        def __init__(self, offset: int) -> None:
            self.offset = offset

        def ack(self, by: Any) -> None:
            assert by is consumer
            acked.append(self.offset)

    def batch(offsets: range, generation: int) -> Batch:
        return Batch([Message(o) for o in offsets], generation)

    for b in (batch(range(0, 3), 1), batch(range(3, 5), 1), batch(range(5, 9), 2)):
        await queue.put(b)
    older, newer = await queue.get(limit=100), await queue.get(limit=100)
    assert [m.offset for m in older.messages] == [0, 1, 2, 3, 4]
    assert [m.offset for m in newer.messages] == [5, 6, 7, 8]
    # Fetched before the rebalance that made generation 2: not acknowledged, read again.
    queue.ack(older)
    queue.ack(newer)
    assert acked == [5, 6, 7, 8]
    assert (queue.delivered, queue.dropped_acks) == (4, 5)
    consumer.flow_active = False  # a rebalance has begun
    queue.ack(newer)
    assert acked == [5, 6, 7, 8] and queue.dropped_acks == 9


async def test_a_failed_scope_deletes_nothing_and_a_complete_one_does(
    scenario: Scenario,
) -> None:
    worker, estate = scenario.worker, scenario.estate
    store = await worker.store()
    before = await store.list_as_of(VersionQuery(account_id=estate.account))
    started = datetime.now(UTC)
    # The next scan sees nothing, and every scope failed or is incomplete.
    _, manifests = await estate.scan()
    failed = [
        m.model_copy(
            update={
                "keys": [],
                "status": status,
                "errors": [ScanError(code="AccessDenied", message="denied")] if errors else [],
            }
        )
        for m, (status, errors) in zip(
            sorted(manifests, key=lambda m: m.resource_type),
            [("failed", True), ("partial", False), ("complete", True)],
            strict=True,
        )
    ]
    assert not any(m.can_delete for m in failed)
    await worker.publish([], failed)
    await worker.settle()
    assert await worker.changes_since(started) == []
    assert await store.list_as_of(VersionQuery(account_id=estate.account)) == before
    assert len(await store.scans(account_id=estate.account, since=started)) == 3

    # Positive control: a bucket really deleted disappears from a complete scan.
    gone = estate.buckets[1]
    await _run(lambda: estate.s3.delete_bucket(Bucket=gone))
    estate.buckets.pop()
    snapshots, manifests = await estate.scan()
    await worker.publish(snapshots, manifests)
    await worker.settle()
    changes = await worker.changes_since(started)
    assert [(c.key, c.change_type) for c in changes] == [(f"arn:aws:s3:::{gone}", "deleted")]


async def test_restart_with_a_lost_broker_reports_nothing_spurious(
    scenario: Scenario, broker: str
) -> None:
    await scenario.worker.stop()
    estate = scenario.estate
    # Same data directory (the SQLite store), fresh topics and group: the broker lost it all.
    restarted = Worker(
        broker,
        StreamConfig(
            bootstrap=broker,
            data_dir=scenario.data_dir,
            app_id=f"test-changes-again-{estate.account}",
            topic_prefix=f"c2{estate.account}",
            partitions=2,
        ),
    )
    await restarted.start()
    try:
        started = datetime.now(UTC)
        snapshots, manifests = await estate.scan()
        await restarted.publish(snapshots, manifests)
        await restarted.settle()
        assert await restarted.changes_since(started) == []
        assert restarted.stage.detector.stats.changes == 0

        await _run(estate.tag_bucket, estate.buckets[0], "c")
        snapshots, manifests = await estate.scan()
        await restarted.publish(snapshots, manifests)
        await restarted.settle()
        changes = await restarted.changes_since(started)
        alpha = f"arn:aws:s3:::{estate.buckets[0]}"
        assert [(c.key, c.change_type) for c in changes] == [(alpha, "modified")]
        store = await restarted.store()
        history = await store.history(alpha)
        assert len(history) == 3
        assert changes[0].before_hash == history[1].config_hash
        assert [v.valid_to for v in history[:-1]] == [v.valid_from for v in history[1:]]
    finally:
        await restarted.stop()


async def _read_changes(broker: str, prefix: str) -> list[ChangeEvent]:
    consumer = AIOKafkaConsumer(
        topic_name(Topic.CHANGES, prefix),
        bootstrap_servers=broker,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    found: list[ChangeEvent] = []
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=1500)
            if not batch:
                return found
            for records in batch.values():
                found += [decode(ChangeEvent, r.value) for r in records]
    finally:
        await consumer.stop()
