"""Trust in attribution: which of several write events in a change's window explains it, state
transitions that carry the event that started them, and write events that expire on DynamoDB.

Each store case runs on SQLite and on DynamoDB (moto server). Changes come from the real change
detector (``ChangeDetector``), write events from the real CloudTrail reading of the change
stage (``write_events_of``); the topic round trip between the join and the sink is a direct
``put_changes`` of what the join returns (the broker path is covered by
test_attribution_e2e.py).
"""

from __future__ import annotations

import logging
import math
import random
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiobotocore.session import get_session

from cloudinv.catalog.event_resources import (
    EventResourceIndex,
    ResourceRef,
    attribution_of,
    fits,
)
from cloudinv.catalog.registry import default_registry
from cloudinv.core.models import (
    Attribution,
    ChangeEvent,
    CloudTrailEvent,
    Principal,
    ResourceSnapshot,
)
from cloudinv.producers.reactor import EventIndex
from cloudinv.sinks.dynamodb_store import EXPIRES, META, DynamoStore
from cloudinv.sinks.sqlite_store import SqliteStore
from cloudinv.sinks.store import AttributionJoin, ChangeFilters, ChangeQuery, InventoryStore
from cloudinv.sinks.versioning import rank
from cloudinv.streams.changes import ChangeDetector, DeletionRequest, write_events_of
from tests.api_helpers import running_api

ACCOUNT = "333344445555"
REGION = "eu-west-1"
INDEX = EventResourceIndex(default_registry())
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


def trail(
    name: str,
    at: datetime,
    *,
    source: str = "ec2",
    request: dict[str, Any] | None = None,
    response: dict[str, Any] | None = None,
    user: str = "alice",
) -> CloudTrailEvent:
    return CloudTrailEvent(
        event_id=f"{name}-{random.randrange(10**12)}",
        event_time=at.replace(microsecond=0),
        event_source=f"{source}.amazonaws.com",
        service=source,
        event_name=name,
        region=REGION,
        account_id=ACCOUNT,
        principal=Principal(type="IAMUser", arn=f"arn:aws:iam::{ACCOUNT}:user/{user}", name=user),
        source_ip="198.51.100.7",
        read_only=False,
        request_parameters=request,
        response_elements=response,
    )


def resource(
    cfn_type: str, rid: str, at: datetime, config: dict[str, Any], **extra: Any
) -> ResourceSnapshot:
    service, short = cfn_type.split("::")[1].lower(), cfn_type.rsplit("::", 1)[1].lower()
    return ResourceSnapshot.build(
        account_id=ACCOUNT,
        region=REGION,
        resource_type=cfn_type,
        resource_id=rid,
        arn=f"arn:aws:{service}:{REGION}:{ACCOUNT}:{short}/{rid}",
        configuration=config,
        scan_id="scan",
        captured_at=at,
        **extra,
    )


def volume(
    vid: str, at: datetime, attribution: Attribution | None = None, **config: Any
) -> ResourceSnapshot:
    return resource(
        "AWS::EC2::Volume",
        vid,
        at,
        {"VolumeId": vid, "State": "available", **config},
        attribution=attribution,
    )


def instance(iid: str, at: datetime, state: str, **config: Any) -> ResourceSnapshot:
    return resource(
        "AWS::EC2::Instance", iid, at, {"InstanceId": iid, "State": {"Name": state}, **config}
    )


def key_of(cfn_type: str, rid: str) -> str:
    return resource(cfn_type, rid, T0, {}).key


