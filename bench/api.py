"""API benchmark: latency and throughput of the query API over a populated store.

1. Populates a data directory through the stores' own write APIs: ``--versions`` resource
   versions (snapshots through the real ``ChangeDetector``, its changes written with
   ``SqliteStore.put_changes``: a first scan creating most resources, then modifications and
   a few deletions over ten hours) and ``--events`` CloudTrail events (the shared fixture's
   real records, normalized, renumbered and spread over accounts and a week, written with
   ``EventsStore.write_batch``).
2. Starts the API (``cloudinv.api.app.create_app``, one worker, one event loop) in its own process,
   pinned to the last CPU, and pins this process (the load generator) to the others, so the
   two never share a core (``--no-pin``: leave both to the scheduler). Other processes on the
   machine still do: the load average is printed with the figures.
3. From this process, an aiohttp client sends an open-loop load: ``--rate`` requests per
   second, ``--requests`` per scenario, each request on its schedule whether or not earlier
   ones have answered (latency counts from the scheduled time, so a stalled server shows).
   Then the same scenario closed-loop with ``--concurrency`` clients gives the peak rate, and
   the server process's CPU time over that run (user + system, from /proc) gives its CPU
   cost per request, and its event loop thread's share: unlike the latencies, barely
   disturbed by other load on the machine.

``--profile FILE`` runs the server under cProfile (main thread: the event loop) and writes
its stats to FILE; ``--only WORDS`` runs only some scenarios.

Scenarios: a key lookup (current or as of a random time), a list page as of a random time
(one type in one account, 100 per page), a diff over one hour of one account, and an events
query (one principal's events over a day). Usage::

    .venv/bin/python bench/api.py                      # 100k versions, 200k events
    .venv/bin/python bench/api.py --only events        # issue 17's events query alone
    .venv/bin/python bench/api.py --versions 20000 --events 40000 --requests 500
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cloudinv.core.models import CloudTrailEvent, Principal, ResourceSnapshot  # noqa: E402

FIXTURE = REPO / "tests/data/cloudtrail/sample-cloudtrail-event.json"
T0 = datetime(2026, 10, 1, 0, 0, tzinfo=UTC)
ACCOUNTS = [f"{100000000000 + i:012d}" for i in range(20)]
REGIONS = ["us-east-1", "eu-west-1", "ap-southeast-2"]
TYPES = ["AWS::EC2::Instance", "AWS::EC2::SecurityGroup", "AWS::EC2::Volume", "AWS::S3::Bucket"]
TARGET_P99_MS = 50.0


# -- data ---------------------------------------------------------------------------------------


def _configuration(rtype: str, rid: str, n: int, version: int) -> dict[str, Any]:
    """About a kilobyte, shaped like what the scan engine stores."""
    tags = [
        {"Key": "Name", "Value": f"{rtype.split('::')[-1].lower()}-{n}"},
        {"Key": "env", "Value": ("prod", "dev", "test")[n % 3]},
        {"Key": "team", "Value": f"team-{n % 17}"},
    ]
    common = {
        "Tags": tags,
        "OwnerId": ACCOUNTS[n % len(ACCOUNTS)],
        "Revision": version,
        "Description": f"benchmark resource {n} of type {rtype}, version {version}",
    }
    if rtype == "AWS::EC2::Instance":
        return {
            **common,
            "InstanceId": rid,
            "InstanceType": ("t3.micro", "m5.large", "c6g.xlarge")[(n + version) % 3],
            "State": {"Code": 16, "Name": "running"},
            "ImageId": f"ami-{n:08x}",
            "PrivateIpAddress": f"10.{n % 250}.{(n // 250) % 250}.{n % 200 + 10}",
            "SubnetId": f"subnet-{n % 97:08x}",
            "VpcId": f"vpc-{n % 13:08x}",
            "SecurityGroups": [{"GroupId": f"sg-{n % 31:08x}", "GroupName": "web"}],
            "Placement": {"AvailabilityZone": "us-east-1a", "Tenancy": "default"},
            "BlockDeviceMappings": [
                {"DeviceName": "/dev/xvda", "Ebs": {"VolumeId": f"vol-{n:08x}"}}
            ],
            "LaunchTime": "2026-09-30T12:00:00Z",
        }
    if rtype == "AWS::EC2::SecurityGroup":
        return {
            **common,
            "GroupId": rid,
            "GroupName": f"sg-{n}",
            "VpcId": f"vpc-{n % 13:08x}",
            "IpPermissions": [
                {
                    "IpProtocol": "tcp",
                    "FromPort": port,
                    "ToPort": port,
                    "IpRanges": [{"CidrIp": "10.0.0.0/8"}],
                }
                for port in (443, 8443 + version % 5)
            ],
        }
    if rtype == "AWS::EC2::Volume":
        return {
            **common,
            "VolumeId": rid,
            "Size": 8 + version,
            "VolumeType": "gp3",
            "Iops": 3000,
            "Encrypted": bool(n % 2),
            "AvailabilityZone": "us-east-1a",
        }
    return {
        **common,
        "Name": rid,
        "Versioning": {"Status": "Enabled" if version % 2 else "Suspended"},
        "Encryption": {"Rules": [{"SSEAlgorithm": "AES256"}]},
    }


@dataclass
class Resource:
    n: int
    rtype: str
    account: str
    region: str

    @property
    def rid(self) -> str:
        return f"{self.rtype.split('::')[-1].lower()[:3]}-{self.n:07d}"

    @property
    def key(self) -> str:
        service = "s3" if self.rtype == "AWS::S3::Bucket" else "ec2"
        return f"arn:aws:{service}:{self.region}:{self.account}:{self.rid}"

    def snapshot(self, version: int, at: datetime) -> ResourceSnapshot:
        return ResourceSnapshot.build(
            account_id=self.account,
            region=self.region,
            resource_type=self.rtype,
            resource_id=self.rid,
            arn=self.key,
            name=f"{self.rtype.split('::')[-1].lower()}-{self.n}",
            configuration=_configuration(self.rtype, self.rid, self.n, version),
            scan_id=f"bench-{version}",
            captured_at=at,
        )


def plan_resources(versions: int) -> list[Resource]:
    """The resources of ``versions`` versions: 60% created first, the rest modifications."""
    return [
        Resource(
            n=n,
            rtype=TYPES[n % len(TYPES)],
            account=ACCOUNTS[(n // len(TYPES)) % len(ACCOUNTS)],
            region=REGIONS[n % len(REGIONS)],
        )
        for n in range(int(versions * 0.6))
    ]


def _principal(i: int) -> Principal:
    """The principal of the i-th generated event."""
    account, user = ACCOUNTS[i % len(ACCOUNTS)], f"user-{i % 50:03d}"
    return Principal(
        type="IAMUser", arn=f"arn:aws:iam::{account}:user/{user}", name=user, account_id=account
    )


def principal_labels() -> list[str]:
    return sorted({_principal(i).label for i in range(len(ACCOUNTS) * 50)})


async def populate_inventory(data_dir: Path, versions: int) -> list[Resource]:
    from cloudinv.sinks.sqlite_store import SqliteStore
    from cloudinv.streams.changes import ChangeDetector

    rng = random.Random(1)
    resources = plan_resources(versions)
    created = len(resources)
    detector = ChangeDetector()
    written = 0
    async with SqliteStore.in_data_dir(data_dir) as store:
        batch = []
        for r in resources:
            change = detector.observe(r.snapshot(0, T0 + timedelta(microseconds=r.n)))
            assert change is not None
            batch.append(change)
            if len(batch) == 2000:
                written += await store.put_changes(batch)
                batch = []
        # Modifications over ten hours, in time order, then a few deletions.
        modified = 0
        version_of = dict.fromkeys(range(created), 0)
        step = timedelta(hours=10) / max(1, versions - created)
        moment = T0 + timedelta(minutes=5)
        while modified < versions - created:
            r = resources[rng.randrange(created)]
            version_of[r.n] += 1
            moment += step
            change = detector.observe(r.snapshot(version_of[r.n], moment))
            if change is not None:
                batch.append(change)
                modified += 1
            if len(batch) == 2000:
                written += await store.put_changes(batch)
                batch = []
        written += await store.put_changes(batch)
    return resources if written else []


def _fixture_events() -> list[CloudTrailEvent]:
    from cloudinv.producers.cloudtrail.normalize import normalize_record

    records = orjson.loads(FIXTURE.read_bytes())["Records"]
    return [normalize_record(r) for r in records]


async def populate_events(data_dir: Path, count: int) -> list[str]:
    """Events spread over a week and the accounts; returns the principal labels."""
    from cloudinv.sinks.events_store import EventsStore, events_store_path

    base = _fixture_events()
    rng = random.Random(2)
    week = 7 * 86_400
    labels: set[str] = set()
    async with EventsStore(events_store_path(data_dir)) as store:
        batch: list[CloudTrailEvent] = []
        for i in range(count):
            e = base[i % len(base)]
            principal = _principal(i)
            labels.add(principal.label)
            batch.append(
                e.model_copy(
                    update={
                        "event_id": f"bench-{i:09d}",
                        "event_time": T0 + timedelta(seconds=rng.randrange(week)),
                        "account_id": principal.account_id,
                        "principal": principal,
                    }
                )
            )
            if len(batch) == 5000:
                await store.write_batch(batch)
                batch = []
        await store.write_batch(batch)
    return sorted(labels)


# -- the server process --------------------------------------------------------------------------


def serve(data_dir: Path, port: int, digest: str, profile: Path | None = None) -> None:
    """The API alone in this process: one worker, one event loop. With ``profile``, the
    process runs under cProfile and writes its stats there when it is terminated."""
    from aiohttp import web
    from pydantic import SecretStr

    from cloudinv.api.app import create_app
    from cloudinv.api.state import Stores
    from cloudinv.core.settings import ApiToken, Settings
    from cloudinv.sinks.events_store import EventsStore, events_store_path
    from cloudinv.sinks.sqlite_store import SqliteStore

    async def make() -> web.Application:
        inventory = SqliteStore.in_data_dir(data_dir)
        events = EventsStore(events_store_path(data_dir), readonly=True)
        await inventory.open()
        await events.open()
        settings = Settings(api={"tokens": [ApiToken(sha256=SecretStr(digest), name="bench")]})
        return create_app(settings, {"mode": "bench"}, Stores(inventory=inventory, events=events))

    profiler = None
    if profile is not None:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    try:
        web.run_app(make(), host="127.0.0.1", port=port, access_log=None, print=lambda *_: None)
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(str(profile))


# -- the load generator ---------------------------------------------------------------------------


@dataclass
class Figures:
    name: str
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float
    achieved_rps: float
    peak_rps: float
    cpu_ms: float
    """Server CPU time per request (user + system, from /proc), in the closed-loop run."""
    loop_cpu_ms: float
    """Of which the event loop's thread (the rest: SQLite reader threads)."""


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def open_loop(
    http: aiohttp.ClientSession, urls: list[str], rate: float
) -> tuple[list[float], int, float]:
    """Each URL at its scheduled time; latency from that time. Returns latencies (ms),
    errors and the achieved rate."""
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    latencies: list[float] = []
    errors = 0

    async def one(i: int, url: str) -> None:
        nonlocal errors
        at = start + i / rate
        await asyncio.sleep(max(0.0, at - loop.time()))
        try:
            async with http.get(url) as resp:
                await resp.read()
                if resp.status != 200:
                    errors += 1
        except aiohttp.ClientError:
            errors += 1
        latencies.append((loop.time() - at) * 1000)

    await asyncio.gather(*(one(i, u) for i, u in enumerate(urls)))
    return latencies, errors, len(urls) / (loop.time() - start)


