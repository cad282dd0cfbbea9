"""What to create so CloudTrail log files reach the tailer: a plan, as data, with no I/O.

:func:`cloudtrail_setup_plan` returns the API calls (botocore client, operation, parameters)
that wire an existing trail bucket to the tailer's SQS queue:

1. the queue (long retention, SSE), then its policy: ``s3.amazonaws.com`` may send only for
   this bucket (``aws:SourceArn``) of this account (``aws:SourceAccount``), and
   ``events.amazonaws.com`` only for the plan's EventBridge rule;
2. the bucket notification: ``s3:ObjectCreated:*`` under ``AWSLogs/`` ending ``.json.gz``;
3. the fast path: an EventBridge rule matching "AWS API Call via CloudTrail" events, whose
   target is the same queue, so a change is seen seconds after it is made instead of at the
   next log file (about 5 minutes later).

``cloudinv cloudtrail setup --dry-run`` prints the plan; running it is a matter of making the
calls in order. The bucket and queue are taken to be in ``account_id`` and ``region``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

LOG_PREFIX = "AWSLogs/"
LOG_SUFFIX = ".json.gz"
MESSAGE_RETENTION_S = 14 * 24 * 3600
"""SQS's maximum: a tailer stopped for up to two weeks loses nothing."""
VISIBILITY_TIMEOUT_S = 300
"""Time to fetch, parse and publish one log file before the message is handed out again."""
NOTIFICATION_ID = "cloudinv-cloudtrail-logs"
TARGET_ID = "cloudinv-tailer-queue"

_QUEUE_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_ACCOUNT_RE = re.compile(r"^\d{12}$")
_REGION_RE = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-\d$")


@dataclass(frozen=True, kw_only=True)
class PlannedAction:
    """One API call of the plan: what to call, with which parameters, and why."""

    service: str
    """botocore client name (``sqs``, ``s3``, ``events``)."""
    operation: str
    """Operation name as in the service model (``CreateQueue``)."""
    params: Mapping[str, Any] = field(default_factory=dict)
    """Request parameters exactly as botocore takes them."""
    description: str

    def describe(self) -> str:
        """``service:Operation`` then the parameters as indented JSON (for --dry-run)."""
        params = json.dumps(dict(self.params), indent=2, sort_keys=False)
        return f"# {self.description}\n{self.service}:{self.operation} {params}"


def _partition(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def _url_suffix(region: str) -> str:
    return "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"


def rule_name(queue_name: str) -> str:
    """The EventBridge rule of the plan (one per queue)."""
    return f"{queue_name}-api-calls"[:64]


def _check(bucket: str, queue_name: str, account_id: str, region: str) -> None:
    problems = []
    if not _BUCKET_RE.match(bucket):
        problems.append(f"bucket {bucket!r}: expected an S3 bucket name")
    if not _QUEUE_NAME_RE.match(queue_name):
        problems.append(
            f"queue name {queue_name!r}: expected 1-80 letters, digits, '-' or '_' "
            "(a standard queue: S3 cannot notify FIFO queues)"
        )
    if not _ACCOUNT_RE.match(account_id):
        problems.append(f"account id {account_id!r}: expected 12 digits")
    if not _REGION_RE.match(region):
        problems.append(f"region {region!r}: expected a region name like us-east-1")
    if problems:
        raise ValueError("; ".join(problems))


def queue_policy(bucket: str, queue_arn: str, account_id: str, rule_arn: str) -> dict[str, Any]:
    """Who may send to the tailer's queue: this bucket's notifications and the rule."""
    partition = queue_arn.split(":")[1]
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "CloudTrailLogNotifications",
                "Effect": "Allow",
                "Principal": {"Service": "s3.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {
                    "ArnLike": {"aws:SourceArn": f"arn:{partition}:s3:::{bucket}"},
                    "StringEquals": {"aws:SourceAccount": account_id},
                },
            },
            {
                "Sid": "CloudTrailApiCallEvents",
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}},
            },
        ],
    }


def cloudtrail_setup_plan(
    bucket: str, queue_name: str, account_id: str, region: str
) -> list[PlannedAction]:
    """The calls, in order, that deliver ``bucket``'s CloudTrail logs to ``queue_name``.

    Raises ``ValueError`` naming every malformed argument.
    """
    _check(bucket, queue_name, account_id, region)
    partition = _partition(region)
    queue_arn = f"arn:{partition}:sqs:{region}:{account_id}:{queue_name}"
    queue_url = f"https://sqs.{region}.{_url_suffix(region)}/{account_id}/{queue_name}"
    rule = rule_name(queue_name)
    rule_arn = f"arn:{partition}:events:{region}:{account_id}:rule/{rule}"
    return [
        PlannedAction(
            service="sqs",
            operation="CreateQueue",
            params={
                "QueueName": queue_name,
                "Attributes": {
                    "MessageRetentionPeriod": str(MESSAGE_RETENTION_S),
                    "VisibilityTimeout": str(VISIBILITY_TIMEOUT_S),
                    "SqsManagedSseEnabled": "true",
                },
            },
            description="the tailer's queue (a standard queue: S3 cannot notify FIFO queues)",
        ),
        PlannedAction(
            service="sqs",
            operation="SetQueueAttributes",
            params={
                "QueueUrl": queue_url,
                "Attributes": {
                    "Policy": json.dumps(queue_policy(bucket, queue_arn, account_id, rule_arn))
                },
            },
            description="let S3 send for this bucket and account only "
            "(aws:SourceArn, aws:SourceAccount), and EventBridge for the rule only",
        ),
        PlannedAction(
            service="s3",
            operation="PutBucketNotificationConfiguration",
            params={
                "Bucket": bucket,
                "ExpectedBucketOwner": account_id,
                "NotificationConfiguration": {
                    "QueueConfigurations": [
                        {
                            "Id": NOTIFICATION_ID,
                            "QueueArn": queue_arn,
                            "Events": ["s3:ObjectCreated:*"],
                            "Filter": {
                                "Key": {
                                    "FilterRules": [
                                        {"Name": "prefix", "Value": LOG_PREFIX},
                                        {"Name": "suffix", "Value": LOG_SUFFIX},
                                    ]
                                }
                            },
                        }
                    ]
                },
            },
            description="notify the queue of each new log file; this call REPLACES the "
            "bucket's notification configuration: merge in any existing entries first. "
            "Digest files (CloudTrail-Digest/) match too and are skipped by the tailer",
        ),
        PlannedAction(
            service="events",
            operation="PutRule",
            params={
                "Name": rule,
                "EventPattern": json.dumps({"detail-type": ["AWS API Call via CloudTrail"]}),
                "State": "ENABLED",
                "Description": "cloudinv fast path: CloudTrail API calls to the tailer's queue",
            },
            description=f"the fast path: API calls in {region} within seconds (a rule sees "
            "its own region's events; repeat per region, or forward to one bus)",
        ),
        PlannedAction(
            service="events",
            operation="PutTargets",
            params={"Rule": rule, "Targets": [{"Id": TARGET_ID, "Arn": queue_arn}]},
            description="send the rule's events to the tailer's queue",
        ),
    ]
