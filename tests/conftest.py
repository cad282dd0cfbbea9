"""Suite-wide fixtures: one moto server and one Tansu broker per test process.

Tests isolate themselves by unique names (topics, consumer groups, buckets, account ids)
rather than by starting their own servers, so the suite stays fast.

`make test` runs the suite in several processes (pytest-xdist, ``-n``; see the Makefile):
each worker has its own broker, moto server and session fixtures, and runs whole files
(``--dist loadfile``), longest first; the files that run many processes for minutes share
two lanes (RUN_TOGETHER below). So that a test is safe there, and beside other suites running
on the same machine:

- ports: bind port 0 (servers here do: ``ThreadedMotoServer(port=0)``, ``TCPSite(..., 0)``,
  ``cloudinv demo --api-port 0``) or ask ``cloudinv.runtime.processes.free_port()``; never a
  fixed number;
- files: only under ``tmp_path`` / ``tmp_path_factory`` (per worker); never a fixed path, the
  working directory or the repository (read it, do not write it);
- names: topics, consumer groups, buckets, tables, queues and account ids end with the
  ``unique`` fixture (or are random), because a worker's broker and moto server are shared by
  every test that worker runs, in any order;
- time: wait for a condition with a deadline generous enough for a loaded 2-core machine
  (other workers run beside you), never a fixed sleep; a deadline is a bound on a hang, not
  a measurement;
- a file of a minute or more: add it to LONGEST_FIRST, so it does not start last and become
  the suite's tail; if it runs several processes for minutes, put it in a RUN_TOGETHER lane.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from xdist.scheduler import LoadFileScheduling

# Dummy credentials for moto: no test may ever reach real AWS.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ["MOTO_EC2_LOAD_DEFAULT_AMIS"] = "false"
os.environ.pop("AWS_PROFILE", None)


RUN_TOGETHER = {
    # Two lanes for the files that run many processes for minutes: a lane runs its files one
    # after another on one worker, so at most two of them load the machine at once while the
    # other workers run the rest.
    # A 3-minute demo run, then its measurement; demos started and stopped; two workers.
    "test_attribution_demo.py": "heavy-1",
    "test_demo.py": "heavy-1",
    "test_scaleout.py": "heavy-1",
    # kill -9 of the real runtime (~40 s a case); every role as a process; a demo and Chromium.
    "test_runtime_recovery.py": "heavy-2",
    "test_roles_apart.py": "heavy-2",
    "test_ui.py": "heavy-2",
    # Both use the session's scan_estate (3 accounts x 3 regions): seeded once, not twice.
    "test_scan_engine.py": "scan-estate",
    "test_scan_cli.py": "scan-estate",
}
"""Files that one worker runs as one unit, by unit name; every other file is a unit alone."""

LONGEST_FIRST = (
    *RUN_TOGETHER,
    "test_sql_cli.py",
    "test_api_schema.py",  # schemathesis over the whole API
    "test_api_dynamodb.py",
    "test_derived_types_moto.py",
    "test_derived_catalog.py",
    "test_athena_ddl.py",
    "test_iam_policy.py",
)
"""Files of a minute or more, in the order to start them; the rest follow in the usual order.
A long file started last would be the suite's tail."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """LONGEST_FIRST's files first, in its order; the same order in every worker, as xdist
    requires (so no random or time-dependent test ids either)."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