class Join:
    """The change stage's store side, driven step by step: detect, store, join."""

    def __init__(self, store: InventoryStore) -> None:
        assert isinstance(store, AttributionJoin)
        self.store = store
        self.join: AttributionJoin = store
        self.detector = ChangeDetector()

    async def see(self, snapshot: ResourceSnapshot) -> ChangeEvent:
        """A scan or re-describe saw ``snapshot``: the change as stored after the join."""
        change = self.detector.observe(snapshot)
        assert change is not None, "expected a change"
        return await self.store_change(change)

    async def gone(self, key: str, started: datetime, finished: datetime) -> ChangeEvent:
        """A complete scan that started at ``started`` no longer listed ``key``."""
        state = self.detector.states[key]
        change = self.detector.request_deletion(
            DeletionRequest(
                key=key,
                resource_type=state.resource_type,
                account_id=ACCOUNT,
                region=REGION,
                scan_id="scan-gone",
                scan_started_at=started,
                scan_finished_at=finished,
            )
        )
        assert change is not None
        return await self.store_change(change)

    async def store_change(self, change: ChangeEvent) -> ChangeEvent:
        assert await self.store.put_changes([change]) == 1
        await self.store.put_changes(await self.join.attribution_updates([change]))
        return await self.stored(change)

    async def trail(self, *events: CloudTrailEvent) -> list[ChangeEvent]:
        """The CloudTrail events reach the join; what it updated, once stored."""
        written = [w for e in events for w in write_events_of(INDEX, e)]
        updates = await self.join.record_write_events(written)
        await self.store.put_changes(updates)
        return updates

    async def stored(self, change: ChangeEvent) -> ChangeEvent:
        page = await self.store.changes(ChangeQuery(filters=ChangeFilters(key=change.key)))
        (found,) = [c for c in page.items if c.change_id == change.change_id]
        return found


@pytest.fixture(params=["sqlite", "dynamodb"])
async def join(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Join]:
    if request.param == "sqlite":
        store = SqliteStore(tmp_path / "inventory.sqlite3")
        await store.open()
        try:
            yield Join(store)
        finally:
            await store.close()
        return
    endpoint = request.getfixturevalue("moto_endpoint")
    async with DynamoStore(
        f"rank-{random.randrange(10**9)}",
        region="us-east-1",
        endpoint_url=endpoint,
        write_concurrency=1,
    ) as dynamo:
        yield Join(dynamo)


def by(change: ChangeEvent) -> tuple[str | None, str | None]:
    a = change.attribution
    return (None, None) if a is None else (a.event_name, a.match)


# -- which resources an event acts on, which it only references ----------------------------------


def matches(event: CloudTrailEvent) -> dict[str, set[str]]:
    return {match: {ref.ref for ref in refs} for match, refs in INDEX.refs_by_match(event).items()}


def ref(cfn_type: str, ident: str) -> str:
    return ResourceRef(cfn_type, ACCOUNT, REGION, ident).ref


def test_an_event_acts_on_its_own_type_and_only_references_the_others() -> None:
    create = trail(
        "CreateSnapshot",
        T0,
        request={"volumeId": "vol-1"},
        response={"snapshotId": "snap-1", "volumeId": "vol-1"},
    )
    assert matches(create) == {
        "declared": {ref("AWS::EC2::Snapshot", "snap-1")},
        "referenced": {ref("AWS::EC2::Volume", "vol-1")},
    }
    attach = trail("AttachVolume", T0, request={"volumeId": "vol-1", "instanceId": "i-1"})
    assert matches(attach) == {
        "declared": {ref("AWS::EC2::Volume", "vol-1")},
        "referenced": {ref("AWS::EC2::Instance", "i-1")},
    }
    run = trail(
        "RunInstances",
        T0,
        request={"subnetId": "subnet-1", "groupSet": {"items": [{"groupId": "sg-1"}]}},
        response={"instancesSet": {"items": [{"instanceId": "i-9", "subnetId": "subnet-1"}]}},
    )
    found = matches(run)
    assert found["declared"] == {ref("AWS::EC2::Instance", "i-9")}
    assert {ref("AWS::EC2::Subnet", "subnet-1"), ref("AWS::EC2::SecurityGroup", "sg-1")} <= (
        found["referenced"]
    )
    # Declared in the spec's event_resource_ids: CreateTags acts on whatever it tags (named
    # under every EC2 type that declares it: the id meets only the resource's own refs).
    tags = trail("CreateTags", T0, request={"resourcesSet": {"items": [{"resourceId": "sg-1"}]}})
    assert set(matches(tags)) == {"declared"}
    assert ref("AWS::EC2::SecurityGroup", "sg-1") in matches(tags)["declared"]


