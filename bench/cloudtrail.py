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

moto and the broker run in their own processes. The tailer reaches S3 and SQS through a
proxy (its own process) that adds AWS-like latency to every call (``--latency-ms``, default
20) and replays S3 GetObject answers recorded in an untimed warm-up pass, so moto's own cost
per object read does not count (SQS calls are stateful and always reach moto: its CPU time
over the run is printed). A message is deleted only once the worker's consumer group
committed past its events (the end-to-end acknowledgement), so the clock stops when every
event is stored *and* the queue is empty. Usage::

    .venv/bin/python bench/cloudtrail.py --files 20 --events-per-file 2500   # big files
    .venv/bin/python bench/cloudtrail.py --files 700 --events-per-file 9     # small files
    .venv/bin/python bench/cloudtrail.py --files 700 --events-per-file 9 --local --skip-old

``--local`` measures ``cloudinv cloudtrail backfill --path`` instead: the files written to a
local directory, the real command (its own process) publishing them to the same worker;
figures to stored and to the command's exit (every file acknowledged end to end).

The worker line also splits its CPU: the store's writer thread (``time.thread_time`` over its
batch writes) and the rest, which is Faust's fetch, the batch delivery and the agent.
``--profile FILE`` writes a cProfile of the measured run (the worker's event loop thread);
``--profile-source FILE`` one of the tailer during the measured run (with ``--local``, of the
whole backfill command, start-up included): what the "CPU/file" line's tailer figure is made of;
``--loop uvloop`` runs the worker on uvloop; ``--faust-fast-path`` is an experiment that
measured what Faust's per-message ``Consumer.wait_first`` cost when the topic still went
through it (see :func:`install_faust_fast_path`; batch-fed now, it changes little) — its
figures are not what ``cloudinv worker`` does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gzip
import os
import resource
import signal
import sys
import tempfile
import time
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import orjson
from aiohttp import web
from yarl import URL

from cloudinv.core.kafka import ensure_topics
from cloudinv.core.settings import KafkaSettings
from cloudinv.runtime.embedded import EmbeddedBroker, SimulatedAws
from cloudinv.runtime.processes import ChildProcess, free_port
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


# --- the latency proxy (child process) -------------------------------------------------------

_HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection"}


TAILER_WAIT_S = 1
"""The tailer's SQS long-poll wait (``--wait-seconds``)."""


class LatencyProxy:
    """Forwards to moto after ``latency_ms``, and takes moto's own cost out of the timed run:

    - GET answers (S3 GetObject) are recorded once and replayed after that;
    - an SQS queue can be *recorded* (``POST /__bench/record-queue``): the proxy drains it
      from moto (its real messages, receipt handles and bodies) and from then on answers
      ReceiveMessage, DeleteMessageBatch, ChangeMessageVisibility(Batch) for that queue
      itself, as SQS would (a message released with visibility 0 is received again; a
      receive finding nothing long-polls: it answers when a message comes back or after its
      ``WaitTimeSeconds``, not at once, so idle receivers do not spin). moto's
      ReceiveMessage costs O(queue length) of its CPU per call — about 0.6 s with a few
      hundred messages on a loaded machine — which would otherwise be all the benchmark
      measured.
    """

    def __init__(self, upstream: str, latency_ms: float) -> None:
        self.upstream = upstream
        self.latency_s = latency_ms / 1000
        self.answers: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.calls = 0
        self.replayed = 0
        self.client: aiohttp.ClientSession | None = None
        self.queue_url = ""
        self.waiting: deque[dict[str, Any]] = deque()
        self.received: dict[str, dict[str, Any]] = {}
        """Receipt handle → message, received and not deleted."""
        self.arrived = asyncio.Event()
        """Set when a message is waiting (long polls wake up on it)."""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/__bench/stats":
            return web.json_response(
                {
                    "calls": self.calls,
                    "replayed": self.replayed,
                    "queue_left": len(self.waiting) + len(self.received),
                }
            )
        if request.path == "/__bench/hold-queue":
            # From now on the proxy answers this queue's calls itself (nothing to receive
            # until it is recorded), so no receive reaches moto and takes messages there.
            self.queue_url = (await request.json())["url"]
            return web.json_response({"held": self.queue_url})
        if request.path == "/__bench/record-queue":
            doc = await request.json()
            recorded = await self.record(doc["url"], int(doc.get("expected", 0)))
            return web.json_response({"recorded": recorded})
        body = await request.read()
        self.calls += 1
        await asyncio.sleep(self.latency_s)
        target = request.headers.get("X-Amz-Target", "")
        if self.queue_url and target.startswith("AmazonSQS."):
            doc = orjson.loads(body)
            if doc.get("QueueUrl") == self.queue_url:
                served = await self.sqs(target.removeprefix("AmazonSQS."), doc)
                if served is not None:
                    self.replayed += 1
                    return web.Response(
                        body=orjson.dumps(served), content_type="application/x-amz-json-1.0"
                    )
        if request.method == "GET" and request.raw_path in self.answers:
            self.replayed += 1
            status, headers, answer = self.answers[request.raw_path]
            return web.Response(status=status, body=answer, headers=headers)
        status, out, answer = await self.forward(
            request.method, request.raw_path, dict(request.headers), body
        )
        if request.method == "GET" and status == 200:
            self.answers[request.raw_path] = (status, out, answer)
        return web.Response(status=status, body=answer, headers=out)

    async def forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        assert self.client is not None
        headers = {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP}
        async with self.client.request(
            method,
            URL(self.upstream + path, encoded=True),
            headers=headers,
            data=body,
            allow_redirects=False,
        ) as upstream:
            answer = await upstream.read()
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
            return upstream.status, out, answer

    async def record(self, queue_url: str, expected: int = 0) -> int:
        """Drain ``queue_url`` from moto into the proxy (moto does not check signatures),
        until ``expected`` messages are held: a notification can reach the queue a moment
        after its object was written, and an early empty answer must not end the drain."""
        headers = {
            "X-Amz-Target": "AmazonSQS.ReceiveMessage",
            "Content-Type": "application/x-amz-json-1.0",
            # moto routes by the credential scope's service; it does not check signatures.
            "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20240501/us-east-1/sqs/"
            "aws4_request, SignedHeaders=host, Signature=0",
        }
        request = {"QueueUrl": queue_url, "MaxNumberOfMessages": 10, "VisibilityTimeout": 3600}
        deadline = time.monotonic() + 60
        while True:
            _, _, answer = await self.forward("POST", "/", headers, orjson.dumps(request))
            messages = orjson.loads(answer).get("Messages", [])
            if not messages:
                if len(self.waiting) >= expected or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            self.waiting.extend(messages)
        self.queue_url = queue_url
        self.arrived.set()
        return len(self.waiting)

    async def sqs(self, action: str, doc: dict[str, Any]) -> dict[str, Any] | None:
        if action == "ReceiveMessage":
            if not self.waiting and int(doc.get("WaitTimeSeconds", 0)) > 0:
                self.arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.arrived.wait(), int(doc["WaitTimeSeconds"]))
            out = []
            for _ in range(min(int(doc.get("MaxNumberOfMessages", 1)), len(self.waiting))):
                message = self.waiting.popleft()
                self.received[message["ReceiptHandle"]] = message
                out.append(message)
            return {"Messages": out} if out else {}
        if action == "DeleteMessageBatch":
            for entry in doc["Entries"]:
                if entry["ReceiptHandle"] in self.received:
                    del self.received[entry["ReceiptHandle"]]
            return {"Successful": [{"Id": e["Id"]} for e in doc["Entries"]], "Failed": []}
        if action == "ChangeMessageVisibility":
            if int(doc.get("VisibilityTimeout", 1)) == 0 and doc["ReceiptHandle"] in self.received:
                self.waiting.append(self.received.pop(doc["ReceiptHandle"]))
                self.arrived.set()
            return {}
        if action == "ChangeMessageVisibilityBatch":
            return {"Successful": [{"Id": e["Id"]} for e in doc["Entries"]], "Failed": []}
        return None  # GetQueueAttributes and the rest: moto answers


