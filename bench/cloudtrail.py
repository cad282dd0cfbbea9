"""CloudTrail ingestion benchmark: notification → aggregates in the store, against the older
approach (one DynamoDB put_item per event, as CloudTrail-Tracker's Lambda did).

Puts N gzipped log files (built from the real fixture records, each event with a new id) in
moto's S3 with ObjectCreated notifications to SQS, then:

1. cloudinv: the tailer (``cloudinv cloudtrail tail``, its own process, as a producer runs)
   reads the notifications, streams the files and publishes to the broker (Tansu); one Faust
   worker — this process — stores every event and its hourly/daily aggregates. The clock
   starts when the tailer starts and stops when the worker has committed the last event
   (events and aggregates are written in one transaction). The worker's CPU time gives
   events/s per worker core. The activity agent takes the topic in fetch-sized batches
   (cloudinv.streams.batch_delivery); ``--with-alerts`` also runs the event alerts on it, as
   ``cloudinv worker`` does (batch-fed too), and the clock then also waits for them.
2. The older approach on the same files: get each object, gunzip, flatten every record
   (``a_b_0_c`` keys, ~20 fields kept) and put_item it into a DynamoDB table (hash eventID,
   range userName) in moto, one call per event, one worker.

moto and the broker run in their own processes. Usage::

    .venv/bin/python bench/cloudtrail.py --files 20 --events-per-file 2500

The worker line also splits its CPU: the store's writer thread (``time.thread_time`` over its
batch writes) and the rest, which is Faust's fetch, the batch delivery and the agent.
``--profile FILE`` writes a cProfile of the measured run (the worker's event loop thread);
``--loop uvloop`` runs the worker on uvloop; ``--faust-fast-path`` is an experiment that
measured what Faust's per-message ``Consumer.wait_first`` cost when the topic still went
through it (see :func:`install_faust_fast_path`; batch-fed now, it changes little) — its
figures are not what ``cloudinv worker`` does.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gzip
import os
import resource
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import orjson

from cloudinv.core.kafka import ensure_topics
from cloudinv.core.settings import KafkaSettings
from cloudinv.runtime.embedded import EmbeddedBroker, SimulatedAws
from cloudinv.sinks.events_store import EventsStore, events_store_path
from cloudinv.streams.activity import BATCH_SIZE, BATCH_WITHIN_S, bind
from cloudinv.streams.app import StreamConfig, create_app
from cloudinv.streams.worker import tune_gc

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests/data/cloudtrail/sample-cloudtrail-event.json"
ACCOUNT = "111100000000"
REGION = "us-east-1"


@dataclass
class LogFile:
    key: str
    body: bytes
    events: int


def build_files(n_files: int, per_file: int) -> list[LogFile]:
    records = orjson.loads(FIXTURE.read_bytes())["Records"]
    start = datetime(2024, 5, 1, tzinfo=UTC)
    files = []
    for f in range(n_files):
        batch = []
        for i in range(per_file):
            record = dict(records[(f * per_file + i) % len(records)])
            record["eventID"] = str(uuid.uuid4())
            moment = start + timedelta(seconds=(f * per_file + i) % 86_400)
            record["eventTime"] = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
            batch.append(record)
        key = (
            f"AWSLogs/{ACCOUNT}/CloudTrail/{REGION}/2024/05/01/"
            f"{ACCOUNT}_CloudTrail_{REGION}_20240501T{f % 24:02d}00Z_{uuid.uuid4().hex[:16]}"
            ".json.gz"
        )
        files.append(LogFile(key, gzip.compress(orjson.dumps({"Records": batch})), per_file))
    return files


def create_trail(endpoint: str, name: str) -> tuple[Any, str, str]:
    kwargs: dict[str, Any] = {"endpoint_url": endpoint, "region_name": REGION}
    s3 = boto3.client("s3", **kwargs)
    sqs = boto3.client("sqs", **kwargs)
    queue_url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "300"})[
        "QueueUrl"
    ]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    s3.create_bucket(Bucket=name)
    s3.put_bucket_notification_configuration(
        Bucket=name,
        NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]
        },
    )
    return s3, name, queue_url


def upload(s3: Any, bucket: str, files: list[LogFile]) -> None:
    for f in files:
        s3.put_object(Bucket=bucket, Key=f.key, Body=f.body)


# --- cloudinv --------------------------------------------------------------------------------


@dataclass
class Result:
    events: int
    wall_s: float
    cpu_s: float

    @property
    def rate(self) -> float:
        return self.events / self.wall_s

    @property
    def per_core(self) -> float:
        return self.events / self.cpu_s


async def run_cloudinv(
    workdir: Path,
    endpoint: str,
    bootstrap: str,
    files: list[LogFile],
    partitions: int,
    batch_size: int,
    within_s: float,
    profile: str | None = None,
    with_alerts: bool = False,
) -> tuple[Result, float]:
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    await ensure_topics(
        KafkaSettings(bootstrap=bootstrap, topic_prefix=prefix, partitions=partitions), bootstrap
    )
    s3, bucket, queue_url = await asyncio.to_thread(create_trail, endpoint, f"trail-{prefix}")
    config = StreamConfig(
        bootstrap=bootstrap,
        data_dir=workdir,
        app_id=f"bench-{prefix}",
        topic_prefix=prefix,
        partitions=partitions,
    )
    app = create_app(config)
    stage = bind(app, config, batch_size=batch_size, within_s=within_s)
    tune_gc()  # as `cloudinv worker` does
    alert_stage = None
    if with_alerts:
        from cloudinv.core.settings import AlertSettings
        from cloudinv.streams import alerts

        alert_stage = alerts.bind(app, config, settings=AlertSettings(webhooks=[]))

    def done(n: int) -> bool:
        return stage.stats.inserted >= n and (alert_stage is None or alert_stage.stats.events >= n)

    writer_cpu = _time_writer_thread(stage.store)
    await app.start()
    tailer = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cloudinv",
        "cloudtrail",
        "tail",
        "--queue-url",
        queue_url,
        "--wait-seconds",
        "1",
        "--bootstrap",
        bootstrap,
        "--topic-prefix",
        prefix,
        "--endpoint-url",
        endpoint,
        "--region",
        REGION,
        "--data-dir",
        str(workdir),
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        # Warm up both (imports, consumer group join, connections) with one small file.
        warm = build_files(1, 10)[0]
        await asyncio.to_thread(upload, s3, bucket, [warm])
        await _until(lambda: done(warm.events), tailer)
        # Hold the tailer while the files land, so the clock covers processing only: every
        # notification is waiting in the queue when it resumes.
        tailer.send_signal(signal.SIGSTOP)
        print(f"  uploading {len(files)} files to moto S3 …", file=sys.stderr)
        await asyncio.to_thread(upload, s3, bucket, files)
        total = sum(f.events for f in files) + warm.events
        print("  tailer + worker running …", file=sys.stderr)
        profiler = cProfile.Profile() if profile else None
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        tailer.send_signal(signal.SIGCONT)
        await _until(lambda: done(total), tailer)
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        if profiler is not None and profile is not None:
            profiler.disable()
            profiler.dump_stats(profile)
        print(f"  measured: {wall:.2f} s wall, worker {cpu:.2f} CPU-s", file=sys.stderr)
    finally:
        if tailer.returncode is None:
            tailer.send_signal(signal.SIGCONT)
            tailer.terminate()
        _, err = await tailer.communicate()
        await app.stop()
    if tailer.returncode != 0:
        raise SystemExit(f"tailer failed ({tailer.returncode}): {err.decode()[-2000:]}")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    async with EventsStore(events_store_path(workdir), readonly=True) as store:
        stored = await store.count()
        aggregated = sum(b.events for b in await store.activity(granularity="day"))
    assert stored == aggregated == total, (stored, aggregated, total)
    print(
        f"  worker: {stage.stats.batches} batches, {stage.stats.updates_published} aggregate "
        f"updates published; store writer thread {writer_cpu[0]:.2f} CPU-s of the worker's "
        f"{cpu:.2f}",
        file=sys.stderr,
    )
    return Result(total - warm.events, wall, cpu), usage.ru_utime + usage.ru_stime


def _time_writer_thread(store: EventsStore) -> list[float]:
    """Sum the store writer thread's CPU time (``time.thread_time``) over its batch writes,
    to split the worker's CPU between the store and the Faust stream."""
    total = [0.0]
    write = store._write_batch

    def timed(conn: Any, batch: Any) -> Any:
        t0 = time.thread_time()
        try:
            return write(conn, batch)
        finally:
            total[0] += time.thread_time() - t0

    store._write_batch = timed  # type: ignore[method-assign]
    return total


