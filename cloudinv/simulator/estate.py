"""The simulated AWS estate: what the one-command demo and the tests inventory.

This module owns three things, all spoken to moto's server mode through aiobotocore (nothing
here blocks the event loop):

- :func:`account_session`: STS AssumeRole into an account and make clients with the
  resulting credentials. Small enough for the collectors to reuse against real AWS.
- :func:`seed_estate`: build a varied estate in several accounts and regions (VPCs, subnets,
  security groups, EC2 instances, EBS volumes and snapshots, RDS instances and manual
  snapshots, an application and a classic load balancer per region; S3 buckets, IAM users,
  groups, roles and policies per account) and return an :class:`EstateInfo` naming it all.
- :class:`EstateMutator`: change the estate one seeded-random step at a time while the demo
  runs. Its first steps are scripted so that the dangerous changes the demo shows (SSH open
  to the world, a bucket losing its public access block) always happen early.

moto maps an AssumeRole into ``arn:aws:iam::<ACCOUNT>:role/<name>`` to an isolated estate
for that account, so one moto server holds every simulated account.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field, model_validator

from cloudinv.core.models import AccountId, UtcDatetime, utcnow

__all__ = [
    "MIN_EXPOSED_STEPS",
    "MOTO_CREDENTIALS",
    "SCRIPTED_FIRST",
    "AccountEstate",
    "AccountSession",
    "AwsCredentials",
    "BucketInfo",
    "ChangeAction",
    "EstateChange",
    "EstateCounts",
    "EstateInfo",
    "EstateMutator",
    "EstateSpec",
    "RegionEstate",
    "account_session",
    "role_arn",
    "seed_estate",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

_Client = Any
"""An aiobotocore client (its methods are generated at run time, so untyped)."""

STS_REGION = "us-east-1"
IAM_REGION = "us-east-1"
SEED_CONCURRENCY = 4
"""Seeding units (one account's globals, or one account-region) in flight at once: moto's
server is one process, and more parallelism only adds contention."""

_CLIENT_OPTIONS: dict[str, Any] = {
    "retries": {"max_attempts": 3, "mode": "standard"},
    "connect_timeout": 10,
    "read_timeout": 60,
}
_AWS_CONFIG = AioConfig(**_CLIENT_OPTIONS)
_EMULATOR_CONFIG = AioConfig(**_CLIENT_OPTIONS, s3={"addressing_style": "path"})
"""For an ``endpoint_url`` (moto): bucket names go in the path, not the host name."""
_PROJECT_TAG = {"Key": "Project", "Value": "cloudinv-demo"}


# ---------------------------------------------------------------------------------------------
# Credentials and sessions


@dataclass(frozen=True)
class AwsCredentials:
    """A key pair, with a session token for temporary credentials. Secrets stay out of repr."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)

    def client_kwargs(self) -> dict[str, str]:
        kwargs = {
            "aws_access_key_id": self.access_key_id,
            "aws_secret_access_key": self.secret_access_key,
        }
        if self.session_token:
            kwargs["aws_session_token"] = self.session_token
        return kwargs


MOTO_CREDENTIALS = AwsCredentials("testing", "testing")
"""The dummy base credentials for moto (its default account, 123456789012)."""


def role_arn(account_id: str, role_name: str) -> str:
    """The ARN of role ``role_name`` in ``account_id``."""
    return f"arn:aws:iam::{account_id}:role/{role_name}"


@dataclass(frozen=True)
class AccountSession:
    """Temporary credentials for one account, and a factory of clients that use them."""

    account_id: str
    role_arn: str
    credentials: AwsCredentials
    expiration: datetime | None
    endpoint_url: str | None
    session: AioSession = field(repr=False)

    def client(self, service: str, region: str, config: AioConfig | None = None) -> Any:
        """An async context manager yielding an aiobotocore client for ``service``."""
        return self.session.create_client(
            service,
            region_name=region,
            endpoint_url=self.endpoint_url,
            config=config or (_EMULATOR_CONFIG if self.endpoint_url else _AWS_CONFIG),
            **self.credentials.client_kwargs(),
        )

    def expires_within(self, seconds: float) -> bool:
        if self.expiration is None:
            return False
        return (self.expiration - utcnow()).total_seconds() < seconds


async def account_session(
    role: str,
    *,
    endpoint_url: str | None = None,
    base: AwsCredentials | None = None,
    session: AioSession | None = None,
    session_name: str = "cloudinv",
) -> AccountSession:
    """AssumeRole into ``role`` (an IAM role ARN) and return that account's session.

    ``base`` are the credentials that call STS; ``None`` means botocore's usual chain
    (environment, profile, instance role), for real AWS. Against moto pass
    :data:`MOTO_CREDENTIALS`.
    """
    session = session or get_session()
    base_kwargs = base.client_kwargs() if base else {}
    async with session.create_client(
        "sts", region_name=STS_REGION, endpoint_url=endpoint_url, **base_kwargs
    ) as sts:
        resp = await sts.assume_role(RoleArn=role, RoleSessionName=session_name)
    creds = resp["Credentials"]
    return AccountSession(
        account_id=role.split(":")[4],
        role_arn=role,
        credentials=AwsCredentials(
            str(creds["AccessKeyId"]), str(creds["SecretAccessKey"]), str(creds["SessionToken"])
        ),
        expiration=creds.get("Expiration"),
        endpoint_url=endpoint_url,
        session=session,
    )


# ---------------------------------------------------------------------------------------------
# What to build and what was built


ESTATE_TYPES: tuple[str, ...] = (
    "AWS::EC2::Instance",
    "AWS::EC2::SecurityGroup",
    "AWS::EC2::Volume",
    "AWS::EC2::Snapshot",
    "AWS::EC2::VPC",
    "AWS::EC2::Subnet",
    "AWS::EC2::NetworkInterface",
    "AWS::EC2::InternetGateway",
    "AWS::EC2::RouteTable",
    "AWS::EC2::NetworkAcl",
    "AWS::RDS::DBInstance",
    "AWS::RDS::DBSnapshot",
    "AWS::ElasticLoadBalancingV2::LoadBalancer",
    "AWS::ElasticLoadBalancingV2::TargetGroup",
    "AWS::ElasticLoadBalancing::LoadBalancer",
    "AWS::IAM::User",
    "AWS::IAM::Role",
    "AWS::IAM::Group",
    "AWS::IAM::ManagedPolicy",
    "AWS::S3::Bucket",
)
"""The resource types the simulated estate holds: what the demo scans on schedule (the other
registered types would only find nothing, slowly, in moto)."""


class EstateCounts(BaseModel):
    """How many of each resource: per account-region unless marked per account."""

    model_config = ConfigDict(frozen=True)

    subnets: int = Field(2, ge=2, le=6, description="per VPC; ELBv2 needs two AZs")
    security_groups: int = Field(3, ge=1)
    instances: int = Field(3, ge=1)
    volumes: int = Field(2, ge=1)
    snapshots: int = Field(2, ge=0)
    db_instances: int = Field(1, ge=0)
    db_snapshots: int = Field(1, ge=0)
    buckets: int = Field(4, ge=1, description="per account")
    users: int = Field(3, ge=0, description="per account")
    roles: int = Field(2, ge=0, description="per account, besides the reader role")

    @model_validator(mode="after")
    def _snapshots_need_sources(self) -> EstateCounts:
        if self.db_snapshots and not self.db_instances:
            raise ValueError("db_snapshots need at least one db instance")
        return self


class EstateSpec(BaseModel):
    """The shape of the simulated estate."""

    model_config = ConfigDict(frozen=True)

    accounts: list[AccountId] = Field(
        default_factory=lambda: ["111111111111", "222222222222", "333333333333"], min_length=1
    )
    regions: list[str] = Field(
        default_factory=lambda: ["us-east-1", "eu-west-1", "ap-southeast-2"], min_length=1
    )
    role_name: str = Field("cloudinv-reader", pattern=r"^[\w+=,.@-]{1,64}$")
    counts: EstateCounts = Field(default_factory=EstateCounts)
    seed: int = 42

    @model_validator(mode="after")
    def _unique(self) -> EstateSpec:
        if len(set(self.accounts)) != len(self.accounts):
            raise ValueError("accounts must be unique")
        if len(set(self.regions)) != len(self.regions):
            raise ValueError("regions must be unique")
        return self


class RegionEstate(BaseModel):
    """What was created in one account-region."""

    region: str
    image_id: str
    image_snapshot_id: str = Field(description="the AMI's root snapshot, made with the AMI")
    vpc_id: str
    availability_zones: list[str]
    subnet_ids: list[str]
    security_group_ids: list[str]
    instance_ids: list[str]
    volume_ids: list[str]
    snapshot_ids: list[str] = Field(description="EBS snapshots of data volumes")
    db_instance_ids: list[str]
    db_snapshot_ids: list[str]
    load_balancer_arns: list[str]
    target_group_arns: list[str]
    classic_load_balancer_names: list[str]


class BucketInfo(BaseModel):
    name: str
    region: str
    versioning: bool
    encryption: str | None
    public_access_block: bool
    lifecycle: bool
    policy: bool
    tags: dict[str, str]


class AccountEstate(BaseModel):
    """What was created in one account: its regions and its global resources."""

    account_id: AccountId
    role_arn: str
    regions: dict[str, RegionEstate]
    buckets: list[BucketInfo]
    user_names: list[str]
    access_key_ids: dict[str, list[str]]
    group_names: list[str]
    role_names: list[str] = Field(description="every role created, the reader role first")
    policy_arns: list[str] = Field(description="customer managed policies")


class EstateInfo(BaseModel):
    """Everything :func:`seed_estate` created, by account."""

    spec: EstateSpec
    accounts: dict[str, AccountEstate]
    seeded_in_s: float

    @property
    def role_arns(self) -> list[str]:
        return [acct.role_arn for acct in self.accounts.values()]


# ---------------------------------------------------------------------------------------------
# Seeding


async def seed_estate(endpoint_url: str, spec: EstateSpec | None = None) -> EstateInfo:
    """Build the estate described by ``spec`` on the moto server at ``endpoint_url``.

    Expects accounts that moto has not seeded before (names would collide).
    """
    spec = spec or EstateSpec()
    started = time.monotonic()
    gate = asyncio.Semaphore(SEED_CONCURRENCY)
    session = get_session()
    async with asyncio.TaskGroup() as group:
        tasks = [
            group.create_task(_seed_account(endpoint_url, spec, acct, session, gate))
            for acct in spec.accounts
        ]
    accounts = [t.result() for t in tasks]
    elapsed = round(time.monotonic() - started, 3)
    log.info(
        "seeded the simulated estate: %d accounts x %d regions in %.1fs",
        len(spec.accounts),
        len(spec.regions),
        elapsed,
    )
    return EstateInfo(spec=spec, accounts={a.account_id: a for a in accounts}, seeded_in_s=elapsed)


async def _seed_account(
    endpoint_url: str,
    spec: EstateSpec,
    account_id: str,
    session: AioSession,
    gate: asyncio.Semaphore,
) -> AccountEstate:
    reader = role_arn(account_id, spec.role_name)
    acct = await account_session(
        reader, endpoint_url=endpoint_url, base=MOTO_CREDENTIALS, session=session
    )

    async def gated(coro: Awaitable[_T]) -> _T:
        async with gate:
            return await coro

    async with asyncio.TaskGroup() as group:
        iam_task = group.create_task(gated(_seed_iam(acct, spec)))
        s3_task = group.create_task(gated(_seed_buckets(acct, spec)))
        region_tasks = [
            group.create_task(gated(_seed_region(acct, spec, region))) for region in spec.regions
        ]
    iam = iam_task.result()
    return AccountEstate(
        account_id=account_id,
        role_arn=reader,
        regions={t.result().region: t.result() for t in region_tasks},
        buckets=s3_task.result(),
        user_names=iam.user_names,
        access_key_ids=iam.access_key_ids,
        group_names=iam.group_names,
        role_names=iam.role_names,
        policy_arns=iam.policy_arns,
    )


def _rng(spec: EstateSpec, *parts: str) -> random.Random:
    """A generator that depends on the seed and the place only, not on task scheduling."""
    return random.Random(":".join([str(spec.seed), *parts]))


def _tags(name: str | None = None, **extra: str) -> list[dict[str, str]]:
    tags = [_PROJECT_TAG, *({"Key": k, "Value": v} for k, v in extra.items())]
    if name is not None:
        tags.insert(0, {"Key": "Name", "Value": name})
    return tags


def _tag_spec(resource_type: str, name: str | None = None, **extra: str) -> list[dict[str, Any]]:
    return [{"ResourceType": resource_type, "Tags": _tags(name, **extra)}]


# --- one account-region ----------------------------------------------------------------------

_SG_PROFILES = ("web", "app", "db", "ops")
_INSTANCE_ROLES = ("web", "api", "worker", "batch", "bastion", "cache")
_INSTANCE_TYPES = ("t3.micro", "t3.small", "m5.large")
_TEAMS = ("platform", "payments", "search", "data", "security")
_DB_ENGINES = (("postgres", "db.t3.micro"), ("mysql", "db.t3.small"))


@dataclass
class _Network:
    vpc_id: str
    zones: list[str]
    subnet_ids: list[str]
    sg_ids: dict[str, str]

    def sg(self, *preferred: str) -> str:
        """The first preferred security group that exists, else the first one created."""
        for name in preferred:
            if name in self.sg_ids:
                return self.sg_ids[name]
        return next(iter(self.sg_ids.values()))


async def _seed_region(acct: AccountSession, spec: EstateSpec, region: str) -> RegionEstate:
    rng = _rng(spec, acct.account_id, region)
    counts = spec.counts
    async with contextlib.AsyncExitStack() as stack:
        ec2 = await stack.enter_async_context(acct.client("ec2", region))
        rds = await stack.enter_async_context(acct.client("rds", region))
        elbv2 = await stack.enter_async_context(acct.client("elbv2", region))
        elb = await stack.enter_async_context(acct.client("elb", region))
        image_id, image_snapshot_id = await _register_image(ec2)
        net = await _create_network(ec2, region, counts)
        instances = await _run_instances(ec2, net, image_id, counts.instances, rng)
        volumes = await _create_volumes(ec2, net, instances, counts.volumes, rng)
        snapshots = await _create_snapshots(ec2, volumes, counts.snapshots)
        dbs, db_snaps = await _create_databases(rds, net, counts, rng)
        lb_arn, tg_arn = await _create_alb(elbv2, net, instances)
        classic = await _create_classic_elb(elb, net, instances)
    return RegionEstate(
        region=region,
        image_id=image_id,
        image_snapshot_id=image_snapshot_id,
        vpc_id=net.vpc_id,
        availability_zones=net.zones,
        subnet_ids=net.subnet_ids,
        security_group_ids=list(net.sg_ids.values()),
        instance_ids=[i for i, _ in instances],
        volume_ids=volumes,
        snapshot_ids=snapshots,
        db_instance_ids=dbs,
        db_snapshot_ids=db_snaps,
        load_balancer_arns=[lb_arn],
        target_group_arns=[tg_arn],
        classic_load_balancer_names=[classic],
    )


async def _register_image(ec2: _Client) -> tuple[str, str]:
    """An AMI for the instances; returns its id and its root snapshot (made with it)."""
    resp = await ec2.register_image(
        Name="cloudinv-base-image",
        Description="base image for the simulated estate",
        Architecture="x86_64",
        RootDeviceName="/dev/xvda",
        VirtualizationType="hvm",
    )
    image_id = str(resp["ImageId"])
    images = await ec2.describe_images(ImageIds=[image_id])
    mappings = images["Images"][0].get("BlockDeviceMappings", [])
    snapshot_id = next((str(m["Ebs"]["SnapshotId"]) for m in mappings if "Ebs" in m), "")
    return image_id, snapshot_id


async def _create_network(ec2: _Client, region: str, counts: EstateCounts) -> _Network:
    vpc = await ec2.create_vpc(
        CidrBlock="10.0.0.0/16", TagSpecifications=_tag_spec("vpc", f"main-{region}")
    )
    vpc_id = str(vpc["Vpc"]["VpcId"])
    zones = [f"{region}{letter}" for letter in "abc"]
    subnet_ids: list[str] = []
    for i in range(counts.subnets):
        tier = "public" if i % 2 == 0 else "private"
        subnet = await ec2.create_subnet(
            VpcId=vpc_id,
            CidrBlock=f"10.0.{i}.0/24",
            AvailabilityZone=zones[i % len(zones)],
            TagSpecifications=_tag_spec("subnet", f"{tier}-{i + 1}", Tier=tier),
        )
        subnet_ids.append(str(subnet["Subnet"]["SubnetId"]))
    net = _Network(vpc_id, zones[: min(counts.subnets, len(zones))], subnet_ids, {})
    for i in range(counts.security_groups):
        name = _SG_PROFILES[i] if i < len(_SG_PROFILES) else f"extra-{i + 1}"
        sg = await ec2.create_security_group(
            GroupName=name,
            Description=f"{name} tier",
            VpcId=vpc_id,
            TagSpecifications=_tag_spec("security-group", name),
        )
        net.sg_ids[name] = str(sg["GroupId"])
    await _add_sg_rules(ec2, net)
    return net


def _tcp(port: int, *, cidr: str | None = None, source_sg: str | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"IpProtocol": "tcp", "FromPort": port, "ToPort": port}
    if cidr:
        rule["IpRanges"] = [{"CidrIp": cidr}]
    if source_sg:
        rule["UserIdGroupPairs"] = [{"GroupId": source_sg}]
    return rule


async def _add_sg_rules(ec2: _Client, net: _Network) -> None:
    """web: 80/443 from anywhere; app: 8080 from web; db: 5432 from app; ops: none."""
    sgs = net.sg_ids
    rules: dict[str, list[dict[str, Any]]] = {
        "web": [_tcp(80, cidr="0.0.0.0/0"), _tcp(443, cidr="0.0.0.0/0")],
        "app": [_tcp(8080, source_sg=sgs.get("web"), cidr=None if "web" in sgs else "10.0.0.0/16")],
        "db": [_tcp(5432, source_sg=sgs.get("app"), cidr=None if "app" in sgs else "10.0.0.0/16")],
    }
    for name, perms in rules.items():
        if name in sgs:
            await ec2.authorize_security_group_ingress(GroupId=sgs[name], IpPermissions=perms)


async def _run_instances(
    ec2: _Client, net: _Network, image_id: str, count: int, rng: random.Random
) -> list[tuple[str, str]]:
    """Launch ``count`` instances round-robin over subnets; returns (instance id, zone)."""
    launched: list[tuple[str, str]] = []
    for i in range(count):
        role = _INSTANCE_ROLES[i % len(_INSTANCE_ROLES)]
        name = f"{role}-{i // len(_INSTANCE_ROLES) + 1}"
        subnet_index = i % len(net.subnet_ids)
        instance_id = await _launch(
            ec2,
            image_id=image_id,
            instance_type=rng.choice(_INSTANCE_TYPES),
            subnet_id=net.subnet_ids[subnet_index],
            sg_id=net.sg("web") if role == "web" else net.sg("app", "web"),
            tags=_tags(name, Team=rng.choice(_TEAMS), Role=role),
        )
        launched.append((instance_id, net.zones[subnet_index % len(net.zones)]))
    return launched


async def _launch(
    ec2: _Client,
    *,
    image_id: str,
    instance_type: str,
    subnet_id: str,
    sg_id: str,
    tags: list[dict[str, str]],
) -> str:
    resp = await ec2.run_instances(
        ImageId=image_id,
        InstanceType=instance_type,
        MinCount=1,
        MaxCount=1,
        SubnetId=subnet_id,
        SecurityGroupIds=[sg_id],
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )
    return str(resp["Instances"][0]["InstanceId"])


async def _create_volumes(
    ec2: _Client,
    net: _Network,
    instances: list[tuple[str, str]],
    count: int,
    rng: random.Random,
) -> list[str]:
    """Data volumes; the first is attached to the first instance, the rest are unattached."""
    volume_ids: list[str] = []
    for i in range(count):
        zone = instances[0][1] if i == 0 else net.zones[i % len(net.zones)]
        vol = await ec2.create_volume(
            AvailabilityZone=zone,
            Size=rng.choice((8, 20, 50, 100)),
            VolumeType=rng.choice(("gp3", "gp2")),
            Encrypted=i % 2 == 0,
            TagSpecifications=_tag_spec("volume", f"data-{i + 1}"),
        )
        volume_ids.append(str(vol["VolumeId"]))
    await ec2.attach_volume(VolumeId=volume_ids[0], InstanceId=instances[0][0], Device="/dev/sdf")
    return volume_ids


async def _create_snapshots(ec2: _Client, volume_ids: list[str], count: int) -> list[str]:
    snapshot_ids: list[str] = []
    for i in range(count):
        volume_id = volume_ids[i % len(volume_ids)]
        snap = await ec2.create_snapshot(
            VolumeId=volume_id,
            Description=f"nightly backup of {volume_id}",
            TagSpecifications=_tag_spec("snapshot", f"backup-{i + 1}"),
        )
        snapshot_ids.append(str(snap["SnapshotId"]))
    return snapshot_ids


async def _create_databases(
    rds: _Client, net: _Network, counts: EstateCounts, rng: random.Random
) -> tuple[list[str], list[str]]:
    if not counts.db_instances:
        return [], []
    await rds.create_db_subnet_group(
        DBSubnetGroupName="main",
        DBSubnetGroupDescription="database subnets",
        SubnetIds=net.subnet_ids,
    )
    db_ids: list[str] = []
    for i in range(counts.db_instances):
        engine, instance_class = _DB_ENGINES[i % len(_DB_ENGINES)]
        db_id = f"{engine}-{i + 1}"
        await rds.create_db_instance(
            DBInstanceIdentifier=db_id,
            Engine=engine,
            DBInstanceClass=instance_class,
            AllocatedStorage=rng.choice((20, 50, 100)),
            MasterUsername="admin_user",
            MasterUserPassword="not-a-real-password-1",
            DBSubnetGroupName="main",
            VpcSecurityGroupIds=[net.sg("db")],
            StorageEncrypted=i % 2 == 0,
            Tags=_tags(None, Team=rng.choice(_TEAMS)),
        )
        db_ids.append(db_id)
    snapshot_ids: list[str] = []
    for i in range(counts.db_snapshots):
        db_id = db_ids[i % len(db_ids)]
        snap_id = f"{db_id}-manual-{i + 1}"
        await rds.create_db_snapshot(
            DBSnapshotIdentifier=snap_id, DBInstanceIdentifier=db_id, Tags=_tags(None)
        )
        snapshot_ids.append(snap_id)
    return db_ids, snapshot_ids


async def _create_alb(
    elbv2: _Client, net: _Network, instances: list[tuple[str, str]]
) -> tuple[str, str]:
    lb = await elbv2.create_load_balancer(
        Name="web-alb",
        Subnets=net.subnet_ids,
        SecurityGroups=[net.sg("web")],
        Scheme="internet-facing",
        Type="application",
        Tags=_tags("web-alb"),
    )
    lb_arn = str(lb["LoadBalancers"][0]["LoadBalancerArn"])
    tg = await elbv2.create_target_group(
        Name="web-targets",
        Protocol="HTTP",
        Port=80,
        VpcId=net.vpc_id,
        TargetType="instance",
        HealthCheckPath="/health",
    )
    tg_arn = str(tg["TargetGroups"][0]["TargetGroupArn"])
    await elbv2.register_targets(
        TargetGroupArn=tg_arn, Targets=[{"Id": iid, "Port": 80} for iid, _ in instances]
    )
    await elbv2.create_listener(
        LoadBalancerArn=lb_arn,
        Protocol="HTTP",
        Port=80,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg_arn}],
    )
    return lb_arn, tg_arn


