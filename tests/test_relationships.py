"""Relationships on moto, end to end through the real scan engine, change detector and stores.

An estate is seeded with boto3 (an instance with its subnet, VPC, security groups, an attached
volume, its network interface and instance profile; a load balancer with a target group
holding the instance; a Lambda function with its role), scanned, detected and stored. Then a
volume is detached and the instance's security groups are changed, and the estate scanned
again: the edges are found in both directions, move with the changes that caused them (which
carry them), and answer as of the time between the two scans. The same test runs on SQLite
and on DynamoDB (``tests/test_dynamodb_relationships.py`` imports it).
"""

from __future__ import annotations

import asyncio
import io
import json
import random
import sqlite3
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cloudinv.catalog.registry import default_registry
from cloudinv.catalog.relationships import edges_of, target_key
from cloudinv.core.models import ChangeEvent, Edge, ResourceSnapshot
from cloudinv.core.settings import AccountRole, AwsSettings
from cloudinv.producers.engine import scan
from cloudinv.sinks.sqlite_store import SqliteStore
from cloudinv.sinks.store import InventoryStore, RelatedResource, RelationshipReads
from cloudinv.sinks.versioning import (
    EdgeBook,
    EdgeRow,
    Head,
    StepKind,
    advance,
    may_keep_edges,
    plan,
)
from cloudinv.streams.changes import ChangeDetector
from tests.moto_helpers import account_session

REGION = "eu-west-3"
TYPES = (
    "AWS::EC2::Instance",
    "AWS::EC2::SecurityGroup",
    "AWS::EC2::Volume",
    "AWS::EC2::VPC",
    "AWS::EC2::Subnet",
    "AWS::EC2::NetworkInterface",
    "AWS::ElasticLoadBalancingV2::LoadBalancer",
    "AWS::ElasticLoadBalancingV2::TargetGroup",
    "AWS::Lambda::Function",
    "AWS::IAM::Role",
    "AWS::IAM::InstanceProfile",
)
REGISTRY = default_registry()


@dataclass
class Estate:
    account: str
    vpc: str
    subnets: list[str]
    sg_a: str
    sg_b: str
    instance: str
    volume: str
    eni: str
    profile_arn: str
    role_arn: str
    lb_arn: str
    tg_arn: str
    function_arn: str

    def arn(self, kind: str, ident: str) -> str:
        return f"arn:aws:ec2:{REGION}:{self.account}:{kind}/{ident}"


def _assume(service: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": f"{service}.amazonaws.com"},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
    )


