"""The scan engine against moto (3 accounts x 3 regions) and against fakes.

The estate is seeded with boto3 and listed with boto3 (``scan_estate`` in conftest); the
engine must find exactly the same ids per (account, region, type).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from aiobotocore.session import AioSession
from botocore.exceptions import ClientError, EndpointConnectionError

from cloudinv.catalog.registry import Registry, default_registry
from cloudinv.catalog.spec import DetailCall, ResourceSpec
from cloudinv.catalog.transform import read_tags, resource_identity
from cloudinv.core.models import GLOBAL_REGION, ResourceSnapshot, ScanManifest
from cloudinv.core.settings import AccountRole, AwsSettings
from cloudinv.producers.collect import Scope, ScopeCollector
from cloudinv.producers.credentials import AccountTarget, AwsAccess, SharedConnections
from cloudinv.producers.engine import ScanItem, ScanOptions, scan, scan_types
from tests.conftest import (
    ASSUME_ROLE_CALLS,
    SCAN_DENIED_REGION,
    SCAN_DENIED_ROLE,
    SCAN_DENIED_SERVICE,
    SCAN_ESTATE_TYPES,
    ScanEstate,
)

REGISTRY = default_registry()


def estate_settings(estate: ScanEstate, endpoint: str) -> AwsSettings:
    return AwsSettings(
        accounts=[AccountRole(role_arn=arn) for arn in estate.role_arns],
        regions=estate.regions,
        endpoint_url=endpoint,
        max_concurrency=16,
    )


async def collect(
    items: AsyncIterator[ScanItem],
) -> tuple[list[ResourceSnapshot], list[ScanManifest]]:
    snapshots: list[ResourceSnapshot] = []
    manifests: list[ScanManifest] = []
    async for item in items:
        if isinstance(item, ResourceSnapshot):
            snapshots.append(item)
        else:
            manifests.append(item)
    return snapshots, manifests


def ids_by_scope(snapshots: list[ResourceSnapshot]) -> dict[tuple[str, str, str], set[str]]:
    found: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for s in snapshots:
        found[(s.account_id, s.region, s.resource_type)].add(s.resource_id)
    return found


def expected_scopes(estate: ScanEstate, types: tuple[str, ...]) -> set[tuple[str, str, str]]:
    scopes = set()
    for account in estate.accounts:
        for cfn_type in types:
            spec = REGISTRY.get(cfn_type)
            if spec.global_service and spec.region_field is None:
                scopes.add((account, GLOBAL_REGION, cfn_type))
            else:
                scopes.update((account, region, cfn_type) for region in estate.regions)
    return scopes


@pytest.fixture(scope="module")
async def estate_scan(
    scan_estate: ScanEstate,
) -> tuple[list[ResourceSnapshot], list[ScanManifest], float]:
    aws = estate_settings(scan_estate, scan_estate.endpoint)
    started = asyncio.get_running_loop().time()
    snapshots, manifests = await collect(scan(aws, types=SCAN_ESTATE_TYPES))
    return snapshots, manifests, asyncio.get_running_loop().time() - started


async def test_scan_finds_exactly_what_boto3_lists(
    scan_estate: ScanEstate, estate_scan: tuple[list[ResourceSnapshot], list[ScanManifest], float]
) -> None:
    snapshots, _, _ = estate_scan
    found = ids_by_scope(snapshots)
    scopes = expected_scopes(scan_estate, SCAN_ESTATE_TYPES)
    assert set(scan_estate.expected) == scopes  # the fixture lists every scope
    mismatches = {
        scope: (found.get(scope, set()), ids)
        for scope, ids in scan_estate.expected.items()
        if found.get(scope, set()) != ids
    }
    assert not mismatches
    assert set(found) <= scopes
    # Something of every type was seeded and found.
    assert {s.resource_type for s in snapshots} == set(SCAN_ESTATE_TYPES)


async def test_every_scope_ends_with_one_complete_manifest_listing_its_keys(
    scan_estate: ScanEstate, estate_scan: tuple[list[ResourceSnapshot], list[ScanManifest], float]
) -> None:
    snapshots, manifests, _ = estate_scan
    by_scope = {(m.account_id, m.region, m.resource_type): m for m in manifests}
    assert len(by_scope) == len(manifests) == len(expected_scopes(scan_estate, SCAN_ESTATE_TYPES))
    assert [m for m in manifests if m.status != "complete" or m.errors] == []
    keys: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for s in snapshots:
        keys[(s.account_id, s.region, s.resource_type)].add(s.arn)
    for scope, manifest in by_scope.items():
        assert set(manifest.keys) == keys.get(scope, set()), scope
        assert manifest.count == len(manifest.keys)
        assert manifest.can_delete
    assert len({m.scan_id for m in manifests} | {s.scan_id for s in snapshots}) == 1


async def test_snapshots_carry_combined_configuration(
    scan_estate: ScanEstate, estate_scan: tuple[list[ResourceSnapshot], list[ScanManifest], float]
) -> None:
    snapshots, _, _ = estate_scan
    account = scan_estate.accounts[0]
    mine = {(s.resource_type, s.resource_id): s for s in snapshots if s.account_id == account}

    locked = mine[("AWS::S3::Bucket", f"locked-{account}")]
    assert locked.arn == f"arn:aws:s3:::locked-{account}"
    # Buckets are recorded in their own region, as AWS Config does.
    assert locked.region == "us-east-1"
    assert mine[("AWS::S3::Bucket", f"plain-0-{account}")].region == "eu-west-1"
    config = locked.configuration
    assert "aws:SecureTransport" in config["Policy"]
    assert config["Encryption"]["Rules"][0]["ApplyServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "AES256"
    }
    assert config["Versioning"]["Status"] == "Enabled"
    assert config["PublicAccessBlock"]["BlockPublicPolicy"] is True
    assert locked.tags == {"owner": "sec"}
    plain = mine[("AWS::S3::Bucket", f"plain-0-{account}")].configuration
    assert plain["Location"] == "eu-west-1"
    # Never configured: recorded as null, not as an error.
    for absent in ("Policy", "Encryption", "Tagging", "PublicAccessBlock", "Lifecycle", "Cors"):
        assert plain[absent] is None, absent

    user = mine[("AWS::IAM::User", "user0")]
    assert user.arn == f"arn:aws:iam::{account}:user/user0"
    assert user.tags == {"team": "t0"}
    assert [p["PolicyName"] for p in user.configuration["UserPolicyList"]] == ["inline"]
    assert [p["PolicyName"] for p in user.configuration["AttachedManagedPolicies"]] == ["readers"]
    assert user.configuration["GroupList"] == ["admins"]
    assert len(user.configuration["AccessKeys"]) == 1
    assert "SecretAccessKey" not in user.configuration["AccessKeys"][0]
    assert len(user.configuration["MFADevices"]) == 1
    assert user.configuration["LoginProfile"] is None

    region = scan_estate.regions[0]
    instance = next(
        s
        for s in snapshots
        if s.account_id == account
        and s.region == region
        and s.resource_type == "AWS::EC2::Instance"
    )
    assert instance.arn == f"arn:aws:ec2:{region}:{account}:instance/{instance.resource_id}"
    vpc_names = {
        s.name for s in snapshots if s.account_id == account and s.resource_type == "AWS::EC2::VPC"
    }
    assert f"app-{region}" in vpc_names  # name from the Name tag
    alb = next(
        s
        for s in snapshots
        if s.account_id == account
        and s.resource_type == "AWS::ElasticLoadBalancingV2::LoadBalancer"
    )
    assert len(alb.configuration["Listeners"]) == 1
    assert alb.configuration["Attributes"]
    classic = next(
        s
        for s in snapshots
        if s.account_id == account and s.resource_type == "AWS::ElasticLoadBalancing::LoadBalancer"
    )
    assert classic.configuration["ListenerDescriptions"][0]["Listener"]["LoadBalancerPort"] == 80
    db = next(
        s
        for s in snapshots
        if s.account_id == account and s.resource_type == "AWS::RDS::DBInstance"
    )
    assert db.tags == {"tier": "data"}
    assert db.arn.startswith(f"arn:aws:rds:{db.region}:{account}:db:")


async def test_denied_region_and_service_fail_only_their_scopes(
    scan_estate: ScanEstate, denying_proxy: str
) -> None:
    aws = estate_settings(scan_estate, denying_proxy)
    snapshots, manifests = await collect(scan(aws, types=SCAN_ESTATE_TYPES))

    def denied(scope: tuple[str, str, str]) -> bool:
        spec = REGISTRY.get(scope[2])
        # S3 buckets are listed through the global endpoint, then recorded in their region.
        in_denied_region = scope[1] == SCAN_DENIED_REGION and not spec.global_service
        return in_denied_region or spec.service == SCAN_DENIED_SERVICE

    by_scope = {(m.account_id, m.region, m.resource_type): m for m in manifests}
    assert set(by_scope) == expected_scopes(scan_estate, SCAN_ESTATE_TYPES)
    failed = {scope for scope, m in by_scope.items() if m.status == "failed"}
    assert failed == {scope for scope in by_scope if denied(scope)}
    assert failed  # the proxy did deny something
    for scope in failed:
        manifest = by_scope[scope]
        assert manifest.errors[0].code in {"UnauthorizedOperation", "AccessDenied"}, scope
        assert not manifest.can_delete
    for scope, manifest in by_scope.items():
        if scope not in failed:
            assert manifest.status == "complete", (scope, manifest.errors)

    # The rest was collected, exactly; nothing at all from the denied scopes.
    found = ids_by_scope(snapshots)
    for scope, ids in scan_estate.expected.items():
        assert found.get(scope, set()) == (set() if denied(scope) else ids), scope


async def test_enabled_regions_are_the_opted_in_ones(
    scan_estate: ScanEstate, moto_endpoint: str
) -> None:
    access = AwsAccess(endpoint_url=moto_endpoint)
    target = access.role_account(AccountRole(role_arn=scan_estate.role_arns[0]))
    regions = await access.regions_for(target, "all")
    ec2 = boto3.client("ec2", endpoint_url=moto_endpoint, region_name="us-east-1")
    listed = ec2.describe_regions()["Regions"]
    assert regions == sorted(
        r["RegionName"]
        for r in listed
        if r.get("OptInStatus") in ("opt-in-not-required", "opted-in")
    )
    assert "us-east-1" in regions
    assert len(regions) < len(listed)  # moto marks some regions not-opted-in


async def test_assumed_credentials_are_cached_and_refreshed_before_expiry(
    moto_endpoint: str,
) -> None:
    access = AwsAccess(endpoint_url=moto_endpoint)
    arn = "arn:aws:iam::700000000001:role/cloudinv-reader"
    credentials = access.role_credentials(arn, "ext-1")
    assert access.role_credentials(arn, "ext-1") is credentials
    first = await credentials.get_frozen_credentials()
    assert (await credentials.get_frozen_credentials()).access_key == first.access_key
    # Five minutes from expiry is inside botocore's mandatory refresh window.
    credentials._expiry_time = datetime.now(UTC) + timedelta(minutes=5)
    refreshed = await credentials.get_frozen_credentials()
    assert refreshed.access_key != first.access_key
    target = access.role_account(AccountRole(role_arn=arn, external_id="ext-1"))
    async with access.client(access.session(target), "sts", "us-east-1") as sts:
        identity = await sts.get_caller_identity()
    assert identity["Account"] == "700000000001"


async def test_organizations_discovery_assumes_the_role_in_every_active_account(
    moto_endpoint: str,
) -> None:
    management = "700000000099"
    sts = boto3.client("sts", endpoint_url=moto_endpoint, region_name="us-east-1")
    creds = sts.assume_role(
        RoleArn=f"arn:aws:iam::{management}:role/admin", RoleSessionName="org-admin"
    )["Credentials"]
    org = boto3.client(
        "organizations",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )
    org.create_organization(FeatureSet="ALL")
    for name in ("dev", "prod"):
        org.create_account(AccountName=name, Email=f"{name}@example.com")
    listed = {a["Id"] for a in org.list_accounts()["Accounts"]}
    base = AioSession()
    base.set_credentials(creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"])
    access = AwsAccess(endpoint_url=moto_endpoint, base_session=base)

    targets = await access.discover_accounts(AwsSettings(organization_role_name="auditor"))

    assert {t.account_id for t in targets} == listed
    assert len(listed) == 3
    assert all(t.role_arn == f"arn:aws:iam::{t.account_id}:role/auditor" for t in targets)
    only = await access.discover_accounts(
        AwsSettings(organization_role_name="auditor"), only=[management]
    )
    assert [t.account_id for t in only] == [management]


async def test_local_credential_chain_scans_the_callers_account(moto_endpoint: str) -> None:
    access = AwsAccess(endpoint_url=moto_endpoint)
    targets = await access.discover_accounts(AwsSettings(regions=["us-east-1"]))
    assert [t.account_id for t in targets] == ["123456789012"]
    assert targets[0].credentials is None


async def test_clients_share_models_but_not_credentials(moto_endpoint: str) -> None:
    access = AwsAccess(endpoint_url=moto_endpoint)
    accounts = ["700000000011", "700000000012"]
    targets = [
        access.role_account(AccountRole(role_arn=f"arn:aws:iam::{a}:role/cloudinv-reader"))
        for a in accounts
    ]
    connections = SharedConnections(limit=4)
    config = access.pooled_config(connections)
    await access.warm_up("ec2")
    try:
        async with AsyncExitStack() as stack:
            clients = {
                (t.account_id, region): await stack.enter_async_context(
                    access.client(access.session(t), "ec2", region, config)
                )
                for t in targets
                for region in ("us-east-1", "eu-west-1")
            }
            for (account, region), client in clients.items():
                vpcs = (await client.describe_vpcs())["Vpcs"]
                # Each client signs as its own account and calls its own region.
                assert {v["OwnerId"] for v in vpcs} == {account}
                assert client.meta.region_name == region
            shared_class = type(clients[accounts[0], "us-east-1"])
            assert {type(c) for c in clients.values()} == {shared_class}
            assert len({id(c.meta.service_model) for c in clients.values()}) == 1
    finally:
        await connections.close()
    # A client made outside AwsAccess gets botocore's own model and class.
    async with AioSession().create_client(
        "ec2", region_name="us-east-1", endpoint_url=moto_endpoint
    ) as plain:
        assert type(plain) is not shared_class


async def test_clients_reuse_each_others_connections() -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    peers: list[object] = []

    async def describe_vpcs(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        return web.Response(
            text='<DescribeVpcsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
            "<requestId>r</requestId><vpcSet/></DescribeVpcsResponse>",
            content_type="text/xml",
        )

    app = web.Application()
    app.router.add_post("/", describe_vpcs)
    base = AioSession()
    base.set_credentials("AKIDEXAMPLE", "secret")
    async with TestServer(app) as server:
        access = AwsAccess(endpoint_url=str(server.make_url("/")), base_session=base)
        connections = SharedConnections(limit=4)
        config = access.pooled_config(connections)
        await access.warm_up("ec2")
        try:
            for _ in range(2):  # clients closed between rounds: the pool stays open
                async with AsyncExitStack() as stack:
                    for region in ("us-east-1", "eu-west-1", "eu-west-2"):
                        session = AioSession()  # a new account's session each time
                        session.set_credentials(f"AKID{region}", "secret")
                        ec2 = await stack.enter_async_context(
                            access.client(session, "ec2", region, config)
                        )
                        assert (await ec2.describe_vpcs())["Vpcs"] == []
        finally:
            await connections.close()
    assert len(peers) == 6
    assert len(set(peers)) == connections.opened == 1


# -- the engine's own rules, with fake clients (no AWS) ------------------------------------


def client_error(code: str, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"{code}!"}}, operation)


class FakeClient:
    """Answers ``describe_things`` / ``get_thing_policy`` from canned data; counts in-flight
    calls to check the engine's concurrency bounds."""

    def __init__(
        self, behaviour: dict[str, Any], delay: float = 0.0, endpoint: str = "https://fake.test"
    ) -> None:
        self.behaviour = behaviour
        self.delay = delay
        self.meta = SimpleNamespace(endpoint_url=endpoint)
        self.in_flight = 0
        self.max_in_flight = 0
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def can_paginate(self, method: str) -> bool:
        return False

    def __getattr__(self, method: str) -> Any:
        async def call(**params: Any) -> Any:
            self.calls.append((method, params))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                await asyncio.sleep(self.delay)
                answer = self.behaviour[method]
                result = answer(params) if callable(answer) else answer
                if isinstance(result, Exception):
                    raise result
                return result
            finally:
                self.in_flight -= 1

        return call