async def _create_classic_elb(elb: _Client, net: _Network, instances: list[tuple[str, str]]) -> str:
    name = "legacy-web"
    await elb.create_load_balancer(
        LoadBalancerName=name,
        Listeners=[
            {
                "Protocol": "HTTP",
                "LoadBalancerPort": 80,
                "InstanceProtocol": "HTTP",
                "InstancePort": 80,
            }
        ],
        Subnets=net.subnet_ids,
        SecurityGroups=[net.sg("web")],
        Tags=_tags(None),
    )
    await elb.register_instances_with_load_balancer(
        LoadBalancerName=name, Instances=[{"InstanceId": instances[0][0]}]
    )
    return name


# --- one account's S3 buckets ----------------------------------------------------------------


@dataclass(frozen=True)
class _BucketProfile:
    purpose: str
    versioning: bool
    encryption: str | None
    public_access_block: bool
    lifecycle: bool
    policy: str | None  # "tls-only" or "public-read"


_BUCKET_PROFILES = (
    _BucketProfile("logs", False, "AES256", True, True, None),
    _BucketProfile("assets", True, "aws:kms", True, False, "tls-only"),
    _BucketProfile("public-site", False, None, False, False, "public-read"),
    _BucketProfile("backups", True, "AES256", True, False, None),
)