def test_the_redescribe_carries_how_the_event_named_each_resource() -> None:
    create = trail(
        "CreateSnapshot",
        T0,
        request={"volumeId": "vol-1"},
        response={"snapshotId": "snap-1", "volumeId": "vol-1"},
    )
    found = {
        (t.spec.cfn_type, rid): t.attribution.match
        for t in EventIndex(default_registry()).triggers(create)
        for rid in t.ids
    }
    assert found == {
        ("AWS::EC2::Snapshot", "snap-1"): "declared",
        ("AWS::EC2::Volume", "vol-1"): "referenced",
    }


def test_the_verb_fits_the_kind_of_change() -> None:
    assert fits("created", "CreateSnapshot", "AWS::EC2::Snapshot")
    assert fits("created", "RunInstances", "AWS::EC2::Instance")
    assert fits("deleted", "TerminateInstances", "AWS::EC2::Instance")
    assert fits("deleted", "DeleteFunction20150331", "AWS::Lambda::Function")
    assert not fits("deleted", "DeleteBucketPolicy", "AWS::S3::Bucket")  # not the bucket
    assert not fits("created", "CreateSnapshot", "AWS::EC2::Volume")
    assert fits("modified", "CreateSnapshot", "AWS::EC2::Volume")  # any verb modifies


def test_rank_orders_declared_then_verb_then_time() -> None:
    created = ChangeEvent(
        change_id="c",
        key="k",
        resource_type="AWS::EC2::SecurityGroup",
        resource_id="sg-1",
        account_id=ACCOUNT,
        region=REGION,
        change_type="created",
        captured_at=T0 + s(10),
        detected_at=T0 + s(10),
    )

    def a(name: str, at: float, match: Any) -> Attribution:
        return Attribution(event_id=name, event_name=name, event_time=T0 + s(at), match=match)

    create = a("CreateSecurityGroup", 1, "declared")
    authorize = a("AuthorizeSecurityGroupIngress", 2, "declared")
    run = a("RunInstances", 3, "referenced")
    ordered = sorted([run, authorize, create], key=lambda x: rank(created, x), reverse=True)
    assert ordered == [create, authorize, run]
    # An attribution of an older message (no match) counts as declared.
    assert rank(created, a("CreateSecurityGroup", 0, None))[1] == rank(created, create)[1]
    # Outside the change's window (here: after it was observed), below any inside.
    assert rank(created, a("CreateSecurityGroup", 30, "declared")) < rank(created, run)


# -- the store: ranking, on both stores ----------------------------------------------------------


@pytest.mark.parametrize("order", ["events first", "changes first"])
async def test_create_snapshot_does_not_take_a_concurrent_modify_volume(
    join: Join, order: str
) -> None:
    await join.see(volume("vol-1", T0, Size=8))
    modify = trail("ModifyVolume", T0 + s(10), request={"volumeId": "vol-1", "size": 16})
    create = trail(
        "CreateSnapshot",
        T0 + s(20),
        request={"volumeId": "vol-1"},
        response={"snapshotId": "snap-1", "volumeId": "vol-1"},
    )
    later = T0 + s(60)
    snap = resource(
        "AWS::EC2::Snapshot", "snap-1", later, {"SnapshotId": "snap-1", "VolumeId": "vol-1"}
    )
    if order == "events first":
        await join.trail(modify, create)
        modified = await join.see(volume("vol-1", later, Size=16))
        snapshot = await join.see(snap)
    else:
        modified = await join.see(volume("vol-1", later, Size=16))
        snapshot = await join.see(snap)
        await join.trail(modify, create)
        modified, snapshot = await join.stored(modified), await join.stored(snapshot)
    assert by(modified) == ("ModifyVolume", "declared")
    assert modified.attribution is not None
    assert modified.attribution.event_id == modify.event_id
    assert by(snapshot) == ("CreateSnapshot", "declared")


