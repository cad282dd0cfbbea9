"""``cloudinv cloudtrail``: backfill CloudTrail logs, tail an SQS queue, run the CloudTrail
role (``run``, in :mod:`cloudinv.cli.cloudtrail_run`), list rejected files.

``backfill`` and ``tail`` feed the CloudTrail topic of the running instance (found through
its connection file under the data dir) unless ``--bootstrap`` names a broker; then the
topic prefix and AWS endpoint come from the configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from cloudinv.cli.cloudtrail_run import register_run
from cloudinv.core.collector import tune_gc
from cloudinv.core.errors import CloudinvError, ConfigError
from cloudinv.core.logs import limit_reconnect_noise
from cloudinv.core.settings import Settings, load_settings

T = TypeVar("T")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("cloudtrail", help="feed CloudTrail logs into cloudinv")
    sub = parser.add_subparsers(dest="cloudtrail_command", metavar="ACTION", required=True)

    backfill = sub.add_parser(
        "backfill",
        help="publish CloudTrail log files from S3 (by date) or a local directory",
        description="Publish past CloudTrail log files. A file counts as done once the stream "
        "worker stored its events. Resumable: files done are listed under "
        "<data dir>/cloudtrail/backfill-done.txt and skipped; rejected files are skipped "
        "until they change. Exits 1 when a file or a record was rejected or a file failed.",
    )
    source = backfill.add_mutually_exclusive_group(required=True)
    source.add_argument("--bucket", help="S3 bucket of the trail")
    source.add_argument(
        "--path", type=Path, help="local directory (or file) of .json/.json.gz logs"
    )
    backfill.add_argument("--prefix", default="", help="key prefix before AWSLogs/ (S3 only)")
    backfill.add_argument("--from", dest="start", type=_day, help="first day, YYYY-MM-DD (S3)")
    backfill.add_argument(
        "--to", dest="end", type=_day, help="last day, inclusive, YYYY-MM-DD (S3)"
    )
    backfill.add_argument(
        "--concurrency", type=int, default=16, help="files read at once (default 16)"
    )
    backfill.add_argument("--restart", action="store_true", help="forget completed files first")
    backfill.add_argument(
        "--verify",
        action="store_true",
        help="also check the range's log files against CloudTrail's digest files (SHA-256, "
        "digest chain, signatures) and record missing or changed files (S3 only)",
    )
    backfill.add_argument(
        "--public-key",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="with --verify: a PEM or DER public key for digest signatures, used before "
        "CloudTrail's ListPublicKeys (repeatable)",
    )
    _connection_flags(backfill)
    backfill.set_defaults(handler=run_backfill)

    tail = sub.add_parser(
        "tail",
        help="publish CloudTrail events from an SQS queue (S3 notifications or EventBridge)",
    )
    tail.add_argument("--queue-url", required=True)
    tail.add_argument("--until-idle", action="store_true", help="stop once the queue is empty")
    tail.add_argument(
        "--wait-seconds", type=int, default=20, help="SQS long-polling wait (0-20, default 20)"
    )
    tail.add_argument(
        "--verify-digests",
        action="store_true",
        default=None,
        help="check each digest file that lands (default: cloudtrail.verify_digests)",
    )
    _connection_flags(tail)
    tail.set_defaults(handler=run_tail)

    register_run(sub)

    rejected = sub.add_parser("rejected", help="list log files that could not be read")
    rejected.add_argument("--limit", type=int, default=50)
    rejected.add_argument("--data-dir", type=Path)
    rejected.set_defaults(handler=show_rejected)

    setup = sub.add_parser(
        "setup",
        help="create the SQS queue, S3 notification and EventBridge rule that feed the tailer",
        description="Deliver a trail bucket's new log files (S3 notifications) and CloudTrail "
        "API calls (EventBridge, seconds fresh) to one SQS queue that `cloudinv up` tails. "
        "With --dry-run, print the calls instead of making them.",
    )
    setup.add_argument("--bucket", required=True, help="the trail's S3 bucket")
    setup.add_argument("--queue-name", default="cloudinv-cloudtrail", help="SQS queue to create")
    setup.add_argument("--account-id", required=True, help="account of the bucket and queue")
    setup.add_argument("--region", required=True, help="region of the bucket and queue")
    setup.add_argument("--dry-run", action="store_true", help="print what would be created")
    setup.add_argument("--endpoint-url", help="AWS endpoint override (moto, LocalStack)")
    setup.set_defaults(handler=run_setup)


def _connection_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (default: running instance)")
    parser.add_argument("--topic-prefix", help="topic prefix (default: running instance or config)")
    parser.add_argument("--endpoint-url", help="AWS endpoint (default: running instance or config)")
    parser.add_argument("--region", help="AWS region of the bucket or queue")
    parser.add_argument("--data-dir", type=Path, help="data dir (default: storage.data_dir)")
    parser.add_argument(
        "--consumer-group",
        help="the stream workers' consumer group, whose commits acknowledge a file or "
        "message end to end (default: kafka.consumer_group)",
    )


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}") from None


@dataclass(frozen=True)
class _Target:
    kafka: dict[str, Any]
    topic_prefix: str
    endpoint_url: str | None
    data_dir: Path
    consumer_group: str


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "data_dir", None):
        overrides["storage"] = {"data_dir": args.data_dir}
    return load_settings(args.config, **overrides)


def _target(args: argparse.Namespace) -> _Target:
    from cloudinv.core.connection import require_running_instance
    from cloudinv.core.kafka import client_kwargs

    settings = _settings(args)
    if args.bootstrap:
        return _Target(
            kafka=client_kwargs(settings.kafka, args.bootstrap),
            topic_prefix=args.topic_prefix or settings.kafka.topic_prefix,
            endpoint_url=args.endpoint_url or settings.aws.effective_endpoint(),
            data_dir=settings.data_dir,
            consumer_group=args.consumer_group or settings.kafka.consumer_group,
        )
    info = require_running_instance(settings.data_dir)
    return _Target(
        kafka=client_kwargs(settings.kafka, info.kafka_bootstrap),
        topic_prefix=args.topic_prefix or info.topic_prefix,
        endpoint_url=args.endpoint_url or info.aws_endpoint_url,
        data_dir=settings.data_dir,
        consumer_group=args.consumer_group or settings.kafka.consumer_group,
    )


async def run_backfill(args: argparse.Namespace) -> int:
    limit_reconnect_noise()
    from cloudinv.producers.cloudtrail.ack import CommitWatch
    from cloudinv.producers.cloudtrail.backfill import RESUME_FILE, ResumeFile, backfill_local
    from cloudinv.producers.cloudtrail.logfile import RejectionLog
    from cloudinv.producers.cloudtrail.publish import CloudTrailPublisher

    if args.bucket and (args.start is None or args.end is None):
        raise ConfigError("--bucket needs --from YYYY-MM-DD and --to YYYY-MM-DD")
    if args.start and args.end and args.end < args.start:
        raise ConfigError(f"--to {args.end} is before --from {args.start}")
    if args.path is not None and not args.path.exists():
        raise CloudinvError(f"--path {args.path} does not exist")
    if args.verify and args.path is not None:
        raise ConfigError("--verify checks digests in S3: use it with --bucket")
    local_keys = _public_keys(args.public_key)
    target = _target(args)
    resume = ResumeFile(target.data_dir / RESUME_FILE)
    if args.restart:
        await resume.clear()
    rejections = RejectionLog(target.data_dir)
    console = Console(stderr=True)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("files · {task.fields[events]} events"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("backfill", total=None, events=0)
        events = 0

        def on_listed(total: int) -> None:
            bar.update(task, total=total)

        def on_file(source: str, parsed: Any) -> None:
            nonlocal events
            events += len(parsed.messages) if parsed is not None else 0
            bar.update(task, advance=1, events=events)

        publisher = CloudTrailPublisher(target.kafka, target.topic_prefix)
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(publisher.stop)
            # Files are listed, read and parsed while the publisher connects.
            connecting = publisher.start_soon()
            ack = await stack.enter_async_context(
                CommitWatch(target.kafka, publisher.topic, target.consumer_group)
            )
            common: dict[str, Any] = {
                "publisher": publisher,
                "ack": ack,
                "rejections": rejections,
                "resume": resume,
                "concurrency": args.concurrency,
                "progress": on_file,
                "on_listed": on_listed,
            }
            if args.path is not None:
                stats = await _while_connecting(connecting, backfill_local(args.path, **common))
            else:
                # Only an S3 backfill loads the AWS SDK.
                from cloudinv.producers.cloudtrail.backfill_s3 import backfill_s3

                stats = await _while_connecting(
                    connecting,
                    backfill_s3(
                        args.bucket,
                        args.start,
                        args.end,
                        prefix=args.prefix,
                        endpoint_url=target.endpoint_url,
                        region=args.region,
                        **common,
                    ),
                )
    console.print(
        f"backfill: {stats.files_done} file(s) stored ({stats.events} events), "
        f"{stats.already_done} already done, {stats.rejected_files} rejected file(s)"
        + (f" and {stats.still_rejected} unchanged since rejected" if stats.still_rejected else "")
        + f", {stats.rejected_records} rejected record(s)"
        + (f", {stats.replayed} published again after a broker loss" if stats.replayed else "")
        + (f", {stats.failed} failed (run again to retry them)" if stats.failed else ""),
        soft_wrap=True,
    )
    problems = 0
    if args.verify:
        problems = await _verify(args, target, rejections, local_keys, console)
    # Rejections close the output, so an operator who scripts the backfill sees where to look.
    if stats.rejected_files:
        console.print(
            "some files are not CloudTrail logs: see `cloudinv cloudtrail rejected`; a "
            "rejected file is read again once it changes",
            soft_wrap=True,
        )
    if stats.rejected_records:
        # Their files' good events are stored and the files are done: a re-run skips them.
        console.print(
            f"{stats.rejected_records} record(s) are not CloudTrail events and were skipped "
            "(the rest of their files is stored): see `cloudinv cloudtrail rejected`",
            soft_wrap=True,
        )
    rejected = stats.rejected_files or stats.rejected_records
    return 1 if stats.failed or rejected or problems else 0


async def _while_connecting(connecting: asyncio.Task[None], work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` while the publisher connects; when Kafka cannot be reached, stop it at
    once with the publisher's clear error (rather than let each file retry)."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.wait({task, connecting}, return_when=asyncio.FIRST_EXCEPTION)
        if connecting.done() and not connecting.cancelled() and not task.done():
            connecting.result()
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    return task.result()


def _public_keys(paths: list[Path]) -> Any:
    if not paths:
        return None
    # Lazy for start-up speed: the digest module loads the AWS SDK, which --path never needs.
    from cloudinv.producers.cloudtrail.digest import StaticPublicKeys

    try:
        return StaticPublicKeys.from_files(p.read_bytes() for p in paths)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--public-key: cannot read an RSA public key: {exc}") from None


async def _verify(
    args: argparse.Namespace, target: _Target, rejections: Any, local_keys: Any, console: Console
) -> int:
    """Check the range's digests; print a summary; return how many problems were found."""
    from aiobotocore.session import get_session

    from cloudinv.producers.cloudtrail.digest import (
        CloudTrailPublicKeys,
        DigestUnavailableError,
        DigestVerifier,
    )

    session = get_session()
    keys = CloudTrailPublicKeys(session, endpoint_url=target.endpoint_url, local=local_keys)
    async with session.create_client(
        "s3", region_name=args.region, endpoint_url=target.endpoint_url
    ) as s3:
        verifier = DigestVerifier(s3, rejections, keys, concurrency=args.concurrency)
        try:
            stats = await verifier.verify_range(args.bucket, args.prefix, args.start, args.end)
        except DigestUnavailableError as exc:
            raise CloudinvError(f"verify: cannot read from S3: {exc}") from None
    console.print(
        f"verify: {stats.digests} digest(s), {stats.valid_log_files} of {stats.log_files} log "
        f"file(s) valid, {stats.signatures_verified} signature(s) verified"
        + (
            f", {stats.signatures_unchecked} unchecked (no public key)"
            if stats.signatures_unchecked
            else ""
        )
        + f"; {stats.problems} integrity problem(s)"
        + (" (see `cloudinv cloudtrail rejected`)" if stats.problems else ""),
        soft_wrap=True,
        markup=False,
    )
    for finding in stats.findings[:20]:
        console.print(
            f"  {finding.source}  {finding.reason}", markup=False, highlight=False, soft_wrap=True
        )
    return stats.problems