THING = ResourceSpec(
    cfn_type="AWS::Test::Thing",
    service="ec2",
    list_operation="DescribeThings",
    result_path="Things[]",
    id_field="ThingId",
    name_tag="Name",
    arn_template="arn:{partition}:test:{region}:{account}:thing/{id}",
    tags_field="Tags",
    ignore_error_codes=frozenset({"OptInRequired"}),
    details=(
        DetailCall(
            operation="GetThingPolicy",
            params={"ThingId": "ThingId"},
            result_path="Policy",
            merge_key="Policy",
            absent_codes=frozenset({"NoSuchThingPolicy"}),
        ),
    ),
)


async def run_collector(
    client: FakeClient, spec: ResourceSpec = THING
) -> tuple[list[ResourceSnapshot], ScanManifest]:
    emitted: list[ResourceSnapshot] = []

    async def emit(snapshot: ResourceSnapshot) -> None:
        emitted.append(snapshot)

    collector = ScopeCollector(
        scope=Scope(
            account_id="111122223333",
            partition="aws",
            region="eu-west-1",
            client_region="eu-west-1",
            spec=spec,
        ),
        client=client,
        limit=asyncio.Lock,
        registry=Registry([spec]),
        scan_id="scan-1",
        emit=emit,
    )
    manifest = await collector.run()
    return emitted, manifest


