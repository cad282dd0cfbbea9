"""Change detection benchmark: snapshots/s through the detector, unchanged and changed.

Two measurements, printed side by side so the bottleneck is visible:

1. **The detector alone** (``cloudinv.streams.changes.ChangeDetector``, no Kafka): wire bytes in,
   ChangeEvent bytes out, in this process.
2. **The real agent, one worker**: a Tansu broker (``cloudinv.runtime.embedded.EmbeddedBroker``), a
   producer in its own process publishing snapshots as the scan engine does (aiokafka,
   keyed by resource key), and this process running a Faust worker with the change stage
   (detector, scans agent, SQLite store sink). Each pass publishes every resource once:

   - ``created``: first sight of every resource (a change each, stored as a version);
   - ``unchanged``: a new scan, same configurations (the common case);
   - ``reordered``: same configurations with tags and rules listed in another order
     (normalized and hashed, still no change);
   - ``changed``: every resource modified (diffed, patched, sent and stored).

   The rate is counted from the first to the last snapshot the detector handled in the
   pass; "per core" divides by this process's CPU time over the same window (the worker's
   threads included, the producer's and broker's excluded).

Usage::

    .venv/bin/python bench/changes.py                 # 50,000 resources, 4 partitions
    .venv/bin/python bench/changes.py --count 20000 --detector-only
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from cloudinv.core.codec import encode
from cloudinv.core.models import ResourceSnapshot
from cloudinv.core.topics import Topic, topic_name

ACCOUNT = "123456789012"
TARGET_UNCHANGED = 20_000
TARGET_CHANGED = 2_000
KINDS = ("created", "unchanged", "reordered", "changed")


# -- the data -------------------------------------------------------------------------------------


def instance_config(i: int, kind: str) -> dict[str, Any]:
    """An EC2 instance shaped like DescribeInstances returns it (about 1.5 kB of JSON)."""
    tags = [
        {"Key": "Name", "Value": f"web-{i}"},
        {"Key": "env", "Value": "prod" if i % 3 else "staging"},
        {"Key": "team", "Value": f"team-{i % 17}"},
        {"Key": "cost-center", "Value": f"cc-{i % 101}"},
    ]
    groups = [
        {"GroupId": f"sg-{i % 50:08x}", "GroupName": "web"},
        {"GroupId": f"sg-{i % 7:08x}ff", "GroupName": "ssh"},
    ]
    instance_type = "t3.micro"
    if kind == "reordered":
        tags.reverse()
        groups.reverse()
    elif kind == "changed":
        tags[2]["Value"] = f"team-{(i + 1) % 17}"
        instance_type = "t3.large"
    return {
        "AmiLaunchIndex": 0,
        "Architecture": "x86_64",
        "BlockDeviceMappings": [
            {
                "DeviceName": "/dev/xvda",
                "Ebs": {
                    "AttachTime": "2026-01-01T00:00:00Z",
                    "DeleteOnTermination": True,
                    "Status": "attached",
                    "VolumeId": f"vol-{i:017x}",
                },
            }
        ],
        "ClientToken": f"token-{i}",
        "EbsOptimized": False,
        "Hypervisor": "xen",
        "ImageId": "ami-0abcdef1234567890",
        "InstanceId": f"i-{i:017x}",
        "InstanceType": instance_type,
        "LaunchTime": "2026-01-01T00:00:00Z",
        "Monitoring": {"State": "disabled"},
        "NetworkInterfaces": [
            {
                "NetworkInterfaceId": f"eni-{i:017x}",
                "PrivateIpAddress": f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}",
                "SubnetId": f"subnet-{i % 12:08x}",
                "Groups": groups,
                "Status": "in-use",
            }
        ],
        "Placement": {"AvailabilityZone": "us-east-1a", "Tenancy": "default"},
        "PrivateDnsName": f"ip-10-0-{i // 256 % 256}-{i % 256}.ec2.internal",
        "PrivateIpAddress": f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}",
        "RootDeviceName": "/dev/xvda",
        "RootDeviceType": "ebs",
        "SecurityGroups": groups,
        "State": {"Code": 16, "Name": "running"},
        "SubnetId": f"subnet-{i % 12:08x}",
        "Tags": tags,
        "VirtualizationType": "hvm",
        "VpcId": "vpc-0123456789abcdef0",
    }


def snapshot(i: int, kind: str, captured_at: datetime) -> ResourceSnapshot:
    config = instance_config(i, kind)
    return ResourceSnapshot.build(
        account_id=ACCOUNT,
        region="us-east-1",
        resource_type="AWS::EC2::Instance",
        resource_id=config["InstanceId"],
        arn=f"arn:aws:ec2:us-east-1:{ACCOUNT}:instance/{config['InstanceId']}",
        name=f"web-{i}",
        tags={t["Key"]: t["Value"] for t in config["Tags"]},
        configuration=config,
        scan_id=f"bench-{kind}",
        captured_at=captured_at,
    )


def wire_pass(count: int, kind: str, captured_at: datetime) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs as the publisher sends them."""
    out = []
    for i in range(count):
        snap = snapshot(i, kind, captured_at)
        out.append((snap.key.encode(), encode(snap)))
    return out


