"""Backfilling CloudTrail from S3: the log files of a date range in a trail bucket.

Under ``[prefix/]AWSLogs/[<org id>/]<account>/CloudTrail/<region>/YYYY/MM/DD/`` for each day
from ``start`` to ``end`` inclusive, every account and region found in the bucket; digest
files are skipped. Files are read with :class:`~cloudinv.producers.cloudtrail.s3logs.
S3LogReader` and published as :class:`~cloudinv.producers.cloudtrail.backfill.Backfill` does
for every source (pipelined, marked done once stored end to end). Kept apart from
:mod:`~cloudinv.producers.cloudtrail.backfill` so a local backfill never loads the AWS SDK.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session

from cloudinv.producers.cloudtrail.ack import CommitWatch
from cloudinv.producers.cloudtrail.backfill import (
    Backfill,
    BackfillSource,
    BackfillStats,
    Progress,
    ResumeFile,
)
from cloudinv.producers.cloudtrail.layout import day_prefixes, find_region_prefixes
from cloudinv.producers.cloudtrail.logfile import ParsedLog, RejectionLog, is_digest_key
from cloudinv.producers.cloudtrail.publish import CloudTrailPublisher
from cloudinv.producers.cloudtrail.s3logs import S3LogReader, S3Object

__all__ = ["backfill_s3", "list_s3_logs"]


async def list_s3_logs(
    s3: Any, bucket: str, prefix: str, start: date, end: date
) -> list[tuple[S3Object, str]]:
    """Log files of the range with their fingerprint (size and ETag)."""
    objects: list[tuple[S3Object, str]] = []
    paginator = s3.get_paginator("list_objects_v2")
    for region_prefix in await find_region_prefixes(s3, bucket, prefix):
        for day in day_prefixes(region_prefix, start, end):
            async for page in paginator.paginate(Bucket=bucket, Prefix=day):
                objects.extend(
                    (S3Object(bucket, item["Key"]), f"{item.get('Size')}:{item.get('ETag')}")
                    for item in page.get("Contents", [])
                    if not is_digest_key(item["Key"]) and not item["Key"].endswith("/")
                )
    return objects


async def backfill_s3(
    bucket: str,
    start: date,
    end: date,
    *,
    prefix: str = "",
    publisher: CloudTrailPublisher,
    ack: CommitWatch | None,
    rejections: RejectionLog,
    resume: ResumeFile | None,
    endpoint_url: str | None = None,
    region: str | None = None,
    session: AioSession | None = None,
    concurrency: int = 32,
    progress: Progress | None = None,
    on_listed: Callable[[int], None] | None = None,
) -> BackfillStats:
    """Publish every log file of the date range (``end`` inclusive) in ``bucket``."""
    session = session or get_session()
    config = AioConfig(
        retries={"mode": "standard", "max_attempts": 8}, max_pool_connections=concurrency + 2
    )
    async with (
        session.create_client(
            "s3", region_name=region, endpoint_url=endpoint_url, config=config
        ) as s3,
        S3LogReader(s3, session, connections=concurrency) as logs,
    ):
        objects = await list_s3_logs(s3, bucket, prefix, start, end)
        stats = BackfillStats(files_found=len(objects))
        if on_listed:
            on_listed(len(objects))

        def reader(obj: S3Object) -> Callable[[], Awaitable[ParsedLog]]:
            return lambda: logs.read(obj)

        backfill = Backfill(
            publisher=publisher,
            ack=ack,
            rejections=rejections,
            resume=resume,
            concurrency=concurrency,
            progress=progress,
            stats=stats,
        )
        return await backfill.run(BackfillSource(o.uri, fp, reader(o)) for o, fp in objects)