async def test_a_referencing_event_from_the_redescribe_gives_way_to_the_acting_one(
    join: Join,
) -> None:
    """The re-describe CreateSnapshot triggered carries it, as a mere reference, on the
    volume's change; the stored ModifyVolume replaces it."""
    await join.see(volume("vol-2", T0, Size=8))
    modify = trail("ModifyVolume", T0 + s(10), request={"volumeId": "vol-2", "size": 16})
    create = trail(
        "CreateSnapshot",
        T0 + s(20),
        request={"volumeId": "vol-2"},
        response={"snapshotId": "snap-2", "volumeId": "vol-2"},
    )
    await join.trail(modify)
    redescribed = volume(
        "vol-2", T0 + s(22), Size=16, attribution=attribution_of(create, "referenced")
    )
    changed = join.detector.observe(redescribed)
    assert changed is not None and by(changed) == ("CreateSnapshot", "referenced")
    assert by(await join.store_change(changed)) == ("ModifyVolume", "declared")


@pytest.mark.parametrize("order", ["events first", "changes first"])
async def test_an_older_event_carried_by_a_redescribe_gives_way_to_the_one_in_the_window(
    join: Join, order: str
) -> None:
    """Events of one resource reach the reactor out of order: the re-describe the older
    Authorize triggered saw the later Revoke's effect, and carries the Authorize."""
    sg = "AWS::EC2::SecurityGroup"
    group = {"GroupId": "sg-7", "IpPermissions": []}
    await join.see(resource(sg, "sg-7", T0, group))
    authorize = trail("AuthorizeSecurityGroupIngress", T0 + s(10), request={"groupId": "sg-7"})
    revoke = trail("RevokeSecurityGroupIngress", T0 + s(20), request={"groupId": "sg-7"})
    rule = [{"IpProtocol": "tcp", "FromPort": 22}]
    await join.trail(authorize)
    opened = await join.see(resource(sg, "sg-7", T0 + s(15), {**group, "IpPermissions": rule}))
    assert by(opened) == ("AuthorizeSecurityGroupIngress", "declared")
    if order == "events first":
        await join.trail(revoke)
    closed = await join.see(
        resource(sg, "sg-7", T0 + s(22), group, attribution=attribution_of(authorize, "declared"))
    )
    if order == "changes first":
        assert by(closed) == ("AuthorizeSecurityGroupIngress", "declared")
        await join.trail(revoke)
        closed = await join.stored(closed)
    assert closed.attribution is not None
    assert closed.attribution.event_id == revoke.event_id


async def test_attach_volume_explains_both_sides(join: Join) -> None:
    await join.see(volume("vol-3", T0))
    await join.see(instance("i-3", T0, "running", BlockDeviceMappings=[]))
    attach = trail(
        "AttachVolume",
        T0 + s(10),
        request={"volumeId": "vol-3", "instanceId": "i-3", "device": "/dev/sdf"},
        response={"volumeId": "vol-3", "instanceId": "i-3", "status": "attaching"},
    )
    await join.trail(attach)
    later = T0 + s(60)
    attached = await join.see(
        volume("vol-3", later, State="in-use", Attachments=[{"InstanceId": "i-3"}])
    )
    mapped = await join.see(
        instance(
            "i-3",
            later,
            "running",
            BlockDeviceMappings=[{"DeviceName": "/dev/sdf", "Ebs": {"VolumeId": "vol-3"}}],
        )
    )
    assert by(attached) == ("AttachVolume", "declared")
    assert by(mapped) == ("AttachVolume", "referenced")