def seed(endpoint: str, account: str) -> Estate:
    session = account_session(endpoint, account, REGION)
    ec2 = session.client("ec2", endpoint_url=endpoint)
    iam = session.client("iam", endpoint_url=endpoint)
    vpc = ec2.create_vpc(CidrBlock="10.7.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.7.{i}.0/24", AvailabilityZone=f"{REGION}{z}")[
            "Subnet"
        ]["SubnetId"]
        for i, z in ((1, "a"), (2, "b"))
    ]
    sg_a = ec2.create_security_group(GroupName="web-a", Description="a", VpcId=vpc)["GroupId"]
    sg_b = ec2.create_security_group(GroupName="web-b", Description="b", VpcId=vpc)["GroupId"]
    iam.create_role(RoleName="web", AssumeRolePolicyDocument=_assume("ec2"))
    profile = iam.create_instance_profile(InstanceProfileName="web")["InstanceProfile"]
    iam.add_role_to_instance_profile(InstanceProfileName="web", RoleName="web")
    instance = ec2.run_instances(
        ImageId="ami-12345678",
        MinCount=1,
        MaxCount=1,
        SubnetId=subnets[0],
        SecurityGroupIds=[sg_a],
        IamInstanceProfile={"Arn": profile["Arn"]},
    )["Instances"][0]
    volume = ec2.create_volume(Size=8, AvailabilityZone=f"{REGION}a")["VolumeId"]
    ec2.attach_volume(VolumeId=volume, InstanceId=instance["InstanceId"], Device="/dev/sdf")

    elbv2 = session.client("elbv2", endpoint_url=endpoint)
    lb = elbv2.create_load_balancer(Name="web", Subnets=subnets, SecurityGroups=[sg_a])[
        "LoadBalancers"
    ][0]["LoadBalancerArn"]
    tg = elbv2.create_target_group(
        Name="web", Protocol="HTTP", Port=80, VpcId=vpc, TargetType="instance"
    )["TargetGroups"][0]["TargetGroupArn"]
    elbv2.register_targets(TargetGroupArn=tg, Targets=[{"Id": instance["InstanceId"]}])
    elbv2.create_listener(
        LoadBalancerArn=lb,
        Protocol="HTTP",
        Port=80,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg}],
    )

    role = iam.create_role(RoleName="fn", AssumeRolePolicyDocument=_assume("lambda"))["Role"]
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("index.py", "def handler(event, context):\n    return 1\n")
    function = session.client("lambda", endpoint_url=endpoint).create_function(
        FunctionName="fn",
        Runtime="python3.11",
        Role=role["Arn"],
        Handler="index.handler",
        Code={"ZipFile": code.getvalue()},
    )["FunctionArn"]
    return Estate(
        account=account,
        vpc=vpc,
        subnets=subnets,
        sg_a=sg_a,
        sg_b=sg_b,
        instance=instance["InstanceId"],
        volume=volume,
        eni=instance["NetworkInterfaces"][0]["NetworkInterfaceId"],
        profile_arn=profile["Arn"],
        role_arn=role["Arn"],
        lb_arn=lb,
        tg_arn=tg,
        function_arn=function,
    )


def rewire(endpoint: str, estate: Estate) -> None:
    """Detach the volume and move the instance from security group a to b."""
    ec2 = account_session(endpoint, estate.account, REGION).client("ec2", endpoint_url=endpoint)
    ec2.detach_volume(VolumeId=estate.volume, InstanceId=estate.instance)
    ec2.modify_instance_attribute(InstanceId=estate.instance, Groups=[estate.sg_b])


async def scan_and_store(
    endpoint: str, account: str, detector: ChangeDetector, store: InventoryStore
) -> list[ChangeEvent]:
    aws = AwsSettings(
        accounts=[AccountRole(role_arn=f"arn:aws:iam::{account}:role/cloudinv-reader")],
        regions=[REGION],
        endpoint_url=endpoint,
    )
    snapshots: list[ResourceSnapshot] = []
    async for item in scan(aws, types=TYPES):
        if isinstance(item, ResourceSnapshot):
            snapshots.append(item)
        else:
            assert item.status == "complete", (item.resource_type, item.errors)
    await detector_warm(detector, store, snapshots)
    changes = [c for c in map(detector.observe, snapshots) if c is not None]
    await store.put_changes(changes)
    return changes


async def detector_warm(
    detector: ChangeDetector, store: InventoryStore, snapshots: list[ResourceSnapshot]
) -> None:
    missing = detector.missing(s.key for s in snapshots)
    detector.warm(missing, await store.latest(missing))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[InventoryStore]:
    async with SqliteStore.in_data_dir(tmp_path) as s:
        yield s


def view(items: list[RelatedResource]) -> set[tuple[str, str, str, bool]]:
    return {(r.direction, r.relationship, r.key, r.exists) for r in items}


