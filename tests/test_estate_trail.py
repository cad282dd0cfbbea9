"""The demo's CloudTrail: estate changes become real-shaped log files in a trail bucket,
announced through S3 notifications on an SQS queue, that the normalizer accepts."""

from __future__ import annotations

import gzip
import json
import random
from urllib.parse import unquote_plus

import boto3

from cloudinv.producers.cloudtrail.normalize import normalize_record
from cloudinv.simulator.estate import (
    ChangeAction,
    EstateCounts,
    EstateMutator,
    EstateSpec,
    seed_estate,
)
from cloudinv.simulator.trail import EstateTrail


async def test_changes_arrive_as_cloudtrail_log_files(moto_endpoint: str) -> None:
    account = f"6{random.randrange(10**10, 10**11)}"
    info = await seed_estate(
        moto_endpoint,
        EstateSpec(
            accounts=[account],
            regions=["us-east-1"],
            counts=EstateCounts(db_instances=0, db_snapshots=0),
        ),
    )
    trail = EstateTrail(moto_endpoint, info)
    where = await trail.setup()
    mutator = EstateMutator(moto_endpoint, info)
    changes = [await mutator.step() for _ in range(2)]
    for change in changes:
        await trail.on_change(change)
    files = await trail.deliver()  # one log file per (account, region) with records
    assert files >= 1

    # The trail bucket and queue live in the log-archive account (the base credentials).
    session = boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    sqs = session.client("sqs", endpoint_url=moto_endpoint)
    s3 = session.client("s3", endpoint_url=moto_endpoint)
    keys = []
    for _ in range(5):
        for message in sqs.receive_message(QueueUrl=where.queue_url, MaxNumberOfMessages=10).get(
            "Messages", []
        ):
            body = json.loads(message["Body"])
            for rec in body.get("Records", []):
                keys.append(unquote_plus(rec["s3"]["object"]["key"]))
        if len(keys) >= files:
            break
    assert len(keys) == files
    prefix = f"AWSLogs/{account}/CloudTrail/"
    assert all(k.startswith(prefix) and k.endswith(".json.gz") for k in keys)
    names = set()
    for key in keys:
        raw = gzip.decompress(s3.get_object(Bucket=where.bucket, Key=key)["Body"].read())
        for record in json.loads(raw)["Records"]:
            event = normalize_record(record)
            assert event.account_id == account
            assert event.principal.name in {"alice", "bob", "deployer-session", "deployer"}
            names.add(event.event_name)
    assert changes[0].action is ChangeAction.OPEN_SSH_TO_WORLD
    assert names == {"AuthorizeSecurityGroupIngress", "DeleteBucketPublicAccessBlock"}
