"""Scan engine benchmark: the engine against a plain sequential boto3 loop, through a proxy
that makes moto answer like AWS under load; then peak memory as accounts grow.

Set-up: moto's server (``cloudinv.runtime.embedded.SimulatedAws``) seeded with
``cloudinv.simulator.estate.seed_estate`` (3 accounts x 16 regions by default), and in front of it
an aiohttp proxy, its own process, that

- adds a fixed delay (100 ms) to every AWS call;
- throttles like EC2: a token bucket per (account, region), capacity 100, refilled at 20
  per second. The region is read from the SigV4 credential scope of the Authorization header
  (``Credential=AKID/date/region/service/aws4_request``); the account from the access key
  id, mapped from the AssumeRole responses the proxy forwards (moto's base key is account
  123456789012). An empty bucket answers with the service's real throttling error:
  ``RequestLimitExceeded`` (HTTP 503, EC2's XML), ``Throttling`` (HTTP 400, the query
  protocol's ``ErrorResponse``: RDS, ELB, STS), ``ThrottlingException`` (JSON and
  rest-JSON), ``SlowDown`` (S3), so botocore's standard retry mode backs off as on AWS.

moto first answers every call of the estate once (an untimed warm-up pass with no delay);
the proxy records those answers and replays them in the timed runs. One moto process spends
10-20 ms of CPU per call and would otherwise cap any concurrent client at a rate far below
what AWS serves, so the timed runs measure the clients, not the emulator. AssumeRole always
reaches moto (its keys are the accounts' identities).

Measured, each in its own child process, all through the proxy, on the same estate, the same
accounts, regions and types (:data:`BENCH_TYPES`, the EC2, RDS and ELB regional ones),
printing wall time, calls, throttled responses, failed scopes and CPU time (the client's,
moto's and the proxy's) of each:

1. **cloudinv**: ``cloudinv.producers.engine.scan_types`` with the default concurrency settings;
2. **sequential**: boto3, one account, region, type and call after another, making the same
   calls (each type's list call, every page, then its detail calls per item) with the same
   retry settings (standard mode, 8 attempts);
3. **throttle stress**: the engine again with a starved bucket (capacity 10, refill 2/s):
   throttling must be absorbed by the retries, no scope may fail;
4. **memory**: the engine over 10 and then 200 simulated accounts (1 region each, new to
   moto, so not replayed), peak RSS (``ru_maxrss``) of each child; flat means 200 accounts
   within 1.5x of 10. The peak during the scan alone (``VmHWM`` reset when it starts) is
   printed too: imports and service models dominate ``ru_maxrss``.

The engine's CPU time is printed against the calls it made: it runs on one event loop, so
sequential time / engine CPU time is the best ratio it could reach on an idle core. Each run
also prints the machine's load average before and after it: the engine's wall time is
bound by the CPU share it gets, the sequential loop's by the 100 ms per call, so on a busy
machine the ratio drops while the CPU seconds per call do not.

The run stops by itself: every child has a timeout taken from ``--deadline``, and moto and
the proxy are stopped at the end (they also die with this process). Usage::

    .venv/bin/python bench/scan.py
    .venv/bin/python bench/scan.py --accounts 2 --regions 4 --memory-accounts 5,50
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import aiohttp
from aiohttp import web
from yarl import URL

from cloudinv.runtime.embedded import SimulatedAws
from cloudinv.runtime.processes import ChildProcess, free_port
from cloudinv.simulator.estate import EstateCounts, EstateSpec, seed_estate

REGIONS = (
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "eu-central-1",
    "eu-north-1",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-northeast-3",
    "ap-northeast-2",
    "ap-south-1",
    "ca-central-1",
    "sa-east-1",
)
BENCH_TYPES = (
    "AWS::EC2::Instance",
    "AWS::EC2::SecurityGroup",
    "AWS::EC2::Volume",
    "AWS::EC2::Snapshot",
    "AWS::EC2::VPC",
    "AWS::EC2::Subnet",
    "AWS::EC2::NetworkInterface",
    "AWS::EC2::RouteTable",
    "AWS::RDS::DBInstance",
    "AWS::RDS::DBSnapshot",
    "AWS::ElasticLoadBalancingV2::LoadBalancer",
    "AWS::ElasticLoadBalancing::LoadBalancer",
)
"""Regional types with list calls and per-item detail calls (the load balancers)."""

ROLE_NAME = "cloudinv-reader"
BASE_KEY_ACCOUNT = "123456789012"
"""moto's account for its default credentials (``testing``)."""
TARGET_RATIO = 10.0
TARGET_MEMORY_RATIO = 1.5
MAX_ATTEMPTS = 8