def things(*ids: str) -> dict[str, Any]:
    return {"Things": [{"ThingId": i, "Tags": [{"Key": "Name", "Value": f"n-{i}"}]} for i in ids]}


async def test_absent_detail_is_null_and_scope_complete() -> None:
    client = FakeClient(
        {
            "describe_things": things("t-1", "t-2"),
            "get_thing_policy": lambda p: (
                {"Policy": "{}"}
                if p["ThingId"] == "t-1"
                else client_error("NoSuchThingPolicy", "GetThingPolicy")
            ),
        }
    )
    snapshots, manifest = await run_collector(client)
    assert manifest.status == "complete"
    assert {s.resource_id: s.configuration["Policy"] for s in snapshots} == {
        "t-1": "{}",
        "t-2": None,
    }
    assert snapshots[0].arn == "arn:aws:test:eu-west-1:111122223333:thing/t-1"
    assert snapshots[0].name == "n-t-1"
    assert manifest.keys == [s.arn for s in snapshots]


async def test_failed_detail_makes_the_scope_partial_and_skips_that_resource() -> None:
    client = FakeClient(
        {
            "describe_things": things("t-1", "t-2"),
            "get_thing_policy": lambda p: (
                {"Policy": "{}"}
                if p["ThingId"] == "t-1"
                else client_error("AccessDenied", "GetThingPolicy")
            ),
        }
    )
    snapshots, manifest = await run_collector(client)
    assert manifest.status == "partial"
    assert not manifest.can_delete
    assert [s.resource_id for s in snapshots] == ["t-1"]
    assert len(manifest.keys) == 2  # t-2 was seen, only its configuration is missing
    assert manifest.errors[0].code == "AccessDenied"
    assert manifest.errors[0].operation == "GetThingPolicy"


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("OptInRequired", "complete"),
        ("AccessDenied", "failed"),
        ("UnauthorizedOperation", "failed"),
        ("Throttling", "failed"),
        ("ExpiredToken", "failed"),
    ],
)
async def test_list_errors_end_the_scope(code: str, status: str) -> None:
    client = FakeClient({"describe_things": client_error(code, "DescribeThings")})
    snapshots, manifest = await run_collector(client)
    assert (snapshots, manifest.status, manifest.keys) == ([], status, [])
    if status == "failed":
        assert manifest.errors[0].code == code
        assert manifest.errors[0].operation == "DescribeThings"
    else:
        assert manifest.errors == []