async def test_edges_move_with_the_changes_that_cause_them(
    moto_endpoint: str, store: InventoryStore
) -> None:
    assert isinstance(store, RelationshipReads)
    account = f"6{random.randrange(10**10, 10**11)}"
    estate = await asyncio.to_thread(seed, moto_endpoint, account)
    detector = ChangeDetector()
    await scan_and_store(moto_endpoint, account, detector, store)
    between = datetime.now(UTC)
    await asyncio.to_thread(rewire, moto_endpoint, estate)
    changes = await scan_and_store(moto_endpoint, account, detector, store)

    instance = estate.arn("instance", estate.instance)
    volume = estate.arn("volume", estate.volume)
    subnet = estate.arn("subnet", estate.subnets[0])
    sg_a, sg_b = (
        estate.arn("security-group", estate.sg_a),
        estate.arn("security-group", estate.sg_b),
    )
    vpc, eni = estate.arn("vpc", estate.vpc), estate.arn("network-interface", estate.eni)

    # The changes that moved the edges carry them.
    by_key = {c.key: c for c in changes}
    moved = by_key[instance]
    assert (
        Edge(
            relationship="is associated with",
            target_key=sg_b,
            target_type="AWS::EC2::SecurityGroup",
        )
        in moved.relationships_added
    )
    removed = {(e.relationship, e.target_key) for e in moved.relationships_removed}
    assert {("is associated with", sg_a), ("is attached to", volume)} <= removed
    assert [(e.relationship, e.target_key) for e in by_key[volume].relationships_removed] == [
        ("is attached to", instance)
    ]

    now = await store.related(instance, direction="out")
    assert {
        ("out", "is contained in", subnet, True),
        ("out", "is contained in", vpc, True),
        ("out", "is associated with", sg_b, True),
        ("out", "contains", eni, True),
        ("out", "is associated with", estate.profile_arn, True),
    } <= view(now)
    assert not {r.key for r in now} & {sg_a, volume}
    earlier = await store.related(instance, at=between, direction="out")
    assert {
        ("out", "is associated with", sg_a, True),
        ("out", "is attached to", volume, True),
    } <= view(earlier)
    assert sg_b not in {r.key for r in earlier}

    # The other direction: what names the subnet, the groups, the volume.
    assert {("in", "contains", instance, True), ("in", "contains", eni, True)} <= view(
        await store.related(subnet, direction="in")
    )
    assert ("in", "is associated with", instance, True) in view(await store.related(sg_b))
    assert instance not in {r.key for r in await store.related(sg_a, direction="in")}
    assert ("in", "is associated with", instance, True) in view(
        await store.related(sg_a, at=between, direction="in")
    )
    assert ("in", "has attached", instance, True) in view(
        await store.related(volume, at=between, direction="in")
    )
    assert await store.related(volume, direction="in") == []

    # Filters: by relationship (as read from the key asked about) and by type.
    only_groups = await store.related(instance, target_type="AWS::EC2::SecurityGroup")
    assert {r.key for r in only_groups} == {sg_b}
    contained = await store.related(instance, relationship="is contained in")
    assert {r.key for r in contained} == {subnet, vpc}
    assert all(r.account_id == account and r.region == REGION for r in contained)

    # The load balancer, its target group and the instance.
    tg = await store.related(estate.tg_arn, direction="out")
    assert {
        ("out", "is associated with", estate.lb_arn, True),
        ("out", "is associated with", instance, True),
        ("out", "is contained in", vpc, True),
    } <= view(tg)
    assert ("in", "is associated with", estate.tg_arn, True) in view(
        await store.related(estate.lb_arn, direction="in")
    )
    assert ("in", "is associated with", estate.tg_arn, True) in view(
        await store.related(instance, direction="in")
    )
    lb = await store.related(estate.lb_arn, direction="out")
    assert {
        ("out", "is contained in", estate.arn("subnet", s), True) for s in estate.subnets
    } <= view(lb)

    # The Lambda function and its role, both ways; the role is global.
    assert ("out", "uses", estate.role_arn, True) in view(await store.related(estate.function_arn))
    used_by = await store.related(estate.role_arn, direction="in")
    assert [(r.relationship, r.key, r.type) for r in used_by] == [
        ("is used by", estate.function_arn, "AWS::Lambda::Function")
    ]

    # Two hops from the security group b: the instance, then its subnet, VPC, ENI...
    graph = await store.neighbourhood(sg_b, hops=2, limit=100)
    keys = {n.key: n.hops for n in graph.nodes}
    assert keys[sg_b] == 0 and keys[instance] == 1 and keys[subnet] == 2
    assert (instance, "is associated with", sg_b) in {
        (e.source, e.relationship, e.target) for e in graph.edges
    }
    assert not graph.truncated
    small = await store.neighbourhood(sg_b, hops=2, limit=2)
    assert small.truncated and len(small.nodes) == 2


