"""Health, readiness and metrics of every role, over HTTP.

The producers run as a real ``cloudinv producers`` process against the broker and moto;
the worker's endpoints on real processes are exercised by ``tests/test_scaleout.py`` (two
workers, partitions read from their /metrics); here a Faust app in this process with the
worker's role server (partitions, lag while its agent is held, events processed), the
worker's readiness before it joins a group, the role server itself, the API's /readyz and
the compose healthchecks.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from cloudinv.core import kafka_holes
from cloudinv.core.metrics import Metrics
from cloudinv.core.settings import KafkaSettings, load_settings
from cloudinv.core.topics import Topic, topic_name
from cloudinv.runtime.role_server import BrokerProbe, Probe, RoleServer, WorkerProbe
from cloudinv.streams.app import StreamConfig, create_app

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _parse(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            out[series] = float(value)
    return out


def _spawn(argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


async def test_role_server_answers_health_readiness_and_metrics(
    http: aiohttp.ClientSession,
) -> None:
    metrics = Metrics()
    scans = metrics.counter("cloudinv_test_scans_total", "Scans")
    state = {"ready": "warming up", "live": None}
    refreshed = []

    def collect() -> None:
        refreshed.append(1)
        scans.inc()

    probe = Probe(
        metrics, live=lambda: state["live"], ready=lambda: state["ready"], collect=collect
    )
    server = RoleServer("tester", probe)
    port = await server.start("127.0.0.1", 0)
    base = f"http://127.0.0.1:{port}"
    try:
        async with http.get(f"{base}/healthz") as resp:
            assert (resp.status, await resp.json()) == (200, {"status": "ok", "role": "tester"})
        async with http.get(f"{base}/readyz") as resp:
            assert resp.status == 503
            assert await resp.json() == {
                "status": "not ready",
                "role": "tester",
                "reason": "warming up",
            }
        state["ready"] = None
        async with http.get(f"{base}/readyz") as resp:
            assert (resp.status, (await resp.json())["status"]) == (200, "ready")
        async with http.get(f"{base}/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
            text = await resp.text()
        assert "# TYPE cloudinv_test_scans_total counter" in text
        values = _parse(text)
        assert values["cloudinv_test_scans_total"] == 1 == len(refreshed)
        assert values['cloudinv_process_uptime_seconds{role="tester"}'] >= 0
        # A crashed role is neither live nor ready.
        state["live"] = "the loop crashed"
        for path in ("/healthz", "/readyz"):
            async with http.get(f"{base}{path}") as resp:
                assert resp.status == 503
                assert (await resp.json())["reason"] == "the loop crashed"
    finally:
        await server.stop()


async def test_role_server_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = RoleServer("worker", Probe(Metrics()))
        with pytest.raises(
            OSError, match=f"worker health and metrics endpoints on 127.0.0.1:{port}"
        ):
            await server.start("127.0.0.1", port)


async def test_worker_is_not_ready_before_it_joins_the_group(
    http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    app = create_app(StreamConfig(bootstrap="127.0.0.1:1", data_dir=tmp_path, app_id="probe"))
    probe = WorkerProbe(app)
    server = RoleServer("worker", probe)
    port = await server.start("127.0.0.1", 0)
    try:
        async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
            assert resp.status == 503
            assert (await resp.json())["reason"] == "not yet joined the consumer group"
        async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
            assert resp.status == 200
        async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
            values = _parse(await resp.text())
        assert values["cloudinv_worker_ready"] == 0
        assert values["cloudinv_worker_consumer_lag_total"] == 0
        assert values["cloudinv_worker_events_processed_total"] == 0
        # The process's fetch holes (cloudinv.core.kafka_holes), as counted there.
        held, read_past = kafka_holes.stats.held, kafka_holes.stats.read_past
        assert values["cloudinv_kafka_fetch_holes_held_total"] == held
        assert values["cloudinv_kafka_fetch_holes_read_past_total"] == read_past
        kafka_holes.stats.held += 2
        kafka_holes.stats.read_past += 1
        try:
            async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                values = _parse(await resp.text())
        finally:
            kafka_holes.stats.held -= 2
            kafka_holes.stats.read_past -= 1
        assert values["cloudinv_kafka_fetch_holes_held_total"] == held + 2
        assert values["cloudinv_kafka_fetch_holes_read_past_total"] == read_past + 1
    finally:
        await server.stop()


async def test_api_is_ready_once_its_store_is_open(tmp_path: Path) -> None:
    from cloudinv.api.app import create_app as create_api

    settings = load_settings(None, storage={"data_dir": str(tmp_path)})
    async with TestClient(TestServer(create_api(settings))) as client:
        resp = await client.get("/readyz")  # no token: probes are open
        assert resp.status == 503
        assert (await resp.json())["reason"] == "the store is not open"
    async with TestClient(TestServer(create_api(settings, open_local_stores=True))) as client:
        resp = await client.get("/readyz")
        assert (resp.status, await resp.json()) == (200, {"status": "ready", "role": "api"})
        assert (await client.get("/healthz")).status == 200


async def _count_messages(broker: str, topic: str) -> int:
    """Messages on ``topic``, counted by reading them (Tansu's ListOffsets answers end
    offsets per batch, not per message, so offsets cannot be subtracted)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=broker, group_id=None)
    await consumer.start()
    try:
        await consumer.topics()  # loads the cluster metadata
        ids = consumer.partitions_for_topic(topic) or set()
        partitions = [TopicPartition(topic, p) for p in sorted(ids)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        count = 0
        while batches := await consumer.getmany(timeout_ms=1500):
            count += sum(len(records) for records in batches.values())
        return count
    finally:
        await consumer.stop()


async def test_producers_process_serves_health_and_scan_metrics(
    broker: str, moto_endpoint: str, unique: str, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    port = _free_port()
    prefix = f"ph{unique}"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "AWS_ENDPOINT_URL": moto_endpoint,
        "CLOUDINV_KAFKA__TOPIC_PREFIX": prefix,
        "CLOUDINV_STORAGE__DATA_DIR": str(tmp_path / "data"),
    }
    log = tmp_path / "producers.log"
    started = time.time()
    proc = _spawn(
        [
            sys.executable,
            "-m",
            "cloudinv",
            "producers",
            "--bootstrap",
            broker,
            "--regions",
            "us-east-1",
            "--types",
            "AWS::S3::Bucket,AWS::IAM::Role,AWS::EC2::VPC,AWS::EC2::SecurityGroup",
            "--interval",
            "3600",
            "--metrics-port",
            str(port),
        ],
        env,
        tmp_path,
        log,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        values: dict[str, float] = {}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            try:
                async with http.get(f"{base}/metrics") as resp:
                    values = _parse(await resp.text())
            except aiohttp.ClientError:
                values = {}
            if values.get("cloudinv_producers_scan_rounds_total", 0) >= 1:
                break
            await asyncio.sleep(0.5)
        else:
            pytest.fail(f"no scan round completed; last metrics {values}\n{log.read_text()}")
        async with http.get(f"{base}/readyz") as resp:
            assert (resp.status, (await resp.json())["status"]) == (200, "ready")
        async with http.get(f"{base}/healthz") as resp:
            assert resp.status == 200
        assert values["cloudinv_producers_ready"] == 1
        assert started <= values["cloudinv_producers_last_scan_timestamp_seconds"] <= time.time()
        assert values["cloudinv_producers_last_scan_duration_seconds"] > 0
        # What the metrics say was published is what the topics hold.
        snapshots = await _count_messages(broker, topic_name(Topic.SNAPSHOTS, prefix))
        manifests = await _count_messages(broker, topic_name(Topic.SCANS, prefix))
        assert snapshots > 0 and manifests > 0
        assert values["cloudinv_producers_snapshots_published_total"] == snapshots
        assert values["cloudinv_producers_manifests_published_total"] == manifests
        assert values["cloudinv_producers_scan_rounds_failed_total"] == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, log.read_text()


async def test_producers_are_not_ready_while_their_scan_rounds_fail(
    broker: str, unique: str, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """A round that fails as a whole (here: no AWS answers, so no account can be
    identified) is retried every round; /readyz says the role is not doing its job, and why."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_aws = f"http://127.0.0.1:{sock.getsockname()[1]}"
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "AWS_ENDPOINT_URL": dead_aws,
        "AWS_MAX_ATTEMPTS": "1",
        "CLOUDINV_KAFKA__TOPIC_PREFIX": f"pf{unique}",
        "CLOUDINV_STORAGE__DATA_DIR": str(tmp_path / "data"),
    }
    log = tmp_path / "producers.log"
    proc = _spawn(
        [
            sys.executable, "-m", "cloudinv", "producers", "--bootstrap", broker,
            "--regions", "us-east-1", "--types", "AWS::EC2::VPC", "--interval", "3600",
            "--metrics-port", str(port),
        ],
        env,
        tmp_path,
        log,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            try:
                async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                    body = await resp.json()
                    if resp.status == 503 and "scan round failed" in body.get("reason", ""):
                        break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.5)
        else:
            pytest.fail(f"/readyz never named the failed round: {body}\n{log.read_text()}")
        async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
            assert resp.status == 200  # alive: the loop retries every round
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_producers_without_a_broker_fail_with_one_clear_line(tmp_path: Path) -> None:
    dead = _free_port()
    result = subprocess.run(
        [sys.executable, "-m", "cloudinv", "producers", "--bootstrap", f"127.0.0.1:{dead}"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO), "CLOUDINV_STORAGE__DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert f"cannot reach Kafka at 127.0.0.1:{dead} (PLAINTEXT)" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("service", ["producers-a", "producers-b", "cloudtrail", "worker", "api"])
def test_compose_healthchecks_probe_each_roles_readyz_port(
    service: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import yaml

    spec = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"][service]
    monkeypatch.chdir(tmp_path)
    for key, value in spec["environment"].items():
        monkeypatch.setenv(key, str(value))
    settings = load_settings(None)
    if service == "api":
        port = int(spec["command"][spec["command"].index("--port") + 1])
    else:
        role = service.split("-")[0]  # producers-a and producers-b are producers
        port = getattr(settings.metrics, f"{role}_port")
    assert port
    if service != "api":
        assert settings.metrics.host == "0.0.0.0"  # reachable by Prometheus in the network
    probe = " ".join(spec["healthcheck"]["test"])
    assert f"http://127.0.0.1:{port}/readyz" in probe


async def test_worker_metrics_show_partitions_lag_and_processed_events(
    broker: str, unique: str, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """An in-process Faust app with the worker's role server: while its agent is held back
    the lag is positive; once released it drains to 0 and every event is counted."""
    import faust

    from cloudinv.runtime.role_server import WorkerRoleServer

    config = StreamConfig(bootstrap=broker, data_dir=tmp_path, app_id=f"lag-{unique}", partitions=2)
    app = create_app(config)
    topic = app.topic(f"lag{unique}.in", value_serializer="raw", partitions=2)
    release = asyncio.Event()

    async def held(stream: faust.StreamT[bytes]) -> None:
        async for _ in stream:
            await release.wait()

    app.agent(topic, name="held")(held)
    service = WorkerRoleServer(app, "127.0.0.1", 0)
    app.add_dependency(service)
    await app.start()
    try:
        base = f"http://127.0.0.1:{service.server.port}"

        async def metrics() -> dict[str, float]:
            async with http.get(f"{base}/metrics") as resp:
                return _parse(await resp.text())

        async def until(check: object, what: str) -> dict[str, float]:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                values = await metrics()
                if check(values):  # type: ignore[operator]
                    return values
                await asyncio.sleep(0.3)
            pytest.fail(f"timed out waiting for {what}: {values}")

        joined = await until(lambda v: v.get("cloudinv_worker_ready") == 1, "the group join")
        name = topic.get_topic_name()
        assert joined[f'cloudinv_worker_assigned_partitions{{topic="{name}"}}'] >= 1
        producer = AIOKafkaProducer(bootstrap_servers=broker)
        await producer.start()
        try:
            await asyncio.gather(*[await producer.send(name, b"e") for _ in range(50)])
        finally:
            await producer.stop()
        await until(lambda v: v["cloudinv_worker_consumer_lag_total"] > 0, "lag while held")
        release.set()
        done = await until(
            lambda v: (
                v["cloudinv_worker_consumer_lag_total"] == 0
                and v.get(f'cloudinv_worker_messages_received_total{{topic="{name}"}}') == 50
            ),
            "the lag to drain",
        )
        assert done["cloudinv_worker_events_processed_total"] >= 50
    finally:
        await app.stop()


async def test_a_role_is_not_ready_while_its_broker_does_not_answer(broker: str) -> None:
    """Every role server's /readyz asks the broker too (BrokerProbe): a closed port is
    reported with the reason, the running broker is ready."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{sock.getsockname()[1]}"
    for bootstrap, expected in ((closed, 503), (broker, 200)):
        probe = Probe(Metrics(), broker=BrokerProbe(KafkaSettings(bootstrap=bootstrap)))
        server = RoleServer("producers", probe)
        port = await server.start("127.0.0.1", 0)
        try:
            assert probe.broker is not None
            await probe.broker.check()
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{port}/readyz") as resp,
            ):
                body = await resp.json()
            assert resp.status == expected, body
            if expected == 503:
                assert body["reason"] == f"the Kafka broker at {closed} does not answer"
        finally:
            await server.stop()