async def test_unexpected_exception_fails_only_its_scope() -> None:
    client = FakeClient({"describe_things": RuntimeError("connection reset")})
    _, manifest = await run_collector(client)
    assert manifest.status == "failed"
    assert manifest.errors[0].code == "RuntimeError"


class _FakeClientContext:
    def __init__(self, access: FakeAccess, key: tuple[str, str, str]) -> None:
        self.access, self.key = access, key

    async def __aenter__(self) -> FakeClient:
        self.access.opened.append(self.key)
        return self.access.clients[self.key]

    async def __aexit__(self, *exc: object) -> None:
        self.access.closed.append(self.key)


class FakeAccess(AwsAccess):
    """Hands out FakeClients (by account, region, service) instead of aiobotocore clients."""

    def __init__(self, clients: dict[tuple[str, str, str], FakeClient]) -> None:
        super().__init__(endpoint_url="http://fake")
        self.clients = clients
        self.opened: list[tuple[str, str, str]] = []
        self.closed: list[tuple[str, str, str]] = []
        self.sessions_made: list[str] = []

    def session(self, target: AccountTarget) -> Any:
        self.sessions_made.append(target.account_id)
        return target.account_id

    def client(self, session: Any, service: str, region: str, config: Any = None) -> Any:
        return _FakeClientContext(self, (session, region, service))

    async def warm_up(self, service: str) -> None:
        """The fake services have no botocore models to read."""


async def test_engine_bounds_calls_per_service_and_scans_global_types_once_per_account() -> None:
    accounts = ["111111111111", "222222222222"]
    regions = ["us-east-1", "eu-west-1"]
    many = {"Things": [{"ThingId": f"t-{i}"} for i in range(40)]}
    regional = ResourceSpec(
        cfn_type="AWS::Test::Regional",
        service="ec2",
        list_operation="DescribeThings",
        result_path="Things[]",
        id_field="ThingId",
        arn_template="arn:{partition}:test:{region}:{account}:thing/{id}",
        details=(DetailCall(operation="GetThingPolicy", params={"ThingId": "ThingId"}),),
    )
    global_spec = ResourceSpec(
        cfn_type="AWS::Test::Global",
        service="iam",
        list_operation="DescribeThings",
        result_path="Things[]",
        id_field="ThingId",
        arn_template="arn:{partition}:test::{account}:thing/{id}",
        global_service=True,
    )
    clients = {
        (a, r, "ec2"): FakeClient(
            {"describe_things": many, "get_thing_policy": {"Policy": "p"}}, delay=0.002
        )
        for a in accounts
        for r in regions
    }
    clients.update(
        {(a, "us-east-1", "iam"): FakeClient({"describe_things": things("g-1")}) for a in accounts}
    )
    access = FakeAccess(clients)
    targets = [AccountTarget(account_id=a) for a in accounts]
    planned: list[int] = []
    options = ScanOptions(
        max_concurrency=8,
        per_service_concurrency=3,
        buffer_size=4,
        on_scopes_planned=planned.append,
    )

    snapshots, manifests = await collect(
        scan_types(
            access, targets, regions, [regional, global_spec], options=options, registry=Registry()
        )
    )

    assert sum(planned) == len(manifests) == 2 * (2 + 1)
    assert {
        (m.account_id, m.region, m.resource_type)
        for m in manifests
        if m.resource_type == "AWS::Test::Global"
    } == {(a, GLOBAL_REGION, "AWS::Test::Global") for a in accounts}
    assert len(snapshots) == 2 * 2 * 40 + 2
    assert all(m.status == "complete" for m in manifests)
    assert max(c.max_in_flight for c in clients.values()) <= 3
    assert max(c.max_in_flight for c in clients.values()) > 1  # details ran concurrently
    assert sorted(access.opened) == sorted(access.closed)  # every client closed
    # One session per account, shared by its global and regional client groups.
    assert sorted(access.sessions_made) == accounts
    global_snapshot = next(s for s in snapshots if s.resource_type == "AWS::Test::Global")
    assert global_snapshot.arn == f"arn:aws:test::{global_snapshot.account_id}:thing/g-1"