async def test_deleting_a_resource_closes_its_edges_and_leaves_others_pointing(
    store: InventoryStore,
) -> None:
    """A deleted instance's edges close; a volume still naming a deleted instance keeps its
    edge, shown with ``exists`` False."""
    assert isinstance(store, RelationshipReads)
    account = "123456789012"
    detector = ChangeDetector()
    instance = f"arn:aws:ec2:{REGION}:{account}:instance/i-1"
    volume = f"arn:aws:ec2:{REGION}:{account}:volume/vol-1"

    def snapshot(rtype: str, rid: str, arn: str, at: datetime, **config: Any) -> ResourceSnapshot:
        return ResourceSnapshot.build(
            account_id=account,
            region=REGION,
            resource_type=rtype,
            resource_id=rid,
            arn=arn,
            configuration=config,
            scan_id="s",
            captured_at=at,
        )

    t1 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    t2 = datetime(2026, 11, 1, 13, 0, tzinfo=UTC)
    first = [
        snapshot("AWS::EC2::Instance", "i-1", instance, t1, InstanceId="i-1", SubnetId="subnet-1"),
        snapshot(
            "AWS::EC2::Volume",
            "vol-1",
            volume,
            t1,
            VolumeId="vol-1",
            Attachments=[{"InstanceId": "i-1"}],
        ),
    ]
    await store.put_changes([c for c in map(detector.observe, first) if c is not None])
    gone = snapshot(
        "AWS::EC2::Instance", "i-1", instance, t2, InstanceId="i-1", State={"Name": "terminated"}
    )
    deletion = detector.observe(gone)
    assert deletion is not None and deletion.change_type == "deleted"
    assert [e.target_key for e in deletion.relationships_removed] == [
        f"arn:aws:ec2:{REGION}:{account}:subnet/subnet-1"
    ]
    await store.put_changes([deletion])
    assert await store.related(instance, direction="out") == []
    pointing = await store.related(instance, direction="in")
    assert view(pointing) == {("in", "has attached", volume, True)}
    from_volume = await store.related(volume, direction="out")
    assert view(from_volume) == {("out", "is attached to", instance, False)}
    assert from_volume[0].type == "AWS::EC2::Instance"
    assert (from_volume[0].account_id, from_volume[0].region) == (account, REGION)
    was = await store.related(volume, at=t1, direction="out")
    assert view(was) == {("out", "is attached to", instance, True)}
    # Replaying the whole history changes nothing.
    await store.put_changes([c for c in map(ChangeDetector().observe, first) if c is not None])
    assert view(await store.related(volume, direction="out")) == {
        ("out", "is attached to", instance, False)
    }


def test_ids_names_and_arns_resolve_to_the_keys_scans_give() -> None:
    account, partition = "123456789012", "aws"
    instance = REGISTRY.get("AWS::EC2::Instance")
    edges = edges_of(
        instance,
        f"arn:aws:ec2:{REGION}:{account}:instance/i-1",
        account,
        REGION,
        partition,
        {
            "SubnetId": "subnet-1",
            "SecurityGroups": [{"GroupId": "sg-1"}, {"GroupId": "sg-2"}],
            "KeyName": "deploy",
            "IamInstanceProfile": {"Arn": f"arn:aws:iam::{account}:instance-profile/web"},
        },
    )
    assert {(e.relationship, e.target_key) for e in edges} == {
        ("is contained in", f"arn:aws:ec2:{REGION}:{account}:subnet/subnet-1"),
        ("is associated with", f"arn:aws:ec2:{REGION}:{account}:security-group/sg-1"),
        ("is associated with", f"arn:aws:ec2:{REGION}:{account}:security-group/sg-2"),
        ("uses", f"arn:aws:ec2:{REGION}:{account}:key-pair/deploy"),
        ("is associated with", f"arn:aws:iam::{account}:instance-profile/web"),
    }
    # A global target is built without a region; a value that is not an ARN where an ARN is
    # declared names nothing; a global resource cannot name a regional one by id.
    profile = REGISTRY.get("AWS::IAM::InstanceProfile")
    assert (
        target_key(profile, "web", "name", account_id=account, region=REGION, partition="aws")
        == f"arn:aws:iam::{account}:instance-profile/web"
    )
    role = REGISTRY.get("AWS::IAM::Role")
    assert target_key(role, "fn", "arn", account_id=account, region=REGION, partition="aws") is None
    subnet = REGISTRY.get("AWS::EC2::Subnet")
    assert (
        target_key(subnet, "subnet-1", "id", account_id=account, region="global", partition="aws")
        is None
    )
    # A target group's targets are instances only when its target type says so.
    group = REGISTRY.get("AWS::ElasticLoadBalancingV2::TargetGroup")
    ip_targets = {"TargetType": "ip", "Targets": [{"Target": {"Id": "10.0.0.1"}}]}
    assert edges_of(group, "arn:tg", account, REGION, partition, ip_targets) == frozenset()