def _bucket_profile(i: int) -> _BucketProfile:
    if i < len(_BUCKET_PROFILES):
        return _BUCKET_PROFILES[i]
    return _BucketProfile(f"data-{i + 1}", i % 2 == 0, "AES256", i % 3 != 0, False, None)


async def _seed_buckets(acct: AccountSession, spec: EstateSpec) -> list[BucketInfo]:
    rng = _rng(spec, acct.account_id, "s3")
    buckets: list[BucketInfo] = []
    for i in range(spec.counts.buckets):
        profile = _bucket_profile(i)
        region = spec.regions[i % len(spec.regions)]
        name = f"cloudinv-{acct.account_id}-{profile.purpose}"
        tags = {"Project": "cloudinv-demo", "owner": rng.choice(_TEAMS)}
        async with acct.client("s3", region) as s3:
            await _create_bucket(s3, name, region, profile, tags)
        buckets.append(
            BucketInfo(
                name=name,
                region=region,
                versioning=profile.versioning,
                encryption=profile.encryption,
                public_access_block=profile.public_access_block,
                lifecycle=profile.lifecycle,
                policy=profile.policy is not None,
                tags=tags,
            )
        )
    return buckets


async def _create_bucket(
    s3: _Client, name: str, region: str, profile: _BucketProfile, tags: dict[str, str]
) -> None:
    kwargs: dict[str, Any] = {"Bucket": name}
    if region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    await s3.create_bucket(**kwargs)
    for n in range(2):  # before any policy: moto enforces a bucket policy's Deny on objects
        await s3.put_object(Bucket=name, Key=f"sample/object-{n}.txt", Body=b"cloudinv demo\n")
    await s3.put_bucket_tagging(
        Bucket=name, Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in tags.items()]}
    )
    if profile.versioning:
        await s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    if profile.encryption:
        await s3.put_bucket_encryption(
            Bucket=name, ServerSideEncryptionConfiguration=_encryption(profile.encryption)
        )
    if profile.public_access_block:
        await s3.put_public_access_block(
            Bucket=name, PublicAccessBlockConfiguration=_BLOCK_ALL_PUBLIC
        )
    if profile.lifecycle:
        await s3.put_bucket_lifecycle_configuration(
            Bucket=name, LifecycleConfiguration=_LOG_LIFECYCLE
        )
    if profile.policy:
        await s3.put_bucket_policy(Bucket=name, Policy=_bucket_policy(name, profile.policy))