async def test_regions_where_botocore_knows_the_service_is_absent_are_not_scopes() -> None:
    clients = {
        ("111111111111", "us-east-1", "ec2"): FakeClient(
            {"describe_things": things("t-1"), "get_thing_policy": {}}
        )
    }
    access = FakeAccess(clients)
    access.endpoint_url = None  # real AWS: botocore's endpoint data decides
    snapshots, manifests = await collect(
        scan_types(
            access,
            [AccountTarget(account_id="111111111111")],
            ["us-east-1", "us-gov-west-1"],  # not a region of the aws partition
            [THING],
            registry=Registry(),
        )
    )
    assert [(m.region, m.status) for m in manifests] == [("us-east-1", "complete")]
    assert len(snapshots) == 1


async def test_consumer_stopping_early_closes_everything() -> None:
    clients = {
        ("111111111111", "us-east-1", "ec2"): FakeClient(
            {"describe_things": things(*(f"t-{i}" for i in range(100))), "get_thing_policy": {}},
        )
    }
    access = FakeAccess(clients)
    stream = scan_types(
        access,
        [AccountTarget(account_id="111111111111")],
        ["us-east-1"],
        [THING],
        options=ScanOptions(buffer_size=2),
        registry=Registry(),
    )
    async for item in stream:
        assert isinstance(item, ResourceSnapshot)
        break
    await stream.aclose()
    assert access.opened == access.closed == [("111111111111", "us-east-1", "ec2")]


def test_tags_and_names_from_either_tag_format() -> None:
    spec_list = REGISTRY.get("AWS::EC2::Instance")
    assert read_tags(spec_list, {"Tags": [{"Key": "Name", "Value": "web"}]}) == {"Name": "web"}
    spec_dict = REGISTRY.get("AWS::Lambda::Function")
    assert read_tags(spec_dict, {"Tags": {"a": "1"}}) == {"a": "1"}
    assert read_tags(spec_dict, {"Tags": None}) == {}
    ecs = REGISTRY.get("AWS::ECS::Cluster")
    assert read_tags(ecs, {"tags": [{"key": "k", "value": "v"}]}) == {"k": "v"}
    identity = resource_identity(
        REGISTRY.get("AWS::Route53::HostedZone"),
        {"Id": "/hostedzone/Z1", "Name": "example.com."},
        partition="aws",
        region="",
        account_id="111122223333",
    )
    assert (identity.resource_id, identity.arn) == ("Z1", "arn:aws:route53:::hostedzone/Z1")
    logs = REGISTRY.get("AWS::Logs::LogGroup")
    fallback = resource_identity(
        logs, {"logGroupName": "/app"}, partition="aws", region="eu-west-1", account_id="1" * 12
    )
    assert fallback.arn == "arn:aws:logs:eu-west-1:111111111111:log-group:/app"


# -- every other registered type, one resource each, in a fresh account --------------------

MOTO_LACKS = frozenset(
    {
        "AWS::EC2::PlacementGroup",  # DescribePlacementGroups not implemented
        "AWS::EC2::ReservedInstances",  # DescribeReservedInstances not implemented
        "AWS::CloudWatch::CompositeAlarm",  # PutCompositeAlarm not implemented
        "AWS::StorageGateway::Gateway",  # no Storage Gateway backend at all
    }
)
"""Declared types moto 5.2 cannot serve; checked by the meta-test only."""

OTHER_TYPES_REGION = "us-east-1"