class _FilesRunTogether(LoadFileScheduling):
    """``--dist loadfile``, except that the files of one RUN_TOGETHER unit are one unit."""

    def _split_scope(self, nodeid: str) -> str:
        file = nodeid.split("::", 1)[0]
        return RUN_TOGETHER.get(Path(file).name, file)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """The scheduler of ``make test`` (``-n N --dist loadfile --no-loadscope-reorder``)."""
    if config.getoption("dist") != "loadfile":
        return None
    return _FilesRunTogether(config, log)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto server in a thread of the test process; its URL (http://127.0.0.1:PORT)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic, group, bucket and table names."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
async def broker(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """One Tansu broker for the suite; its bootstrap address (127.0.0.1:PORT)."""
    from cloudinv.runtime.embedded import EmbeddedBroker

    embedded = EmbeddedBroker(tmp_path_factory.mktemp("broker"))
    await embedded.start()
    try:
        yield embedded.bootstrap
    finally:
        await embedded.stop()


# -- scan engine: a 3-account x 3-region estate seeded with boto3, and a denying proxy -----

SCAN_REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-2")
SCAN_DENIED_REGION = "eu-west-1"
SCAN_DENIED_SERVICE = "rds"
SCAN_DENIED_ROLE = "cloudinv-denied"
"""Role name whose AssumeRole the denying proxy refuses."""
ASSUME_ROLE_CALLS: dict[str, int] = {}
"""AssumeRole requests the denying proxy saw, by RoleArn."""


class ScanEstate:
    """Accounts seeded for the scan tests and, per (account, region, type), the ids boto3
    lists directly (region ``global`` for IAM; S3 buckets in their own region)."""

    def __init__(self, endpoint: str, accounts: list[str]) -> None:
        self.endpoint = endpoint
        self.accounts = accounts
        self.role_arns = [f"arn:aws:iam::{a}:role/cloudinv-reader" for a in accounts]
        self.regions = list(SCAN_REGIONS)
        self.expected: dict[tuple[str, str, str], set[str]] = {}


def _seed_scan_globals(session: Any, endpoint: str, account: str, n: int) -> None:
    import json

    iam = session.client("iam", endpoint_url=endpoint)
    doc = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
        }
    )
    trust = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "ec2.amazonaws.com"},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
    )
    policy_arn = iam.create_policy(PolicyName="readers", PolicyDocument=doc)["Policy"]["Arn"]
    iam.create_group(GroupName="admins")
    for i in range(n + 1):
        user = f"user{i}"
        iam.create_user(UserName=user, Tags=[{"Key": "team", "Value": f"t{i}"}])
        iam.put_user_policy(UserName=user, PolicyName="inline", PolicyDocument=doc)
        iam.attach_user_policy(UserName=user, PolicyArn=policy_arn)
        iam.add_user_to_group(GroupName="admins", UserName=user)
        iam.create_access_key(UserName=user)
    mfa = iam.create_virtual_mfa_device(VirtualMFADeviceName="user0-mfa")["VirtualMFADevice"]
    iam.enable_mfa_device(
        UserName="user0",
        SerialNumber=mfa["SerialNumber"],
        AuthenticationCode1="123456",
        AuthenticationCode2="654321",
    )
    iam.create_role(RoleName="app", AssumeRolePolicyDocument=trust)
    iam.create_role(RoleName=f"app-{n}", AssumeRolePolicyDocument=trust)

    s3 = session.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    locked = f"locked-{account}"
    s3.create_bucket(Bucket=locked)
    s3.put_bucket_policy(
        Bucket=locked,
        Policy=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Deny",
                        "Principal": "*",
                        "Action": "s3:*",
                        "Resource": f"arn:aws:s3:::{locked}/*",
                        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                    }
                ],
            }
        ),
    )
    s3.put_bucket_encryption(
        Bucket=locked,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )
    s3.put_bucket_versioning(Bucket=locked, VersioningConfiguration={"Status": "Enabled"})
    s3.put_bucket_tagging(Bucket=locked, Tagging={"TagSet": [{"Key": "owner", "Value": "sec"}]})
    s3.put_public_access_block(
        Bucket=locked,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    for i in range(n + 1):
        s3.create_bucket(
            Bucket=f"plain-{i}-{account}",
            CreateBucketConfiguration={"LocationConstraint": "eu-west-1"},
        )


def _seed_scan_region(session: Any, endpoint: str, region: str, n: int) -> None:
    ec2 = session.client("ec2", endpoint_url=endpoint, region_name=region)
    vpc = ec2.create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]["VpcId"]
    ec2.create_tags(Resources=[vpc], Tags=[{"Key": "Name", "Value": f"app-{region}"}])
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.1.1.0/24")["Subnet"]["SubnetId"]
    sg = ec2.create_security_group(GroupName="web", Description="web", VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupId=sg,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 443,
                "ToPort": 443,
                "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
            }
        ],
    )
    instances = ec2.run_instances(
        ImageId="ami-12345678", MinCount=n, MaxCount=n, SubnetId=subnet, SecurityGroupIds=[sg]
    )["Instances"]
    volume = ec2.create_volume(AvailabilityZone=f"{region}a", Size=8)["VolumeId"]
    ec2.create_snapshot(VolumeId=volume)
    ec2.allocate_address(Domain="vpc")
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    ec2.create_route_table(VpcId=vpc)
    ec2.create_network_acl(VpcId=vpc)
    ec2.create_network_interface(SubnetId=subnet)
    ec2.create_key_pair(KeyName=f"ops-{n}")

    rds = session.client("rds", endpoint_url=endpoint, region_name=region)
    rds.create_db_instance(
        DBInstanceIdentifier=f"db-{n}",
        DBInstanceClass="db.t3.micro",
        Engine="postgres",
        AllocatedStorage=20,
        MasterUsername="admin1",
        MasterUserPassword="secret-password",
        Tags=[{"Key": "tier", "Value": "data"}],
    )
    rds.create_db_snapshot(DBInstanceIdentifier=f"db-{n}", DBSnapshotIdentifier=f"db-{n}-manual")
    rds.create_db_cluster(
        DBClusterIdentifier=f"cluster-{n}",
        Engine="aurora-postgresql",
        MasterUsername="admin1",
        MasterUserPassword="secret-password",
    )
    rds.create_db_cluster_snapshot(
        DBClusterIdentifier=f"cluster-{n}", DBClusterSnapshotIdentifier=f"cluster-{n}-manual"
    )

    default_subnets = [
        s["SubnetId"]
        for s in ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])[
            "Subnets"
        ]
    ][:2]
    elbv2 = session.client("elbv2", endpoint_url=endpoint, region_name=region)
    lb_arn = elbv2.create_load_balancer(Name=f"alb-{n}", Subnets=default_subnets)["LoadBalancers"][
        0
    ]["LoadBalancerArn"]
    default_vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]
    tg_arn = elbv2.create_target_group(
        Name=f"tg-{n}", Protocol="HTTP", Port=80, VpcId=default_vpc["VpcId"]
    )["TargetGroups"][0]["TargetGroupArn"]
    elbv2.create_listener(
        LoadBalancerArn=lb_arn,
        Protocol="HTTP",
        Port=80,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg_arn}],
    )
    elb = session.client("elb", endpoint_url=endpoint, region_name=region)
    elb.create_load_balancer(
        LoadBalancerName=f"classic-{n}",
        Listeners=[{"Protocol": "HTTP", "LoadBalancerPort": 80, "InstancePort": 8080}],
        AvailabilityZones=[f"{region}a"],
    )
    elb.register_instances_with_load_balancer(
        LoadBalancerName=f"classic-{n}", Instances=[{"InstanceId": instances[0]["InstanceId"]}]
    )