async def serve_proxy(upstream: str, port: int, latency_ms: float) -> None:
    proxy = LatencyProxy(upstream, latency_ms)
    proxy.client = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=256), auto_decompress=False
    )
    app = web.Application(client_max_size=256 * 1024**2)
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await proxy.client.close()


async def start_proxy(workdir: Path, upstream: str, latency_ms: float) -> tuple[ChildProcess, str]:
    port = free_port()
    child = ChildProcess(
        "latency proxy",
        [sys.executable, __file__, "--child-proxy", upstream, "--port", str(port),
         "--latency-ms", str(latency_ms)],
        workdir / "proxy.log",
    )  # fmt: skip
    await child.start()
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            child.raise_if_exited()
            try:
                async with session.get(f"{url}/__bench/stats") as resp:
                    if resp.status == 200:
                        return child, url
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise SystemExit(f"the proxy did not start: {child.log_tail()}")


async def proxy_call(proxy_url: str, what: str, payload: Any = None) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            "POST" if payload is not None else "GET", f"{proxy_url}/__bench/{what}", json=payload
        ) as resp,
    ):
        answer: dict[str, Any] = await resp.json()
        return answer


def warm_reads(proxy_url: str, bucket: str, files: list[LogFile]) -> None:
    """Read every object once through the proxy (untimed) so it can replay them."""
    s3 = boto3.client("s3", endpoint_url=proxy_url, region_name=REGION)
    for f in files:
        s3.get_object(Bucket=bucket, Key=f.key)["Body"].read()


