"""CloudTrail for the simulated estate: log files for the estate's own changes.

moto does not record CloudTrail events, so the demo writes them itself: every change the
:class:`~cloudinv.simulator.estate.EstateMutator` makes becomes the CloudTrail record AWS would have
written (event name, request parameters, a principal), gathered into log files delivered
like a real organization trail — gzipped ``{"Records": [...]}`` under
``AWSLogs/<account>/CloudTrail/<region>/YYYY/MM/DD/`` in a trail bucket whose
``s3:ObjectCreated`` notifications go to an SQS queue. The CloudTrail tailer reads that queue
exactly as it would read a real trail's.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import random
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from aiobotocore.session import get_session

from cloudinv.simulator.estate import MOTO_CREDENTIALS as _MOTO_CREDENTIALS
from cloudinv.simulator.estate import AccountSession, ChangeAction, EstateChange, EstateInfo

log = logging.getLogger(__name__)

TRAIL_REGION = "us-east-1"
LOG_ARCHIVE_ACCOUNT = "123456789012"
"""moto's default account: where base credentials land."""

# Who makes the demo's changes: a few people and an automation role, so activity
# dashboards have more than one principal.
_ACTORS: tuple[tuple[str, str], ...] = (
    ("IAMUser", "alice"),
    ("IAMUser", "bob"),
    ("AssumedRole", "deployer"),
)


@dataclass(frozen=True)
class TrailLocation:
    account_id: str
    bucket: str
    queue_url: str
    queue_arn: str


def _principal(kind: str, name: str, account: str) -> dict[str, Any]:
    if kind == "AssumedRole":
        return {
            "type": "AssumedRole",
            "principalId": f"AROADEMO{name.upper()}:{name}-session",
            "arn": f"arn:aws:sts::{account}:assumed-role/{name}/{name}-session",
            "accountId": account,
            "accessKeyId": "ASIADEMO" + name.upper(),
            "sessionContext": {
                "sessionIssuer": {
                    "type": "Role",
                    "arn": f"arn:aws:iam::{account}:role/{name}",
                    "accountId": account,
                    "userName": name,
                }
            },
        }
    return {
        "type": "IAMUser",
        "principalId": f"AIDADEMO{name.upper()}",
        "arn": f"arn:aws:iam::{account}:user/{name}",
        "accountId": account,
        "accessKeyId": "AKIADEMO" + name.upper(),
        "userName": name,
    }


def _ec2_instances(ids: list[str]) -> dict[str, Any]:
    return {"instancesSet": {"items": [{"instanceId": i} for i in ids]}}


_SSH_WORLD = {
    "ipPermissions": {
        "items": [
            {
                "ipProtocol": "tcp",
                "fromPort": 22,
                "toPort": 22,
                "ipRanges": {"items": [{"cidrIp": "0.0.0.0/0"}]},
            }
        ]
    }
}


def records_for(change: EstateChange, actor: tuple[str, str]) -> list[dict[str, Any]]:
    """The CloudTrail records AWS would write for one estate change."""
    rid = change.resource_id
    calls: list[tuple[str, str, dict[str, Any], dict[str, Any] | None]] = []
    match change.action:
        case ChangeAction.START_INSTANCE:
            calls.append(("ec2", "StartInstances", _ec2_instances([rid]), None))
        case ChangeAction.STOP_INSTANCE:
            calls.append(("ec2", "StopInstances", _ec2_instances([rid]), None))
        case ChangeAction.REPLACE_INSTANCE:
            old = change.detail.rsplit(" ", 1)[-1]
            calls.append(("ec2", "TerminateInstances", _ec2_instances([old]), None))
            calls.append(
                (
                    "ec2",
                    "RunInstances",
                    {"instanceType": "t3.micro"},
                    {"instancesSet": {"items": [{"instanceId": rid}]}},
                )
            )
        case ChangeAction.OPEN_SSH_TO_WORLD:
            calls.append(
                (
                    "ec2",
                    "AuthorizeSecurityGroupIngress",
                    {"groupId": rid, **_SSH_WORLD},
                    {"_return": True},
                )
            )
        case ChangeAction.CLOSE_SSH:
            calls.append(
                (
                    "ec2",
                    "RevokeSecurityGroupIngress",
                    {"groupId": rid, **_SSH_WORLD},
                    {"_return": True},
                )
            )
        case ChangeAction.REMOVE_PUBLIC_ACCESS_BLOCK:
            calls.append(
                (
                    "s3",
                    "DeleteBucketPublicAccessBlock",
                    {"bucketName": rid, "publicAccessBlock": ""},
                    None,
                )
            )
        case ChangeAction.RESTORE_PUBLIC_ACCESS_BLOCK:
            calls.append(("s3", "PutBucketPublicAccessBlock", {"bucketName": rid}, None))
        case ChangeAction.RETAG_BUCKET:
            calls.append(("s3", "PutBucketTagging", {"bucketName": rid, "tagging": ""}, None))
        case ChangeAction.CREATE_SNAPSHOT:
            volume = change.detail.rsplit(" ", 1)[-1]
            calls.append(
                (
                    "ec2",
                    "CreateSnapshot",
                    {"volumeId": volume},
                    {"snapshotId": rid, "volumeId": volume},
                )
            )
        case ChangeAction.DELETE_SNAPSHOT:
            calls.append(("ec2", "DeleteSnapshot", {"snapshotId": rid}, {"_return": True}))
    kind, name = actor
    when = change.at.strftime("%Y-%m-%dT%H:%M:%SZ")
    return [
        {
            "eventVersion": "1.09",
            "userIdentity": _principal(kind, name, change.account_id),
            "eventTime": when,
            "eventSource": f"{service}.amazonaws.com",
            "eventName": event_name,
            "awsRegion": change.region,
            "sourceIPAddress": f"198.51.100.{10 + _ACTORS.index(actor)}",
            "userAgent": "cloudinv-demo/estate",
            "requestParameters": request,
            "responseElements": response,
            "requestID": str(uuid.uuid4()),
            "eventID": str(uuid.uuid4()),
            "readOnly": False,
            "eventType": "AwsApiCall",
            "managementEvent": True,
            "recipientAccountId": change.account_id,
            "eventCategory": "Management",
        }
        for service, event_name, request, response in calls
    ]


