"""``cloudinv rules test|list`` and ``GET /v1/rules``, over an inventory that the real scan
engine collected from moto (so the rules meet the configurations as the producers really
shape them): a rule file is checked, a malformed rule is rejected with its file, line, id and
problem while the file's other rules are still tried, and each valid rule shows which
current resources it would fire on.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path

import boto3
import pytest
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from cloudinv.api.app import create_app
from cloudinv.api.auth import generate_token
from cloudinv.api.state import Stores
from cloudinv.core.models import ResourceSnapshot
from cloudinv.core.settings import AccountRole, AlertSettings, ApiToken, AwsSettings, Settings
from cloudinv.producers.engine import scan
from cloudinv.sinks.sqlite_store import SqliteStore
from cloudinv.sinks.store import ChangeQuery
from cloudinv.streams.changes import ChangeDetector
from cloudinv.streams.rules import evaluate_change, load_rules
from tests.api_helpers import Api
from tests.cli_helpers import run_cli

TYPES = ["AWS::EC2::SecurityGroup", "AWS::S3::Bucket", "AWS::IAM::User"]

RULE_FILE = """
rules:
  - id: team-ssh-from-anywhere
    title: SSH open to the internet
    severity: high
    kind: state
    resource_type: AWS::EC2::SecurityGroup
    condition: >-
      IpPermissions[?(IpProtocol == '-1' || (FromPort <= `22` && ToPort >= `22`))
      && IpRanges[?CidrIp == '0.0.0.0/0']]
  - id: team-typo
    title: A rule with a typo
    severity: low
    kind: state
    resource_type: AWS::EC2::SecurityGroup
    conditon: GroupName == 'web'
  - id: team-bucket-unblocked
    title: Bucket without a public access block
    severity: high
    kind: state
    resource_type: AWS::S3::Bucket
    condition: "!PublicAccessBlock"
