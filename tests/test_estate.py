"""The simulated estate: seeding in several accounts and regions, and the mutator.

Everything is checked with boto3 through STS AssumeRole into each account, i.e. the way a
collector sees the estate, not through the estate's own bookkeeping.

``moto_endpoint`` (a session-scoped moto server) comes from ``conftest.py``; it is shared with
other tests, so each estate here uses account ids of its own.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from pydantic import ValidationError

from cloudinv.simulator.estate import (
    MOTO_CREDENTIALS,
    SCRIPTED_FIRST,
    BucketInfo,
    ChangeAction,
    EstateChange,
    EstateCounts,
    EstateInfo,
    EstateMutator,
    EstateSpec,
    account_session,
    role_arn,
    seed_estate,
)

REGIONS = ["us-east-1", "eu-west-1", "ap-southeast-2"]


def _unique_accounts(n: int) -> list[str]:
    rng = random.Random()
    return [f"9{rng.randrange(10**10, 10**11):011d}" for _ in range(n)]


def _boto(endpoint: str, account_id: str, role_name: str = "cloudinv-reader") -> boto3.Session:
    """A boto3 session acting in ``account_id`` through AssumeRole, as a collector would."""
    sts = boto3.client(
        "sts",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id=MOTO_CREDENTIALS.access_key_id,
        aws_secret_access_key=MOTO_CREDENTIALS.secret_access_key,
    )
    creds = sts.assume_role(RoleArn=role_arn(account_id, role_name), RoleSessionName="verify")[
        "Credentials"
    ]
    return boto3.Session(
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )


class Verifier:
    """boto3 clients per (account, service, region) against moto."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self._sessions: dict[str, boto3.Session] = {}

    def client(self, account_id: str, service: str, region: str = "us-east-1") -> Any:
        if account_id not in self._sessions:
            self._sessions[account_id] = _boto(self.endpoint, account_id)
        return self._sessions[account_id].client(
            service,
            region_name=region,
            endpoint_url=self.endpoint,
            config=Config(s3={"addressing_style": "path"}),
        )


@pytest.fixture(scope="module")
async def estate(moto_endpoint: str) -> EstateInfo:
    """The default-shaped estate (3 accounts x 3 regions), on account ids of its own."""
    return await seed_estate(moto_endpoint, EstateSpec(accounts=_unique_accounts(3)))


@pytest.fixture(scope="module")
def verify(moto_endpoint: str) -> Iterator[Verifier]:
    yield Verifier(moto_endpoint)


@pytest.fixture
async def small_estate(moto_endpoint: str) -> EstateInfo:
    """A fresh, smaller estate for the mutator to change."""
    spec = EstateSpec(
        accounts=_unique_accounts(2),
        regions=["us-east-1", "eu-west-1"],
        counts=EstateCounts(db_instances=0, db_snapshots=0, users=1, roles=0),
    )
    return await seed_estate(moto_endpoint, spec)


# --- seeding ---------------------------------------------------------------------------------


async def test_seed_is_fast_and_names_every_account_and_region(estate: EstateInfo) -> None:
    assert len(estate.accounts) == 3
    assert estate.seeded_in_s < 20
    for account_id, acct in estate.accounts.items():
        assert acct.role_arn == f"arn:aws:iam::{account_id}:role/cloudinv-reader"
        assert sorted(acct.regions) == sorted(REGIONS)
        for region in acct.regions.values():
            assert len(region.instance_ids) == 3
            assert len(region.subnet_ids) == 2
    assert estate.role_arns == [a.role_arn for a in estate.accounts.values()]


async def test_aiobotocore_account_session_acts_in_the_account(
    moto_endpoint: str, estate: EstateInfo
) -> None:
    for role in estate.role_arns:
        acct = await account_session(role, endpoint_url=moto_endpoint, base=MOTO_CREDENTIALS)
        async with acct.client("sts", "us-east-1") as sts:
            ident = await sts.get_caller_identity()
        assert ident["Account"] == acct.account_id == role.split(":")[4]
        assert "cloudinv-reader" in ident["Arn"]
        assert acct.credentials.secret_access_key not in repr(acct)


def _tag(resource: dict[str, Any], key: str) -> str | None:
    return next((t["Value"] for t in resource.get("Tags", []) if t["Key"] == key), None)


