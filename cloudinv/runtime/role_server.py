"""Health, readiness and Prometheus metrics for the roles that serve no API: ``cloudinv
worker``, ``cloudinv producers`` and ``cloudinv cloudtrail run``.

A small aiohttp server on its own port (``[metrics] worker_port`` / ``producers_port`` /
``cloudtrail_port``):

``GET /healthz``
    Liveness: 200 while the process runs and its work loop has not crashed, else 503.
``GET /readyz``
    Readiness: 200 once the role does its job (the worker has joined the consumer group and
    is not rebalancing; the producers' Kafka producer is connected; the CloudTrail role's
    Kafka clients are started), else 503 with the reason.
``GET /metrics``
    The role's :class:`~cloudinv.core.metrics.Metrics` registry in the Prometheus text format,
    refreshed from the live objects (Faust's monitor, the scheduler's counters) per scrape.

The API role serves the same three paths on its own port (``api/app.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from mode import Service

from cloudinv.core import kafka_holes
from cloudinv.core.kafka import cluster_reachable
from cloudinv.core.metrics import Counter, Metrics
from cloudinv.core.settings import KafkaSettings

if TYPE_CHECKING:
    import faust

    from cloudinv.producers.publisher import KafkaPublisher
    from cloudinv.producers.schedule import ScanScheduler
    from cloudinv.runtime.cloudtrail_role import CloudTrailRole

__all__ = [
    "BrokerProbe",
    "CloudTrailProbe",
    "Probe",
    "ProducersProbe",
    "RoleServer",
    "WorkerProbe",
    "WorkerRoleServer",
    "listen",
]

log = logging.getLogger(__name__)

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Check = Callable[[], str | None]
"""Returns ``None`` when the condition holds, else the reason it does not."""


class BrokerProbe:
    """Asks the Kafka cluster for metadata every ``every_s`` (over the configured security):
    :attr:`problem` says why it does not answer, ``None`` while it does. A change is logged
    once, not every probe: a broker that is away must not flood the log."""

    def __init__(
        self, kafka: KafkaSettings, bootstrap: str | None = None, *, every_s: float = 1.0
    ) -> None:
        self.kafka = kafka
        self.bootstrap = bootstrap or kafka.bootstrap
        self.every_s = every_s
        self.problem: str | None = None
        self._task: asyncio.Task[None] | None = None

    async def check(self) -> str | None:
        ok = await cluster_reachable(self.kafka, self.bootstrap, timeout=2.0)
        problem = None if ok else f"the Kafka broker at {self.bootstrap} does not answer"
        if problem != self.problem:
            if problem:
                log.warning("%s", problem)
            else:
                log.warning("the Kafka broker at %s answers again", self.bootstrap)
            self.problem = problem
        return problem

    async def run(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self.every_s)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="broker-probe")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class Probe:
    """What a role server asks its role: liveness, readiness, and a metrics refresh. With a
    :class:`BrokerProbe`, the role is not ready while the broker does not answer."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        live: Check | None = None,
        ready: Check | None = None,
        collect: Callable[[], None] | None = None,
        broker: BrokerProbe | None = None,
    ) -> None:
        self.metrics = metrics
        self.live = live or (lambda: None)
        self.ready = ready or (lambda: None)
        self.collect = collect or (lambda: None)
        self.broker = broker

    def not_ready(self) -> str | None:
        """Why the role is not ready (liveness, the broker, then the role's own check)."""
        return self.live() or (self.broker.problem if self.broker else None) or self.ready()


async def listen(
    app: web.Application, host: str, port: int, error: Callable[[OSError], Exception]
) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on ``host:port`` (port 0: any free port): its runner, to clean up, and
    the bound port. A port that cannot be bound raises ``error(exc)``, nothing left open."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise error(exc) from None
    return runner, int(runner.addresses[0][1])