async def test_run_instances_is_not_the_cause_of_the_subnets_change(join: Join) -> None:
    subnet = "AWS::EC2::Subnet"
    await join.see(resource(subnet, "subnet-1", T0, {"SubnetId": "subnet-1", "MapPublic": False}))
    await join.see(resource(subnet, "subnet-2", T0, {"SubnetId": "subnet-2", "Free": 10}))
    modify = trail(
        "ModifySubnetAttribute",
        T0 + s(10),
        request={"subnetId": "subnet-1", "mapPublicIpOnLaunch": {"value": True}},
    )
    runs = [
        trail(
            "RunInstances",
            T0 + s(20),
            request={"subnetId": sid},
            response={"instancesSet": {"items": [{"instanceId": iid, "subnetId": sid}]}},
        )
        for sid, iid in (("subnet-1", "i-91"), ("subnet-2", "i-92"))
    ]
    await join.trail(modify, *runs)
    later = T0 + s(60)
    changed = await join.see(
        resource(subnet, "subnet-1", later, {"SubnetId": "subnet-1", "MapPublic": True})
    )
    assert by(changed) == ("ModifySubnetAttribute", "declared")
    launched = await join.see(instance("i-91", later, "pending"))
    assert by(launched) == ("RunInstances", "declared")
    # Nothing better in the window: the referencing event is kept, and says so.
    fallback = await join.see(
        resource(subnet, "subnet-2", later, {"SubnetId": "subnet-2", "Free": 9})
    )
    assert by(fallback) == ("RunInstances", "referenced")


# -- the store: state transitions inherit, on both stores ----------------------------------------


async def test_a_stop_is_carried_to_stopped_and_no_further(join: Join) -> None:
    await join.see(instance("i-s", T0, "running", PublicIpAddress="203.0.113.9"))
    stop = trail(
        "StopInstances", T0 + s(10), request={"instancesSet": {"items": [{"instanceId": "i-s"}]}}
    )
    await join.trail(stop)
    stopping = await join.see(
        instance("i-s", T0 + s(20), "stopping", PublicIpAddress="203.0.113.9")
    )
    assert by(stopping) == ("StopInstances", "declared")
    # Minutes later, no event in its window: only the state (and the address going away).
    stopped = await join.see(instance("i-s", T0 + s(300), "stopped"))
    assert by(stopped) == ("StopInstances", "inherited")
    assert stopped.attribution is not None and stopped.attribution.event_id == stop.event_id
    # stopped is not a transition in progress: a later start nobody logged is not the stop's.
    started = await join.see(instance("i-s", T0 + s(900), "pending"))
    assert started.attribution is None


async def test_an_unrelated_change_does_not_inherit(join: Join) -> None:
    stop = trail(
        "StopInstances", T0 + s(10), request={"instancesSet": {"items": [{"instanceId": "i-u"}]}}
    )
    await join.see(instance("i-u", T0, "running", InstanceType="t3.micro"))
    await join.trail(stop)
    await join.see(instance("i-u", T0 + s(20), "stopping", InstanceType="t3.micro"))
    # More than the state moved: not the stop's doing.
    resized = await join.see(instance("i-u", T0 + s(300), "stopped", InstanceType="t3.large"))
    assert resized.attribution is None

    await join.see(instance("i-late", T0, "running"))
    late_stop = trail(
        "StopInstances",
        T0 + s(10),
        request={"instancesSet": {"items": [{"instanceId": "i-late"}]}},
    )
    await join.trail(late_stop)
    await join.see(instance("i-late", T0 + s(20), "stopping"))
    # Only the state moved, but more than an hour after the event.
    much_later = await join.see(instance("i-late", T0 + timedelta(hours=1, minutes=5), "stopped"))
    assert much_later.attribution is None