def pass_time(kind: str) -> datetime:
    return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=KINDS.index(kind) + 1)


# -- 1. the detector alone ------------------------------------------------------------------------


def bench_detector(count: int) -> dict[str, float]:
    from cloudinv.streams.changes import ChangeDetector

    detector = ChangeDetector()
    detector.warm([], {})
    rates: dict[str, float] = {}
    for kind in KINDS:
        wire = [value for _, value in wire_pass(count, kind, pass_time(kind))]
        started = time.perf_counter()
        changes = 0
        for value in wire:
            change = detector.observe_wire(orjson.loads(value))
            if change is not None:
                encode(change)  # the agent sends it: serialization is part of the cost
                changes += 1
        elapsed = time.perf_counter() - started
        expected = 0 if kind in ("unchanged", "reordered") else count
        if changes != expected:
            raise SystemExit(f"detector pass {kind}: {changes} changes, expected {expected}")
        rates[kind] = count / elapsed
    return rates


# -- 2. the real agent ----------------------------------------------------------------------------


async def produce(bootstrap: str, topic: str, count: int, kind: str) -> None:
    """Run in a child process: publish one pass as the scan engine's publisher does."""
    from aiokafka import AIOKafkaProducer

    wire = wire_pass(count, kind, pass_time(kind))
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1024 * 1024, acks="all"
    )
    await producer.start()
    try:
        pending = [await producer.send(topic, value=value, key=key) for key, value in wire]
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


@dataclass
class PassResult:
    kind: str
    wall_rate: float
    cpu_rate: float
    sink_rate: float | None


async def bench_agent(
    count: int,
    partitions: int,
    workdir: Path,
    with_inventory: bool,
    profile: str | None = None,
    show_threads: bool = False,
) -> list[PassResult]:
    from cloudinv.runtime.embedded import EmbeddedBroker
    from cloudinv.streams import inventory
    from cloudinv.streams.app import StreamConfig, create_app
    from cloudinv.streams.changes import bind
    from cloudinv.streams.worker import tune_gc

    broker = EmbeddedBroker(workdir / "broker")
    await broker.start()
    config = StreamConfig(
        bootstrap=broker.bootstrap,
        data_dir=workdir / "data",
        app_id="bench-changes",
        topic_prefix="bench",
        partitions=partitions,
    )
    app = create_app(config)
    if with_inventory:
        # The worker's other reader of the snapshots topic: a partition is fetched only as
        # fast as its slowest agent drains it.
        inventory.bind(app, config)
    stage = bind(app, config)
    tune_gc()  # as `cloudinv worker` does
    results: list[PassResult] = []
    try:
        await app.start()
        await _wait_for(lambda: bool(app.consumer.assignment()), poll=0.1)
        topic = topic_name(Topic.SNAPSHOTS, config.topic_prefix)
        stats = stage.detector.stats
        for kind in KINDS:
            start_count, start_stored = stats.snapshots, stage.stored_changes
            start_batches = (stage.detect_batches, stage.store_batches)
            threads_before = thread_cpu()
            child = await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--produce",
                kind,
                "--bootstrap",
                broker.bootstrap,
                "--topic",
                topic,
                "--count",
                str(count),
            )
            target = start_count + count
            profiler = cProfile.Profile(time.thread_time) if kind == profile else None
            first = await _wait_for(lambda: stats.snapshots > start_count, poll=0.001)  # noqa: B023
            if profiler is not None:
                profiler.enable()
            last = await _wait_for(lambda: stats.snapshots >= target, poll=0.005, timeout=600)  # noqa: B023
            if await child.wait() != 0:
                raise SystemExit(f"producer of pass {kind} failed")
            done = stats.snapshots - start_count
            wall = last[0] - first[0]
            cpu = last[1] - first[1]
            sink_rate = None
            if kind in ("created", "changed"):
                stored_target = start_stored + count
                stored = await _wait_for(
                    lambda: stage.stored_changes >= stored_target,  # noqa: B023
                    timeout=600,
                )
                sink_rate = count / (stored[0] - first[0])
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(f"changes-{kind}.prof")
                print(f"profile of pass {kind} written to changes-{kind}.prof", flush=True)
            results.append(PassResult(kind, done / wall, done / cpu, sink_rate))
            if show_threads:
                print_thread_cpu(kind, threads_before, thread_cpu(), done)
                detect_batches = stage.detect_batches - start_batches[0]
                store_batches = stage.store_batches - start_batches[1]
                print(
                    f"  {kind}: {done / max(detect_batches, 1):.0f} snapshots per detector batch, "
                    f"{(stage.stored_changes - start_stored) / max(store_batches, 1):.0f} "
                    "changes per store write",
                    flush=True,
                )
        expected_changes = 2 * count
        if stats.changes != expected_changes:
            raise SystemExit(f"agent found {stats.changes} changes, expected {expected_changes}")
        await app.stop()
        results.append(await _faust_floor(config, len(KINDS) * count))
    finally:
        await app.stop()
        await broker.stop()
    return results


