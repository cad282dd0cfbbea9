"""Nothing lost when any process dies: the real ``cloudinv up`` (embedded Tansu broker, the
stream worker and the CloudTrail role as child processes, moto for S3 and SQS) while a
``cloudtrail backfill --path`` and the SQS tailing are in progress, with ``kill -9`` of the
worker, the embedded broker, the CloudTrail role (its tailer), or the whole runtime (then
started again). Each case counts the stored events and the hourly aggregates exactly:
nothing lost, nothing counted twice. And health that tells the truth: a dead broker makes
/readyz not ready within 10 s, ready again once it is back, and Ctrl-C with the broker gone
exits within 10 s.

Inputs are small (a few hundred events) so each case takes tens of seconds, most of it the
runtime starting and the worker joining its group.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cloudinv.runtime.embedded import resolve_broker_binary
from cloudinv.runtime.processes import free_port
from tests.cli_helpers import cli_env
from tests.cloudtrail_helpers import ACCOUNT, MotoTrail, fixture_records, log_bytes, log_key
from tests.test_demo import _alive, _get, _wait_gone

pytestmark = pytest.mark.recovery  # long (about a minute a case), still part of `make test`

BACKFILL_FILES = 2000
"""Enough for several batches of the worker (2,000 events each), so the backfill (thousands of
files a second) is still waiting for the worker when the first events are stored."""
TAILED_FILES = 15
EVENTS_PER_FILE = 9
TOTAL = (BACKFILL_FILES + TAILED_FILES) * EVENTS_PER_FILE
BASE_TIME = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)


def _records(tag: str, count: int, first: int) -> list[dict[str, Any]]:
    """``count`` events with ids of their own, spread over four hours."""
    base = fixture_records()
    out = []
    for i in range(count):
        n = first + i
        when = BASE_TIME + timedelta(minutes=7 * n % 240)
        out.append(
            {
                **base[n % len(base)],
                "eventID": f"{tag}-{n}",
                "eventTime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        )
    return out


def _expected_hours(records: list[dict[str, Any]]) -> Counter[int]:
    hours: Counter[int] = Counter()
    for r in records:
        when = datetime.strptime(r["eventTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        hours[int(when.timestamp() * 1000) // 3_600_000 * 3_600_000] += 1
    return hours


def _stored(data_dir: Path) -> tuple[int, dict[str, Counter[int]]]:
    """Events stored, and per aggregate kind the hourly sums (bucket → events)."""
    path = data_dir / "store" / "events.sqlite3"
    if not path.exists():
        return 0, {}
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        count = db.execute("SELECT count(*) FROM events").fetchone()[0]
        sums: dict[str, Counter[int]] = {}
        for kind, bucket, events in db.execute(
            "SELECT kind, bucket, sum(events) FROM activity WHERE granularity = 'hour' "
            "GROUP BY kind, bucket"
        ):
            sums.setdefault(kind, Counter())[bucket] = events
        return int(count), sums
    except sqlite3.OperationalError:  # the worker has not created the tables yet
        return 0, {}
    finally:
        db.close()


def _missing(data_dir: Path, every: list[dict[str, Any]]) -> str:
    """Which events are not stored (for a failure's message): ids, files and principals."""
    db = sqlite3.connect(f"file:{data_dir / 'store' / 'events.sqlite3'}?mode=ro", uri=True)
    try:
        stored = {row[0] for row in db.execute("SELECT event_id FROM events")}
    finally:
        db.close()
    gone = [r for r in every if r["eventID"] not in stored]
    described = [
        f"{r['eventID']} (file {int(r['eventID'].rsplit('-', 1)[1]) // EVENTS_PER_FILE}, "
        f"{r.get('userIdentity', {}).get('arn')})"
        for r in gone[:30]
    ]
    return f"{len(gone)} missing: {', '.join(described)}"


def _log_tail(data_dir: Path, name: str, lines: int = 80) -> str:
    path = data_dir / "logs" / name
    if not path.exists():
        return f"(no {name})\n"
    text = path.read_text(errors="replace").splitlines()
    return f"{name} (last {lines} lines):\n" + "\n".join(text[-lines:]) + "\n"


class Up:
    """``cloudinv up`` as a user runs it, configured by a file."""

    def __init__(self, tmp_path: Path, config: str) -> None:
        self.tmp_path = tmp_path
        self.data_dir = tmp_path / "data"
        self.config = tmp_path / "cloudinv.toml"
        self.config.write_text(config)
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    def start(self) -> dict[str, Any]:
        self.runs += 1
        stderr = (self.tmp_path / f"up-{self.runs}.stderr").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cloudinv", "--config", str(self.config), "up"],
            cwd=self.tmp_path,
            env=cli_env({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        path = self.data_dir / "demo.json"
        deadline = time.monotonic() + 90
        while True:
            assert self.proc.poll() is None, self.stderr()
            assert time.monotonic() < deadline, f"up did not start in 90 s: {self.stderr()}"
            if path.exists():
                info: dict[str, Any] = json.loads(path.read_text())
                if info["pid"] == self.proc.pid:
                    return info
            time.sleep(0.2)

    def stderr(self) -> str:
        return (self.tmp_path / f"up-{self.runs}.stderr").read_text()

    def info(self) -> dict[str, Any]:
        info: dict[str, Any] = json.loads((self.data_dir / "demo.json").read_text())
        return info

    def pid(self, name: str) -> int:
        pids = [c["pid"] for c in self.info()["components"] if c["name"] == name]
        assert pids and pids[0], self.info()
        return int(pids[0])

    def children(self) -> list[int]:
        assert self.proc is not None
        return [
            c["pid"] for c in self.info()["components"] if c.get("pid") not in (None, self.proc.pid)
        ]

    def backfill(self, logs: Path) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "cloudinv", "--config", str(self.config), "cloudtrail",
             "backfill", "--path", str(logs), "--concurrency", "2"],
            cwd=self.tmp_path,
            env=cli_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip

    def interrupt(self) -> float:
        """Ctrl-C; returns how long the runtime took to exit."""
        assert self.proc is not None
        began = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=30)
        return time.monotonic() - began

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _config(
    tmp_path: Path, moto_endpoint: str, unique: str, queue_url: str, extra: str = ""
) -> str:
    return f"""
scan_interval_s = 3600
{extra}
[kafka]
topic_prefix = "t{unique}"
consumer_group = "g{unique}"

[aws]
regions = ["us-east-1"]
endpoint_url = "{moto_endpoint}"
accounts = [{{ role_arn = "arn:aws:iam::{ACCOUNT}:role/cloudinv-reader" }}]

[storage]
data_dir = "{tmp_path / "data"}"

[api]
port = 0

[cloudtrail]
queue_urls = ["{queue_url}"]
region = "us-east-1"
react = false
"""


@pytest.fixture
def up_factory(tmp_path: Path) -> Iterator[list[Up]]:
    made: list[Up] = []
    yield made
    for up in made:
        up.kill()


def _wait(condition: Any, timeout: float, what: str, every_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what()
        time.sleep(every_s)


@pytest.mark.parametrize("victim", ["worker", "broker", "cloudtrail", "runtime"])
def test_kill_9_in_the_middle_loses_nothing(
    victim: str, tmp_path: Path, moto_endpoint: str, unique: str, up_factory: list[Up]
) -> None:
    trail = MotoTrail.create(moto_endpoint, unique, visibility_s=5)
    up = Up(tmp_path, _config(tmp_path, moto_endpoint, unique, trail.queue_url))
    up_factory.append(up)
    up.start()

    logs = tmp_path / "logs" / "AWSLogs" / ACCOUNT / "CloudTrail" / "us-east-1" / "2024" / "03"
    logs.mkdir(parents=True)
    every: list[dict[str, Any]] = []
    for n in range(BACKFILL_FILES):
        records = _records("bf", EVENTS_PER_FILE, n * EVENTS_PER_FILE)
        every += records
        (logs / f"{n:03d}.json.gz").write_bytes(log_bytes(records))
    backfill = up.backfill(tmp_path / "logs")
    for n in range(TAILED_FILES):
        records = _records("sqs", EVENTS_PER_FILE, n * EVENTS_PER_FILE)
        every += records
        asyncio.run(trail.put(log_key(n), log_bytes(records)))
    assert len({r["eventID"] for r in every}) == TOTAL

    # In the middle: some events stored, the backfill and the queue not done.
    _wait(lambda: _stored(up.data_dir)[0] > 0, 60, lambda: f"nothing stored: {up.stderr()}", 0.02)
    assert backfill.poll() is None, "the backfill finished before the kill: nothing tested"
    assert trail.messages_left() > 0, "the queue was done before the kill: nothing tested"

    if victim == "runtime":
        # Power loss: the runtime and the backfill die at once; then both start again.
        children = up.children()
        assert up.proc is not None
        up.proc.kill()
        backfill.kill()
        backfill.wait()
        up.proc.wait()
        assert _wait_gone(children, 20) == []
        up.start()
        backfill = up.backfill(tmp_path / "logs")
    else:
        os.kill(up.pid(victim), signal.SIGKILL)

    try:
        _, err = backfill.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        backfill.kill()
        pytest.fail(f"the backfill did not finish: {backfill.communicate()[1]}\n{up.stderr()}")
    assert backfill.returncode == 0, f"{err}\n{up.stderr()}"
    _wait(
        lambda: trail.messages_left() == 0 and _stored(up.data_dir)[0] >= TOTAL,
        120,
        lambda: (
            f"{_stored(up.data_dir)[0]} stored, {trail.messages_left()} messages left; "
            f"{_missing(up.data_dir, every)}\nbackfill stderr:\n{err[-4000:]}\n"
            f"{_log_tail(up.data_dir, 'cloudtrail.log')}{_log_tail(up.data_dir, 'worker.log')}"
            f"{_log_tail(up.data_dir, 'cloudinv.log')}"
            f"up stderr:\n{up.stderr()}"
        ),
    )
    count, sums = _stored(up.data_dir)
    assert count == TOTAL
    expected = _expected_hours(every)
    assert sums == {"principal": expected, "service": expected}
    if victim != "runtime":
        label = {"worker": "the stream worker", "broker": "the embedded broker"}.get(
            victim, "the CloudTrail role"
        )
        assert f"{label} (pid" in up.stderr() and "was killed by SIGKILL" in up.stderr()
    if victim == "broker":
        # The old worker remembers offsets of the dead broker's partitions: had it reached
        # the new broker, it could have committed them there, past events it never read.
        log = (up.data_dir / "logs" / "cloudinv.log").read_text().splitlines()
        killed = next(i for i, line in enumerate(log) if "was killed by SIGKILL" in line)
        after = log[killed:]
        stopped = next(i for i, line in enumerate(after) if "stopped stream worker" in line)
        started = next(i for i, line in enumerate(after) if "started broker" in line)
        assert stopped < started, "\n".join(after)
    status, body = _get(up.info()["api_url"] + "/readyz")
    assert status == 200, body
    children = up.children()
    assert up.interrupt() < 10
    assert _wait_gone(children, 10) == []


def test_a_dead_broker_is_reported_and_ctrl_c_still_stops_in_time(
    tmp_path: Path, moto_endpoint: str, unique: str, up_factory: list[Up]
) -> None:
    """`cloudinv up` on a broker it does not own (as with a real cluster): /readyz says not
    ready, with the reason, within 10 s of the broker dying, ready again once it is back;
    Ctrl-C with the broker gone stops everything within 10 s."""
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"

    def start_broker() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [resolve_broker_binary(), "broker", "--listener-url", url,
             "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    broker = start_broker()
    trail = MotoTrail.create(moto_endpoint, unique, visibility_s=5)
    config = _config(tmp_path, moto_endpoint, unique, trail.queue_url)
    config = config.replace("[kafka]\n", f'[kafka]\nbootstrap = "127.0.0.1:{port}"\n')
    up = Up(tmp_path, config)
    up_factory.append(up)
    try:
        info = up.start()
        readyz = info["api_url"] + "/readyz"
        _wait(lambda: _get(readyz)[0] == 200, 30, lambda: _get(readyz))

        broker.kill()
        broker.wait()
        killed = time.monotonic()
        _wait(lambda: _get(readyz)[0] == 503, 10, lambda: _get(readyz))
        assert time.monotonic() - killed < 10
        _, body = _get(readyz)
        assert "does not answer" in body["reason"], body
        _, body = _get(info["api_url"] + "/v1/status", info["api_token"])
        assert body["ready"] is False and any("does not answer" in r for r in body["reasons"])

        broker = start_broker()
        _wait(lambda: _get(readyz)[0] == 200, 30, lambda: (_get(readyz), up.stderr()))

        broker.kill()
        broker.wait()
        _wait(lambda: _get(readyz)[0] == 503, 10, lambda: _get(readyz))
        children = up.children()
        assert up.interrupt() < 10, up.stderr()
        assert _wait_gone(children, 10) == []
        # Reconnect warnings are not a flood: the runtime's log says it once per change.
        log = (up.data_dir / "logs" / "cloudinv.log").read_text()
        assert log.count("does not answer") <= 4
    finally:
        if broker.poll() is None:
            broker.kill()
            broker.wait()
    assert all(not _alive(p) for p in children)