async def closed_loop(http: aiohttp.ClientSession, urls: list[str], concurrency: int) -> float:
    """Requests per second with ``concurrency`` clients sending back to back."""
    queue = list(reversed(urls))
    started = time.perf_counter()

    async def client() -> None:
        while queue:
            async with http.get(queue.pop()) as resp:
                await resp.read()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return len(urls) / (time.perf_counter() - started)


def scenarios(
    base: str, resources: list[Resource], labels: list[str], n: int
) -> dict[str, list[str]]:
    rng = random.Random(3)

    def when(hours: float = 10.0) -> str:
        moment = T0 + timedelta(seconds=rng.uniform(60, hours * 3600))
        return quote(moment.isoformat().replace("+00:00", "Z"))

    def lookup() -> str:
        key = quote(rng.choice(resources).key, safe="")
        return f"{base}/v1/resources/{key}" + (f"?at={when()}" if rng.random() < 0.5 else "")

    def page() -> str:
        return (
            f"{base}/v1/resources?type={rng.choice(TYPES)}&account={rng.choice(ACCOUNTS)}"
            f"&at={when()}&limit=100"
        )

    def diff() -> str:
        start = T0 + timedelta(seconds=rng.uniform(600, 9 * 3600))
        end = start + timedelta(hours=1)
        return (
            f"{base}/v1/diff?account={rng.choice(ACCOUNTS)}&limit=100"
            f"&from={quote(start.isoformat())}&to={quote(end.isoformat())}"
        )

    def events() -> str:
        day = (T0 + timedelta(days=rng.randrange(7))).date().isoformat()
        return f"{base}/v1/events?principal={quote(rng.choice(labels))}&from={day}&to={day}"

    return {
        "key lookup": [lookup() for _ in range(n)],
        "as-of list page (100)": [page() for _ in range(n)],
        "diff (1 h, 1 account)": [diff() for _ in range(n)],
        "events query (principal, 1 day)": [events() for _ in range(n)],
    }


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """User + system CPU time a process (or one of its threads) has consumed (Linux /proc)."""
    stat = Path(f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat")
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(
    base: str,
    server_pid: int,
    token: str,
    resources: list[Resource],
    labels: list[str],
    *,
    rate: float,
    requests: int,
    concurrency: int,
    only: list[str] | None = None,
) -> list[Figures]:
    headers = {"Authorization": f"Bearer {token}"}
    connector = aiohttp.TCPConnector(limit=256)
    results = []
    async with aiohttp.ClientSession(headers=headers, connector=connector) as http:
        for name, urls in scenarios(base, resources, labels, requests).items():
            if only and not any(word in name for word in only):
                continue
            async with http.get(urls[0]) as resp:  # warm up, and fail early on a bad URL
                assert resp.status == 200, (urls[0], resp.status, await resp.text())
            for url in urls[:50]:
                async with http.get(url) as resp:
                    await resp.read()
            latencies, errors, achieved = await open_loop(http, urls, rate)
            # The event loop runs on the process's main thread (thread id = process id).
            cpu_before, loop_before = cpu_seconds(server_pid), cpu_seconds(server_pid, server_pid)
            peak = await closed_loop(http, urls, concurrency)
            cpu_ms = (cpu_seconds(server_pid) - cpu_before) / len(urls) * 1000
            loop_ms = (cpu_seconds(server_pid, server_pid) - loop_before) / len(urls) * 1000
            results.append(
                Figures(
                    name=name,
                    requests=len(urls),
                    errors=errors,
                    p50_ms=_percentile(latencies, 0.50),
                    p99_ms=_percentile(latencies, 0.99),
                    achieved_rps=achieved,
                    peak_rps=peak,
                    cpu_ms=cpu_ms,
                    loop_cpu_ms=loop_ms,
                )
            )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--versions", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rate", type=float, default=500.0, help="open-loop requests/s")
    parser.add_argument("--requests", type=int, default=2000, help="per scenario")
    parser.add_argument("--concurrency", type=int, default=16, help="closed-loop clients")
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="keep the populated stores there; if they exist already, use them as they are",
    )
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="leave server and load generator on any core (default: one core each)",
    )
    parser.add_argument(
        "--only",
        metavar="WORDS",
        help="only the scenarios whose name contains one of these comma-separated words",
    )
    parser.add_argument(
        "--profile", type=Path, metavar="FILE", help="run the server under cProfile, stats to FILE"
    )
    parser.add_argument("--serve", nargs=3, metavar=("DATA_DIR", "PORT", "SHA256"))
    args = parser.parse_args()
    if args.serve:
        serve(Path(args.serve[0]), int(args.serve[1]), args.serve[2], args.profile)
        return 0

    from cloudinv.api.auth import generate_token

    with tempfile.TemporaryDirectory(prefix="cloudinv-bench-") as tmp:
        data_dir = args.data_dir or Path(tmp)
        if (data_dir / "store" / "events.sqlite3").exists():
            resources, labels = plan_resources(args.versions), principal_labels()
            print(f"using the stores in {data_dir} as they are")
        else:
            started = time.perf_counter()
            resources = asyncio.run(populate_inventory(data_dir, args.versions))
            inventory_s = time.perf_counter() - started
            started = time.perf_counter()
            labels = asyncio.run(populate_events(data_dir, args.events))
            events_s = time.perf_counter() - started
            print(
                f"populated: {args.versions:,} resource versions ({len(resources):,} resources)"
                f" in {inventory_s:.1f} s, {args.events:,} events in {events_s:.1f} s"
            )

        warm_cache(data_dir)
        token, digest = generate_token()
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        profile = ["--profile", str(args.profile.resolve())] if args.profile else []
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(data_dir), str(port), digest, *profile],
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        cores = "not pinned to cores" if args.no_pin else pin(server.pid)
        try:
            base = f"http://127.0.0.1:{port}"
            asyncio.run(_wait_ready(base))
            figures = asyncio.run(
                measure(
                    base,
                    server.pid,
                    token,
                    resources,
                    labels,
                    rate=args.rate,
                    requests=args.requests,
                    concurrency=args.concurrency,
                    only=args.only.split(",") if args.only else None,
                )
            )
        finally:
            server.terminate()
            server.wait(30)
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(
        f"\nopen loop at {args.rate:.0f} req/s, {args.requests} requests per scenario "
        f"(p50/p99 from each request's scheduled time); peak: closed loop, "
        f"{args.concurrency} clients; one API worker ({cores}); load average {load}\n"
    )
    print(
        f"{'scenario':34} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'peak/s':>8} "
        f"{'cpu ms':>7} {'loop ms':>7} {'/s/core':>8} {'errors':>7}"
    )
    for f in figures:
        print(
            f"{f.name:34} {f.p50_ms:8.1f} {f.p99_ms:8.1f} {f.achieved_rps:8.0f} "
            f"{f.peak_rps:8.0f} {f.cpu_ms:7.2f} {f.loop_cpu_ms:7.2f} "
            f"{1000 / f.cpu_ms if f.cpu_ms else 0:8.0f} {f.errors:7d}"
        )
    print(
        "\ncpu ms: the server process's CPU time (user + system) per request in the "
        "closed-loop run;\nloop ms: of which the event loop's thread (the rest is the "
        "stores' SQLite threads);\n/s/core: 1000 / cpu ms, the rate one core could serve if "
        "it were the server's alone"
    )
    targets = [f for f in figures if f.name.startswith(("key lookup", "as-of list page"))]
    if targets:
        met = all(f.p99_ms < TARGET_P99_MS and f.errors == 0 for f in targets)
        verdict = "met" if met else "NOT met"
        print(f"\ntarget p99 < {TARGET_P99_MS:.0f} ms for key lookups and list pages: {verdict}")
    for f in figures:
        if f.name.startswith("events query"):
            verdict = "met" if f.p99_ms < TARGET_P99_MS and f.errors == 0 else "NOT met"
            print(
                f"events query p99 {f.p99_ms:.1f} ms at {args.rate:.0f} req/s, {args.events:,} "
                f"events (issue 17: < {TARGET_P99_MS:.0f} ms at 500 req/s, 200,000 events): "
                f"{verdict}"
            )
    return 0


def warm_cache(data_dir: Path) -> None:
    """Read the stores' files once, so that every scenario runs on the warm file cache a
    long-running API has (the open-loop run comes first and would otherwise pay for it)."""
    for path in sorted((data_dir / "store").glob("*.sqlite3*")):
        with path.open("rb") as f:
            while f.read(1 << 20):
                pass


def pin(server_pid: int) -> str:
    """Server and load generator on different cores where there are two or more, so that
    the load generator does not take the server's core. Other processes on the machine
    still share both."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return "server and load generator share one core"
    os.sched_setaffinity(server_pid, {cores[-1]})
    os.sched_setaffinity(0, set(cores[:-1]))
    return (
        f"server pinned to CPU {cores[-1]}, load generator to CPU {','.join(map(str, cores[:-1]))}"
    )


async def _wait_ready(base: str) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            try:
                async with http.get(f"{base}/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("the API did not start")


if __name__ == "__main__":
    raise SystemExit(main())