def _seed_one_of_each(endpoint: str, account: str) -> dict[str, str]:
    """One resource of every type beyond the scan estate's; returns type -> resource id."""
    import io
    import json
    import zipfile

    sts = boto3.client("sts", endpoint_url=endpoint, region_name=OTHER_TYPES_REGION)
    creds = sts.assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/cloudinv-reader", RoleSessionName="seed"
    )["Credentials"]
    session = boto3.Session(
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
        region_name=OTHER_TYPES_REGION,
    )

    def c(service: str) -> Any:
        return session.client(service, endpoint_url=endpoint)

    seeded: dict[str, str] = {}
    ec2 = c("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    peer = ec2.create_vpc(CidrBlock="10.8.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.9.1.0/24")["Subnet"]["SubnetId"]
    instance = ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1, SubnetId=subnet)[
        "Instances"
    ][0]["InstanceId"]
    seeded["AWS::EC2::DHCPOptions"] = ec2.create_dhcp_options(
        DhcpConfigurations=[{"Key": "domain-name", "Values": ["corp.internal"]}]
    )["DhcpOptions"]["DhcpOptionsId"]
    seeded["AWS::EC2::Image"] = ec2.create_image(InstanceId=instance, Name="golden")["ImageId"]
    seeded["AWS::EC2::PrefixList"] = ec2.create_managed_prefix_list(
        PrefixListName="office",
        MaxEntries=5,
        AddressFamily="IPv4",
        Entries=[{"Cidr": "10.0.0.0/24"}],
    )["PrefixList"]["PrefixListId"]
    eip = ec2.allocate_address(Domain="vpc")["AllocationId"]
    seeded["AWS::EC2::NatGateway"] = ec2.create_nat_gateway(SubnetId=subnet, AllocationId=eip)[
        "NatGateway"
    ]["NatGatewayId"]
    tgw = ec2.create_transit_gateway(Description="core")["TransitGateway"]["TransitGatewayId"]
    seeded["AWS::EC2::TransitGateway"] = tgw
    seeded["AWS::EC2::TransitGatewayAttachment"] = ec2.create_transit_gateway_vpc_attachment(
        TransitGatewayId=tgw, VpcId=vpc, SubnetIds=[subnet]
    )["TransitGatewayVpcAttachment"]["TransitGatewayAttachmentId"]
    seeded["AWS::EC2::TransitGatewayRouteTable"] = ec2.create_transit_gateway_route_table(
        TransitGatewayId=tgw
    )["TransitGatewayRouteTable"]["TransitGatewayRouteTableId"]
    seeded["AWS::EC2::VPCEndpoint"] = ec2.create_vpc_endpoint(
        VpcId=vpc, ServiceName=f"com.amazonaws.{OTHER_TYPES_REGION}.s3"
    )["VpcEndpoint"]["VpcEndpointId"]
    seeded["AWS::EC2::VPCPeeringConnection"] = ec2.create_vpc_peering_connection(
        VpcId=vpc, PeerVpcId=peer
    )["VpcPeeringConnection"]["VpcPeeringConnectionId"]
    seeded["AWS::EC2::VPNGateway"] = ec2.create_vpn_gateway(Type="ipsec.1")["VpnGateway"][
        "VpnGatewayId"
    ]
    cgw = ec2.create_customer_gateway(Type="ipsec.1", PublicIp="1.2.3.4", BgpAsn=65000)[
        "CustomerGateway"
    ]["CustomerGatewayId"]
    seeded["AWS::EC2::CustomerGateway"] = cgw
    seeded["AWS::EC2::VPNConnection"] = ec2.create_vpn_connection(
        Type="ipsec.1", CustomerGatewayId=cgw, TransitGatewayId=tgw
    )["VpnConnection"]["VpnConnectionId"]
    seeded["AWS::EC2::LaunchTemplate"] = ec2.create_launch_template(
        LaunchTemplateName="web", LaunchTemplateData={"ImageId": "ami-12345678"}
    )["LaunchTemplate"]["LaunchTemplateId"]
    logs_bucket = f"logs-{account}"
    c("s3").create_bucket(Bucket=logs_bucket)
    seeded["AWS::EC2::FlowLog"] = ec2.create_flow_logs(
        ResourceIds=[vpc],
        ResourceType="VPC",
        TrafficType="ALL",
        LogDestinationType="s3",
        LogDestination=f"arn:aws:s3:::{logs_bucket}",
    )["FlowLogIds"][0]
    seeded["AWS::CertificateManager::Certificate"] = c("acm").request_certificate(
        DomainName="example.com"
    )["CertificateArn"]
    seeded["AWS::ApiGateway::RestApi"] = c("apigateway").create_rest_api(
        name="api", tags={"team": "web"}
    )["id"]
    seeded["AWS::ApiGatewayV2::Api"] = c("apigatewayv2").create_api(
        Name="api2", ProtocolType="HTTP"
    )["ApiId"]
    seeded["AWS::DynamoDB::Table"] = c("dynamodb").create_table(
        TableName="orders",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        Tags=[{"Key": "team", "Value": "shop"}],
    )["TableDescription"]["TableName"]
    scaling = c("application-autoscaling")
    target = {
        "ServiceNamespace": "dynamodb",
        "ResourceId": "table/orders",
        "ScalableDimension": "dynamodb:table:ReadCapacityUnits",
    }
    scaling.register_scalable_target(**target, MinCapacity=1, MaxCapacity=10)
    seeded["AWS::ApplicationAutoScaling::ScalableTarget"] = scaling.describe_scalable_targets(
        ServiceNamespace="dynamodb"
    )["ScalableTargets"][0]["ScalableTargetARN"]
    seeded["AWS::ApplicationAutoScaling::ScalingPolicy"] = scaling.put_scaling_policy(
        PolicyName="reads",
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 50.0,
            "PredefinedMetricSpecification": {
                "PredefinedMetricType": "DynamoDBReadCapacityUtilization"
            },
        },
        **target,
    )["PolicyARN"]
    athena = c("athena")
    athena.create_work_group(Name="analysts")
    seeded["AWS::Athena::WorkGroup"] = "analysts"
    athena.create_data_catalog(
        Name="catalog",
        Type="HIVE",
        Parameters={
            "metadata-function": f"arn:aws:lambda:{OTHER_TYPES_REGION}:{account}:function:f"
        },
    )
    seeded["AWS::Athena::DataCatalog"] = "catalog"
    autoscaling = c("autoscaling")
    autoscaling.create_launch_configuration(
        LaunchConfigurationName="lc", ImageId="ami-12345678", InstanceType="t3.micro"
    )
    seeded["AWS::AutoScaling::LaunchConfiguration"] = "lc"
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="asg",
        LaunchConfigurationName="lc",
        MinSize=0,
        MaxSize=1,
        VPCZoneIdentifier=subnet,
    )
    seeded["AWS::AutoScaling::AutoScalingGroup"] = "asg"
    backup = c("backup")
    seeded["AWS::Backup::BackupVault"] = backup.create_backup_vault(BackupVaultName="vault")[
        "BackupVaultName"
    ]
    seeded["AWS::Backup::BackupPlan"] = backup.create_backup_plan(
        BackupPlan={
            "BackupPlanName": "daily",
            "Rules": [{"RuleName": "nightly", "TargetBackupVaultName": "vault"}],
        }
    )["BackupPlanId"]
    c("cloudformation").create_stack(
        StackName="stack",
        TemplateBody=json.dumps({"Resources": {"Q": {"Type": "AWS::SQS::Queue"}}}),
    )
    seeded["AWS::CloudFormation::Stack"] = "stack"
    seeded["AWS::CloudFront::Distribution"] = c("cloudfront").create_distribution(
        DistributionConfig={
            "CallerReference": account,
            "Origins": {
                "Quantity": 1,
                "Items": [
                    {
                        "Id": "origin",
                        "DomainName": f"{logs_bucket}.s3.amazonaws.com",
                        "S3OriginConfig": {"OriginAccessIdentity": ""},
                    }
                ],
            },
            "DefaultCacheBehavior": {
                "TargetOriginId": "origin",
                "ViewerProtocolPolicy": "allow-all",
                "MinTTL": 0,
                "ForwardedValues": {"QueryString": False, "Cookies": {"Forward": "none"}},
                "TrustedSigners": {"Enabled": False, "Quantity": 0},
            },
            "Comment": "",
            "Enabled": True,
        }
    )["Distribution"]["Id"]
    seeded["AWS::CloudTrail::Trail"] = c("cloudtrail").create_trail(
        Name="trail", S3BucketName=logs_bucket
    )["Name"]
    c("cloudwatch").put_metric_alarm(
        AlarmName="cpu",
        MetricName="CPUUtilization",
        Namespace="AWS/EC2",
        Statistic="Average",
        Period=60,
        EvaluationPeriods=1,
        Threshold=90.0,
        ComparisonOperator="GreaterThanThreshold",
    )
    seeded["AWS::CloudWatch::Alarm"] = "cpu"
    c("logs").create_log_group(logGroupName="/app/web")
    seeded["AWS::Logs::LogGroup"] = "/app/web"
    seeded["AWS::ECR::Repository"] = c("ecr").create_repository(repositoryName="web")["repository"][
        "repositoryName"
    ]
    ecs = c("ecs")
    seeded["AWS::ECS::Cluster"] = ecs.create_cluster(clusterName="prod")["cluster"]["clusterName"]
    ecs.register_task_definition(
        family="web", containerDefinitions=[{"name": "web", "image": "nginx", "memory": 128}]
    )
    seeded["AWS::ECS::Service"] = ecs.create_service(
        cluster="prod", serviceName="web", taskDefinition="web", desiredCount=0
    )["service"]["serviceName"]
    efs = c("efs")
    file_system = efs.create_file_system(
        CreationToken="shared", Tags=[{"Key": "Name", "Value": "shared"}]
    )["FileSystemId"]
    seeded["AWS::EFS::FileSystem"] = file_system
    seeded["AWS::EFS::AccessPoint"] = efs.create_access_point(FileSystemId=file_system)[
        "AccessPointId"
    ]
    elasticache = c("elasticache")
    seeded["AWS::ElastiCache::CacheCluster"] = elasticache.create_cache_cluster(
        CacheClusterId="cache", Engine="redis", CacheNodeType="cache.t3.micro", NumCacheNodes=1
    )["CacheCluster"]["CacheClusterId"]
    seeded["AWS::ElastiCache::ReplicationGroup"] = elasticache.create_replication_group(
        ReplicationGroupId="sessions",
        ReplicationGroupDescription="sessions",
        Engine="redis",
        CacheNodeType="cache.t3.micro",
    )["ReplicationGroup"]["ReplicationGroupId"]
    kms = c("kms")
    key = kms.create_key(Description="data key", Tags=[{"TagKey": "team", "TagValue": "sec"}])[
        "KeyMetadata"
    ]["KeyId"]
    seeded["AWS::KMS::Key"] = key
    kms.create_alias(AliasName="alias/data", TargetKeyId=key)
    seeded["AWS::KMS::Alias"] = "alias/data"
    role = c("iam").create_role(
        RoleName="lambda",
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "lambda.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
        ),
    )["Role"]["Arn"]
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("index.py", "def handler(event, context):\n    return 1\n")
    seeded["AWS::Lambda::Function"] = c("lambda").create_function(
        FunctionName="fn",
        Runtime="python3.11",
        Role=role,
        Handler="index.handler",
        Code={"ZipFile": code.getvalue()},
        Tags={"team": "web"},
    )["FunctionName"]
    seeded["AWS::Redshift::Cluster"] = c("redshift").create_cluster(
        ClusterIdentifier="warehouse",
        NodeType="dc2.large",
        MasterUsername="admin",
        MasterUserPassword="Passw0rd!",
        ClusterType="single-node",
    )["Cluster"]["ClusterIdentifier"]
    seeded["AWS::Route53::HostedZone"] = (
        c("route53")
        .create_hosted_zone(Name=f"{account}.example.com", CallerReference=account)["HostedZone"][
            "Id"
        ]
        .removeprefix("/hostedzone/")
    )
    seeded["AWS::SecretsManager::Secret"] = c("secretsmanager").create_secret(
        Name="db-password", SecretString="not-to-be-read"
    )["Name"]
    sns, sqs = c("sns"), c("sqs")
    topic = sns.create_topic(Name="alerts")["TopicArn"]
    seeded["AWS::SNS::Topic"] = topic
    queue = sqs.create_queue(QueueName="jobs")["QueueUrl"]
    seeded["AWS::SQS::Queue"] = queue
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    seeded["AWS::SNS::Subscription"] = sns.subscribe(
        TopicArn=topic, Protocol="sqs", Endpoint=queue_arn
    )["SubscriptionArn"]
    c("ssm").put_parameter(Name="/app/db/host", Value="db.internal", Type="String")
    seeded["AWS::SSM::Parameter"] = "/app/db/host"
    seeded["AWS::EKS::Cluster"] = c("eks").create_cluster(
        name="platform", roleArn=role, resourcesVpcConfig={"subnetIds": [subnet]}
    )["cluster"]["name"]
    c("kinesis").create_stream(StreamName="clicks", ShardCount=1)
    seeded["AWS::Kinesis::Stream"] = "clicks"
    c("stepfunctions").create_state_machine(
        name="orders",
        definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}),
        roleArn=role,
    )
    seeded["AWS::StepFunctions::StateMachine"] = "orders"
    c("events").put_rule(Name="nightly", ScheduleExpression="rate(1 day)")
    seeded["AWS::Events::Rule"] = "nightly"
    c("opensearch").create_domain(DomainName="search", TagList=[{"Key": "team", "Value": "s"}])
    seeded["AWS::OpenSearchService::Domain"] = "search"
    seeded["AWS::RDS::DBSubnetGroup"] = c("rds").create_db_subnet_group(
        DBSubnetGroupName="private", DBSubnetGroupDescription="private", SubnetIds=[subnet]
    )["DBSubnetGroup"]["DBSubnetGroupName"]
    return seeded