"""


class Seeded:
    def __init__(self, data_dir: Path, account: str) -> None:
        self.data_dir = data_dir
        self.account = account
        self.open_sg = ""
        self.closed_sg = ""


def _seed(endpoint: str, account: str) -> tuple[str, str]:
    sts = boto3.client("sts", endpoint_url=endpoint, region_name="us-east-1")
    creds = sts.assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/cloudinv-reader", RoleSessionName="seed"
    )["Credentials"]
    session = boto3.Session(
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
        region_name="us-east-1",
    )
    ec2 = session.client("ec2", endpoint_url=endpoint)
    vpc = ec2.create_vpc(CidrBlock="10.7.0.0/16")["Vpc"]["VpcId"]
    groups = []
    for name, cidr in (("admin", "0.0.0.0/0"), ("internal", "10.0.0.0/8")):
        group = ec2.create_security_group(GroupName=name, Description=name, VpcId=vpc)["GroupId"]
        ec2.authorize_security_group_ingress(
            GroupId=group,
            IpPermissions=[
                {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": cidr}]}
            ],
        )
        groups.append(group)
    s3 = session.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket=f"open-{account}")
    s3.create_bucket(Bucket=f"locked-{account}")
    s3.put_public_access_block(
        Bucket=f"locked-{account}",
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    iam = session.client("iam", endpoint_url=endpoint)
    iam.create_user(UserName="console-no-mfa")
    iam.create_login_profile(UserName="console-no-mfa", Password="Secret-password-1")
    iam.create_user(UserName="api-only")
    return groups[0], groups[1]


@pytest.fixture(scope="module")
async def seeded(moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    account = f"6{random.randrange(10**10, 10**11)}"
    data = Seeded(tmp_path_factory.mktemp("rules-cli"), account)
    data.open_sg, data.closed_sg = await asyncio.to_thread(_seed, moto_endpoint, account)
    aws = AwsSettings(
        accounts=[AccountRole(role_arn=f"arn:aws:iam::{account}:role/cloudinv-reader")],
        regions=["us-east-1"],
        endpoint_url=moto_endpoint,
    )
    detector = ChangeDetector()
    async with SqliteStore.in_data_dir(data.data_dir) as store:
        changes = []
        async for item in scan(aws, types=TYPES):
            if isinstance(item, ResourceSnapshot):
                change = detector.observe(item)
                assert change is not None
                changes.append(change)
        await store.put_changes(changes)
    return data


def _sg_key(seeded: Seeded, group: str) -> str:
    return f"arn:aws:ec2:us-east-1:{seeded.account}:security-group/{group}"


async def test_rules_test_checks_a_file_and_shows_what_it_fires_on(seeded: Seeded) -> None:
    rule_file = seeded.data_dir / "team.yaml"
    rule_file.write_text(RULE_FILE)
    result = await asyncio.to_thread(
        run_cli, "rules", "test", str(rule_file), "--data-dir", str(seeded.data_dir),
        cwd=seeded.data_dir,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    # The malformed rule: its file, line, id and the problem.
    assert f"rejected: {rule_file}:11: rule 'team-typo': " in result.stderr
    assert "condition: required field missing; conditon: unknown field" in result.stderr
    assert "2 valid rule(s), 1 rejected" in result.stdout
    # The valid rules were tried on the current inventory.
    ssh_part = result.stdout.split("team-ssh-from-anywhere", 1)[1].split("team-bucket", 1)[0]
    assert _sg_key(seeded, seeded.open_sg) in ssh_part
    assert _sg_key(seeded, seeded.closed_sg) not in ssh_part
    assert "fires on 1 of " in ssh_part
    bucket_part = result.stdout.split("team-bucket-unblocked", 1)[1]
    assert f"arn:aws:s3:::open-{seeded.account}" in bucket_part
    assert f"arn:aws:s3:::locked-{seeded.account}" not in bucket_part

    good = seeded.data_dir / "good.yaml"
    good.write_text(RULE_FILE.replace("    conditon:", "    condition:"))
    ok = await asyncio.to_thread(
        run_cli, "rules", "test", str(good), "--data-dir", str(seeded.data_dir),
        cwd=seeded.data_dir,
    )  # fmt: skip
    assert ok.returncode == 0 and "3 valid rule(s), 0 rejected" in ok.stdout
    missing = await asyncio.to_thread(
        run_cli, "rules", "test", str(seeded.data_dir / "nope.yaml"), cwd=seeded.data_dir
    )
    assert missing.returncode == 2 and "does not exist" in missing.stderr


async def test_the_pack_on_resources_as_the_producers_collect_them(seeded: Seeded) -> None:
    """The built-in rules against moto's real shapes, as the worker sees them."""
    pack = load_rules()
    fired: dict[str, set[str]] = {}
    async with SqliteStore.in_data_dir(seeded.data_dir) as store:
        page = await store.changes(ChangeQuery(limit=1000))
    for change in page.items:
        if change.account_id != seeded.account:
            continue
        for observation in evaluate_change(pack, change).observations:
            if observation.opens:
                fired.setdefault(observation.rule_id, set()).add(observation.key)
    assert fired["ec2-sg-ssh-open-to-world"] == {_sg_key(seeded, seeded.open_sg)}
    assert fired["s3-bucket-public-access-block-missing"] == {f"arn:aws:s3:::open-{seeded.account}"}
    assert fired["iam-user-console-without-mfa"] == {
        f"arn:aws:iam::{seeded.account}:user/console-no-mfa"
    }


async def test_rules_list_and_the_rules_endpoint_report_rejected_rules(tmp_path: Path) -> None:
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "team.yaml").write_text(RULE_FILE)
    listed = await asyncio.to_thread(
        run_cli, "rules", "list", "--rules-dir", str(rules_dir), cwd=tmp_path
    )
    assert listed.returncode == 1
    assert "team-ssh-from-anywhere" in listed.stdout and "ec2-sg-ssh-open-to-world" in listed.stdout
    assert "rejected:" in listed.stderr and "'team-typo'" in listed.stderr
    plain = await asyncio.to_thread(run_cli, "rules", "list", cwd=tmp_path)
    assert plain.returncode == 0 and len(plain.stdout.splitlines()) == len(load_rules().rules)

    async for api in _api(tmp_path, AlertSettings(rules_dir=rules_dir)):
        status, body, _ = await api.get("/v1/rules")
        assert status == 200
        ids = {r["id"] for r in body["items"]}
        assert {"team-ssh-from-anywhere", "team-bucket-unblocked", "root-account-used"} <= ids
        (problem,) = body["problems"]
        assert problem["rule_id"] == "team-typo" and problem["line"] == 11
        assert problem["file"].endswith("team.yaml")


async def _api(data_dir: Path, alerts: AlertSettings) -> AsyncIterator[Api]:
    token, digest = generate_token()
    settings = Settings(
        api={"tokens": [ApiToken(sha256=SecretStr(digest), name="admin")]}, alerts=alerts
    )
    async with SqliteStore.in_data_dir(data_dir) as inventory:
        server = TestServer(create_app(settings, stores=Stores(inventory=inventory)))
        await server.start_server()
        try:
            yield Api(str(server.make_url("")).rstrip("/"), None, inventory, None, {"admin": token})  # type: ignore[arg-type]
        finally:
            await server.close()