def test_changes_stored_before_relationships_still_parse() -> None:
    old = {
        "change_id": "c1",
        "key": f"arn:aws:ec2:{REGION}:123456789012:instance/i-1",
        "resource_type": "AWS::EC2::Instance",
        "resource_id": "i-1",
        "account_id": "123456789012",
        "region": REGION,
        "change_type": "created",
        "configuration": {"InstanceId": "i-1"},
        "after_hash": "0" * 64,
        "captured_at": "2026-11-01T12:00:00Z",
        "detected_at": "2026-11-01T12:00:01Z",
    }
    change = ChangeEvent.model_validate_json(json.dumps(old))
    assert change.relationships_added == [] and change.relationships_removed == []


async def test_a_store_of_schema_2_gets_the_edges_of_its_versions(tmp_path: Path) -> None:
    """Versions stored before relationships existed: opening the file derives their edges,
    with their history (a group swapped, then the instance deleted)."""
    account = "123456789012"
    instance = f"arn:aws:ec2:{REGION}:{account}:instance/i-1"
    sg = f"arn:aws:ec2:{REGION}:{account}:security-group/"
    subnet = f"arn:aws:ec2:{REGION}:{account}:subnet/subnet-1"
    t = [datetime(2026, 11, 1, h, 0, tzinfo=UTC) for h in (10, 11, 12)]
    detector = ChangeDetector()

    def snapshot(at: datetime, **config: Any) -> ResourceSnapshot:
        return ResourceSnapshot.build(
            account_id=account,
            region=REGION,
            resource_type="AWS::EC2::Instance",
            resource_id="i-1",
            arn=instance,
            configuration={"InstanceId": "i-1", **config},
            scan_id="s",
            captured_at=at,
        )

    seen = [
        snapshot(t[0], SubnetId="subnet-1", SecurityGroups=[{"GroupId": "sg-a"}]),
        snapshot(t[1], SubnetId="subnet-1", SecurityGroups=[{"GroupId": "sg-b"}]),
        snapshot(t[2], State={"Name": "terminated"}),
    ]
    async with SqliteStore.in_data_dir(tmp_path) as store:
        for s in seen:
            change = detector.observe(s)
            assert change is not None
            await store.put_changes([change])
        path = store.path
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM relationships")
        conn.execute("PRAGMA user_version = 2")
    async with SqliteStore.in_data_dir(tmp_path) as store:

        def keys(items: list[RelatedResource]) -> set[str]:
            return {r.key for r in items}

        mid = t[0] + timedelta(minutes=30)
        assert keys(await store.related(instance, at=mid)) == {subnet, sg + "sg-a"}
        later = t[1] + timedelta(minutes=30)
        assert keys(await store.related(instance, at=later)) == {subnet, sg + "sg-b"}
        assert await store.related(instance) == []
        with sqlite3.connect(path) as conn:
            rows = conn.execute(
                "SELECT target_key, valid_from, valid_to FROM relationships ORDER BY 1"
            ).fetchall()
        # The subnet edge runs across both versions as one row.
        assert len(rows) == 3


