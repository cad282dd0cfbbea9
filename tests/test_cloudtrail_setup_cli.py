"""`cloudinv cloudtrail setup`: --dry-run prints the plan; without it the plan is applied
(here against moto) and the trail bucket's new log files reach the queue."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import boto3

from tests.cli_helpers import run_cli

AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def test_dry_run_prints_every_step_and_creates_nothing(tmp_path: Path, moto_endpoint: str) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    result = run_cli(
        "cloudtrail",
        "setup",
        "--bucket",
        "trail-b",
        "--queue-name",
        queue,
        "--account-id",
        "123456789012",
        "--region",
        "us-east-1",
        "--dry-run",
        cwd=tmp_path,
        env=AWS_ENV,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("## step") == 5
    for call in (
        "sqs:CreateQueue",
        "sqs:SetQueueAttributes",
        "s3:PutBucketNotificationConfiguration",
        "events:PutRule",
        "events:PutTargets",
    ):
        assert call in result.stdout
    sqs = boto3.client("sqs", endpoint_url=moto_endpoint, region_name="us-east-1")
    assert queue not in json.dumps(sqs.list_queues())


def test_setup_applies_the_plan(tmp_path: Path, moto_endpoint: str) -> None:
    bucket, queue = f"trail-{uuid.uuid4().hex[:8]}", f"q-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    result = run_cli(
        "cloudtrail",
        "setup",
        "--bucket",
        bucket,
        "--queue-name",
        queue,
        "--account-id",
        "123456789012",
        "--region",
        "us-east-1",
        "--endpoint-url",
        moto_endpoint,
        cwd=tmp_path,
        env=AWS_ENV,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("✓") == 5
    config = s3.get_bucket_notification_configuration(Bucket=bucket)
    assert config["QueueConfigurations"][0]["QueueArn"].endswith(f":{queue}")
    events = boto3.client("events", endpoint_url=moto_endpoint, region_name="us-east-1")
    assert any(r["Name"].startswith(queue) for r in events.list_rules()["Rules"])


def test_bad_arguments_are_one_line(tmp_path: Path) -> None:
    result = run_cli(
        "cloudtrail",
        "setup",
        "--bucket",
        "Bad_Bucket!",
        "--account-id",
        "12",
        "--region",
        "us-east-1",
        "--dry-run",
        cwd=tmp_path,
        env=AWS_ENV,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("cloudinv: error:")
