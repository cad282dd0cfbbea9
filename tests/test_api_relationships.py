"""``/v1/resources/{key}/related`` and ``/graph`` over a real server and a real SQLite store.

The store is filled by the real change detector from snapshots of two accounts: in A an
instance in a subnet with a security group and an attached volume, then the group swapped; a
Lambda function in A whose role is in account B. Tokens: admin, A only, B only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from cloudinv.api.routes_relationships import RelationshipName
from cloudinv.catalog.spec import RELATIONSHIP_INVERSES
from cloudinv.core.models import ResourceSnapshot
from cloudinv.sinks.sqlite_store import SqliteStore
from cloudinv.sinks.store import InventoryStore
from cloudinv.streams.changes import ChangeDetector
from tests.api_helpers import Api, running_api

A, B = "111111111111", "222222222222"
REGION = "us-east-1"
T1 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
T2 = T1 + timedelta(hours=2)


def ec2(account: str, kind: str, ident: str) -> str:
    return f"arn:aws:ec2:{REGION}:{account}:{kind}/{ident}"


INSTANCE = ec2(A, "instance", "i-1")
SUBNET = ec2(A, "subnet", "subnet-1")
SG_OLD, SG_NEW = ec2(A, "security-group", "sg-old"), ec2(A, "security-group", "sg-new")
VOLUME = ec2(A, "volume", "vol-1")
FUNCTION = f"arn:aws:lambda:{REGION}:{A}:function:fn"
ROLE = f"arn:aws:iam::{B}:role/fn"


def enc(key: str) -> str:
    return quote(key, safe="")


def snapshot(
    account: str, rtype: str, rid: str, arn: str, at: datetime, **config: Any
) -> ResourceSnapshot:
    return ResourceSnapshot.build(
        account_id=account,
        region="global" if rtype.startswith("AWS::IAM::") else REGION,
        resource_type=rtype,
        resource_id=rid,
        arn=arn,
        configuration=config,
        scan_id=f"scan-{at.isoformat()}",
        captured_at=at,
    )


def estate(at: datetime, group: str) -> list[ResourceSnapshot]:
    return [
        snapshot(
            A,
            "AWS::EC2::Instance",
            "i-1",
            INSTANCE,
            at,
            InstanceId="i-1",
            SubnetId="subnet-1",
            SecurityGroups=[{"GroupId": group}],
            BlockDeviceMappings=[{"Ebs": {"VolumeId": "vol-1"}}],
        ),
        snapshot(A, "AWS::EC2::Subnet", "subnet-1", SUBNET, at, SubnetId="subnet-1"),
        snapshot(A, "AWS::EC2::SecurityGroup", "sg-old", SG_OLD, at, GroupId="sg-old"),
        snapshot(A, "AWS::EC2::SecurityGroup", "sg-new", SG_NEW, at, GroupId="sg-new"),
        snapshot(
            A,
            "AWS::EC2::Volume",
            "vol-1",
            VOLUME,
            at,
            VolumeId="vol-1",
            Attachments=[{"InstanceId": "i-1"}],
        ),
        snapshot(A, "AWS::Lambda::Function", "fn", FUNCTION, at, FunctionName="fn", Role=ROLE),
        snapshot(B, "AWS::IAM::Role", "fn", ROLE, at, RoleName="fn", Arn=ROLE),
    ]


@asynccontextmanager
async def serving(data_dir: Path, store: InventoryStore) -> AsyncIterator[Api]:
    """The estate's two states stored in ``store``, and a server over it."""
    detector = ChangeDetector()
    for at, group in ((T1, "sg-old"), (T2, "sg-new")):
        changes = [c for c in map(detector.observe, estate(at, group)) if c is not None]
        await store.put_changes(changes)
    async with running_api(data_dir, {"admin": None, "a": [A], "b": [B]}, inventory=store) as api:
        yield api


@pytest.fixture(scope="module")
async def api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    data_dir: Path = tmp_path_factory.mktemp("relationships-api")
    async with SqliteStore.in_data_dir(data_dir) as store, serving(data_dir, store) as running:
        yield running


def rows(body: dict[str, Any]) -> set[tuple[str, str, str, bool]]:
    return {(r["direction"], r["relationship"], r["key"], r["exists"]) for r in body["related"]}


async def test_related_answers_in_the_documented_shape(api: Api) -> None:
    status, body, _ = await api.get(f"/v1/resources/{enc(INSTANCE)}/related")
    assert status == 200, body
    assert set(body) == {"key", "at", "related"}
    assert body["key"] == INSTANCE and body["at"] is None
    assert rows(body) == {
        ("out", "is contained in", SUBNET, True),
        ("out", "is associated with", SG_NEW, True),
        ("out", "is attached to", VOLUME, True),
        ("in", "has attached", VOLUME, True),
    }
    subnet = next(r for r in body["related"] if r["key"] == SUBNET)
    assert subnet == {
        "direction": "out",
        "relationship": "is contained in",
        "key": SUBNET,
        "type": "AWS::EC2::Subnet",
        "account_id": A,
        "region": REGION,
        "name": None,
        "exists": True,
    }


