"""Shared by the API tests: stores filled by the real pipeline, a real API server over them,
tokens of three scopes, and a small Server-Sent Events reader.

The pipeline, once per test session (:func:`pipeline_data`): three accounts in moto, seeded
with boto3; the real scan engine scans them (instances, security groups, buckets); the real
publisher sends snapshots and manifests to the real broker (Tansu); one Faust worker runs the
change-detection stage (``cloudinv.streams.changes``, writing the SQLite inventory store) and the
CloudTrail stage (``cloudinv.streams.activity``, writing the events store). Then the estate is
changed (an instance terminated, one created, a port opened, a bucket retagged) and scanned again.
CloudTrail events are the 142 real records of the shared fixture, normalized by
``cloudinv.producers.cloudtrail.normalize`` and published on the CloudTrail topic: all of them as
account A's, a third of them, a day later, as account B's.

One thing does not come from the pipeline: the change detector does not (yet) copy a
snapshot's CloudTrail attribution into its ChangeEvent, so the one attributed change (a
security group modified by a known principal) is built by the real ``ChangeDetector`` and
written with ``SqliteStore.put_changes``, then given its attribution.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import orjson
import pytest
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from cloudinv.api.app import create_app
from cloudinv.api.auth import generate_token
from cloudinv.api.state import Stores
from cloudinv.core.codec import encode
from cloudinv.core.models import Attribution, ChangeEvent, CloudTrailEvent, ResourceSnapshot
from cloudinv.core.settings import AccountRole, ApiToken, AwsSettings, Settings
from cloudinv.producers.cloudtrail.normalize import normalize_record
from cloudinv.producers.cloudtrail.publish import CloudTrailPublisher
from cloudinv.producers.engine import scan
from cloudinv.producers.publisher import KafkaPublisher
from cloudinv.sinks.events_store import EventsStore, events_store_path
from cloudinv.sinks.sqlite_store import SqliteStore
from cloudinv.streams import activity, changes
from cloudinv.streams.app import StreamConfig
from cloudinv.streams.app import create_app as create_stream_app
from cloudinv.streams.changes import ChangeDetector

FIXTURE = Path(__file__).resolve().parent / "data/cloudtrail/sample-cloudtrail-event.json"
FIXTURE_ACCOUNT = "111100000000"
TYPES = ["AWS::EC2::Instance", "AWS::EC2::SecurityGroup", "AWS::S3::Bucket"]
ATTRIBUTED_BY = "arn:aws:iam::{account}:user/alice"


# -- the estate -----------------------------------------------------------------------------------


class Account:
    """One moto account, changed with boto3 (on a thread)."""

    def __init__(self, endpoint: str, account: str) -> None:
        self.id = account
        self.role_arn = f"arn:aws:iam::{account}:role/cloudinv-reader"
        sts = boto3.client("sts", endpoint_url=endpoint, region_name="us-east-1")
        creds = sts.assume_role(RoleArn=self.role_arn, RoleSessionName="seed")["Credentials"]
        session = boto3.Session(
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
            region_name="us-east-1",
        )
        self.ec2 = session.client("ec2", endpoint_url=endpoint)
        self.s3 = session.client("s3", endpoint_url=endpoint)
        self.instances: list[str] = []
        self.sg = ""
        self.subnet = ""
        self.bucket = f"data-{account}"

    def seed(self, instances: int, env: str) -> None:
        if instances:
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
                MinCount=instances,
                MaxCount=instances,
                SubnetId=self.subnet,
                SecurityGroupIds=[self.sg],
                TagSpecifications=[
                    {
                        "ResourceType": "instance",
                        "Tags": [{"Key": "Name", "Value": "web"}, {"Key": "env", "Value": env}],
                    }
                ],
            )
            self.instances = [i["InstanceId"] for i in run["Instances"]]
        self.s3.create_bucket(Bucket=self.bucket)
        self.tag_bucket("blue")

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

    def tag_bucket(self, team: str) -> None:
        self.s3.put_bucket_tagging(
            Bucket=self.bucket, Tagging={"TagSet": [{"Key": "team", "Value": team}]}
        )

    def create_instance(self) -> str:
        run = self.ec2.run_instances(
            ImageId="ami-12345678", MinCount=1, MaxCount=1, SubnetId=self.subnet
        )
        return str(run["Instances"][0]["InstanceId"])

    def terminate(self, instance_id: str) -> None:
        self.ec2.terminate_instances(InstanceIds=[instance_id])

    def instance_key(self, instance_id: str) -> str:
        return f"arn:aws:ec2:us-east-1:{self.id}:instance/{instance_id}"

    def sg_key(self) -> str:
        return f"arn:aws:ec2:us-east-1:{self.id}:security-group/{self.sg}"

    def bucket_key(self) -> str:
        return f"arn:aws:s3:::{self.bucket}"


@dataclass
class PipelineData:
    """What the pipeline stored, and what the tests expect of it."""

    data_dir: Path
    a: Account
    b: Account
    c: Account
    first_keys: dict[str, set[str]]
    """Account -> keys after the first scan."""
    between: datetime
    """After the first scan was stored, before the estate changed."""
    second_started: datetime
    terminated: str
    created: str
    sg: str
    bucket: str
    attributed: ChangeEvent
    events: dict[str, list[CloudTrailEvent]] = field(default_factory=dict)

    @property
    def accounts(self) -> list[str]:
        return [self.a.id, self.b.id, self.c.id]


def fixture_events(
    account: str, *, every: int = 1, shift: timedelta = timedelta(0)
) -> list[CloudTrailEvent]:
    """The fixture's records as ``account``'s events (ids made unique to the account)."""
    text = FIXTURE.read_text().replace(FIXTURE_ACCOUNT, account)
    events = []
    for record in orjson.loads(text)["Records"][::every]:
        record["eventID"] = f"{record['eventID']}-{account}"
        moment = datetime.fromisoformat(record["eventTime"]) + shift
        record["eventTime"] = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
        events.append(normalize_record(record, source_file="fixture"))
    return events


async def _settle(stage: changes.ChangeStage, sent_snapshots: int, sent_manifests: int) -> None:
    """Wait until every snapshot was compared, every deletion decided, every change stored."""
    stats = stage.detector.stats

    def done() -> tuple[int, ...] | None:
        if (
            stats.snapshots >= sent_snapshots
            and stage.recorded_scans >= sent_manifests
            and stats.deletion_requests >= stage.deletion_requests_sent
            and stage.stored_changes >= stats.changes
        ):
            return (stats.snapshots, stats.changes, stage.deletion_requests_sent)
        return None

    async with asyncio.timeout(90):
        while True:
            first = done()
            if first is not None:
                await asyncio.sleep(0.5)
                if done() == first:
                    return
            await asyncio.sleep(0.1)


async def _scan_and_publish(
    broker: str, prefix: str, endpoint: str, accounts: list[Account]
) -> tuple[list[ResourceSnapshot], int]:
    aws = AwsSettings(
        accounts=[AccountRole(role_arn=a.role_arn) for a in accounts],
        regions=["us-east-1"],
        endpoint_url=endpoint,
    )
    snapshots: list[ResourceSnapshot] = []
    publisher = KafkaPublisher({"bootstrap_servers": broker}, prefix)
    await publisher.start()
    manifests = 0
    try:
        async for item in scan(aws, types=TYPES):
            await publisher.publish(item)
            if isinstance(item, ResourceSnapshot):
                snapshots.append(item)
            else:
                assert item.can_delete, item
                manifests += 1
    finally:
        await publisher.stop()
    return snapshots, manifests


async def _run(call: Any, *args: Any) -> Any:
    return await asyncio.to_thread(call, *args)


async def build_pipeline_data(broker: str, endpoint: str, data_dir: Path) -> PipelineData:
    accounts = [
        await _run(Account, endpoint, f"5{random.randrange(10**10, 10**11)}") for _ in range(3)
    ]
    a, b, c = accounts
    await _run(a.seed, 3, "prod")
    await _run(b.seed, 2, "dev")
    await _run(c.seed, 0, "none")
    prefix = f"api{a.id}"
    config = StreamConfig(
        bootstrap=broker,
        data_dir=data_dir,
        app_id=f"test-api-{a.id}",
        topic_prefix=prefix,
        partitions=2,
    )
    app = create_stream_app(config)
    stage = changes.bind(app, config)
    cloudtrail = activity.bind(app, config, within_s=0.1)
    await app.start()
    try:
        async with asyncio.timeout(60):
            while True:
                if app.consumer.assignment():
                    break
                await asyncio.sleep(0.1)
        first, manifests = await _scan_and_publish(broker, prefix, endpoint, accounts)
        await _settle(stage, len(first), manifests)
        first_keys: dict[str, set[str]] = {}
        for snapshot in first:
            first_keys.setdefault(snapshot.account_id, set()).add(snapshot.key)
        between = datetime.now(UTC)
        await asyncio.sleep(0.01)

        terminated = a.instances[0]
        await _run(a.terminate, terminated)
        await _run(a.open_port, 22)
        await _run(a.tag_bucket, "green")
        created = await _run(b.create_instance)
        second_started = datetime.now(UTC)
        second, manifests2 = await _scan_and_publish(broker, prefix, endpoint, accounts)
        await _settle(stage, len(first) + len(second), manifests + manifests2)

        events = {
            a.id: fixture_events(a.id),
            b.id: fixture_events(b.id, every=3, shift=timedelta(days=1)),
        }
        async with CloudTrailPublisher({"bootstrap_servers": broker}, prefix) as publisher:
            for batch in events.values():
                await publisher.publish([(e.principal.label.encode(), encode(e)) for e in batch])
        total = sum(len(v) for v in events.values())
        async with asyncio.timeout(60):
            while True:
                if cloudtrail.stats.inserted >= total:
                    break
                await asyncio.sleep(0.1)
    finally:
        await app.stop()

    attributed = await _attributed_change(data_dir, a)
    return PipelineData(
        data_dir=data_dir,
        a=a,
        b=b,
        c=c,
        first_keys=first_keys,
        between=between,
        second_started=second_started,
        terminated=a.instance_key(terminated),
        created=b.instance_key(created),
        sg=a.sg_key(),
        bucket=a.bucket_key(),
        attributed=attributed,
        events=events,
    )


async def _attributed_change(data_dir: Path, account: Account) -> ChangeEvent:
    """A change of account's security group by a known principal (see the module docstring)."""
    async with SqliteStore.in_data_dir(data_dir) as store:
        current = await store.current(account.sg_key())
        assert current is not None
        detector = ChangeDetector()
        detector.warm([current.key], {current.key: current})
        configuration = {**current.configuration, "Description": "web, reviewed"}
        snapshot = ResourceSnapshot.build(
            account_id=current.account_id,
            region=current.region,
            resource_type=current.resource_type,
            resource_id=current.resource_id,
            arn=current.key,
            name=current.name,
            configuration=configuration,
            scan_id="attributed",
        )
        change = detector.observe(snapshot)
        assert change is not None and change.change_type == "modified"
        attributed = change.model_copy(
            update={
                "attribution": Attribution(
                    event_id="evt-attributed",
                    event_name="UpdateSecurityGroupRuleDescriptionsIngress",
                    event_time=snapshot.captured_at,
                    principal_arn=ATTRIBUTED_BY.format(account=account.id),
                    principal_name="alice",
                )
            }
        )
        assert await store.put_changes([attributed]) == 1
        return attributed