def _list_ids_with_boto3(session: Any, endpoint: str, region: str) -> dict[str, set[str]]:
    """What boto3 lists directly in one account and region, by CloudFormation type."""

    def client(service: str) -> Any:
        return session.client(service, endpoint_url=endpoint, region_name=region)

    ec2, rds, elbv2, elb = client("ec2"), client("rds"), client("elbv2"), client("elb")
    return {
        "AWS::EC2::Instance": {
            i["InstanceId"]
            for r in ec2.describe_instances()["Reservations"]
            for i in r["Instances"]
        },
        "AWS::EC2::SecurityGroup": {
            g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]
        },
        "AWS::EC2::Volume": {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]},
        "AWS::EC2::Snapshot": {
            s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]
        },
        "AWS::EC2::VPC": {v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"]},
        "AWS::EC2::Subnet": {s["SubnetId"] for s in ec2.describe_subnets()["Subnets"]},
        "AWS::EC2::NetworkInterface": {
            n["NetworkInterfaceId"] for n in ec2.describe_network_interfaces()["NetworkInterfaces"]
        },
        "AWS::EC2::InternetGateway": {
            g["InternetGatewayId"] for g in ec2.describe_internet_gateways()["InternetGateways"]
        },
        "AWS::EC2::RouteTable": {
            t["RouteTableId"] for t in ec2.describe_route_tables()["RouteTables"]
        },
        "AWS::EC2::NetworkAcl": {
            a["NetworkAclId"] for a in ec2.describe_network_acls()["NetworkAcls"]
        },
        "AWS::EC2::EIP": {a["AllocationId"] for a in ec2.describe_addresses()["Addresses"]},
        "AWS::EC2::KeyPair": {k["KeyPairId"] for k in ec2.describe_key_pairs()["KeyPairs"]},
        "AWS::RDS::DBInstance": {
            d["DBInstanceIdentifier"] for d in rds.describe_db_instances()["DBInstances"]
        },
        "AWS::RDS::DBCluster": {
            c["DBClusterIdentifier"] for c in rds.describe_db_clusters()["DBClusters"]
        },
        "AWS::RDS::DBSnapshot": {
            s["DBSnapshotIdentifier"] for s in rds.describe_db_snapshots()["DBSnapshots"]
        },
        "AWS::RDS::DBClusterSnapshot": {
            s["DBClusterSnapshotIdentifier"]
            for s in rds.describe_db_cluster_snapshots()["DBClusterSnapshots"]
        },
        "AWS::ElasticLoadBalancingV2::LoadBalancer": {
            lb["LoadBalancerName"] for lb in elbv2.describe_load_balancers()["LoadBalancers"]
        },
        "AWS::ElasticLoadBalancingV2::TargetGroup": {
            tg["TargetGroupName"] for tg in elbv2.describe_target_groups()["TargetGroups"]
        },
        "AWS::ElasticLoadBalancing::LoadBalancer": {
            lb["LoadBalancerName"]
            for lb in elb.describe_load_balancers()["LoadBalancerDescriptions"]
        },
    }