@dataclass(frozen=True)
class Throttle:
    """How the proxy behaves during one run."""

    latency_ms: float = 100.0
    capacity: float = 100.0
    refill_per_s: float = 20.0
    replay: bool = False
    """Answer a request moto already answered (same account, region, path and body) from
    the proxy's cache instead of asking moto again."""


# -- the proxy (child process) --------------------------------------------------------------------

_SCOPE_RE = re.compile(r"Credential=([^/]+)/\d{8}/([^/]+)/([^/]+)/aws4_request")
_ACCESS_KEY_RE = re.compile(rb"<AccessKeyId>([^<]+)</AccessKeyId>")
_HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection"}


class ThrottlingProxy:
    """Forwards to moto after ``latency``; answers throttling errors when an (account,
    region) bucket is empty. ``/__bench/stats``, ``/__bench/reset`` control it."""

    def __init__(self, upstream: str, throttle: Throttle) -> None:
        self.upstream = upstream
        self.throttle = throttle
        self.buckets: dict[tuple[str, str], tuple[float, float]] = {}
        self.accounts: dict[str, str] = {"testing": BASE_KEY_ACCOUNT}
        self.stats: Counter[str] = Counter()
        self.answers: dict[tuple[str, str, str, str, bytes], tuple[int, dict[str, str], bytes]] = {}
        self.client: aiohttp.ClientSession | None = None

    def take(self, key: tuple[str, str]) -> bool:
        now = time.monotonic()
        tokens, last = self.buckets.get(key, (self.throttle.capacity, now))
        tokens = min(self.throttle.capacity, tokens + (now - last) * self.throttle.refill_per_s)
        if tokens >= 1:
            self.buckets[key] = (tokens - 1, now)
            return True
        self.buckets[key] = (tokens, now)
        return False

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/__bench/"):
            return await self.control(request)
        body = await request.read()
        match = _SCOPE_RE.search(request.headers.get("Authorization", ""))
        self.stats["requests"] += 1
        key_id, region, service = match.groups() if match else ("", "", "")
        account = self.accounts.get(key_id, f"key:{key_id}")
        allowed = not match or self.take((account, region))
        await asyncio.sleep(self.throttle.latency_ms / 1000)
        if not allowed:
            throttled = self.throttling_error(request, service)
            if throttled is not None:
                self.stats["throttled"] += 1
                self.stats[f"throttled {service}"] += 1
                return throttled
        # AssumeRole bodies carry random session names and must reach moto (the keys it
        # issues are the accounts' identities); every other bench call is a Describe.
        replayable = self.throttle.replay and service not in ("sts", "")
        cache_key = (account, region, request.method, request.raw_path, body)
        if replayable and cache_key in self.answers:
            self.stats["replayed"] += 1
            status, out, answer = self.answers[cache_key]
            return web.Response(status=status, body=answer, headers=out)
        status, out, answer = await self.forward(request, body)
        if replayable and status == 200:
            self.answers[cache_key] = (status, out, answer)
        if service == "sts" and b"Action=AssumeRole" in body and status == 200:
            self.remember_role(body, answer)
        return web.Response(status=status, body=answer, headers=out)

    async def forward(self, request: web.Request, body: bytes) -> tuple[int, dict[str, str], bytes]:
        assert self.client is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        async with self.client.request(
            request.method,
            URL(self.upstream + request.raw_path, encoded=True),
            headers=headers,
            data=body,
            allow_redirects=False,
        ) as upstream:
            answer = await upstream.read()
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
            return upstream.status, out, answer

    def remember_role(self, request_body: bytes, answer: bytes) -> None:
        """AssumeRole: the new access key id belongs to the role's account."""
        role = parse_qs(request_body.decode()).get("RoleArn", [""])[0]
        key = _ACCESS_KEY_RE.search(answer)
        if key and role.count(":") >= 5:
            self.accounts[key[1].decode()] = role.split(":")[4]

    def throttling_error(self, request: web.Request, service: str) -> web.Response | None:
        """The error AWS sends for this request's protocol; None where none is modelled."""
        request_id = str(uuid.uuid4())
        if service == "ec2":
            body = (
                '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
                "<Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message>"
                f"</Error></Errors><RequestID>{request_id}</RequestID></Response>"
            )
            return web.Response(status=503, text=body, content_type="text/xml")
        if service == "s3":
            body = (
                "<Error><Code>SlowDown</Code><Message>Please reduce your request rate."
                f"</Message><RequestId>{request_id}</RequestId></Error>"
            )
            return web.Response(status=503, text=body, content_type="application/xml")
        if "smithy-protocol" in request.headers:
            return None  # CBOR (CloudWatch): not modelled, and not among the bench types
        if "X-Amz-Target" in request.headers:
            return web.json_response(
                {"__type": "ThrottlingException", "message": "Rate exceeded"},
                status=400,
                content_type=request.headers.get("Content-Type", "application/x-amz-json-1.1"),
            )
        if request.content_type == "application/x-www-form-urlencoded":
            body = (
                "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code>"
                f"<Message>Rate exceeded</Message></Error><RequestId>{request_id}</RequestId>"
                "</ErrorResponse>"
            )
            return web.Response(status=400, text=body, content_type="text/xml")
        return web.json_response(
            {"message": "Rate exceeded"},
            status=429,
            headers={"x-amzn-ErrorType": "ThrottlingException", "x-amzn-RequestId": request_id},
        )

    async def control(self, request: web.Request) -> web.Response:
        if request.path == "/__bench/reset":
            settings = await request.json()
            self.throttle = Throttle(**settings)
            self.buckets.clear()
            self.stats.clear()
        return web.json_response(dict(self.stats))


