"""Scale-out: two ``cloudinv worker`` processes share the partitions, and when one is killed
(SIGKILL: no goodbye to the group, no flush, no commit) the other takes over its partitions
and its state with no lost and no double-counted event.

Both workers use one data directory, so one SQLite store (WAL mode, two processes on one
file, as two workers on one machine run). That is the deployment's shape: every worker
writes the one store of the deployment (local SQLite on one host, DynamoDB across hosts).
The workers hold no Faust tables: a worker's "state" is the change detector's memory of
the resources of its partitions, which is a cache of that store (loaded per batch, dropped
on revocation), and the events store's deduplication by event id. So taking over state
means: the survivor replays the dead worker's uncommitted offsets, recognises what the
store already holds, and stores exactly what is missing. Faust table changelog recovery
across two workers is covered by ``tests/test_stream_worker.py``'s table and measured in
design.md.

Observed outputs, all exact:
- CloudTrail: every unique event stored once, and the hourly per-service aggregates sum
  to the number of unique events, although some events are published twice.
- Snapshots: exactly one ``created`` change per key, exactly one ``modified`` per key
  changed once, nothing for the snapshots re-sent unchanged.
- Both workers had partitions before the kill (their ``/metrics``); the survivor has all of
  them after it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer

from cloudinv.core.codec import encode
from cloudinv.core.kafka import ensure_topics
from cloudinv.core.models import ResourceSnapshot
from cloudinv.core.settings import KafkaSettings
from cloudinv.core.topics import Topic, topic_name
from cloudinv.producers.cloudtrail.normalize import normalize_record
from tests.cloudtrail_helpers import fixture_records

pytestmark = [pytest.mark.scaleout, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parent.parent
PARTITIONS = 4
ACCOUNT = "222200000000"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class WorkerProcess:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


def _start_worker(name: str, broker: str, env: dict[str, str], data_dir: Path) -> WorkerProcess:
    port = _free_port()
    log = data_dir.parent / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cloudinv",
                "worker",
                "--bootstrap",
                broker,
                "--metrics-port",
                str(port),
            ],
            cwd=data_dir.parent,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return WorkerProcess(name, proc, port, log)


async def _metrics(http: aiohttp.ClientSession, worker: WorkerProcess) -> dict[str, float]:
    """The worker's /metrics as {'name{labels}': value}."""
    async with http.get(f"{worker.url}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await resp.text()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            out[series] = float(value)
    return out


def _assigned(metrics: dict[str, float], topic: str) -> int:
    return int(metrics.get(f'cloudinv_worker_assigned_partitions{{topic="{topic}"}}', 0))


async def _until(
    what: str, check: Callable[[], Any], timeout: float, workers: list[WorkerProcess]
) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await check()
        except (aiohttp.ClientError, OSError, sqlite3.OperationalError) as exc:
            last = exc
        else:
            if last:
                return last
        for w in workers:
            if w.proc.poll() is not None:
                pytest.fail(f"{w.name} exited ({w.proc.returncode}):\n{w.tail()}")
        await asyncio.sleep(0.3)
    logs = "\n".join(f"--- {w.name}\n{w.tail()}" for w in workers)
    pytest.fail(f"timed out waiting for {what} (last: {last!r})\n{logs}")


def _snapshot(i: int, version: int) -> ResourceSnapshot:
    return ResourceSnapshot.build(
        account_id=ACCOUNT,
        region="us-east-1",
        resource_type="AWS::SQS::Queue",
        resource_id=f"q-{i}",
        arn=f"arn:aws:sqs:us-east-1:{ACCOUNT}:q-{i}",
        configuration={"VisibilityTimeout": 30 + version, "n": i},
        scan_id=f"scan-{version}",
    )


class Publisher:
    def __init__(self, producer: AIOKafkaProducer, prefix: str) -> None:
        self.producer = producer
        self.snapshots_topic = topic_name(Topic.SNAPSHOTS, prefix)
        self.cloudtrail_topic = topic_name(Topic.CLOUDTRAIL, prefix)

    async def events(self, events: list[Any]) -> None:
        futures = [
            await self.producer.send(
                self.cloudtrail_topic, key=e.event_id.encode(), value=encode(e)
            )
            for e in events
        ]
        await asyncio.gather(*futures)

    async def snapshots(self, snaps: list[ResourceSnapshot]) -> None:
        futures = [
            await self.producer.send(self.snapshots_topic, key=s.key.encode(), value=encode(s))
            for s in snaps
        ]
        await asyncio.gather(*futures)


def _store_counts(data_dir: Path) -> dict[str, Any]:
    """What the workers stored, read from the SQLite files."""
    out: dict[str, Any] = {}
    events_db = data_dir / "store" / "events.sqlite3"
    inventory_db = data_dir / "store" / "inventory.sqlite3"
    if events_db.exists():
        with sqlite3.connect(events_db, timeout=30) as conn:
            out["events"] = conn.execute("SELECT count(*) FROM events").fetchone()[0]
            out["distinct_events"] = conn.execute(
                "SELECT count(DISTINCT event_id) FROM events"
            ).fetchone()[0]
            out["aggregated"] = conn.execute(
                "SELECT coalesce(sum(events), 0) FROM activity "
                "WHERE granularity = 'hour' AND kind = 'service'"
            ).fetchone()[0]
        conn.close()
    if inventory_db.exists():
        with sqlite3.connect(inventory_db, timeout=30) as conn:
            rows = conn.execute(
                "SELECT change_type, count(*), count(DISTINCT key) FROM changes "
                "WHERE account_id = ? GROUP BY change_type",
                (ACCOUNT,),
            ).fetchall()
        conn.close()
        out["changes"] = {t: (n, keys) for t, n, keys in rows}
    return out


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


async def test_two_workers_share_partitions_and_survivor_takes_over_after_sigkill(
    broker: str, unique: str, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    prefix = f"so{unique}"
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    kafka = KafkaSettings(bootstrap=broker, topic_prefix=prefix, partitions=PARTITIONS)
    await ensure_topics(kafka, broker)
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "CLOUDINV_KAFKA__TOPIC_PREFIX": prefix,
        "CLOUDINV_KAFKA__PARTITIONS": str(PARTITIONS),
        "CLOUDINV_KAFKA__CONSUMER_GROUP": f"scaleout-{unique}",
        "CLOUDINV_STORAGE__DATA_DIR": str(data_dir),
        "CLOUDINV_ALERTS__BUILTIN_RULES": "false",
    }
    snapshots_topic = topic_name(Topic.SNAPSHOTS, prefix)
    cloudtrail_topic = topic_name(Topic.CLOUDTRAIL, prefix)

    base = [normalize_record(r) for r in fixture_records()]

    def phase_events(phase: int) -> list[Any]:
        return [e.model_copy(update={"event_id": f"{e.event_id}-p{phase}"}) for e in base]

    a = _start_worker("worker-a", broker, env, data_dir)
    b = _start_worker("worker-b", broker, env, data_dir)
    workers = [a, b]
    producer = AIOKafkaProducer(bootstrap_servers=broker, linger_ms=5)
    await producer.start()
    try:
        pub = Publisher(producer, prefix)

        # 1. Both join and split the partitions of every input topic.
        async def both_share() -> bool:
            ma, mb = await _metrics(http, a), await _metrics(http, b)
            for topic in (snapshots_topic, cloudtrail_topic):
                na, nb = _assigned(ma, topic), _assigned(mb, topic)
                if not (na > 0 and nb > 0 and na + nb == PARTITIONS):
                    return False
            return ma["cloudinv_worker_ready"] == 1 and mb["cloudinv_worker_ready"] == 1

        await _until("both workers to share the partitions", both_share, 60, workers)
        for w in workers:
            async with http.get(f"{w.url}/readyz") as resp:
                assert resp.status == 200, await resp.text()

        # 2. Work before the kill: 142 events, 40 resources created.
        await pub.events(phase_events(1))
        await pub.snapshots([_snapshot(i, 1) for i in range(40)])

        async def phase1_stored() -> bool:
            counts = _store_counts(data_dir)
            return (
                counts.get("events") == len(base)
                and counts.get("changes", {}).get("created", (0, 0))[0] == 40
            )

        await _until("the first batch to be stored", phase1_stored, 60, workers)
        received_b = (await _metrics(http, b)).get(
            f'cloudinv_worker_messages_received_total{{topic="{cloudtrail_topic}"}}', 0
        )
        assert received_b > 0, "worker-b processed none of the first batch"

        # 3. More work, and worker-b is killed while it may be in the middle of it: what it
        # read but had not committed is read again by worker-a.
        await pub.events(phase_events(2))
        await pub.snapshots([_snapshot(i, 1) for i in range(40, 80)])
        await pub.snapshots([_snapshot(i, 2) for i in range(20)])
        before_kill = await _metrics(http, b)
        b.proc.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        b.proc.wait(timeout=10)
        workers = [a]

        # 4. After the kill: new events, events published again (a log file delivered
        # twice), changes to the keys created after phase 1, and unchanged re-sends.
        await pub.events(phase_events(3))
        await pub.events(phase_events(1)[:50] + phase_events(2)[:50])
        await pub.snapshots([_snapshot(i, 2) for i in range(40, 60)])
        await pub.snapshots([_snapshot(i, 1) for i in range(60, 80)])

        async def survivor_owns_all() -> bool:
            m = await _metrics(http, a)
            return (
                _assigned(m, snapshots_topic) == PARTITIONS
                and _assigned(m, cloudtrail_topic) == PARTITIONS
                and m["cloudinv_worker_ready"] == 1
            )

        await _until("worker-a to take every partition", survivor_owns_all, 60, workers)
        print(f"worker-a owned every partition {time.monotonic() - killed_at:.1f}s after the kill")

        unique_events = 3 * len(base)

        async def all_stored() -> bool:
            counts = _store_counts(data_dir)
            changes = counts.get("changes", {})
            return (
                counts.get("events") == unique_events
                and changes.get("created", (0, 0))[0] == 80
                and changes.get("modified", (0, 0))[0] == 40
            )

        await _until("every event and change to be stored", all_stored, 60, workers)

        # Let anything replayed late arrive before checking nothing was counted twice.
        async def lag_drained() -> bool:
            m = await _metrics(http, a)
            return m.get("cloudinv_worker_consumer_lag_total") == 0

        await _until("worker-a's consumer lag to drain", lag_drained, 30, workers)
        counts = _store_counts(data_dir)
        # For the record (-s): messages read by both, more than published when worker-a
        # re-read what worker-b had read but not committed.
        series = f'cloudinv_worker_messages_received_total{{topic="{cloudtrail_topic}"}}'
        read = before_kill.get(series, 0) + (await _metrics(http, a)).get(series, 0)
        print(f"cloudtrail messages published {unique_events + 100}, read {read:g}")
        assert counts["events"] == counts["distinct_events"] == unique_events
        assert counts["aggregated"] == unique_events
        assert counts["changes"] == {"created": (80, 80), "modified": (40, 40)}
        async with http.get(f"{a.url}/healthz") as resp:
            assert resp.status == 200
            assert (await resp.json())["role"] == "worker"
    finally:
        await producer.stop()
        for w in (a, b):
            if w.proc.poll() is None:
                w.proc.send_signal(signal.SIGTERM)
        for w in (a, b):
            try:
                w.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()