async def test_a_late_event_is_carried_along_the_transitions_already_stored(join: Join) -> None:
    await join.see(instance("i-l", T0, "running"))
    stopping = await join.see(instance("i-l", T0 + s(20), "stopping"))
    stopped = await join.see(instance("i-l", T0 + s(300), "stopped"))
    assert stopping.attribution is None and stopped.attribution is None
    stop = trail(
        "StopInstances", T0 + s(10), request={"instancesSet": {"items": [{"instanceId": "i-l"}]}}
    )
    updates = await join.trail(stop)
    assert sorted(by(u) for u in updates) == [
        ("StopInstances", "declared"),
        ("StopInstances", "inherited"),
    ]
    assert by(await join.stored(stopping)) == ("StopInstances", "declared")
    assert by(await join.stored(stopped)) == ("StopInstances", "inherited")


async def test_terminated_and_deletions_found_long_after_the_event_inherit_it(
    join: Join,
) -> None:
    # An instance seen terminated is deleted (GONE_STATES), minutes after its event.
    await join.see(instance("i-t", T0, "running"))
    terminate = trail(
        "TerminateInstances",
        T0 + s(10),
        request={"instancesSet": {"items": [{"instanceId": "i-t"}]}},
    )
    await join.trail(terminate)
    assert by(await join.see(instance("i-t", T0 + s(20), "shutting-down"))) == (
        "TerminateInstances",
        "declared",
    )
    terminated = await join.see(instance("i-t", T0 + s(400), "terminated"))
    assert terminated.change_type == "deleted"
    assert by(terminated) == ("TerminateInstances", "inherited")

    # A database listed as deleting for over an hour, then gone from a scan.
    db = "AWS::RDS::DBInstance"
    config = {"DBInstanceIdentifier": "db-1", "DBInstanceStatus": "available"}
    await join.see(resource(db, "db-1", T0, config))
    delete = trail(
        "DeleteDBInstance", T0 + s(10), source="rds", request={"dBInstanceIdentifier": "db-1"}
    )
    await join.trail(delete)
    deleting = await join.see(
        resource(db, "db-1", T0 + s(15), {**config, "DBInstanceStatus": "deleting"})
    )
    assert by(deleting) == ("DeleteDBInstance", "declared")
    # Still listed (deleting) at every scan until 70 minutes after the event.
    seen = T0 + timedelta(minutes=70)
    assert (
        join.detector.observe(
            resource(db, "db-1", seen, {**config, "DBInstanceStatus": "deleting"})
        )
        is None
    )
    gone = await join.gone(deleting.key, seen + s(600), seen + s(620))
    assert by(gone) == ("DeleteDBInstance", "inherited")

    # A deletion after a change that was not the delete's state move inherits nothing.
    await join.see(resource(db, "db-2", T0, {**config, "DBInstanceIdentifier": "db-2"}))
    tagged = trail(
        "AddTagsToResource",
        T0 + s(10),
        source="rds",
        request={"dBInstanceIdentifier": "db-2"},
    )
    await join.trail(tagged)
    await join.see(
        resource(db, "db-2", T0 + s(15), {**config, "DBInstanceIdentifier": "db-2", "T": 1})
    )
    gone = await join.gone(key_of(db, "db-2"), T0 + s(900), T0 + s(910))
    assert gone.attribution is None


async def test_status_counts_inherited_changes_apart(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "inventory.sqlite3")
    await store.open()
    try:
        j = Join(store)
        t = datetime.now(UTC) - timedelta(minutes=20)
        await j.see(instance("i-st", t, "running"))
        await j.trail(
            trail(
                "StopInstances",
                t + s(10),
                request={"instancesSet": {"items": [{"instanceId": "i-st"}]}},
            )
        )
        await j.see(instance("i-st", t + s(20), "stopping"))
        assert by(await j.see(instance("i-st", t + s(300), "stopped"))) == (
            "StopInstances",
            "inherited",
        )
        figure = await store.attribution_figure(t - s(60))
        assert (figure.changes, figure.matched, figure.attributed, figure.inherited) == (
            3,
            1,
            1,
            1,
        )
        async with running_api(tmp_path, {"admin": None}, inventory=store) as api:
            _, body, _ = await api.get("/v1/status")
            assert body["attribution"]["inherited"] == 1
            assert body["attribution"]["ratio"] == 1.0
            _, text, _ = await api.get("/metrics")
            assert "cloudinv_changes_inherited_last_hour 1" in text
    finally:
        await store.close()