async def serve_proxy(upstream: str, port: int) -> None:
    proxy = ThrottlingProxy(upstream, Throttle())
    connector = aiohttp.TCPConnector(limit=256)
    proxy.client = aiohttp.ClientSession(connector=connector, auto_decompress=False)
    app = web.Application(client_max_size=64 * 1024**2)
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await proxy.client.close()


# -- the measured runs (child processes) ----------------------------------------------------------


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a running process has used; 0 if unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb() -> float:
    """The process's peak resident memory since it started (``ru_maxrss``, kB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> None:
    """Start a new peak (``VmHWM``) from the current resident memory (Linux >= 4.0)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_since_reset_mb() -> float | None:
    match = re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())
    return int(match[1]) / 1024 if match else None


async def engine_run(endpoint: str, accounts: list[str], regions: list[str]) -> dict[str, Any]:
    from cloudinv.catalog.registry import default_registry
    from cloudinv.core.settings import AccountRole, AwsSettings
    from cloudinv.producers.credentials import AwsAccess
    from cloudinv.producers.engine import ScanOptions, resolve_types, scan_types
    from cloudinv.producers.tally import ScanTally

    specs = resolve_types(default_registry(), BENCH_TYPES)
    access = AwsAccess(endpoint_url=endpoint, max_attempts=MAX_ATTEMPTS)
    targets = [
        access.role_account(AccountRole(role_arn=f"arn:aws:iam::{a}:role/{ROLE_NAME}"))
        for a in accounts
    ]
    concurrency = AwsSettings().max_concurrency
    rss_before = peak_rss_mb()
    reset_peak_rss()  # the scan's own peak, apart from importing and loading models
    tally = ScanTally()
    started, cpu = time.monotonic(), time.process_time()
    async for item in scan_types(
        access, targets, regions, specs, options=ScanOptions(max_concurrency=concurrency)
    ):
        tally.add(item)
    return {
        "seconds": time.monotonic() - started,
        "cpu_s": time.process_time() - cpu,
        "resources": tally.resources,
        "scopes": tally.scopes,
        "failed": tally.statuses["failed"],
        "partial": tally.statuses["partial"],
        "errors": [
            f"{m.scope}: {m.errors[0].code if m.errors else '?'}" for m in tally.unfinished[:5]
        ],
        "max_concurrency": concurrency,
        "rss_before_scan_mb": rss_before,
        "scan_peak_rss_mb": peak_rss_since_reset_mb(),
        "peak_rss_mb": peak_rss_mb(),
    }