def test_each_region_has_network_and_compute(estate: EstateInfo, verify: Verifier) -> None:
    for account_id, acct in estate.accounts.items():
        for region, want in acct.regions.items():
            ec2 = verify.client(account_id, "ec2", region)
            vpcs = ec2.describe_vpcs(VpcIds=[want.vpc_id])["Vpcs"]
            assert _tag(vpcs[0], "Name") == f"main-{region}"
            subnets = ec2.describe_subnets(SubnetIds=want.subnet_ids)["Subnets"]
            assert len({s["AvailabilityZone"] for s in subnets}) == 2
            groups = ec2.describe_security_groups(GroupIds=want.security_group_ids)
            by_name = {g["GroupName"]: g for g in groups["SecurityGroups"]}
            assert set(by_name) == {"web", "app", "db"}
            web_ports = {p["FromPort"] for p in by_name["web"]["IpPermissions"]}
            assert web_ports == {80, 443}
            assert (
                by_name["db"]["IpPermissions"][0]["UserIdGroupPairs"][0]["GroupId"]
                == (by_name["app"]["GroupId"])
            )
            reservations = ec2.describe_instances(InstanceIds=want.instance_ids)["Reservations"]
            instances = [i for r in reservations for i in r["Instances"]]
            assert {i["State"]["Name"] for i in instances} == {"running"}
            assert sorted(_tag(i, "Name") or "" for i in instances) == [
                "api-1",
                "web-1",
                "worker-1",
            ]
            assert {i["ImageId"] for i in instances} == {want.image_id}
            volumes = ec2.describe_volumes(VolumeIds=want.volume_ids)["Volumes"]
            assert len(volumes) == 2
            assert sum(len(v["Attachments"]) for v in volumes) == 1
            snaps = ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]
            assert sorted(s["SnapshotId"] for s in snaps) == sorted(
                [*want.snapshot_ids, want.image_snapshot_id]
            )
            data_snaps = [s for s in snaps if s["SnapshotId"] in want.snapshot_ids]
            assert {s["VolumeId"] for s in data_snaps} <= set(want.volume_ids)


def test_each_region_has_databases_and_load_balancers(estate: EstateInfo, verify: Verifier) -> None:
    for account_id, acct in estate.accounts.items():
        for region, want in acct.regions.items():
            rds = verify.client(account_id, "rds", region)
            dbs = rds.describe_db_instances()["DBInstances"]
            assert (
                [d["DBInstanceIdentifier"] for d in dbs] == want.db_instance_ids == ["postgres-1"]
            )
            manual = rds.describe_db_snapshots(SnapshotType="manual")["DBSnapshots"]
            assert [s["DBSnapshotIdentifier"] for s in manual] == want.db_snapshot_ids
            elbv2 = verify.client(account_id, "elbv2", region)
            lbs = elbv2.describe_load_balancers()["LoadBalancers"]
            assert [lb["LoadBalancerArn"] for lb in lbs] == want.load_balancer_arns
            assert lbs[0]["Type"] == "application"
            health = elbv2.describe_target_health(TargetGroupArn=want.target_group_arns[0])
            targets = {t["Target"]["Id"] for t in health["TargetHealthDescriptions"]}
            assert targets == set(want.instance_ids)
            listeners = elbv2.describe_listeners(LoadBalancerArn=want.load_balancer_arns[0])
            assert listeners["Listeners"][0]["Port"] == 80
            elb = verify.client(account_id, "elb", region)
            classic = elb.describe_load_balancers()["LoadBalancerDescriptions"]
            assert [c["LoadBalancerName"] for c in classic] == want.classic_load_balancer_names
            assert len(classic[0]["Instances"]) == 1


def _no_such(call: Any, **kwargs: Any) -> bool:
    try:
        call(**kwargs)
    except ClientError:
        return True
    return False