class RoleServer:
    """Serves ``/healthz``, ``/readyz`` and ``/metrics`` for one role."""

    def __init__(self, role: str, probe: Probe) -> None:
        self.role = role
        self.probe = probe
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self.started_at = time.time()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (port 0: any free port); returns the bound port."""
        if self.probe.broker is not None:
            self.probe.broker.start()
        self._runner, self.port = await listen(
            self.app(),
            host,
            port,
            lambda exc: OSError(
                f"cannot serve the {self.role} health and metrics endpoints on {host}:{port}: "
                f"{exc.strerror or exc}"
            ),
        )
        log.info("%s: /healthz, /readyz and /metrics on %s:%d", self.role, host, self.port)
        return self.port

    async def stop(self) -> None:
        if self.probe.broker is not None:
            await self.probe.broker.stop()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def _status(self, reason: str | None, ok: str, bad: str) -> web.Response:
        body: dict[str, Any] = {"status": ok if reason is None else bad, "role": self.role}
        if reason is not None:
            body["reason"] = reason
        return web.json_response(body, status=200 if reason is None else 503)

    async def _healthz(self, request: web.Request) -> web.Response:
        return self._status(self.probe.live(), "ok", "failing")

    async def _readyz(self, request: web.Request) -> web.Response:
        return self._status(self.probe.not_ready(), "ready", "not ready")

    async def _metrics(self, request: web.Request) -> web.Response:
        try:
            self.probe.collect()
        except Exception:  # a scrape must still answer with what is known
            log.exception("%s: refreshing metrics failed", self.role)
        uptime = self.probe.metrics.gauge(
            "cloudinv_process_uptime_seconds", "Seconds since the role started"
        )
        uptime.set(time.time() - self.started_at, role=self.role)
        return web.Response(
            body=self.probe.metrics.render().encode(),
            headers={"Content-Type": PROMETHEUS_CONTENT_TYPE},
        )


def _set_counter(counter: Counter, value: float, **labels: str) -> None:
    """Set a counter read from a live total (it only grows while the process lives)."""
    counter.values[tuple(sorted(labels.items()))] = float(value)


class _HoleCounters:
    """The process's Kafka fetch holes (:mod:`cloudinv.core.kafka_holes`), for a role whose
    consumers read topics: how often a fetch stopped at a batch not yet readable, and how
    many holes were read past after waiting (each also logged as a warning)."""

    def __init__(self, metrics: Metrics) -> None:
        self.held = metrics.counter(
            "cloudinv_kafka_fetch_holes_held_total",
            "Fetches stopped at a batch the broker had not made readable yet (asked again)",
        )
        self.read_past = metrics.counter(
            "cloudinv_kafka_fetch_holes_read_past_total",
            "Holes in a topic still there after the wait, read past (see the log)",
        )

    def collect(self) -> None:
        _set_counter(self.held, kafka_holes.stats.held)
        _set_counter(self.read_past, kafka_holes.stats.read_past)


# -- the worker -------------------------------------------------------------------------------


class WorkerProbe(Probe):
    """The Faust worker: joined and not rebalancing is ready; assigned partitions, consumer
    lag (end offset minus committed offset, per partition), messages and events processed
    come from Faust's monitor and consumer."""

    def __init__(
        self, app: faust.App, metrics: Metrics | None = None, broker: BrokerProbe | None = None
    ) -> None:
        super().__init__(metrics or Metrics(), broker=broker)
        self.app = app
        self.assignments = 0
        self.live = self._live
        self.ready = self._ready
        self.collect = self._collect
        app.on_partitions_assigned.connect(self._on_assigned)
        m = self.metrics
        self._assigned = m.gauge(
            "cloudinv_worker_assigned_partitions", "Partitions assigned to this worker, by topic"
        )
        self._lag = m.gauge(
            "cloudinv_worker_consumer_lag",
            "Messages not yet committed: end offset minus committed offset, by partition",
        )
        self._lag_total = m.gauge(
            "cloudinv_worker_consumer_lag_total", "Sum of consumer lag over assigned partitions"
        )
        self._received = m.counter(
            "cloudinv_worker_messages_received_total", "Messages received, by topic"
        )
        self._events = m.counter(
            "cloudinv_worker_events_processed_total", "Events processed by the agents"
        )
        self._rebalances = m.counter(
            "cloudinv_worker_rebalances_total", "Partition assignments received"
        )
        self._up = m.gauge("cloudinv_worker_ready", "1 when the worker is ready, else 0")
        self._holes = _HoleCounters(m)

    async def _on_assigned(self, sender: Any, assigned: Any = None, **kwargs: Any) -> None:
        self.assignments += 1

    def _live(self) -> str | None:
        if self.app.crashed:
            return f"the Faust app crashed: {self.app.crash_reason!r}"
        return None

    def _ready(self) -> str | None:
        if self.assignments == 0:
            return "not yet joined the consumer group"
        if self.app.rebalancing:
            return "rebalancing"
        return None

    def assignment(self) -> set[Any]:
        """The partitions this worker consumes now (empty before it joined)."""
        if self.assignments == 0:
            return set()
        try:
            return set(self.app.consumer.assignment())
        except Exception:  # consumer not started or stopping
            return set()

    def _collect(self) -> None:
        assigned = self.assignment()
        by_topic: dict[str, int] = {}
        for tp in assigned:
            by_topic[tp.topic] = by_topic.get(tp.topic, 0) + 1
        self._assigned.values.clear()
        for topic, count in by_topic.items():
            self._assigned.set(count, topic=topic)
        monitor = self.app.monitor
        self._lag.values.clear()
        total = 0
        for tp in assigned:
            end = monitor.tp_end_offsets.get(tp)
            if end is None:
                continue
            committed = monitor.tp_committed_offsets.get(tp) or 0
            lag = max(end - committed, 0)
            total += lag
            self._lag.set(lag, topic=tp.topic, partition=str(tp.partition))
        self._lag_total.set(total)
        for topic, count in monitor.messages_received_by_topic.items():
            _set_counter(self._received, count, topic=topic)
        _set_counter(self._events, monitor.events_total)
        _set_counter(self._rebalances, self.assignments)
        self._holes.collect()
        self._up.set(1.0 if self.not_ready() is None else 0.0)