def sequential_run(endpoint: str, accounts: list[str], regions: list[str]) -> dict[str, Any]:
    """The same calls, one after another, with boto3 (what the replaced tools did)."""
    import boto3
    from botocore import xform_name
    from botocore.config import Config

    from cloudinv.catalog.registry import default_registry
    from cloudinv.catalog.spec import search
    from cloudinv.producers.engine import resolve_types

    specs = resolve_types(default_registry(), BENCH_TYPES)
    config = Config(retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS})
    resources = failures = 0
    started, cpu = time.monotonic(), time.process_time()
    sts = boto3.client("sts", endpoint_url=endpoint, region_name="us-east-1", config=config)
    for account in accounts:
        credentials = sts.assume_role(
            RoleArn=f"arn:aws:iam::{account}:role/{ROLE_NAME}", RoleSessionName="sequential"
        )["Credentials"]
        session = boto3.Session(
            aws_access_key_id=credentials["AccessKeyId"],
            aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials["SessionToken"],
        )
        for region in regions:
            clients: dict[str, Any] = {}
            for spec in specs:
                client = clients.get(spec.service)
                if client is None:
                    client = clients[spec.service] = session.client(
                        spec.service, region_name=region, endpoint_url=endpoint, config=config
                    )
                try:
                    method = xform_name(spec.list_operation)
                    if client.can_paginate(method):
                        pages = list(client.get_paginator(method).paginate(**spec.list_params))
                    else:
                        pages = [getattr(client, method)(**spec.list_params)]
                    for page in pages:
                        for item in search(spec.result_path, page) or []:
                            for detail in sorted(spec.details, key=lambda d: d.stage):
                                params = {k: search(v, item) for k, v in detail.params.items()}
                                getattr(client, xform_name(detail.operation))(**params)
                            resources += 1
                except Exception:
                    failures += 1
    return {
        "seconds": time.monotonic() - started,
        "cpu_s": time.process_time() - cpu,
        "resources": resources,
        "failed": failures,
        "peak_rss_mb": peak_rss_mb(),
    }


def registered_types() -> int:
    """How many types the registry holds: what every engine child loads at start."""
    from cloudinv.catalog.registry import default_registry

    return len(default_registry())


def child_main(args: argparse.Namespace) -> None:
    if args.child == "proxy":
        asyncio.run(serve_proxy(args.upstream, args.port))
        return
    accounts = args.account_ids.split(",")
    regions = args.region_names.split(",")
    if args.child == "engine":
        result = asyncio.run(engine_run(args.endpoint, accounts, regions))
    else:
        result = sequential_run(args.endpoint, accounts, regions)
    Path(args.result).write_text(json.dumps(result), encoding="utf-8")