def test_each_account_has_varied_buckets(estate: EstateInfo, verify: Verifier) -> None:
    for account_id, acct in estate.accounts.items():
        s3 = verify.client(account_id, "s3")
        names = sorted(b["Name"] for b in s3.list_buckets()["Buckets"])
        assert names == sorted(b.name for b in acct.buckets)
        assert len({b.region for b in acct.buckets}) == 3
        for want in acct.buckets:
            s3 = verify.client(account_id, "s3", want.region)
            location = s3.get_bucket_location(Bucket=want.name)["LocationConstraint"]
            assert (location or "us-east-1") == want.region
            versioning = s3.get_bucket_versioning(Bucket=want.name).get("Status")
            assert (versioning == "Enabled") is want.versioning
            tags = s3.get_bucket_tagging(Bucket=want.name)["TagSet"]
            assert {t["Key"]: t["Value"] for t in tags} == want.tags
            assert _no_such(s3.get_public_access_block, Bucket=want.name) is not (
                want.public_access_block
            )
            assert _no_such(s3.get_bucket_policy, Bucket=want.name) is not want.policy
            assert _no_such(s3.get_bucket_lifecycle_configuration, Bucket=want.name) is not (
                want.lifecycle
            )
            if want.encryption:
                enc = s3.get_bucket_encryption(Bucket=want.name)
                rule = enc["ServerSideEncryptionConfiguration"]["Rules"][0]
                assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == (
                    want.encryption
                )
        flags = [(b.versioning, b.public_access_block, b.lifecycle, b.policy) for b in acct.buckets]
        assert len(set(flags)) == len(flags), "bucket configurations should differ"


def test_each_account_has_iam_users_groups_and_roles(estate: EstateInfo, verify: Verifier) -> None:
    for account_id, acct in estate.accounts.items():
        iam = verify.client(account_id, "iam")
        users = sorted(u["UserName"] for u in iam.list_users()["Users"])
        assert users == sorted(acct.user_names) == ["alice", "bob", "ci-deployer"]
        keys = iam.list_access_keys(UserName="ci-deployer")["AccessKeyMetadata"]
        assert sorted(k["Status"] for k in keys) == ["Active", "Inactive"]
        assert iam.list_user_policies(UserName="alice")["PolicyNames"] == ["ec2-start-stop"]
        assert iam.list_attached_user_policies(UserName="bob")["AttachedPolicies"]
        members = iam.get_group(GroupName="developers")["Users"]
        assert [u["UserName"] for u in members] == ["alice"]
        roles = {r["RoleName"]: r for r in iam.list_roles()["Roles"]}
        assert set(roles) == set(acct.role_names)
        assert roles["cloudinv-reader"]["Arn"] == acct.role_arn
        attached = iam.list_attached_role_policies(RoleName="cloudinv-reader")
        assert [p["PolicyName"] for p in attached["AttachedPolicies"]] == ["cloudinv-read-only"]
        assert iam.list_role_policies(RoleName="lambda-executor")["PolicyNames"]


def test_accounts_are_isolated(estate: EstateInfo, verify: Verifier) -> None:
    accounts = list(estate.accounts)
    for account_id in accounts:
        s3 = verify.client(account_id, "s3")
        names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
        assert names and all(account_id in name for name in names)
        ec2 = verify.client(account_id, "ec2", "us-east-1")
        seen = {
            i["InstanceId"]
            for r in ec2.describe_instances()["Reservations"]
            for i in r["Instances"]
        }
        for other in accounts:
            other_ids = set(estate.accounts[other].regions["us-east-1"].instance_ids)
            assert (seen >= other_ids) if other == account_id else not (seen & other_ids)


def test_spec_rejects_bad_input() -> None:
    with pytest.raises(ValidationError):
        EstateSpec(accounts=["12345"])
    with pytest.raises(ValidationError):
        EstateSpec(accounts=["111111111111", "111111111111"])
    with pytest.raises(ValidationError):
        EstateCounts(subnets=1)
    with pytest.raises(ValidationError):
        EstateCounts(db_instances=0, db_snapshots=1)


# --- the mutator -----------------------------------------------------------------------------


def _ssh_open_to_world(group: dict[str, Any]) -> bool:
    return any(
        p.get("FromPort") == 22 and any(r["CidrIp"] == "0.0.0.0/0" for r in p["IpRanges"])
        for p in group["IpPermissions"]
    )