class WorkerRoleServer(Service):  # type: ignore[misc]  # mode is untyped
    """Runs the worker's :class:`RoleServer` with the Faust app: add it with
    ``app.add_dependency``; it starts and stops with the app."""

    def __init__(
        self, app: faust.App, host: str, port: int, kafka: KafkaSettings | None = None
    ) -> None:
        super().__init__()
        self.probe = WorkerProbe(app, broker=BrokerProbe(kafka) if kafka is not None else None)
        self.server = RoleServer("worker", self.probe)
        self.host = host
        self.requested_port = port

    async def on_start(self) -> None:
        await self.server.start(self.host, self.requested_port)

    async def on_stop(self) -> None:
        await self.server.stop()


# -- the producers ----------------------------------------------------------------------------


class ProducersProbe(Probe):
    """Scans, failed scopes, snapshots published, last scan time. Ready once the Kafka
    producer is connected (:attr:`connected`) and unless the last scan round failed as a
    whole; live while the schedule loop runs."""

    def __init__(
        self,
        scheduler: ScanScheduler,
        publisher: KafkaPublisher,
        metrics: Metrics | None = None,
        broker: BrokerProbe | None = None,
    ) -> None:
        super().__init__(metrics or Metrics(), broker=broker)
        self.scheduler = scheduler
        self.publisher = publisher
        self.connected = False
        self.loop_task: asyncio.Task[Any] | None = None
        self.last_round_at = 0.0
        self._rounds_seen = 0
        self.live = self._live
        self.ready = self._ready
        self.collect = self._collect
        m = self.metrics
        self._rounds = m.counter("cloudinv_producers_scan_rounds_total", "Scan rounds completed")
        self._failed_rounds = m.counter(
            "cloudinv_producers_scan_rounds_failed_total", "Scan rounds that failed as a whole"
        )
        self._failed_scopes = m.counter(
            "cloudinv_producers_failed_scopes_total",
            "Scopes (account, region, type) whose scan failed or was partial",
        )
        self._snapshots = m.counter(
            "cloudinv_producers_snapshots_published_total", "Snapshots published to Kafka"
        )
        self._manifests = m.counter(
            "cloudinv_producers_manifests_published_total", "Scan manifests published to Kafka"
        )
        self._retries = m.counter("cloudinv_producers_publish_retries_total", "Kafka send retries")
        self._last_scan = m.gauge(
            "cloudinv_producers_last_scan_timestamp_seconds",
            "Unix time the last scan round completed (0: none yet)",
        )
        self._last_duration = m.gauge(
            "cloudinv_producers_last_scan_duration_seconds", "Duration of the last scan round"
        )
        self._up = m.gauge("cloudinv_producers_ready", "1 when the producers are ready, else 0")

    def note_rounds(self) -> None:
        """Record the time of a round completed since the last call (see :meth:`watch`)."""
        if self.scheduler.stats.rounds != self._rounds_seen:
            self._rounds_seen = self.scheduler.stats.rounds
            self.last_round_at = time.time()

    async def watch(self, stop: asyncio.Event, every_s: float = 0.5) -> None:
        """Time-stamp completed rounds until ``stop`` (the scheduler keeps no wall time)."""
        while not stop.is_set():
            self.note_rounds()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)

    def _live(self) -> str | None:
        task = self.loop_task
        if task is not None and task.done() and not task.cancelled():
            return f"the scan loop stopped: {task.exception()!r}"
        return None

    def _ready(self) -> str | None:
        if not self.connected:
            return "the Kafka producer is not connected"
        if self.scheduler.stats.last_error is not None:
            # Live (the loop retries each round) but not doing its job: say why.
            return f"the last scan round failed: {self.scheduler.stats.last_error}"
        return None

    def _collect(self) -> None:
        self.note_rounds()
        stats = self.scheduler.stats
        _set_counter(self._rounds, stats.rounds)
        _set_counter(self._failed_rounds, stats.failed_rounds)
        _set_counter(self._failed_scopes, stats.failed_scopes)
        _set_counter(self._snapshots, self.publisher.stats.snapshots)
        _set_counter(self._manifests, self.publisher.stats.manifests)
        _set_counter(self._retries, self.publisher.stats.retries)
        self._last_scan.set(self.last_round_at)
        self._last_duration.set(stats.last.seconds if stats.last else 0.0)
        self._up.set(1.0 if self.not_ready() is None else 0.0)