async def run_tail(args: argparse.Namespace) -> int:
    limit_reconnect_noise()
    from cloudinv.producers.cloudtrail.tailer import tail

    tune_gc()  # a long-running process, as the worker: once, after the imports
    target = _target(args)
    verify = args.verify_digests
    if verify is None:
        verify = _settings(args).cloudtrail.verify_digests
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    stats = await tail(
        args.queue_url,
        kafka_client_kwargs=target.kafka,
        topic_prefix=target.topic_prefix,
        consumer_group=target.consumer_group,
        data_dir=target.data_dir,
        endpoint_url=target.endpoint_url,
        region=args.region,
        stop=stop,
        until_idle=args.until_idle,
        wait_time_s=args.wait_seconds,
        verify_digests=verify,
    )
    print(
        f"tail: {stats.messages} message(s), {stats.files} file(s), {stats.events} events, "
        f"{stats.rejected_files} rejected, {stats.skipped} skipped, {stats.deleted} deleted "
        "once stored",
        file=sys.stderr,
    )
    return 0


async def show_rejected(args: argparse.Namespace) -> int:
    from cloudinv.producers.cloudtrail.logfile import read_rejections

    settings = _settings(args)
    rejections = await read_rejections(settings.data_dir, args.limit)
    for rejection in rejections:
        print(f"{rejection.at}  {rejection.source}  {rejection.reason}")
    if not rejections:
        print(f"no rejected CloudTrail log files (recorded under {settings.data_dir})")
    return 0


async def run_setup(args: argparse.Namespace) -> int:
    """Print (``--dry-run``) or make the calls of the CloudTrail delivery plan, in order."""
    from aiobotocore.session import get_session
    from botocore import xform_name
    from botocore.exceptions import BotoCoreError, ClientError

    from cloudinv.producers.cloudtrail_setup import cloudtrail_setup_plan

    try:
        plan = cloudtrail_setup_plan(args.bucket, args.queue_name, args.account_id, args.region)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if args.dry_run:
        for step, action in enumerate(plan, 1):
            print(f"## step {step} of {len(plan)}")
            print(action.describe())
            print()
        return 0
    session = get_session()
    for step, action in enumerate(plan, 1):
        async with session.create_client(
            action.service, region_name=args.region, endpoint_url=args.endpoint_url
        ) as client:
            try:
                await getattr(client, xform_name(action.operation))(**action.params)
            except (ClientError, BotoCoreError) as exc:
                raise CloudinvError(
                    f"step {step} ({action.service}:{action.operation}) failed: {exc}; "
                    "steps before it were applied, re-running is safe"
                ) from None
        print(f"✓ {action.service}:{action.operation} — {action.description}")
    return 0