def process_cpu_s(pid: int | None) -> float:
    """CPU seconds a process used so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


@dataclass
class Run:
    """The measured run: to stored, and to acknowledged end to end."""

    result: Result
    acked_s: float
    """Until every SQS message was deleted (tail) or the backfill command exited (local)."""
    files: int
    source_cpu_s: float
    """CPU of the tailer (from its resume to the last delete) or of the backfill command
    (its whole life, start-up included)."""
    source_startup_cpu_s: float
    """The backfill command's CPU until its first event was stored (0 for the tailer)."""
    moto_cpu_s: float


async def run_cloudinv(
    workdir: Path,
    endpoint: str,
    proxy_url: str,
    moto_pid: int | None,
    bootstrap: str,
    files: list[LogFile],
    args: argparse.Namespace,
) -> Run:
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    await ensure_topics(
        KafkaSettings(bootstrap=bootstrap, topic_prefix=prefix, partitions=args.partitions),
        bootstrap,
    )
    s3, bucket, queue_url = await asyncio.to_thread(create_trail, endpoint, f"trail-{prefix}")
    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name=REGION)
    config = StreamConfig(
        bootstrap=bootstrap,
        data_dir=workdir,
        app_id=f"bench-{prefix}",
        topic_prefix=prefix,
        partitions=args.partitions,
    )
    app = create_app(config)
    stage = bind(app, config, batch_size=args.batch_size, within_s=args.within)
    tune_gc()  # as `cloudinv worker` does
    alert_stage = None
    if args.with_alerts:
        from cloudinv.core.settings import AlertSettings
        from cloudinv.streams import alerts

        alert_stage = alerts.bind(app, config, settings=AlertSettings(webhooks=[]))

    def done(n: int) -> bool:
        return stage.stats.inserted >= n and (alert_stage is None or alert_stage.stats.events >= n)

    def queue_empty() -> bool:
        attrs = sqs.get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return (
            int(attrs["ApproximateNumberOfMessages"])
            + int(attrs["ApproximateNumberOfMessagesNotVisible"])
            == 0
        )

    connection = [
        "--bootstrap", bootstrap, "--topic-prefix", prefix, "--consumer-group", config.app_id,
        "--data-dir", str(workdir),
    ]  # fmt: skip
    writer_cpu = _time_writer_thread(stage.store)
    await app.start()
    tailer = await asyncio.create_subprocess_exec(
        sys.executable, *_tailer_launcher(None if args.local else args.profile_source),
        "cloudtrail", "tail", "--queue-url", queue_url,
        "--wait-seconds", str(TAILER_WAIT_S), "--endpoint-url", proxy_url, "--region", REGION,
        *connection,
        stderr=(workdir / "tailer.log").open("w"),
    )  # fmt: skip
    profiler = cProfile.Profile() if args.profile else None
    try:
        # Warm up both (imports, consumer group join, connections) with one small file.
        warm = build_files(1, 10)[0]
        await asyncio.to_thread(upload, s3, bucket, [warm])
        await _until(lambda: done(warm.events), tailer)
        total = sum(f.events for f in files) + warm.events
        moto0 = process_cpu_s(moto_pid)
        if args.local:
            tailer.terminate()
            await tailer.communicate()
            local = workdir / "local"
            for f in files:
                path = local / f.key
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(f.body)
            total -= warm.events
            stage.stats.inserted = 0
            print(f"  cloudtrail backfill --path of {len(files)} files …", file=sys.stderr)
            children0 = _children_cpu_s()
            cpu0 = time.process_time()
            t0 = time.perf_counter()
            if profiler is not None:
                profiler.enable()
            profiled = ["-m", "cProfile", "-o", args.profile_source] if args.profile_source else []
            source = await asyncio.create_subprocess_exec(
                sys.executable, *profiled, "-m", "cloudinv", "cloudtrail", "backfill",
                "--path", str(local),
                *connection, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            await _until(lambda: stage.stats.inserted > 0, source, every_s=0.005)
            first = time.perf_counter() - t0
            startup_cpu = process_cpu_s(source.pid)
            await _until(lambda: done(total), source)
            wall = time.perf_counter() - t0
            print(
                f"  command start-up (imports, connections) until the first event stored: "
                f"{first:.2f} s; then {total / max(wall - first, 1e-9):,.0f} events/s",
                file=sys.stderr,
            )
            cpu = time.process_time() - cpu0
            _, err = await source.communicate()
            acked = time.perf_counter() - t0
            source_cpu = _children_cpu_s() - children0
            if source.returncode != 0:
                raise SystemExit(f"backfill failed ({source.returncode}): {err.decode()[-2000:]}")
        else:
            # Hold the tailer while the files land, so the clock covers processing only:
            # every notification is waiting in the queue when it resumes.
            await _until(queue_empty, tailer)
            # Receives already on their way to moto (long polls of up to --wait-seconds)
            # would take the notifications of the files about to land: hold the queue in the
            # proxy, let those polls end empty, then stop the tailer.
            await proxy_call(proxy_url, "hold-queue", {"url": queue_url})
            await asyncio.sleep(TAILER_WAIT_S + 1.0)
            tailer.send_signal(signal.SIGSTOP)
            print(f"  uploading {len(files)} files to moto S3 …", file=sys.stderr)
            await asyncio.to_thread(upload, s3, bucket, files)
            await asyncio.to_thread(warm_reads, proxy_url, bucket, files)
            recorded = await proxy_call(
                proxy_url, "record-queue", {"url": queue_url, "expected": len(files)}
            )
            print(f"  {recorded['recorded']} SQS messages recorded by the proxy", file=sys.stderr)
            moto0 = process_cpu_s(moto_pid)
            print("  tailer + worker running …", file=sys.stderr)
            cpu0 = time.process_time()
            t0 = time.perf_counter()
            if profiler is not None:
                profiler.enable()
            startup_cpu = 0.0
            tailer_cpu0 = process_cpu_s(tailer.pid)
            if args.profile_source:
                tailer.send_signal(signal.SIGUSR1)  # delivered on SIGCONT: profile from here
            tailer.send_signal(signal.SIGCONT)
            await _until(lambda: done(total), tailer)
            wall = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
            while True:
                if not (await proxy_call(proxy_url, "stats"))["queue_left"]:
                    break
                await asyncio.sleep(0.02)
            acked = time.perf_counter() - t0
            source_cpu = process_cpu_s(tailer.pid) - tailer_cpu0
            if args.profile_source:
                tailer.send_signal(signal.SIGUSR2)  # stop profiling; written at exit
            source = tailer
        if profiler is not None and args.profile:
            profiler.disable()
            profiler.dump_stats(args.profile)
        moto_cpu = process_cpu_s(moto_pid) - moto0
        print(
            f"  measured: {wall:.2f} s to stored, {acked:.2f} s to acknowledged, worker "
            f"{cpu:.2f} CPU-s",
            file=sys.stderr,
        )
    finally:
        if tailer.returncode is None:
            tailer.send_signal(signal.SIGCONT)
            tailer.terminate()
            await tailer.communicate()
        await app.stop()
    async with EventsStore(events_store_path(workdir), readonly=True) as store:
        stored = await store.count()
        aggregated = sum(b.events for b in await store.activity(granularity="day"))
    expected = total + (warm.events if args.local else 0)
    assert stored == aggregated == expected, (stored, aggregated, expected)
    print(
        f"  worker: {stage.stats.batches} batches, {stage.stats.updates_published} aggregate "
        f"updates published; store writer thread {writer_cpu[0]:.2f} CPU-s of the worker's "
        f"{cpu:.2f}",
        file=sys.stderr,
    )
    del source
    events = total if args.local else total - warm.events
    return Run(
        Result(events, wall, cpu),
        acked,
        len(files),
        source_cpu,
        startup_cpu,
        moto_cpu,
    )


_PROFILED_TAILER = """
import cProfile, signal, sys
from cloudinv.cli import main
profile = cProfile.Profile()
signal.signal(signal.SIGUSR1, lambda *_: profile.enable())
signal.signal(signal.SIGUSR2, lambda *_: profile.disable())
try:
    status = main(sys.argv[2:])
finally:
    profile.disable()
    profile.dump_stats(sys.argv[1])
sys.exit(status)
"""


def _tailer_launcher(profile: str | None) -> list[str]:
    """``python -m cloudinv``, or with ``--profile-tailer`` the same command under a cProfile
    that the bench turns on (SIGUSR1) when it resumes the tailer and off (SIGUSR2) once every
    message is deleted: the measured run only."""
    if not profile:
        return ["-m", "cloudinv"]
    return ["-c", _PROFILED_TAILER, profile]


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


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


async def _until(
    condition: Any, process: asyncio.subprocess.Process, every_s: float = 0.02
) -> None:
    while not condition():
        if process.returncode is not None and process.returncode != 0:
            raise SystemExit(f"the tailer or backfill exited early ({process.returncode})")
        await asyncio.sleep(every_s)


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
    proxy, proxy_url = await start_proxy(workdir, aws.endpoint_url, args.latency_ms)
    try:
        files = build_files(args.files, args.events_per_file)
        total = sum(f.events for f in files)
        print(
            f"{args.files} files x {args.events_per_file} events = {total} events", file=sys.stderr
        )
        run = await run_cloudinv(
            workdir,
            aws.endpoint_url,
            proxy_url,
            aws.child.pid if aws.child else None,
            broker.bootstrap,
            files,
            args,
        )
        new = run.result
        old: Result | None = None
        if not args.skip_old:
            print("  older approach (put_item per event, through the proxy) …", file=sys.stderr)
            s3, bucket, _ = await asyncio.to_thread(
                create_trail, aws.endpoint_url, f"old-{uuid.uuid4().hex[:6]}"
            )
            await asyncio.to_thread(upload, s3, bucket, files)
            old_files = files[: args.old_files] if args.old_files else files
            await asyncio.to_thread(warm_reads, proxy_url, bucket, old_files)
            old = await asyncio.to_thread(old_approach, proxy_url, bucket, old_files)
    finally:
        await proxy.stop()
        await broker.stop()
        await aws.stop()
    print()
    print(f"events: {total} in {args.files} files ({args.latency_ms:g} ms per AWS call)")
    stages = " and event alerts evaluated" if args.with_alerts else ""
    what = (
        "backfill --path → aggregates in store"
        if args.local
        else ("notification → aggregates in store")
    )
    print(
        f"cloudinv  {what}{stages}: {new.rate:,.0f} events/s wall, "
        f"{run.files / new.wall_s:,.0f} files/s ({new.wall_s:.2f} s); one worker used "
        f"{new.cpu_s:.2f} CPU-s → {new.per_core:,.0f} events/s per worker core"
    )
    source = "backfill command exited" if args.local else "every SQS message deleted"
    print(
        f"          acknowledged end to end ({source}): {run.acked_s:.2f} s, "
        f"{new.events / run.acked_s:,.0f} events/s, {run.files / run.acked_s:,.0f} files/s "
        f"(includes the worker's commit interval); moto {run.moto_cpu_s:.2f} CPU-s"
    )
    per_file = 1000 / run.files
    if args.local:
        source_cpu = (
            f"backfill command {run.source_cpu_s * per_file:.2f} ms (whole command; "
            f"{run.source_startup_cpu_s:.2f} CPU-s of start-up until its first event was "
            f"stored, {(run.source_cpu_s - run.source_startup_cpu_s) * per_file:.2f} ms per "
            "file after)"
        )
    else:
        source_cpu = f"tailer {run.source_cpu_s * per_file:.2f} ms (resume to last delete)"
    print(
        f"CPU/file  {source_cpu}; worker {new.cpu_s * per_file:.2f} ms "
        "(process CPU, the guide on a loaded machine)"
    )
    small = args.events_per_file < 100
    if args.local:
        ok = new.rate >= 5_000
        target = "≥5,000 events/s to stored"
    elif small:
        ok = new.rate >= 5_000 and run.files / new.wall_s >= 500
        target = "≥5,000 events/s and ≥500 files/s wall"
    else:
        ok = new.per_core >= 10_000
        target = "≥10,000 events/s per worker core"
    if old is not None:
        print(
            f"older     put_item per event (DynamoDB, moto, through the proxy): {old.rate:,.0f} "
            f"events/s wall ({old.wall_s:.2f} s, {old.events} events, one worker)"
        )
        print(f"ratio     {new.rate / old.rate:.1f}x wall, {new.per_core / old.rate:.1f}x per core")
        ok = ok and new.rate / old.rate >= 20
        target += " and ≥20x"
    print(f"targets   {target}: {'met' if ok else 'NOT met'}")
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
        "--latency-ms",
        type=float,
        default=20.0,
        help="delay the proxy adds to every AWS call (default 20, about S3/SQS in-region)",
    )
    parser.add_argument(
        "--local",
        action="store_true",
        help="measure `cloudinv cloudtrail backfill --path` of the files on local disk",
    )
    parser.add_argument("--child-proxy", metavar="UPSTREAM", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
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
        "--profile-source",
        metavar="FILE",
        help="cProfile the tailer during the measured run (with --local: the whole backfill "
        "command) into FILE "
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
    if arguments.child_proxy:
        asyncio.run(serve_proxy(arguments.child_proxy, arguments.port, arguments.latency_ms))
        sys.exit(0)
    if arguments.loop == "uvloop":
        import uvloop  # type: ignore[import-not-found,unused-ignore]

        sys.exit(uvloop.run(main(arguments)))
    sys.exit(asyncio.run(main(arguments)))