async def test_related_as_of_an_earlier_time_and_filtered(api: Api) -> None:
    at = (T1 + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    _, body, _ = await api.get(f"/v1/resources/{enc(INSTANCE)}/related?at={at}&direction=out")
    assert body["at"] == at
    assert ("out", "is associated with", SG_OLD, True) in rows(body)
    assert SG_NEW not in {r["key"] for r in body["related"]}
    _, body, _ = await api.get(
        f"/v1/resources/{enc(SG_OLD)}/related?direction=in&relationship=is%20associated%20with"
        f"&type=AWS::EC2::Instance&at={at}"
    )
    assert rows(body) == {("in", "is associated with", INSTANCE, True)}
    _, body, _ = await api.get(f"/v1/resources/{enc(SG_OLD)}/related")
    assert body["related"] == []
    _, body, _ = await api.get(f"/v1/resources/{enc(SUBNET)}/related?relationship=contains")
    assert rows(body) == {("in", "contains", INSTANCE, True)}


async def test_bad_parameters_are_problems_and_unknown_keys_404(api: Api) -> None:
    base = f"/v1/resources/{enc(INSTANCE)}"
    for path in (
        f"{base}/related?hops=2",
        f"{base}/related?direction=sideways",
        f"{base}/related?relationship=touches",
        f"{base}/related?type=AWS::EC2::Nope",
        f"{base}/related?at=yesterday",
        f"{base}/graph?hops=4",
        f"{base}/graph?limit=0",
        f"{base}/graph?direction=in",
    ):
        status, body, resp = await api.get(path)
        assert status == 400, path
        assert resp.content_type == "application/problem+json", path
        assert body["status"] == 400 and body["detail"], path
    status, body, resp = await api.get(f"/v1/resources/{enc(ec2(A, 'instance', 'i-9'))}/related")
    assert status == 404 and resp.content_type == "application/problem+json"


async def test_graph_walks_both_directions_and_caps(api: Api) -> None:
    status, body, _ = await api.get(f"/v1/resources/{enc(SG_NEW)}/graph?hops=2")
    assert status == 200, body
    hops = {n["key"]: n["hops"] for n in body["nodes"]}
    assert hops == {SG_NEW: 0, INSTANCE: 1, SUBNET: 2, VOLUME: 2}
    edges = {(e["source"], e["relationship"], e["target"]) for e in body["edges"]}
    assert edges == {
        (INSTANCE, "is associated with", SG_NEW),
        (INSTANCE, "is contained in", SUBNET),
        (INSTANCE, "is attached to", VOLUME),
        (VOLUME, "is attached to", INSTANCE),
    }
    assert body["truncated"] is False and body["hops"] == 2
    _, body, _ = await api.get(f"/v1/resources/{enc(SG_NEW)}/graph?hops=2&limit=3")
    assert body["truncated"] is True and len(body["nodes"]) == 3
    _, body, _ = await api.get(f"/v1/resources/{enc(SG_NEW)}/graph")
    assert {n["key"] for n in body["nodes"]} == {SG_NEW, INSTANCE}


async def test_account_scoped_tokens_see_only_their_side(api: Api) -> None:
    _, admin, _ = await api.get(f"/v1/resources/{enc(FUNCTION)}/related")
    assert rows(admin) == {("out", "uses", ROLE, True)}
    status, mine, _ = await api.get(f"/v1/resources/{enc(FUNCTION)}/related", "a")
    assert status == 200 and mine["related"] == []  # the role is B's
    status, _, _ = await api.get(f"/v1/resources/{enc(FUNCTION)}/related", "b")
    assert status == 404
    status, theirs, _ = await api.get(f"/v1/resources/{enc(ROLE)}/related", "b")
    assert status == 200 and theirs["related"] == []  # the function is A's
    _, admin, _ = await api.get(f"/v1/resources/{enc(ROLE)}/related")
    assert rows(admin) == {("in", "is used by", FUNCTION, True)}
    _, graph, _ = await api.get(f"/v1/resources/{enc(FUNCTION)}/graph", "a")
    assert [n["key"] for n in graph["nodes"]] == [FUNCTION] and graph["edges"] == []
    status, _, _ = await api.get(f"/v1/resources/{enc(FUNCTION)}/graph", "b")
    assert status == 404


def test_relationship_names_of_the_api_are_the_catalogs() -> None:
    assert set(RelationshipName.__args__) == set(RELATIONSHIP_INVERSES)