def _list_global_ids_with_boto3(session: Any, endpoint: str) -> dict[str, set[str]]:
    iam = session.client("iam", endpoint_url=endpoint)
    return {
        "AWS::IAM::User": {u["UserName"] for u in iam.list_users()["Users"]},
        "AWS::IAM::Role": {r["RoleName"] for r in iam.list_roles()["Roles"]},
        "AWS::IAM::Group": {g["GroupName"] for g in iam.list_groups()["Groups"]},
        "AWS::IAM::ManagedPolicy": {
            p["PolicyName"] for p in iam.list_policies(Scope="Local")["Policies"]
        },
    }


def _list_buckets_by_region_with_boto3(session: Any, endpoint: str) -> dict[str, set[str]]:
    """Bucket names by their own region (None is us-east-1), as AWS Config records them."""
    s3 = session.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    found: dict[str, set[str]] = {region: set() for region in SCAN_REGIONS}
    for bucket in s3.list_buckets()["Buckets"]:
        location = s3.get_bucket_location(Bucket=bucket["Name"])["LocationConstraint"]
        found.setdefault(location or "us-east-1", set()).add(bucket["Name"])
    return found


SCAN_ESTATE_TYPES = (
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
    "AWS::EC2::EIP",
    "AWS::EC2::KeyPair",
    "AWS::RDS::DBInstance",
    "AWS::RDS::DBCluster",
    "AWS::RDS::DBSnapshot",
    "AWS::RDS::DBClusterSnapshot",
    "AWS::ElasticLoadBalancingV2::LoadBalancer",
    "AWS::ElasticLoadBalancingV2::TargetGroup",
    "AWS::ElasticLoadBalancing::LoadBalancer",
    "AWS::IAM::User",
    "AWS::IAM::Role",
    "AWS::IAM::Group",
    "AWS::IAM::ManagedPolicy",
    "AWS::S3::Bucket",
)
"""The types of the scan estate, each compared exactly with boto3's own listing."""