_BLOCK_ALL_PUBLIC = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}
_LOG_LIFECYCLE = {
    "Rules": [
        {
            "ID": "expire-old-logs",
            "Status": "Enabled",
            "Filter": {"Prefix": ""},
            "Transitions": [{"Days": 30, "StorageClass": "STANDARD_IA"}],
            "Expiration": {"Days": 365},
        }
    ]
}


def _encryption(algorithm: str) -> dict[str, Any]:
    default: dict[str, str] = {"SSEAlgorithm": algorithm}
    if algorithm == "aws:kms":
        default["KMSMasterKeyID"] = "alias/aws/s3"
    return {"Rules": [{"ApplyServerSideEncryptionByDefault": default}]}


def _bucket_policy(bucket: str, kind: str) -> str:
    arns = [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]
    if kind == "public-read":
        statement: dict[str, Any] = {
            "Sid": "PublicRead",
            "Effect": "Allow",
            "Principal": "*",
            "Action": "s3:GetObject",
            "Resource": arns[1],
        }
    else:
        statement = {
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": arns,
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        }
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


# --- one account's IAM -----------------------------------------------------------------------


@dataclass
class _IamResult:
    user_names: list[str] = field(default_factory=list)
    access_key_ids: dict[str, list[str]] = field(default_factory=dict)
    group_names: list[str] = field(default_factory=list)
    role_names: list[str] = field(default_factory=list)
    policy_arns: list[str] = field(default_factory=list)