def thread_cpu() -> dict[str, float]:
    """CPU seconds used so far by each thread of this process, by thread name (Linux)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = names.get(int(task.name), "other")
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def print_thread_cpu(
    kind: str, before: dict[str, float], after: dict[str, float], count: int
) -> None:
    used = {name: after[name] - before.get(name, 0.0) for name in after}
    parts = ", ".join(
        f"{name} {seconds / count * 1e6:.0f} µs"
        for name, seconds in sorted(used.items(), key=lambda kv: -kv[1])
        if seconds > 0
    )
    print(f"  {kind}: CPU per snapshot by thread: {parts}", flush=True)
    # Over the whole pass, the store's tail after the detector's last snapshot included
    # (the "per core" column stops at that snapshot), in clock ticks of 10 ms.
    total = sum(used.values())
    if total > 0:
        print(
            f"  {kind}: all threads, whole pass: {total / count * 1e6:.0f} µs per snapshot "
            f"= {count / total:,.0f}/s per core",
            flush=True,
        )


async def _faust_floor(config: Any, total: int) -> PassResult:
    """The same snapshots read again by an agent that does nothing: Faust's own cost."""
    from dataclasses import replace

    from cloudinv.streams.app import create_app
    from cloudinv.streams.changes import DETECT_BATCH, DETECT_WINDOW_S

    floor_config = replace(config, app_id="bench-floor")
    app = create_app(floor_config)
    seen = [0]

    async def read_only(stream: Any) -> None:
        async for events in stream.take_events(DETECT_BATCH, within=DETECT_WINDOW_S):
            seen[0] += len(events)

    snapshots = app.topic(
        topic_name(Topic.SNAPSHOTS, config.topic_prefix),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    app.agent(snapshots, name="read_only")(read_only)
    await app.start()
    try:
        first = await _wait_for(lambda: seen[0] > 0, poll=0.001)
        start = seen[0]
        last = await _wait_for(lambda: seen[0] >= total, poll=0.005, timeout=600)
    finally:
        await app.stop()
    done = total - start
    return PassResult("floor", done / (last[0] - first[0]), done / (last[1] - first[1]), None)


async def _wait_for(
    condition: Callable[[], bool], poll: float = 0.01, timeout: float = 120
) -> tuple[float, float]:
    """(wall, process CPU) times at which ``condition`` first held."""
    deadline = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > deadline:
            raise SystemExit("benchmark timed out waiting for the worker")
        await asyncio.sleep(poll)
    return time.perf_counter(), time.process_time()


# -- output -------------------------------------------------------------------------------------


def report(
    count: int,
    detector: dict[str, float],
    agent: list[PassResult] | None,
    loop: str,
    with_inventory: bool,
) -> None:
    print()
    stages = "change stage + inventory" if with_inventory else "change stage"
    print(
        f"change detection, {count:,} EC2 instances per pass (~1.7 kB each), one worker "
        f"({stages}), {loop} event loop"
    )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"machine: {os.cpu_count()} CPUs, load average {load} (other processes share them)")
    print()
    header = f"{'pass':<11} {'detector alone':>16} {'agent (wall)':>14} {'agent per core':>16}"
    print(header + f" {'store sink':>12}")
    print("-" * (len(header) + 13))
    by_kind = {r.kind: r for r in agent or []}
    for kind in KINDS:
        row = f"{kind:<11} {detector[kind]:>14,.0f}/s"
        result = by_kind.get(kind)
        if result is not None:
            sink = f"{result.sink_rate:>10,.0f}/s" if result.sink_rate else f"{'-':>12}"
            row += f" {result.wall_rate:>12,.0f}/s {result.cpu_rate:>14,.0f}/s {sink}"
        print(row)
    floor = by_kind.get("floor")
    if floor is not None:
        print(
            f"{'faust only':<11} {'-':>16} {floor.wall_rate:>12,.0f}/s "
            f"{floor.cpu_rate:>14,.0f}/s {'-':>12}   (an agent that reads and does nothing)"
        )
    print()
    if agent:
        unchanged, changed = by_kind["unchanged"], by_kind["changed"]
        for label, value, target in (
            ("unchanged", unchanged.cpu_rate, TARGET_UNCHANGED),
            ("changed", changed.cpu_rate, TARGET_CHANGED),
        ):
            verdict = "meets" if value >= target else "BELOW"
            print(
                f"target {label}: >= {target:,}/s on one core: {verdict} "
                f"({value:,.0f}/s per core, {by_kind[label].wall_rate:,.0f}/s wall)"
            )
        print()
        print(
            "detector alone = the pure CPU cost of comparing (for changes: validating, diffing,\n"
            "building and encoding the event). 'faust only' is an agent on Faust's per-message\n"
            "delivery (consumer, conductor, stream, acks) that does nothing: the ceiling the\n"
            "change stage had before it took its hot topics (snapshots, changes, CloudTrail)\n"
            "in fetch-sized batches (cloudinv.streams.batch_delivery). A change costs two hops\n"
            "(snapshot in, change in at the store sink) plus a send and a store write.\n"
            "'per core' = snapshots per CPU-second of this worker process (all its threads)\n"
            "from the detector's first to its last snapshot of the pass, which other load on\n"
            "the machine does not dilute as it does the wall-clock rate; for changed\n"
            "snapshots the store sink's tail after that window is left out (--threads prints\n"
            "the whole pass too)."
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=50_000, help="resources per pass")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--detector-only", action="store_true", help="skip the Kafka part")
    parser.add_argument(
        "--with-inventory",
        action="store_true",
        help="also run cloudinv.streams.inventory on the snapshots, as cloudinv worker does",
    )
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="event loop of the worker (uvloop must be installed)",
    )
    parser.add_argument(
        "--profile",
        choices=KINDS,
        help="write a cProfile of the worker during this pass to changes-<pass>.prof",
    )
    parser.add_argument(
        "--threads", action="store_true", help="print each pass's CPU time per worker thread"
    )
    parser.add_argument("--produce", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.produce:
        asyncio.run(produce(args.bootstrap, args.topic, args.count, args.produce))
        return
    logging.basicConfig(level=logging.WARNING)
    print("detector alone ...", flush=True)
    detector = bench_detector(args.count)
    agent = None
    if not args.detector_only:
        print("real agent (Tansu broker, Faust worker, SQLite store) ...", flush=True)
        with tempfile.TemporaryDirectory(prefix="cloudinv-bench-") as tmp:
            work = bench_agent(
                args.count,
                args.partitions,
                Path(tmp),
                args.with_inventory,
                args.profile,
                args.threads,
            )
            if args.loop == "uvloop":
                import uvloop  # type: ignore[import-not-found,unused-ignore]

                agent = uvloop.run(work)
            else:
                agent = asyncio.run(work)
    report(args.count, detector, agent, args.loop, args.with_inventory)


if __name__ == "__main__":
    main()