@pytest.fixture(scope="session")
def scan_estate(moto_endpoint: str) -> ScanEstate:
    """3 fresh accounts x 3 regions, seeded with boto3; listings taken with boto3."""
    import random

    from tests.moto_helpers import account_session

    rng = random.Random()
    accounts = [f"7{rng.randrange(10**10, 10**11):011d}" for _ in range(3)]
    estate = ScanEstate(moto_endpoint, accounts)
    for a, account in enumerate(accounts):
        session = account_session(moto_endpoint, account)
        _seed_scan_globals(session, moto_endpoint, account, a)
        for r, region in enumerate(SCAN_REGIONS):
            _seed_scan_region(session, moto_endpoint, region, 1 + (a + r) % 3)
        for cfn_type, ids in _list_global_ids_with_boto3(session, moto_endpoint).items():
            estate.expected[(account, "global", cfn_type)] = ids
        for region, names in _list_buckets_by_region_with_boto3(session, moto_endpoint).items():
            estate.expected[(account, region, "AWS::S3::Bucket")] = names
        for region in SCAN_REGIONS:
            for cfn_type, ids in _list_ids_with_boto3(session, moto_endpoint, region).items():
                estate.expected[(account, region, cfn_type)] = ids
    return estate


@pytest.fixture(scope="session")
async def denying_proxy(moto_endpoint: str) -> AsyncIterator[str]:
    """A reverse proxy in front of moto answering AccessDenied for every request signed for
    region SCAN_DENIED_REGION or service SCAN_DENIED_SERVICE (read from the SigV4 credential
    scope of the Authorization header), in the error format of the request's protocol, and
    for AssumeRole of a role named SCAN_DENIED_ROLE; counts AssumeRole calls by role ARN in
    ASSUME_ROLE_CALLS."""
    import re
    from urllib.parse import parse_qs

    from aiohttp import web

    from tests.moto_proxy import moto_proxy

    scope_re = re.compile(r"Credential=[^/]+/\d{8}/([^/]+)/([^/]+)/aws4_request")

    def denial(request: web.Request, service: str) -> web.Response:
        message = "User is not authorized (denied by the test proxy)"
        if "X-Amz-Target" in request.headers:
            return web.json_response(
                {"__type": "AccessDeniedException", "message": message}, status=400
            )
        if service == "ec2":
            body = (
                "<Response><Errors><Error><Code>UnauthorizedOperation</Code>"
                f"<Message>{message}</Message></Error></Errors><RequestID>1</RequestID></Response>"
            )
        elif service == "s3":
            body = f"<Error><Code>AccessDenied</Code><Message>{message}</Message></Error>"
        else:
            body = (
                "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>"
                f"<Message>{message}</Message></Error><RequestId>1</RequestId></ErrorResponse>"
            )
        return web.Response(status=403, text=body, content_type="text/xml")

    async def intercept(request: web.Request) -> web.Response | None:
        match = scope_re.search(request.headers.get("Authorization", ""))
        if match and (match[1] == SCAN_DENIED_REGION or match[2] == SCAN_DENIED_SERVICE):
            return denial(request, match[2])
        if match and match[2] == "sts":
            form = parse_qs((await request.read()).decode())
            if form.get("Action") == ["AssumeRole"]:
                arn = form["RoleArn"][0]
                ASSUME_ROLE_CALLS[arn] = ASSUME_ROLE_CALLS.get(arn, 0) + 1
                if arn.endswith(f":role/{SCAN_DENIED_ROLE}"):
                    return denial(request, "sts")
        return None

    async with moto_proxy(moto_endpoint, intercept) as url:
        yield url