_DATA: PipelineData | None = None
_LOCK: asyncio.Lock | None = None


async def pipeline_data(
    broker: str, moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> PipelineData:
    """The stores the pipeline filled: built once per test session."""
    global _DATA, _LOCK
    if _LOCK is None:
        _LOCK = asyncio.Lock()
    async with _LOCK:
        if _DATA is None:
            data_dir = tmp_path_factory.mktemp("api-pipeline")
            _DATA = await build_pipeline_data(broker, moto_endpoint, data_dir)
    return _DATA


# -- the API server -----------------------------------------------------------------------------


@dataclass
class Api:
    base: str
    app: Any
    inventory: Any  # SqliteStore unless running_api was given another store
    events: Any  # EventsStore unless running_api was given another store
    tokens: dict[str, str]
    """Scope name -> bearer token: ``admin`` (every account), ``a`` (account A only) and
    ``ac`` (accounts A and C)."""

    def auth(self, scope: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[scope]}"}

    async def get(
        self, path: str, scope: str = "admin", **kwargs: Any
    ) -> tuple[int, Any, aiohttp.ClientResponse]:
        headers = {**self.auth(scope), **kwargs.pop("headers", {})}
        async with (
            aiohttp.ClientSession() as http,
            http.get(self.base + path, headers=headers, **kwargs) as resp,
        ):
            if resp.content_type.endswith("json"):
                return resp.status, orjson.loads(await resp.read()), resp
            return resp.status, await resp.text(), resp


@asynccontextmanager
async def running_api(
    data_dir: Path,
    scopes: dict[str, list[str] | None],
    inventory: Any | None = None,
    events: Any | None = None,
) -> AsyncIterator[Api]:
    """A real server on 127.0.0.1 over the stores in ``data_dir``; a token per scope.

    ``inventory``, ``events``: open stores to serve instead of the SQLite ones of
    ``data_dir`` (the caller opens and closes them)."""
    tokens: dict[str, str] = {}
    configured = []
    for name, accounts in scopes.items():
        token, digest = generate_token()
        tokens[name] = token
        configured.append(ApiToken(sha256=SecretStr(digest), name=name, accounts=accounts))
    settings = Settings(api={"tokens": configured})
    owned = inventory is None
    if inventory is None:
        inventory = SqliteStore.in_data_dir(data_dir)
        await inventory.open()
    owned_events = events is None
    if events is None:
        events = EventsStore(events_store_path(data_dir), readonly=True)
        await events.open()
    app = create_app(settings, {"mode": "test"}, stores=Stores(inventory=inventory, events=events))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield Api(str(server.make_url("")).rstrip("/"), app, inventory, events, tokens)
    finally:
        await server.close()
        if owned_events:
            await events.close()
        if owned:
            await inventory.close()


# -- Server-Sent Events ------------------------------------------------------------------------


@dataclass
class SseEvent:
    id: str | None
    event: str
    data: str


async def read_sse(
    resp: aiohttp.ClientResponse,
    *,
    until: Any,
    timeout: float = 10.0,
    partial: bool = False,
) -> list[SseEvent]:
    """Read events until ``until(events)`` is true or the stream ends; at ``timeout``, fail,
    or with ``partial`` return what was read."""
    events: list[SseEvent] = []
    fields: dict[str, list[str]] = {}
    try:
        async with asyncio.timeout(timeout):
            while not until(events):
                line_bytes = await resp.content.readline()
                if not line_bytes:
                    break
                line = line_bytes.decode().rstrip("\n")
                if line.startswith(":"):
                    continue
                if line == "":
                    if "data" in fields:
                        events.append(
                            SseEvent(
                                id=(fields.get("id") or [None])[-1],
                                event=(fields.get("event") or ["message"])[-1],
                                data="\n".join(fields["data"]),
                            )
                        )
                    fields = {}
                    continue
                name, _, value = line.partition(":")
                fields.setdefault(name, []).append(value.removeprefix(" "))
    except TimeoutError:
        if not partial:
            raise
    return events