async def test_every_other_type_finds_what_was_seeded(moto_endpoint: str) -> None:
    account = f"7{random.randrange(10**10, 10**11)}"
    seeded = await asyncio.to_thread(_seed_one_of_each, moto_endpoint, account)
    # The curated types (the derived ones have their own test, test_derived_types_moto.py).
    curated = [spec.cfn_type for spec in REGISTRY if not spec.derived]
    types = [t for t in curated if t not in MOTO_LACKS and t not in SCAN_ESTATE_TYPES]
    aws = AwsSettings(
        accounts=[AccountRole(role_arn=f"arn:aws:iam::{account}:role/cloudinv-reader")],
        regions=[OTHER_TYPES_REGION],
        endpoint_url=moto_endpoint,
    )
    snapshots, manifests = await collect(scan(aws, types=types))

    assert {m.resource_type for m in manifests} == set(types)
    unfinished = {m.resource_type: m.errors for m in manifests if m.status != "complete"}
    assert unfinished == {}
    found: dict[str, set[str]] = defaultdict(set)
    for s in snapshots:
        found[s.resource_type].add(s.resource_id)
    missing = {t: (i, found[t]) for t, i in seeded.items() if i not in found[t]}
    assert missing == {}
    # Every type but ECS tasks (moto runs none) was seeded and found.
    assert set(types) - set(seeded) == {"AWS::ECS::Task"}
    by_id = {(s.resource_type, s.resource_id): s for s in snapshots}
    parameter = by_id[("AWS::SSM::Parameter", "/app/db/host")]
    assert parameter.arn == f"arn:aws:ssm:{OTHER_TYPES_REGION}:{account}:parameter/app/db/host"
    assert "Value" not in parameter.configuration  # metadata only
    secret = by_id[("AWS::SecretsManager::Secret", "db-password")]
    assert "not-to-be-read" not in secret.model_dump_json()
    table = by_id[("AWS::DynamoDB::Table", "orders")]
    assert table.tags == {"team": "shop"}  # from the second detail stage (needs TableArn)
    assert by_id[("AWS::KMS::Key", seeded["AWS::KMS::Key"])].tags == {"team": "sec"}
    assert by_id[("AWS::Lambda::Function", "fn")].tags == {"team": "web"}
    assert by_id[("AWS::OpenSearchService::Domain", "search")].tags == {"team": "s"}
    assert (
        "Succeed"
        in by_id[("AWS::StepFunctions::StateMachine", "orders")].configuration["definition"]
    )
    service = by_id[("AWS::ECS::Service", "web")]
    assert service.arn.startswith(f"arn:aws:ecs:{OTHER_TYPES_REGION}:{account}:service/")
    zone = by_id[("AWS::Route53::HostedZone", seeded["AWS::Route53::HostedZone"])]
    assert zone.region == GLOBAL_REGION
    assert zone.arn == f"arn:aws:route53:::hostedzone/{seeded['AWS::Route53::HostedZone']}"