async def test_scripted_first_steps_open_ssh_and_drop_a_public_access_block(
    moto_endpoint: str, small_estate: EstateInfo, verify: Verifier
) -> None:
    mutator = EstateMutator(moto_endpoint, small_estate, seed=7)
    opened = await mutator.step()
    unblocked = await mutator.step()
    assert [opened.action, unblocked.action] == list(SCRIPTED_FIRST)

    assert opened.action is ChangeAction.OPEN_SSH_TO_WORLD
    assert opened.resource_type == "AWS::EC2::SecurityGroup"
    ec2 = verify.client(opened.account_id, "ec2", opened.region)
    group = ec2.describe_security_groups(GroupIds=[opened.resource_id])["SecurityGroups"][0]
    assert _ssh_open_to_world(group)

    assert unblocked.action is ChangeAction.REMOVE_PUBLIC_ACCESS_BLOCK
    s3 = verify.client(unblocked.account_id, "s3", unblocked.region)
    with pytest.raises(ClientError) as err:
        s3.get_public_access_block(Bucket=unblocked.resource_id)
    assert err.value.response["Error"]["Code"] == "NoSuchPublicAccessBlockConfiguration"

    # The mutator keeps its own copy of the info current; the seeded info is left as seeded.
    def bucket(info: EstateInfo) -> BucketInfo:
        buckets = info.accounts[unblocked.account_id].buckets
        return next(b for b in buckets if b.name == unblocked.resource_id)

    assert bucket(small_estate).public_access_block
    assert not bucket(mutator.info).public_access_block


def _still_open(changes: list[EstateChange], account_id: str, region: str) -> set[str]:
    """Security groups the changes left open to SSH from anywhere, replayed in order."""
    open_groups: set[str] = set()
    for c in changes:
        if (c.account_id, c.region) != (account_id, region):
            continue
        if c.action is ChangeAction.OPEN_SSH_TO_WORLD:
            open_groups.add(c.resource_id)
        elif c.action is ChangeAction.CLOSE_SSH:
            open_groups.discard(c.resource_id)
    return open_groups


async def test_random_steps_run_and_keep_the_info_true(
    moto_endpoint: str, small_estate: EstateInfo, verify: Verifier
) -> None:
    mutator = EstateMutator(moto_endpoint, small_estate, seed=3)
    changes = [await mutator.step() for _ in range(40)]
    assert len({c.action for c in changes}) >= 6, "random steps should vary"

    for account_id, acct in mutator.info.accounts.items():
        for region, want in acct.regions.items():
            ec2 = verify.client(account_id, "ec2", region)
            reservations = ec2.describe_instances(InstanceIds=want.instance_ids)["Reservations"]
            states = {i["State"]["Name"] for r in reservations for i in r["Instances"]}
            assert states <= {"running", "stopped", "pending", "stopping"}
            snaps = ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]
            assert sorted(s["SnapshotId"] for s in snaps) == sorted(
                [*want.snapshot_ids, want.image_snapshot_id]
            )
            groups = ec2.describe_security_groups(GroupIds=want.security_group_ids)
            open_now = {g["GroupId"] for g in groups["SecurityGroups"] if _ssh_open_to_world(g)}
            assert open_now == _still_open(changes, account_id, region)
        for bucket in acct.buckets:
            s3 = verify.client(account_id, "s3", bucket.region)
            assert _no_such(s3.get_public_access_block, Bucket=bucket.name) is not (
                bucket.public_access_block
            )
            tags = s3.get_bucket_tagging(Bucket=bucket.name)["TagSet"]
            assert {t["Key"]: t["Value"] for t in tags} == bucket.tags


class _CountingMutator(EstateMutator):
    """Sets :attr:`reached` once ``target`` steps are done."""

    def __init__(self, *args: Any, target: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.target = target
        self.reached = asyncio.Event()

    async def step(self) -> EstateChange:
        change = await super().step()
        if self.steps_done >= self.target:
            self.reached.set()
        return change


async def test_run_logs_changes_and_stops_when_asked(
    moto_endpoint: str, small_estate: EstateInfo, caplog: pytest.LogCaptureFixture
) -> None:
    mutator = _CountingMutator(moto_endpoint, small_estate, seed=11, target=5)
    stop = asyncio.Event()
    caplog.set_level(logging.INFO, logger="cloudinv.simulator.estate")
    runner = asyncio.create_task(mutator.run(0.01, stop))
    await asyncio.wait_for(mutator.reached.wait(), timeout=20)
    stop.set()
    steps = await asyncio.wait_for(runner, timeout=5)
    assert steps >= 5
    logged = [r.getMessage() for r in caplog.records if r.name == "cloudinv.simulator.estate"]
    assert any("security-group-opened-ssh-to-world" in m for m in logged)
    assert sum(m.startswith("estate change:") for m in logged) == steps