async def _until(condition: Any, tailer: asyncio.subprocess.Process) -> None:
    while not condition():
        if tailer.returncode is not None:
            raise SystemExit(f"the tailer exited early ({tailer.returncode})")
        await asyncio.sleep(0.02)


# --- the older approach ----------------------------------------------------------------------

_KEEP = (
    "eventID", "eventTime", "eventSource", "eventName", "awsRegion", "sourceIPAddress",
    "userAgent", "requestID", "eventType", "recipientAccountId", "errorCode", "errorMessage",
    "userIdentity_type", "userIdentity_arn", "userIdentity_accountId", "userIdentity_principalId",
    "userIdentity_accessKeyId", "userIdentity_invokedBy", "userName",
)  # fmt: skip


def _flatten(value: Any, prefix: str, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(v, f"{prefix}_{k}" if prefix else k, out)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _flatten(v, f"{prefix}_{i}", out)
    elif value is not None:
        out[prefix] = str(value)


def old_approach(endpoint: str, bucket: str, files: list[LogFile]) -> Result:
    kwargs: dict[str, Any] = {"endpoint_url": endpoint, "region_name": REGION}
    s3 = boto3.client("s3", **kwargs)
    ddb = boto3.client("dynamodb", **kwargs)
    table = f"cloudtrail-{uuid.uuid4().hex[:6]}"
    ddb.create_table(
        TableName=table,
        KeySchema=[
            {"AttributeName": "eventID", "KeyType": "HASH"},
            {"AttributeName": "userName", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "eventID", "AttributeType": "S"},
            {"AttributeName": "userName", "AttributeType": "S"},
            {"AttributeName": "eventTime", "AttributeType": "S"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "userName-eventTime",
                "KeySchema": [
                    {"AttributeName": "userName", "KeyType": "HASH"},
                    {"AttributeName": "eventTime", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    events = 0
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    for f in files:
        body = s3.get_object(Bucket=bucket, Key=f.key)["Body"].read()
        for record in orjson.loads(gzip.decompress(body))["Records"]:
            flat: dict[str, str] = {}
            _flatten(record, "", flat)
            flat["userName"] = record["userIdentity"].get("userName", "no_user")
            item = {
                k: {"S": v}
                for k, v in flat.items()
                if k in _KEEP or k.startswith("requestParameters_")
            }
            ddb.put_item(TableName=table, Item=item)
            events += 1
    return Result(events, time.perf_counter() - t0, time.process_time() - cpu0)


# --- experiment: Faust's per-message cost ----------------------------------------------------


def install_faust_fast_path() -> None:
    """EXPERIMENT, not what ``cloudinv worker`` runs: Faust's fetch loop hands every message to
    the conductor through ``Consumer.wait_first(callback(message), suspend_flow.wait())``,
    which creates four tasks and an ``asyncio.wait`` per message. Here the callback is first
    stepped inline; only when it would block (a full stream buffer, flow suspended for a
    rebalance) does the original ``wait_first`` take over, with the rest of the callback, so
    a rebalance can still interrupt it. ``--faust-fast-path`` measures what that would save.
    """
    from faust.transport.consumer import Consumer
    from mode.services import WaitResults

    original = Consumer.wait_first

    async def wait_first(self: Any, *coros: Any, timeout: Any = None) -> Any:
        first = coros[0] if coros else None
        if not asyncio.iscoroutine(first) or self._stopped.is_set() or self._crashed.is_set():
            return await original(self, *coros, timeout=timeout)
        try:
            pending = first.send(None)
        except StopIteration as done:
            for other in coros[1:]:
                if asyncio.iscoroutine(other):
                    other.close()
            return WaitResults([first], [done.value], False)
        return await original(self, _resume(first, pending), *coros[1:], timeout=timeout)

    Consumer.wait_first = wait_first


async def _resume(coro: Any, pending: Any) -> Any:
    """Drive a coroutine that was started by hand, as a task would, from where it stopped."""
    while True:
        try:
            if pending is None:
                await asyncio.sleep(0)
            else:
                pending._asyncio_future_blocking = False
                await asyncio.wait([pending])
        except asyncio.CancelledError:
            if pending is not None:
                pending.cancel()
            coro.close()
            raise
        try:
            pending = coro.send(None)
        except StopIteration as done:
            return done.value


# --- main ------------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> int:
    # Only moto is ever called: dummy credentials, never a real profile.
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION=REGION
    )
    os.environ.pop("AWS_PROFILE", None)
    if args.faust_fast_path:
        install_faust_fast_path()
    workdir = Path(tempfile.mkdtemp(prefix="cloudinv-bench-"))
    aws = SimulatedAws(workdir)
    broker = EmbeddedBroker(workdir / "broker")
    await aws.start()
    await broker.start()
    try:
        files = build_files(args.files, args.events_per_file)
        total = sum(f.events for f in files)
        print(
            f"{args.files} files x {args.events_per_file} events = {total} events", file=sys.stderr
        )
        new, tailer_cpu = await run_cloudinv(
            workdir,
            aws.endpoint_url,
            broker.bootstrap,
            files,
            args.partitions,
            args.batch_size,
            args.within,
            args.profile,
            args.with_alerts,
        )
        old: Result | None = None
        if not args.skip_old:
            print("  older approach (put_item per event) …", file=sys.stderr)
            s3, bucket, _ = await asyncio.to_thread(
                create_trail, aws.endpoint_url, f"old-{uuid.uuid4().hex[:6]}"
            )
            await asyncio.to_thread(upload, s3, bucket, files)
            old_files = files[: args.old_files] if args.old_files else files
            old = await asyncio.to_thread(old_approach, aws.endpoint_url, bucket, old_files)
    finally:
        await broker.stop()
        await aws.stop()
    print()
    print(f"events: {total} in {args.files} files")
    stages = " and event alerts evaluated" if args.with_alerts else ""
    print(
        f"cloudinv  notification → aggregates in store{stages}: {new.rate:,.0f} events/s wall "
        f"({new.wall_s:.2f} s); one worker used {new.cpu_s:.2f} CPU-s → "
        f"{new.per_core:,.0f} events/s per worker core (tailer process: {tailer_cpu:.2f} CPU-s)"
    )
    ok = new.per_core >= 10_000
    if old is not None:
        print(
            f"older     put_item per event (DynamoDB, moto): {old.rate:,.0f} events/s wall "
            f"({old.wall_s:.2f} s, {old.events} events, one worker)"
        )
        print(f"ratio     {new.rate / old.rate:.1f}x wall, {new.per_core / old.rate:.1f}x per core")
        ok = ok and new.rate / old.rate >= 20
    print(f"targets   ≥10,000 events/s per worker core and ≥20x: {'met' if ok else 'NOT met'}")
    if args.faust_fast_path:
        print("EXPERIMENT: Faust's per-message wait_first replaced (--faust-fast-path)")
    return 0 if ok else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--events-per-file", type=int, default=2500)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="worker batch size")
    parser.add_argument("--within", type=float, default=BATCH_WITHIN_S, help="batch wait (s)")
    parser.add_argument("--skip-old", action="store_true", help="measure cloudinv only")
    parser.add_argument(
        "--with-alerts",
        action="store_true",
        help="also run the event alerts agent on the CloudTrail topic, as cloudinv worker does",
    )
    parser.add_argument(
        "--faust-fast-path",
        action="store_true",
        help="EXPERIMENT: step Faust's per-message callback inline instead of through "
        "Consumer.wait_first (see install_faust_fast_path); not what cloudinv worker runs",
    )
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="event loop of the worker (this process); uvloop must be installed",
    )
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="cProfile the worker's event loop thread during the measured run into FILE "
        "(slows it down; the figures of such a run are not the benchmark's)",
    )
    parser.add_argument(
        "--old-files",
        type=int,
        default=None,
        help="run the older approach on only the first N of the files (default: all)",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.loop == "uvloop":
        import uvloop  # type: ignore[import-not-found,unused-ignore]

        sys.exit(uvloop.run(main(arguments)))
    sys.exit(asyncio.run(main(arguments)))