async def test_denied_role_costs_one_assume_role_and_one_line(
    scan_estate: ScanEstate, denying_proxy: str, caplog: pytest.LogCaptureFixture
) -> None:
    denied_account = "700000000077"
    denied_arn = f"arn:aws:iam::{denied_account}:role/{SCAN_DENIED_ROLE}"
    good_arn = scan_estate.role_arns[0]
    aws = AwsSettings(
        accounts=[AccountRole(role_arn=denied_arn), AccountRole(role_arn=good_arn)],
        regions=scan_estate.regions,
        endpoint_url=denying_proxy,
        max_concurrency=16,
    )
    before = {arn: ASSUME_ROLE_CALLS.get(arn, 0) for arn in (denied_arn, good_arn)}
    access = AwsAccess.from_settings(aws)
    # Every curated type: hundreds of scopes per account (the derived ones, most of which moto
    # does not implement, have their own test).
    types = [spec.cfn_type for spec in REGISTRY if not spec.derived]
    with caplog.at_level(logging.WARNING):
        _, manifests = await collect(scan(aws, types=types, access=access))

    denied = [m for m in manifests if m.account_id == denied_account]
    global_types = sum(1 for t in types if REGISTRY.get(t).global_service)
    assert len(denied) == global_types + (len(types) - global_types) * len(scan_estate.regions)
    assert {(m.status, m.errors[0].code, m.errors[0].operation) for m in denied} == {
        ("failed", "AccessDenied", "AssumeRole")
    }
    assert all(not m.keys for m in denied)
    # One AssumeRole per account, however many scopes share its credentials.
    assert ASSUME_ROLE_CALLS[denied_arn] - before[denied_arn] == 1
    assert ASSUME_ROLE_CALLS[good_arn] - before[good_arn] == 1
    assert access.assume_role_calls(denied_arn) == 1
    # One line for the denied account, no traceback anywhere.
    lines = [r for r in caplog.records if denied_account in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert "AccessDenied" in lines[0].getMessage()
    assert all(r.exc_info is None for r in caplog.records), [
        r.getMessage() for r in caplog.records if r.exc_info
    ]
    # The other account was scanned.
    assert any(m.status == "complete" for m in manifests if m.account_id != denied_account)

    # A second scan through the same access: the failure is remembered for a while, STS is
    # not asked again at once.
    _, again = await collect(scan(aws, types=types[:3], access=access))
    assert ASSUME_ROLE_CALLS[denied_arn] - before[denied_arn] == 1
    assert ASSUME_ROLE_CALLS[good_arn] - before[good_arn] == 1  # credentials still valid
    assert all(m.status == "failed" for m in again if m.account_id == denied_account)


async def test_unreachable_endpoint_fails_its_remaining_scopes_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead = "https://ec2.eu-west-1.dead.test"
    unreachable = EndpointConnectionError(endpoint_url=dead)
    clients = {
        ("111111111111", "eu-west-1", "ec2"): FakeClient(
            {"describe_things": unreachable}, endpoint=dead
        ),
        ("111111111111", "us-east-1", "ec2"): FakeClient({"describe_things": things("t-1")}),
    }
    specs = [
        ResourceSpec(
            cfn_type=f"AWS::Test::Thing{n}",
            service="ec2",
            list_operation="DescribeThings",
            result_path="Things[]",
            id_field="ThingId",
            arn_template="arn:{partition}:test:{region}:{account}:thing/{id}",
        )
        for n in range(5)
    ]
    access = FakeAccess(clients)
    with caplog.at_level(logging.WARNING):
        snapshots, manifests = await collect(
            scan_types(
                access,
                [AccountTarget(account_id="111111111111")],
                ["eu-west-1", "us-east-1"],
                specs,
                options=ScanOptions(max_concurrency=1),
                registry=Registry(specs),
            )
        )
    by_region: dict[str, set[str]] = defaultdict(set)
    for m in manifests:
        by_region[m.region].add(m.status)
        if m.region == "eu-west-1":
            assert m.errors[0].code == "EndpointConnectionError"
    assert by_region == {"eu-west-1": {"failed"}, "us-east-1": {"complete"}}
    assert len(snapshots) == 5
    # The first scope found the endpoint dead; the other four did not call it.
    assert len(clients[("111111111111", "eu-west-1", "ec2")].calls) == 1
    assert len([r for r in caplog.records if dead in r.getMessage()]) == 1
