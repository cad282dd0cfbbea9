"""Backfilling CloudTrail: log files already in S3 (by date range) or on disk → the topic.

S3: under ``[prefix/]AWSLogs/[<org id>/]<account>/CloudTrail/<region>/YYYY/MM/DD/`` for each
day from ``start`` to ``end`` inclusive, every account and region found in the bucket.
Local: every ``.json`` and ``.json.gz`` file under a directory. Digest files are skipped.

Resumable: each file whose events Kafka acknowledged (or which was rejected and recorded) is
appended to a resume file (``<data dir>/cloudtrail/backfill-done.txt``); a later run skips
those. Files are processed with bounded concurrency and share the producer's batches.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import BotoCoreError, ClientError

from cloudinv.producers.cloudtrail.layout import day_prefixes, find_region_prefixes
from cloudinv.producers.cloudtrail.logfile import (
    LogFileDecoder,
    ParsedLog,
    RejectedFileError,
    RejectionLog,
    is_digest_key,
    parse_log,
)
from cloudinv.producers.cloudtrail.publish import CloudTrailPublisher
from cloudinv.producers.cloudtrail.tailer import S3Object, read_s3_log

__all__ = [
    "RESUME_FILE",
    "BackfillStats",
    "ResumeFile",
    "backfill_local",
    "backfill_s3",
    "list_local_logs",
    "read_local_log",
]

log = logging.getLogger(__name__)

RESUME_FILE = Path("cloudtrail") / "backfill-done.txt"


Progress = Callable[[str, ParsedLog | None], None]
"""Called once per file: its source and what was read (``None`` if skipped or rejected)."""


@dataclass
class BackfillStats:
    files_found: int = 0
    files_done: int = 0
    already_done: int = 0
    events: int = 0
    rejected_files: int = 0
    rejected_records: int = 0
    failed: int = 0
    """Files that could not be read for a reason that may pass; not marked done."""


class ResumeFile:
    """The sources already backfilled, one per line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = asyncio.Lock()

    def _load(self) -> set[str]:
        try:
            return {line for line in self.path.read_text().splitlines() if line}
        except FileNotFoundError:
            return set()

    async def load(self) -> set[str]:
        return await asyncio.to_thread(self._load)

    async def clear(self) -> None:
        await asyncio.to_thread(self.path.unlink, missing_ok=True)

    def _append(self, source: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as fh:
            fh.write(source + "\n")

    async def mark(self, source: str) -> None:
        async with self._lock:
            await asyncio.to_thread(self._append, source)


# --- listing -------------------------------------------------------------------------------


async def list_s3_logs(s3: Any, bucket: str, prefix: str, start: date, end: date) -> list[S3Object]:
    objects: list[S3Object] = []
    paginator = s3.get_paginator("list_objects_v2")
    for region_prefix in await find_region_prefixes(s3, bucket, prefix):
        for day in day_prefixes(region_prefix, start, end):
            async for page in paginator.paginate(Bucket=bucket, Prefix=day):
                objects.extend(
                    S3Object(bucket, item["Key"])
                    for item in page.get("Contents", [])
                    if not is_digest_key(item["Key"]) and not item["Key"].endswith("/")
                )
    return objects


def _list_local(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a file or directory")
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.name.endswith((".json", ".json.gz"))
        and not is_digest_key(p.as_posix())
    )


async def list_local_logs(root: Path) -> list[Path]:
    return await asyncio.to_thread(_list_local, root)


def read_local_log(path: Path) -> ParsedLog:
    """Read, gunzip and parse one local file (blocking: run it in a thread)."""
    source = path.resolve().as_uri()
    decoder = LogFileDecoder(source, expect_gzip=path.name.endswith(".gz"))
    with path.open("rb") as fh:
        while chunk := fh.read(1024 * 1024):
            decoder.feed(chunk)
    return parse_log(decoder.finish(), source)


# --- running -------------------------------------------------------------------------------


async def _run(
    sources: Iterable[tuple[str, Callable[[], Any]]],
    *,
    publisher: CloudTrailPublisher,
    rejections: RejectionLog,
    resume: ResumeFile | None,
    concurrency: int,
    progress: Progress | None,
    stats: BackfillStats,
) -> BackfillStats:
    done = await resume.load() if resume else set()
    queue = iter(sources)

    async def worker() -> None:
        # A fixed pool pulling from one iterator: bounded concurrency and bounded memory,
        # however many files the range holds.
        for source, read in queue:
            await one(source, read)

    def _failed(source: str, exc: BaseException) -> None:
        # Not marked done: the next run (resume) tries it again.
        stats.failed += 1
        log.warning("cloudtrail backfill: cannot read %s (will retry on resume): %s", source, exc)
        if progress:
            progress(source, None)

    async def one(source: str, read: Callable[[], Any]) -> None:
        if source in done:
            stats.already_done += 1
            if progress:
                progress(source, None)
            return
        parsed: ParsedLog | None = None
        try:
            parsed = await read()
        except RejectedFileError as exc:
            stats.rejected_files += 1
            await rejections.record(exc.source, exc.reason)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code not in ("NoSuchKey", "404"):
                return _failed(source, exc)
            stats.rejected_files += 1
            await rejections.record(source, f"cannot read from S3: {code}")
        except (BotoCoreError, OSError) as exc:
            return _failed(source, exc)
        if parsed is not None:
            if parsed.bad_records:
                stats.rejected_records += len(parsed.bad_records)
                await rejections.record(
                    source,
                    parsed.bad_records_reason(),
                    records=len(parsed.bad_records),
                )
            await publisher.publish(parsed.messages)
            stats.events += len(parsed.messages)
        stats.files_done += 1
        if resume:
            await resume.mark(source)
        if progress:
            progress(source, parsed)

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    return stats


async def backfill_local(
    root: Path,
    *,
    publisher: CloudTrailPublisher,
    rejections: RejectionLog,
    resume: ResumeFile | None,
    concurrency: int = 4,
    progress: Progress | None = None,
    on_listed: Callable[[int], None] | None = None,
) -> BackfillStats:
    """Publish every log file under ``root``; see the module docstring."""
    paths = await list_local_logs(root)
    stats = BackfillStats(files_found=len(paths))
    if on_listed:
        on_listed(len(paths))

    def reader(path: Path) -> Callable[[], Any]:
        return lambda: asyncio.to_thread(read_local_log, path)

    sources = [(p.resolve().as_uri(), reader(p)) for p in paths]
    return await _run(
        sources,
        publisher=publisher,
        rejections=rejections,
        resume=resume,
        concurrency=concurrency,
        progress=progress,
        stats=stats,
    )


async def backfill_s3(
    bucket: str,
    start: date,
    end: date,
    *,
    prefix: str = "",
    publisher: CloudTrailPublisher,
    rejections: RejectionLog,
    resume: ResumeFile | None,
    endpoint_url: str | None = None,
    region: str | None = None,
    session: AioSession | None = None,
    concurrency: int = 8,
    progress: Progress | None = None,
    on_listed: Callable[[int], None] | None = None,
) -> BackfillStats:
    """Publish every log file of the date range (``end`` inclusive) in ``bucket``."""
    session = session or get_session()
    config = AioConfig(
        retries={"mode": "standard", "max_attempts": 8}, max_pool_connections=concurrency + 2
    )
    async with session.create_client(
        "s3", region_name=region, endpoint_url=endpoint_url, config=config
    ) as s3:
        objects = await list_s3_logs(s3, bucket, prefix, start, end)
        stats = BackfillStats(files_found=len(objects))
        if on_listed:
            on_listed(len(objects))

        def reader(obj: S3Object) -> Callable[[], Any]:
            return lambda: read_s3_log(s3, obj)

        return await _run(
            [(o.uri, reader(o)) for o in objects],
            publisher=publisher,
            rejections=rejections,
            resume=resume,
            concurrency=concurrency,
            progress=progress,
            stats=stats,
        )