_USER_NAMES = ("alice", "bob", "ci-deployer")
_ROLE_PROFILES = (
    ("app-instance-role", "ec2.amazonaws.com"),
    ("lambda-executor", "lambda.amazonaws.com"),
)


def _policy(actions: Sequence[str], resource: str = "*") -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": list(actions), "Resource": resource}],
        }
    )


def _trust(principal: dict[str, str]) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole"}],
        }
    )


async def _seed_iam(acct: AccountSession, spec: EstateSpec) -> _IamResult:
    result = _IamResult()
    async with acct.client("iam", IAM_REGION) as iam:
        read_only = await _create_policy(
            iam, "cloudinv-read-only", ["*:Describe*", "*:List*", "*:Get*"]
        )
        s3_logs = await _create_policy(iam, "read-logs", ["s3:GetObject", "s3:ListBucket"])
        result.policy_arns += [read_only, s3_logs]
        await _create_role(iam, spec.role_name, {"AWS": f"arn:aws:iam::{acct.account_id}:root"})
        await iam.attach_role_policy(RoleName=spec.role_name, PolicyArn=read_only)
        result.role_names.append(spec.role_name)
        await _seed_roles(iam, spec, result)
        await _seed_users(iam, spec, s3_logs, result)
    return result


async def _create_policy(iam: _Client, name: str, actions: Sequence[str]) -> str:
    resp = await iam.create_policy(
        PolicyName=name, PolicyDocument=_policy(actions), Description=f"{name} (cloudinv demo)"
    )
    return str(resp["Policy"]["Arn"])