# -- DynamoDB: write events expire as the SQLite store forgets them -------------------------------


async def test_dynamodb_write_events_expire_with_the_attribution_window(
    moto_endpoint: str, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    window = timedelta(minutes=30)
    old = trail("ModifyVolume", now - timedelta(minutes=40), request={"volumeId": "vol-x"})
    recent = trail("ModifyVolume", now - timedelta(minutes=5), request={"volumeId": "vol-x"})
    events = [w for e in (old, recent) for w in write_events_of(INDEX, e)]
    vol_ref = ref("AWS::EC2::Volume", "vol-x")

    async with DynamoStore(
        f"ttl-{random.randrange(10**9)}", region="us-east-1", endpoint_url=moto_endpoint
    ) as dynamo:
        await dynamo.record_write_events(events, keep_since=now - window)
        session = get_session()
        async with session.create_client(
            "dynamodb", region_name="us-east-1", endpoint_url=moto_endpoint
        ) as client:
            ttl = await client.describe_time_to_live(TableName=dynamo.tables[META])
            described = ttl["TimeToLiveDescription"]
            assert described["TimeToLiveStatus"] == "ENABLED"
            assert described["AttributeName"] == EXPIRES
            items = (
                await client.query(
                    TableName=dynamo.tables[META],
                    KeyConditionExpression="kind = :k",
                    ExpressionAttributeValues={":k": {"S": f"we#{vol_ref}"}},
                )
            )["Items"]
    expires = {item["value"]["S"].split("#", 1)[1]: int(item[EXPIRES]["N"]) for item in items}
    for e in (old, recent):
        due = (e.event_time + window).timestamp()
        assert abs(expires[e.event_id] - math.ceil(due)) <= 5, e.event_name
    # The old one is already due, as SQLite, given the same setting, deletes it.
    assert expires[old.event_id] < now.timestamp() < expires[recent.event_id]
    path = tmp_path / "inventory.sqlite3"
    sqlite = SqliteStore(path)
    await sqlite.open()
    try:
        await sqlite.record_write_events(events, keep_since=now - window)
    finally:
        await sqlite.close()
    with sqlite3.connect(path) as conn:
        left = {row[0] for row in conn.execute("SELECT event_id FROM write_events")}
    assert left == {recent.event_id}


async def test_dynamodb_tables_not_created_by_cloudinv_keep_their_ttl_and_say_so(
    moto_endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    prefix = f"ttl-own-{random.randrange(10**9)}"
    async with DynamoStore(prefix, region="us-east-1", endpoint_url=moto_endpoint) as dynamo:
        table = dynamo.tables[META]
    session = get_session()
    async with session.create_client(
        "dynamodb", region_name="us-east-1", endpoint_url=moto_endpoint
    ) as client:
        await client.update_time_to_live(
            TableName=table, TimeToLiveSpecification={"Enabled": False, "AttributeName": EXPIRES}
        )
        with caplog.at_level(logging.WARNING, logger="cloudinv.sinks.dynamodb_tables"):
            async with DynamoStore(
                prefix, region="us-east-1", endpoint_url=moto_endpoint, create_tables=False
            ):
                pass
        described = await client.describe_time_to_live(TableName=table)
    assert described["TimeToLiveDescription"]["TimeToLiveStatus"] == "DISABLED"
    assert any("update-time-to-live" in r.getMessage() for r in caplog.records)