# -- the conductor --------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.deadline: float = time.monotonic() + float(args.deadline)
        self.proxy_url = ""
        self.moto_pid = self.proxy_pid = 0
        self.env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        self.env.pop("AWS_PROFILE", None)
        self.env.pop("AWS_ENDPOINT_URL", None)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    async def child(self, name: str, *argv: str) -> dict[str, Any]:
        """Run a measured child; its JSON result, or {"error": ...} (never hangs)."""
        if self.remaining() <= 0:
            return {"error": "skipped: --deadline reached"}
        result = self.workdir / f"{name}.json"
        process = ChildProcess(
            name,
            [sys.executable, __file__, *argv, "--result", str(result)],
            self.workdir / f"{name}.log",
            env=self.env,
        )
        await process.start()
        assert process.process is not None
        timeout = self.remaining()
        try:
            await asyncio.wait_for(process.process.wait(), timeout)
        except TimeoutError:
            await process.stop()
            return {"error": f"stopped after {timeout:.0f}s (--deadline)"}
        if process.process.returncode != 0:
            return {"error": f"exit {process.process.returncode}: {process.log_tail(3)}"}
        data: dict[str, Any] = json.loads(result.read_text(encoding="utf-8"))
        return data

    async def proxy_control(self, path: str, throttle: Throttle | None = None) -> dict[str, int]:
        async with aiohttp.ClientSession() as session:
            payload = None if throttle is None else asdict(throttle)
            async with session.post(f"{self.proxy_url}/__bench/{path}", json=payload) as resp:
                stats: dict[str, int] = await resp.json()
                return stats

    async def measured(
        self, mode: str, name: str, accounts: list[str], regions: list[str], throttle: Throttle
    ) -> dict[str, Any]:
        await self.proxy_control("reset", throttle)
        load_before = os.getloadavg()[0]
        servers_cpu = (process_cpu_s(self.moto_pid), process_cpu_s(self.proxy_pid))
        result = await self.child(
            name,
            "--child",
            mode,
            "--endpoint",
            self.proxy_url,
            "--account-ids",
            ",".join(accounts),
            "--region-names",
            ",".join(regions),
        )
        result["proxy"] = await self.proxy_control("stats")
        result["moto_cpu_s"] = process_cpu_s(self.moto_pid) - servers_cpu[0]
        result["proxy_cpu_s"] = process_cpu_s(self.proxy_pid) - servers_cpu[1]
        # The machine's 1-minute load before and after: the engine is CPU-bound and the
        # sequential loop latency-bound, so the ratio moves with the load of other processes.
        result["load"] = (load_before, os.getloadavg()[0])
        return result

    async def run(self) -> int:
        aws = SimulatedAws(self.workdir)
        await aws.start()
        port = free_port()
        proxy = ChildProcess(
            "throttling proxy",
            [
                sys.executable,
                __file__,
                "--child",
                "proxy",
                "--upstream",
                aws.endpoint_url,
                "--port",
                str(port),
            ],
            self.workdir / "proxy.log",
            env=self.env,
        )
        await proxy.start()
        self.proxy_url = f"http://127.0.0.1:{port}"
        self.moto_pid = aws.child.pid if aws.child and aws.child.pid else 0
        self.proxy_pid = proxy.pid or 0
        try:
            await self.wait_for_proxy(proxy)
            return await self.measure(aws.endpoint_url)
        finally:
            await proxy.stop()
            await aws.stop()

    async def wait_for_proxy(self, proxy: ChildProcess) -> None:
        for _ in range(100):
            proxy.raise_if_exited()
            try:
                await self.proxy_control("stats")
                return
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
        raise SystemExit(f"the proxy did not start: {proxy.log_tail()}")

    async def measure(self, moto_url: str) -> int:
        args = self.args
        accounts = [f"{100000000000 + i:012d}" for i in range(1, args.accounts + 1)]
        regions = list(REGIONS[: args.regions])
        normal = Throttle(latency_ms=args.latency_ms)
        say(
            f"registered types: {registered_types()} (curated and derived; the engine's "
            "children load them all, the scan covers the estate's types below)"
        )
        say(
            f"estate: {len(accounts)} accounts x {len(regions)} regions, "
            f"{len(BENCH_TYPES)} types; proxy: +{normal.latency_ms:.0f} ms per call, token "
            f"bucket {normal.capacity:.0f}, refill {normal.refill_per_s:.0f}/s "
            "per (account, region)"
        )
        started = time.monotonic()
        counts = EstateCounts(
            subnets=2,
            security_groups=2,
            instances=2,
            volumes=2,
            snapshots=1,
            db_instances=1,
            db_snapshots=1,
            buckets=1,
            users=0,
            roles=0,
        )
        await seed_estate(
            moto_url,
            EstateSpec(accounts=accounts, regions=regions, role_name=ROLE_NAME, counts=counts),
        )
        say(f"seeded in {time.monotonic() - started:.1f}s (directly in moto, not timed)")

        # moto answers every call once (no delay, no throttling); the timed runs are then
        # answered from the proxy's record of those answers. One moto process spends
        # ~10-20 ms of CPU per call and would cap any concurrent client far below what AWS
        # serves; replaying keeps the timed runs about the clients, not the emulator.
        warm_up = Throttle(latency_ms=0, capacity=1e9, replay=True)
        recorded = await self.measured("engine", "warm-up", accounts, regions, warm_up)
        say(describe("warm-up pass (moto answers, recorded; not compared)", recorded))
        timed = replace(normal, replay=True)
        engine = await self.measured("engine", "engine", accounts, regions, timed)
        say(describe("cloudinv engine", engine))
        sequential = await self.measured("sequential", "sequential", accounts, regions, timed)
        say(describe("sequential boto3", sequential))
        ok = True
        if "error" not in engine and "error" not in sequential:
            ratio = sequential["seconds"] / engine["seconds"]
            same = engine["resources"] == sequential["resources"]
            ok &= ratio >= TARGET_RATIO and engine["failed"] == 0 and engine["partial"] == 0
            say(
                f"=> cloudinv {engine['seconds']:.1f}s vs sequential {sequential['seconds']:.1f}s:"
                f" {ratio:.1f}x faster (target >= {TARGET_RATIO:.0f}x); same resources: {same}; "
                f"throttling errors surfaced as failed scopes: {engine['failed']}"
            )
            # The engine is one event loop: its CPU time bounds its wall time from below.
            calls = engine["proxy"]["requests"]
            say(
                f"   cloudinv used {engine['cpu_s']:.1f}s of CPU for {calls} calls "
                f"({engine['cpu_s'] / calls:.4f} CPU s per call, "
                f"boto3 {sequential['cpu_s'] / sequential['proxy']['requests']:.4f}): "
                f"on an idle core at best {sequential['seconds'] / engine['cpu_s']:.1f}x"
            )
        else:
            ok = False

        starved = replace(timed, capacity=10, refill_per_s=2)
        stress = await self.measured("engine", "engine-stress", accounts, regions, starved)
        say(describe("throttle stress (bucket 10, refill 2/s)", stress))
        if "error" not in stress:
            ok &= stress["failed"] == 0 and stress["proxy"].get("throttled", 0) > 0
            ok &= stress["resources"] == engine.get("resources")

        peaks: dict[int, tuple[float, float]] = {}
        memory_regions = list(REGIONS[: args.memory_regions])
        for count in args.memory_accounts:
            ids = [f"{200000000000 + count * 1000 + i:012d}" for i in range(count)]
            # Not replayed: new accounts, answered by moto (memory, not speed, is measured).
            run = await self.measured("engine", f"memory-{count}", ids, memory_regions, normal)
            say(describe(f"memory: {count} accounts x {len(memory_regions)} regions", run))
            if "error" not in run:
                peaks[count] = (run["peak_rss_mb"], run["scan_peak_rss_mb"] or 0.0)
                ok &= run["failed"] == 0
        if len(peaks) >= 2:
            low, high = min(peaks), max(peaks)
            growth = peaks[high][0] / peaks[low][0]
            ok &= growth <= TARGET_MEMORY_RATIO
            say(
                f"=> peak RSS {low} accounts {peaks[low][0]:.0f} MB, {high} accounts "
                f"{peaks[high][0]:.0f} MB: {growth:.2f}x (target <= {TARGET_MEMORY_RATIO}x); "
                f"during the scans alone {peaks[low][1]:.0f} MB and {peaks[high][1]:.0f} MB"
            )
        say("all targets met" if ok else "TARGETS NOT MET")
        return 0 if ok else 1