async def _create_role(iam: _Client, name: str, principal: dict[str, str]) -> None:
    await iam.create_role(
        RoleName=name,
        AssumeRolePolicyDocument=_trust(principal),
        Description=f"{name} (cloudinv demo)",
        Tags=_tags(None),
    )


async def _seed_roles(iam: _Client, spec: EstateSpec, result: _IamResult) -> None:
    for i in range(spec.counts.roles):
        if i < len(_ROLE_PROFILES):
            name, service = _ROLE_PROFILES[i]
        else:
            name, service = f"service-role-{i + 1}", "ecs-tasks.amazonaws.com"
        await _create_role(iam, name, {"Service": service})
        await iam.put_role_policy(
            RoleName=name, PolicyName="inline-logs", PolicyDocument=_policy(["logs:PutLogEvents"])
        )
        result.role_names.append(name)


async def _seed_users(iam: _Client, spec: EstateSpec, s3_logs: str, result: _IamResult) -> None:
    """alice: in a group, an inline policy; bob: an attached policy; ci-deployer: two keys."""
    if spec.counts.users:
        await iam.create_group(GroupName="developers")
        await iam.attach_group_policy(GroupName="developers", PolicyArn=s3_logs)
        result.group_names.append("developers")
    for i in range(spec.counts.users):
        name = _USER_NAMES[i] if i < len(_USER_NAMES) else f"user-{i + 1}"
        await iam.create_user(UserName=name, Tags=_tags(None))
        keys = 2 if name == "ci-deployer" else 1
        result.access_key_ids[name] = [
            str((await iam.create_access_key(UserName=name))["AccessKey"]["AccessKeyId"])
            for _ in range(keys)
        ]
        if keys > 1:
            await iam.update_access_key(
                UserName=name, AccessKeyId=result.access_key_ids[name][0], Status="Inactive"
            )
        if i == 0:
            await iam.add_user_to_group(GroupName="developers", UserName=name)
            await iam.put_user_policy(
                UserName=name,
                PolicyName="ec2-start-stop",
                PolicyDocument=_policy(["ec2:StartInstances", "ec2:StopInstances"]),
            )
        else:
            await iam.attach_user_policy(UserName=name, PolicyArn=s3_logs)
        result.user_names.append(name)


# ---------------------------------------------------------------------------------------------
# Changes while the demo runs


class ChangeAction(StrEnum):
    START_INSTANCE = "instance-started"
    STOP_INSTANCE = "instance-stopped"
    REPLACE_INSTANCE = "instance-replaced"
    OPEN_SSH_TO_WORLD = "security-group-opened-ssh-to-world"
    CLOSE_SSH = "security-group-closed-ssh"
    REMOVE_PUBLIC_ACCESS_BLOCK = "bucket-public-access-block-removed"
    RESTORE_PUBLIC_ACCESS_BLOCK = "bucket-public-access-block-restored"
    RETAG_BUCKET = "bucket-retagged"
    CREATE_SNAPSHOT = "ebs-snapshot-created"
    DELETE_SNAPSHOT = "ebs-snapshot-deleted"


class EstateChange(BaseModel):
    """One change the mutator made."""

    model_config = ConfigDict(frozen=True)

    account_id: AccountId
    region: str
    action: ChangeAction
    resource_type: str = Field(description="CloudFormation type, e.g. AWS::EC2::Instance")
    resource_id: str
    detail: str
    at: UtcDatetime = Field(default_factory=utcnow)

    def summary(self) -> str:
        return f"{self.account_id} {self.region} {self.action}: {self.resource_id} ({self.detail})"


SCRIPTED_FIRST = (ChangeAction.OPEN_SSH_TO_WORLD, ChangeAction.REMOVE_PUBLIC_ACCESS_BLOCK)
"""The mutator's first steps, always: the changes the demo's drift alerts show."""

_WEIGHTS: dict[ChangeAction, int] = {
    ChangeAction.START_INSTANCE: 3,
    ChangeAction.STOP_INSTANCE: 2,
    ChangeAction.REPLACE_INSTANCE: 1,
    ChangeAction.OPEN_SSH_TO_WORLD: 1,
    ChangeAction.CLOSE_SSH: 3,
    ChangeAction.REMOVE_PUBLIC_ACCESS_BLOCK: 1,
    ChangeAction.RESTORE_PUBLIC_ACCESS_BLOCK: 3,
    ChangeAction.RETAG_BUCKET: 2,
    ChangeAction.CREATE_SNAPSHOT: 2,
    ChangeAction.DELETE_SNAPSHOT: 1,
}

_SSH_WORLD = _tcp(22, cidr="0.0.0.0/0")
MIN_EXPOSED_STEPS = 3
"""Steps an opened port or a removed public access block stays so before it may be undone."""

_Place = tuple[str, str, str]
"""(account id, region, resource id): a resource the mutator may change."""
_Entry = tuple[Callable[[], list[_Place]], Callable[[_Place], Awaitable[EstateChange]]]