def _edge_rows(
    changes: list[ChangeEvent],
    stored: list[EdgeRow] | None = None,
    head: Head | None = None,
    loads: list[str] | None = None,
) -> list[tuple[str, str, int, int | None, str]]:
    """Every edge row a store writes for ``changes`` applied in order (as both stores plan
    them), as (relationship, target, valid_from, valid_to, opening change). ``loads``: the
    stored rows are left unread (as the SQLite store leaves those of keys whose changes
    :func:`may_keep_edges`), and the keys read on demand are appended to it."""
    if loads is None:
        book = EdgeBook(stored or [])
    else:

        def load(key: str) -> list[EdgeRow]:
            loads.append(key)
            return [row for row in stored or [] if row.source_key == key]

        book = EdgeBook(unloaded={row.source_key for row in stored or []}, load=load)
    rows: dict[int, EdgeRow] = {}
    for change in changes:
        t = int(change.captured_at.timestamp() * 1_000_000)
        step = plan(change, t, head)
        if step.kind is not StepKind.APPLY:
            continue
        head = advance(change, t, step)
        done = book.apply(change, t, step)
        for row in [*done.opened, *done.closed]:
            rows[id(row)] = row
    return sorted(
        (r.relationship, r.target_key, r.valid_from, r.valid_to, r.change_id) for r in rows.values()
    )


def test_edges_are_read_again_only_when_a_change_may_move_them() -> None:
    """A change whose patch touches no field the type's relationships read keeps the open
    edges as they are (no search of its configuration); the rows written are exactly those
    of reading every configuration's edges, whatever the changes touch."""
    account = "123456789012"
    instance = f"arn:aws:ec2:{REGION}:{account}:instance/i-1"
    detector = ChangeDetector()
    configs: list[dict[str, Any]] = [
        {"SubnetId": "subnet-1", "SecurityGroups": [{"GroupId": "sg-1"}], "InstanceType": "a"},
        {"SubnetId": "subnet-1", "SecurityGroups": [{"GroupId": "sg-1"}], "InstanceType": "b"},
        {"SubnetId": "subnet-1", "SecurityGroups": [{"GroupId": "sg-2"}], "InstanceType": "b"},
        {"SubnetId": "subnet-2", "SecurityGroups": [{"GroupId": "sg-2"}], "InstanceType": "c"},
        {"SubnetId": "subnet-2", "SecurityGroups": [{"GroupId": "sg-2"}], "InstanceType": "d"},
    ]
    changes = []
    for hour, config in enumerate(configs):
        snap = ResourceSnapshot.build(
            account_id=account,
            region=REGION,
            resource_type="AWS::EC2::Instance",
            resource_id="i-1",
            arn=instance,
            configuration={"InstanceId": "i-1", **config},
            scan_id="s",
            captured_at=datetime(2026, 11, 1, hour, tzinfo=UTC),
        )
        change = detector.observe(snap)
        assert change is not None
        changes.append(change)
    # Without changed paths nothing is known about a change: every one is read in full.
    read_in_full = [c.model_copy(update={"changed_paths": []}) for c in changes]
    assert _edge_rows(changes) == _edge_rows(read_in_full)
    sg = f"arn:aws:ec2:{REGION}:{account}:security-group/"
    subnet = f"arn:aws:ec2:{REGION}:{account}:subnet/"
    hour = [int(datetime(2026, 11, 1, h, tzinfo=UTC).timestamp() * 1e6) for h in range(5)]
    ids = [c.change_id for c in changes]
    assert _edge_rows(changes) == sorted(
        [
            ("is associated with", sg + "sg-1", hour[0], hour[2], ids[0]),
            ("is associated with", sg + "sg-2", hour[2], None, ids[2]),
            ("is contained in", subnet + "subnet-1", hour[0], hour[3], ids[0]),
            ("is contained in", subnet + "subnet-2", hour[3], None, ids[3]),
        ]
    )