# -- the CloudTrail role ------------------------------------------------------------------------


class CloudTrailProbe(Probe):
    """The tailers' and the reactor's counters. Ready once their Kafka clients are started
    and the reactor has partitions; live while none of them stopped with an error."""

    def __init__(
        self,
        role: CloudTrailRole,
        metrics: Metrics | None = None,
        broker: BrokerProbe | None = None,
    ) -> None:
        super().__init__(metrics or Metrics(), broker=broker)
        self.role = role
        self.live = role.failed
        self.ready = self._ready
        self.collect = self._collect
        m = self.metrics
        self._tailer = {
            name: m.counter(f"cloudinv_cloudtrail_{name}_total", text)
            for name, text in (
                ("messages", "SQS messages received"),
                ("deleted", "SQS messages deleted once their events were published"),
                ("files", "CloudTrail log files read"),
                ("events", "CloudTrail events published"),
                ("rejected_files", "Log files or messages rejected (see cloudtrail rejected)"),
                ("retried", "Messages left in the queue after a transient failure"),
            )
        }
        self._reactor = {
            name: m.counter(f"cloudinv_reactor_{name}_total", text)
            for name, text in (
                ("events", "CloudTrail events read by the re-describe reactor"),
                ("rescans", "Scopes re-described because a write event named them"),
                ("attributed", "Snapshots published with the event that changed them"),
                ("failures", "Re-describes that failed"),
            )
        }
        self._up = m.gauge("cloudinv_cloudtrail_ready", "1 when the role is ready, else 0")
        self._holes = _HoleCounters(m)

    def _ready(self) -> str | None:
        if not self.role.connected:
            return "the Kafka clients are not started"
        reactor = self.role.reactor
        if reactor is not None and not reactor.assignment():
            return "the reactor has not joined its consumer group yet"
        return None

    def _collect(self) -> None:
        for name, counter in self._tailer.items():
            total = sum(getattr(t.stats, name) for t in self.role.tailers)
            _set_counter(counter, total)
        reactor = self.role.reactor
        if reactor is not None:
            for name, counter in self._reactor.items():
                _set_counter(counter, getattr(reactor.stats, name))
        self._holes.collect()
        self._up.set(1.0 if self.not_ready() is None else 0.0)