class EstateMutator:
    """Changes the seeded estate one step at a time, randomly but reproducibly.

    :attr:`info` is a private copy of the seeded :class:`EstateInfo`, kept current (replaced
    instances, new and deleted snapshots, bucket tags and public access blocks).
    """

    def __init__(self, endpoint_url: str, info: EstateInfo, *, seed: int = 0) -> None:
        self.endpoint_url = endpoint_url
        self.info = info.model_copy(deep=True)
        self.steps_done = 0
        self._rng = random.Random(seed)
        self._session = get_session()
        self._sessions: dict[str, AccountSession] = {}
        self._stopped: set[_Place] = set()
        self._ssh_open: dict[_Place, int] = {}  # place -> step it was opened at
        self._unblocked: dict[_Place, int] = {}  # bucket place -> step its block was removed at
        self._table = self._action_table()

    def _action_table(self) -> dict[ChangeAction, _Entry]:
        """Each action: where it may act now (empty: not possible), and how it acts."""
        act = ChangeAction
        return {
            act.START_INSTANCE: (lambda: sorted(self._stopped), self._start_instance),
            act.STOP_INSTANCE: (self._running, self._stop_instance),
            act.REPLACE_INSTANCE: (lambda: self._places("instance_ids"), self._replace_instance),
            act.OPEN_SSH_TO_WORLD: (self._ssh_closed, self._open_ssh),
            act.CLOSE_SSH: (lambda: self._exposed_long(self._ssh_open), self._close_ssh),
            act.REMOVE_PUBLIC_ACCESS_BLOCK: (self._blocked_buckets, self._remove_block),
            act.RESTORE_PUBLIC_ACCESS_BLOCK: (
                lambda: self._exposed_long(self._unblocked),
                self._restore_block,
            ),
            act.RETAG_BUCKET: (self._bucket_places, self._retag_bucket),
            act.CREATE_SNAPSHOT: (lambda: self._places("volume_ids"), self._create_snapshot),
            act.DELETE_SNAPSHOT: (lambda: self._places("snapshot_ids"), self._delete_snapshot),
        }

    # --- driving ---

    async def step(self) -> EstateChange:
        """Make one change and describe it."""
        action = self._next_action()
        candidates, act = self._table[action]
        options = candidates()
        place = self._pick(options)
        if self.steps_done == 0 and action is ChangeAction.OPEN_SSH_TO_WORLD:
            # The first change opens SSH on the first region's "web" group, which running
            # instances use: the relationship rule (ec2-sg-ssh-open-to-world-in-use) rates it
            # critical in every demo. The pick above still draws, so what follows is as before.
            place = options[0]
        change = await act(place)
        self.steps_done += 1
        return change

    async def run(
        self,
        interval_s: float,
        stop_event: asyncio.Event,
        on_change: Callable[[EstateChange], Awaitable[None]] | None = None,
    ) -> int:
        """Step every ``interval_s`` seconds until ``stop_event`` is set; returns steps made.

        A step that AWS (moto) refuses is logged and skipped; the loop goes on. Each change
        made is passed to ``on_change`` (the demo's CloudTrail writer).
        """
        while not stop_event.is_set():
            try:
                change = await self.step()
            except (ClientError, BotoCoreError) as exc:
                log.warning("estate change failed: %s", exc)
            else:
                log.info("estate change: %s", change.summary())
                if on_change is not None:
                    await on_change(change)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop_event.wait(), timeout=interval_s)
        return self.steps_done

    def _next_action(self) -> ChangeAction:
        if self.steps_done < len(SCRIPTED_FIRST):
            return SCRIPTED_FIRST[self.steps_done]
        possible = [a for a, (candidates, _) in self._table.items() if candidates()]
        return self._rng.choices(possible, weights=[_WEIGHTS[a] for a in possible])[0]

    def _pick(self, options: Sequence[_T]) -> _T:
        if not options:
            raise LookupError("nothing in the estate to change")
        return self._rng.choice(options)

    # --- candidates ---

    def _places(self, attr: str) -> list[_Place]:
        """Every (account, region, id) in the RegionEstate list named ``attr``."""
        return [
            (acct.account_id, region, rid)
            for acct in self.info.accounts.values()
            for region, estate in acct.regions.items()
            for rid in getattr(estate, attr)
        ]

    def _bucket_places(self) -> list[_Place]:
        return [
            (acct.account_id, b.region, b.name)
            for acct in self.info.accounts.values()
            for b in acct.buckets
        ]

    def _running(self) -> list[_Place]:
        return [p for p in self._places("instance_ids") if p not in self._stopped]

    def _ssh_closed(self) -> list[_Place]:
        return [p for p in self._places("security_group_ids") if p not in self._ssh_open]

    def _blocked_buckets(self) -> list[_Place]:
        return [p for p in self._bucket_places() if self._bucket(p).public_access_block]

    def _exposed_long(self, since: dict[_Place, int]) -> list[_Place]:
        return sorted(p for p, at in since.items() if self.steps_done - at >= MIN_EXPOSED_STEPS)

    # --- state ---

    async def _client(self, account_id: str, service: str, region: str) -> Any:
        """A client context for the account, assuming its role again near expiry."""
        acct = self._sessions.get(account_id)
        if acct is None or acct.expires_within(300):
            acct = await account_session(
                self.info.accounts[account_id].role_arn,
                endpoint_url=self.endpoint_url,
                base=MOTO_CREDENTIALS,
                session=self._session,
            )
            self._sessions[account_id] = acct
        return acct.client(service, region)

    def _region(self, place: _Place) -> RegionEstate:
        return self.info.accounts[place[0]].regions[place[1]]

    def _bucket(self, place: _Place) -> BucketInfo:
        buckets = self.info.accounts[place[0]].buckets
        return next(b for b in buckets if b.name == place[2])

    # --- instances ---

    async def _start_instance(self, place: _Place) -> EstateChange:
        async with await self._client(place[0], "ec2", place[1]) as ec2:
            await ec2.start_instances(InstanceIds=[place[2]])
        self._stopped.discard(place)
        return _change(place, ChangeAction.START_INSTANCE, "stopped -> running")

    async def _stop_instance(self, place: _Place) -> EstateChange:
        async with await self._client(place[0], "ec2", place[1]) as ec2:
            await ec2.stop_instances(InstanceIds=[place[2]])
        self._stopped.add(place)
        return _change(place, ChangeAction.STOP_INSTANCE, "running -> stopped")

    async def _replace_instance(self, place: _Place) -> EstateChange:
        """Terminate the instance and launch one like it (same type, subnet, group, tags)."""
        account_id, region, old = place
        estate = self._region(place)
        async with await self._client(account_id, "ec2", region) as ec2:
            desc = await ec2.describe_instances(InstanceIds=[old])
            inst = desc["Reservations"][0]["Instances"][0]
            await ec2.terminate_instances(InstanceIds=[old])
            estate.instance_ids.remove(old)
            self._stopped.discard(place)
            new = await _launch(
                ec2,
                image_id=str(inst.get("ImageId", estate.image_id)),
                instance_type=str(inst["InstanceType"]),
                subnet_id=str(inst.get("SubnetId", estate.subnet_ids[0])),
                sg_id=str(inst["SecurityGroups"][0]["GroupId"]),
                tags=list(inst.get("Tags", [])) or _tags("replacement"),
            )
        estate.instance_ids.append(new)
        return _change(
            (account_id, region, new), ChangeAction.REPLACE_INSTANCE, f"replaces terminated {old}"
        )

    # --- security groups ---

    async def _open_ssh(self, place: _Place) -> EstateChange:
        async with await self._client(place[0], "ec2", place[1]) as ec2:
            await ec2.authorize_security_group_ingress(GroupId=place[2], IpPermissions=[_SSH_WORLD])
        self._ssh_open[place] = self.steps_done
        return _change(place, ChangeAction.OPEN_SSH_TO_WORLD, "ingress tcp/22 from 0.0.0.0/0 added")

    async def _close_ssh(self, place: _Place) -> EstateChange:
        async with await self._client(place[0], "ec2", place[1]) as ec2:
            await ec2.revoke_security_group_ingress(GroupId=place[2], IpPermissions=[_SSH_WORLD])
        del self._ssh_open[place]
        return _change(place, ChangeAction.CLOSE_SSH, "ingress tcp/22 from 0.0.0.0/0 removed")

    # --- buckets ---

    async def _remove_block(self, place: _Place) -> EstateChange:
        async with await self._client(place[0], "s3", place[1]) as s3:
            await s3.delete_public_access_block(Bucket=place[2])
        self._bucket(place).public_access_block = False
        self._unblocked[place] = self.steps_done
        return _change(
            place, ChangeAction.REMOVE_PUBLIC_ACCESS_BLOCK, "public access block deleted"
        )

    async def _restore_block(self, place: _Place) -> EstateChange:
        async with await self._client(place[0], "s3", place[1]) as s3:
            await s3.put_public_access_block(
                Bucket=place[2], PublicAccessBlockConfiguration=_BLOCK_ALL_PUBLIC
            )
        self._bucket(place).public_access_block = True
        del self._unblocked[place]
        return _change(
            place, ChangeAction.RESTORE_PUBLIC_ACCESS_BLOCK, "all public access blocked again"
        )

    async def _retag_bucket(self, place: _Place) -> EstateChange:
        bucket = self._bucket(place)
        old_owner = bucket.tags.get("owner", "")
        owner = self._pick([t for t in _TEAMS if t != old_owner])
        tags = {**bucket.tags, "owner": owner}
        async with await self._client(place[0], "s3", place[1]) as s3:
            await s3.put_bucket_tagging(
                Bucket=place[2],
                Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in tags.items()]},
            )
        bucket.tags = tags
        return _change(place, ChangeAction.RETAG_BUCKET, f"tag owner: {old_owner} -> {owner}")

    # --- EBS snapshots ---

    async def _create_snapshot(self, place: _Place) -> EstateChange:
        account_id, region, volume_id = place
        async with await self._client(account_id, "ec2", region) as ec2:
            snap = await ec2.create_snapshot(
                VolumeId=volume_id,
                Description=f"ad-hoc backup of {volume_id}",
                TagSpecifications=_tag_spec("snapshot", "ad-hoc"),
            )
        snapshot_id = str(snap["SnapshotId"])
        self._region(place).snapshot_ids.append(snapshot_id)
        return _change(
            (account_id, region, snapshot_id), ChangeAction.CREATE_SNAPSHOT, f"of {volume_id}"
        )

    async def _delete_snapshot(self, place: _Place) -> EstateChange:
        async with await self._client(place[0], "ec2", place[1]) as ec2:
            await ec2.delete_snapshot(SnapshotId=place[2])
        self._region(place).snapshot_ids.remove(place[2])
        return _change(place, ChangeAction.DELETE_SNAPSHOT, "deleted")