def test_a_resource_stored_without_edges_gets_them_at_its_next_change() -> None:
    """A version stored before its type declared relationships has no open edges: its next
    change, even one touching no relationship field, gives it the edges of its
    configuration (DynamoDB derives them so). A change whose patch is relative to another
    version than the open one is read in full too."""
    account = "123456789012"
    instance = f"arn:aws:ec2:{REGION}:{account}:instance/i-1"
    detector = ChangeDetector()
    snaps = [
        ResourceSnapshot.build(
            account_id=account,
            region=REGION,
            resource_type="AWS::EC2::Instance",
            resource_id="i-1",
            arn=instance,
            configuration={"InstanceId": "i-1", "SubnetId": "subnet-1", "InstanceType": kind},
            scan_id="s",
            captured_at=datetime(2026, 11, 1, hour, tzinfo=UTC),
        )
        for hour, kind in enumerate("abc")
    ]
    first, second, third = (detector.observe(s) for s in snaps)
    assert first is not None and second is not None and third is not None
    assert second.changed_paths == ["/InstanceType"]
    t0 = int(first.captured_at.timestamp() * 1e6)
    t1 = int(second.captured_at.timestamp() * 1e6)
    subnet = f"arn:aws:ec2:{REGION}:{account}:subnet/subnet-1"
    stored_head = Head(first.change_id, first.after_hash or "", t0, None)
    assert _edge_rows([second], head=stored_head) == [
        ("is contained in", subnet, t1, None, second.change_id)
    ]
    # Open edges, but the open version is not the one the third change's patch starts from
    # (the second was never stored): its edges are read from its configuration.
    t2 = int(third.captured_at.timestamp() * 1e6)
    stale = EdgeRow(instance, "AWS::EC2::Instance", "is contained in", "arn:other", "X", t0,
                    None, first.change_id)  # fmt: skip
    assert _edge_rows([third], stored=[stale], head=stored_head) == [
        ("is contained in", subnet, t2, None, third.change_id),
        ("is contained in", "arn:other", t0, t2, first.change_id),
    ]


def test_edges_left_unread_are_read_only_when_a_change_moves_them() -> None:
    """A store may leave the open edges of a key unread when its change most likely keeps
    them (:func:`may_keep_edges`); they are read if planning shows the change moves them
    after all (its patch starts from another version than the open one), and the rows
    written are the same as with every edge read first."""
    account = "123456789012"
    instance = f"arn:aws:ec2:{REGION}:{account}:instance/i-1"
    detector = ChangeDetector()
    snaps = [
        ResourceSnapshot.build(
            account_id=account,
            region=REGION,
            resource_type="AWS::EC2::Instance",
            resource_id="i-1",
            arn=instance,
            configuration={"InstanceId": "i-1", "SubnetId": "subnet-1", "InstanceType": kind},
            scan_id="s",
            captured_at=datetime(2026, 11, 1, hour, tzinfo=UTC),
        )
        for hour, kind in enumerate("abc")
    ]
    first, second, third = (detector.observe(s) for s in snaps)
    assert first is not None and second is not None and third is not None
    assert may_keep_edges(second) and may_keep_edges(third) and not may_keep_edges(first)
    t0 = int(first.captured_at.timestamp() * 1e6)
    subnet = f"arn:aws:ec2:{REGION}:{account}:subnet/subnet-1"
    held = EdgeRow(instance, "AWS::EC2::Instance", "is contained in", subnet,
                   "AWS::EC2::Subnet", t0, None, first.change_id)  # fmt: skip
    stored_head = Head(first.change_id, first.after_hash or "", t0, None)
    # The open version is the one both changes start from: nothing read, nothing written.
    loads: list[str] = []
    assert _edge_rows([second, third], stored=[held], head=stored_head, loads=loads) == []
    assert loads == []
    # The third change's patch starts from the second, never stored: its edges are read.
    stale = EdgeRow(instance, "AWS::EC2::Instance", "is contained in", "arn:other", "X", t0,
                    None, first.change_id)  # fmt: skip
    expected = _edge_rows([third], stored=[stale], head=stored_head)
    assert ("is contained in", "arn:other", t0, int(third.captured_at.timestamp() * 1e6),
            first.change_id) in expected  # fmt: skip
    assert _edge_rows([third], stored=[stale], head=stored_head, loads=loads) == expected
    assert loads == [instance]