def describe(label: str, result: dict[str, Any]) -> str:
    if "error" in result:
        return f"{label}: FAILED: {result['error']}"
    proxy = result.get("proxy", {})
    parts = [
        f"{result['seconds']:.1f}s",
        f"{proxy.get('requests', 0)} calls",
        f"{result['resources']} resources",
        f"{proxy.get('throttled', 0)} throttled responses",
        f"{result['failed']} failed" + (" scopes" if "scopes" in result else " list calls"),
    ]
    if "scopes" in result:
        parts.insert(3, f"{result['scopes']} scopes")
        parts.append(f"{result['partial']} partial")
        parts.append(f"concurrency {result['max_concurrency']}")
        parts.append(f"peak RSS {result['rss_before_scan_mb']:.0f} MB before scan")
        if result.get("scan_peak_rss_mb"):
            parts.append(f"{result['scan_peak_rss_mb']:.0f} MB during scan")
    parts.append(f"client CPU {result['cpu_s']:.1f}s")
    if "moto_cpu_s" in result:
        parts.append(
            f"moto CPU {result['moto_cpu_s']:.1f}s, proxy CPU {result['proxy_cpu_s']:.1f}s"
        )
    parts.append(f"peak RSS {result['peak_rss_mb']:.0f} MB")
    if "load" in result:
        parts.append(f"load average {result['load'][0]:.1f} -> {result['load'][1]:.1f}")
    line = f"{label}: " + ", ".join(parts)
    if result.get("errors"):
        line += "\n    " + "\n    ".join(result["errors"])
    return line


def say(line: str) -> None:
    print(line, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=3)
    parser.add_argument("--regions", type=int, default=16, choices=range(1, len(REGIONS) + 1))
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument(
        "--memory-accounts",
        type=lambda s: [int(n) for n in s.split(",")],
        default=[10, 200],
        help="account counts of the memory runs (default 10,200)",
    )
    parser.add_argument("--memory-regions", type=int, default=1)
    parser.add_argument(
        "--deadline", type=float, default=900.0, help="seconds the whole run may take"
    )
    # A child process of the bench (not for users).
    parser.add_argument(
        "--child", choices=("proxy", "engine", "sequential"), help=argparse.SUPPRESS
    )
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--account-ids", help=argparse.SUPPRESS)
    parser.add_argument("--region-names", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main() -> int:
    args = parse_args()
    if args.child:
        child_main(args)
        return 0
    os.environ["MOTO_EC2_LOAD_DEFAULT_AMIS"] = "false"
    workdir = Path(tempfile.mkdtemp(prefix="cloudinv-bench-scan-"))
    say(f"logs: {workdir}")
    return asyncio.run(Bench(args, workdir).run())


if __name__ == "__main__":
    sys.exit(main())