_RESOURCE_TYPES: dict[ChangeAction, str] = {
    ChangeAction.START_INSTANCE: "AWS::EC2::Instance",
    ChangeAction.STOP_INSTANCE: "AWS::EC2::Instance",
    ChangeAction.REPLACE_INSTANCE: "AWS::EC2::Instance",
    ChangeAction.OPEN_SSH_TO_WORLD: "AWS::EC2::SecurityGroup",
    ChangeAction.CLOSE_SSH: "AWS::EC2::SecurityGroup",
    ChangeAction.REMOVE_PUBLIC_ACCESS_BLOCK: "AWS::S3::Bucket",
    ChangeAction.RESTORE_PUBLIC_ACCESS_BLOCK: "AWS::S3::Bucket",
    ChangeAction.RETAG_BUCKET: "AWS::S3::Bucket",
    ChangeAction.CREATE_SNAPSHOT: "AWS::EC2::Snapshot",
    ChangeAction.DELETE_SNAPSHOT: "AWS::EC2::Snapshot",
}


def _change(place: _Place, action: ChangeAction, detail: str) -> EstateChange:
    return EstateChange(
        account_id=place[0],
        region=place[1],
        action=action,
        resource_type=_RESOURCE_TYPES[action],
        resource_id=place[2],
        detail=detail,
    )