def log_file_key(account: str, region: str, at: datetime) -> str:
    stamp = at.strftime("%Y%m%dT%H%MZ")
    return (
        f"AWSLogs/{account}/CloudTrail/{region}/{at:%Y/%m/%d}/"
        f"{account}_CloudTrail_{region}_{stamp}_{uuid.uuid4().hex[:16]}.json.gz"
    )


class EstateTrail:
    """Collects records for estate changes and delivers them as CloudTrail log files."""

    def __init__(
        self, endpoint_url: str, info: EstateInfo, *, deliver_every_s: float = 2.0, seed: int = 7
    ) -> None:
        self.endpoint_url = endpoint_url
        self.info = info
        self.deliver_every_s = deliver_every_s
        self._rng = random.Random(seed)
        self._pending: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.location: TrailLocation | None = None
        self._session: AccountSession | None = None
        self.files_delivered = 0

    async def setup(self) -> TrailLocation:
        """Create the trail bucket, its queue and the notification in the log-archive account.

        As in an AWS organization, the trail's bucket lives in a dedicated account (moto's
        default account, reached with the base credentials) and every member account's logs
        land there under ``AWSLogs/<account>/``.
        """
        account = LOG_ARCHIVE_ACCOUNT
        self._session = AccountSession(
            account_id=account,
            role_arn="",
            credentials=_MOTO_CREDENTIALS,
            expiration=None,
            endpoint_url=self.endpoint_url,
            session=get_session(),
        )
        bucket = f"cloudinv-demo-trail-{account}"
        async with self._session.client("sqs", TRAIL_REGION) as sqs:
            queue_url = (await sqs.create_queue(QueueName="cloudinv-demo-trail"))["QueueUrl"]
            attrs = await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
            queue_arn = attrs["Attributes"]["QueueArn"]
        async with self._session.client("s3", TRAIL_REGION) as s3:
            await s3.create_bucket(Bucket=bucket)
            await s3.put_bucket_notification_configuration(
                Bucket=bucket,
                NotificationConfiguration={
                    "QueueConfigurations": [
                        {"QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"]}
                    ]
                },
            )
        self.location = TrailLocation(account, bucket, queue_url, queue_arn)
        return self.location

    def record(self, change: EstateChange) -> None:
        actor = self._rng.choice(_ACTORS)
        for rec in records_for(change, actor):
            self._pending.setdefault((change.account_id, rec["awsRegion"]), []).append(rec)

    async def on_change(self, change: EstateChange) -> None:
        self.record(change)

    async def deliver(self) -> int:
        """Write one log file per (account, region) with pending records."""
        if not self._pending or self._session is None or self.location is None:
            return 0
        pending, self._pending = self._pending, {}
        async with self._session.client("s3", TRAIL_REGION) as s3:
            for (account, region), records in pending.items():
                at = datetime.fromisoformat(records[-1]["eventTime"].replace("Z", "+00:00"))
                body = await asyncio.to_thread(gzip.compress, orjson.dumps({"Records": records}))
                await s3.put_object(
                    Bucket=self.location.bucket, Key=log_file_key(account, region, at), Body=body
                )
                self.files_delivered += 1
        return len(pending)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.deliver()
            except Exception as exc:  # a failed delivery keeps nothing back from later ones
                log.warning("demo trail delivery failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.deliver_every_s)
