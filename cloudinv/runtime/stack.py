"""Running every stage in one process tree: ``cloudinv demo`` and ``cloudinv up``.

:class:`Runtime` starts, in order, the broker (embedded, or the configured Kafka), the
simulated AWS estate (demo only), the stream worker (a child process), the producers, the
CloudTrail role (``cloudinv cloudtrail run`` as a child process: the tailers and the
re-describe reactor) and the API (in this process), then writes the connection file.

Children are supervised, not torn down with the rest: one that dies is restarted with
backoff and the log says why it died (signal or exit status). A restarted embedded broker is
empty: the topics are created again and the worker restarted; producers reconnect; what the
CloudTrail sources had not seen acknowledged end to end (stored by the worker) they publish
again. The runtime gives up, with a non-zero exit, only when one child fails repeatedly in a
short time. Children get exactly this process's effective settings
(:func:`~cloudinv.runtime.processes.settings_env`). Health is reported as it is: the API's
``/readyz`` and ``/v1/status`` say not ready while the broker does not answer or a child is
down. On Ctrl-C or SIGTERM everything stops in reverse order within a fixed budget
(:data:`STOP_BUDGET_S`), even with the broker gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import SecretStr
from rich.console import Console

from cloudinv.api.app import create_app
from cloudinv.api.auth import generate_token
from cloudinv.core.bounded import finish_within
from cloudinv.core.connection import (
    ConnectionInfo,
    RunningComponent,
    remove_connection,
    started_now,
    write_connection,
)
from cloudinv.core.errors import RuntimeStartError
from cloudinv.core.kafka import client_kwargs, cluster_reachable, ensure_topics
from cloudinv.core.settings import AccountRole, ApiToken, Settings
from cloudinv.producers.credentials import AwsAccess
from cloudinv.producers.publisher import KafkaPublisher
from cloudinv.producers.schedule import ScanScheduler
from cloudinv.runtime.embedded import (
    EmbeddedBroker,
    SimulatedAws,
    require_moto,
    resolve_broker_binary,
)
from cloudinv.runtime.processes import (
    ChildProcess,
    RoleChild,
    Supervised,
    Supervisor,
    ensure_port_free,
    settings_env,
)
from cloudinv.runtime.role_server import BrokerProbe, listen
from cloudinv.simulator.estate import ESTATE_TYPES, EstateMutator, EstateSpec, seed_estate
from cloudinv.simulator.trail import TRAIL_REGION, EstateTrail

log = logging.getLogger(__name__)

StopCallback = Callable[[], Awaitable[None]]

STOP_BUDGET_S = 7.0
"""Ctrl-C to exit, whatever state the broker and children are in."""
BROKER_PROBE_EVERY_S = 1.0


@dataclass
class RuntimeOptions:
    mode: Literal["demo", "up"]
    mutate_interval_s: float = 5.0
    scan_interval_s: float | None = None
    with_worker: bool = True


@dataclass
class Runtime:
    """Starts the stages and remembers how to stop each of them."""

    settings: Settings
    options: RuntimeOptions
    console: Console = field(default_factory=lambda: Console(stderr=True))
    components: list[RunningComponent] = field(default_factory=list)
    _stops: list[tuple[str, StopCallback]] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    api_token: str = ""
    kafka_bootstrap: str = ""
    aws_endpoint_url: str | None = None
    api_url: str = ""
    accounts: list[str] = field(default_factory=list)
    regions: list[str] = field(default_factory=list)
    scheduler: Any = None
    """cloudinv.producers.schedule.ScanScheduler once the producers run."""
    _estate: Any = None
    _trail: Any = None
    _worker: RoleChild | None = None
    _worker_entry: Supervised | None = None
    _broker: EmbeddedBroker | None = None
    _cloudtrail: RoleChild | None = None
    supervisor: Supervisor = field(default_factory=Supervisor)
    info: ConnectionInfo | None = None
    broker_probe: BrokerProbe | None = None
    """Asks the broker for metadata every second: what /readyz reports."""

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir.resolve()

    async def _step(self, what: str, start: Callable[[], Awaitable[str]]) -> None:
        began = time.monotonic()
        self.console.print(f"[bold]·[/] starting {what} …", highlight=False)
        detail = await start()
        self.console.print(
            f"[green]✓[/] {what}: {detail} [dim]({time.monotonic() - began:.1f}s)[/]",
            highlight=False,
        )

    async def start(self) -> ConnectionInfo:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "logs").mkdir(exist_ok=True)
        # Fail fast on a busy API port, before anything else is started.
        if self.settings.api.port:
            ensure_port_free(
                self.settings.api.host,
                self.settings.api.port,
                "the API",
                "--api-port or CLOUDINV_API__PORT",
            )
        if self.options.mode == "demo" or self.settings.kafka.is_embedded:
            resolve_broker_binary()  # fail before starting anything if the extra is missing
        if self.options.mode == "demo":
            require_moto()
            await asyncio.gather(
                self._step("Kafka broker (embedded Tansu)", self._start_embedded_broker),
                self._step("simulated AWS (moto)", self._start_simulated_aws),
            )
            await self._step("simulated estate", self._seed_estate)
        else:
            if self.settings.kafka.is_embedded:
                await self._step("Kafka broker (embedded Tansu)", self._start_embedded_broker)
            else:
                await self._step("Kafka connection", self._check_kafka)
            self.aws_endpoint_url = self.settings.aws.effective_endpoint()
            self.accounts = [a.account_id for a in self.settings.aws.accounts]
            regions = self.settings.aws.regions
            self.regions = list(regions) if isinstance(regions, list) else ["all"]
        if self.options.with_worker:
            await self._step("stream worker", self._start_worker)
        await self._step("producers", self._start_producers)
        await self._step("CloudTrail", self._start_cloudtrail)
        await self._step("API", self._start_api)
        if self.options.mode == "demo":
            await self._step("estate changes", self._start_mutator)
        info = ConnectionInfo(
            mode=self.options.mode,
            pid=os.getpid(),
            started_at=started_now(),
            api_url=self.api_url,
            api_token=self.api_token,
            kafka_bootstrap=self.kafka_bootstrap,
            topic_prefix=self.settings.kafka.topic_prefix,
            aws_endpoint_url=self.aws_endpoint_url,
            aws_role_arns=list(self._estate.role_arns) if self._estate is not None else [],
            accounts=self.accounts,
            regions=self.regions,
            data_dir=str(self.data_dir),
            components=self.components,
        )
        write_connection(self.data_dir, info)
        self.info = info
        self._stops.append(("connection file", self._remove_connection))
        return info

    async def _remove_connection(self) -> None:
        remove_connection(self.data_dir, os.getpid())

    async def stop(self, budget_s: float = STOP_BUDGET_S) -> None:
        """Stop everything started so far, newest first, within ``budget_s`` (children
        left then are killed). Never raises."""
        began = time.monotonic()
        deadline = began + budget_s
        self.supervisor.stopping = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=max(min(deadline - time.monotonic(), 2.0), 0.1))
        self._tasks.clear()
        log.info("stopping: background tasks ended in %.2fs", time.monotonic() - began)
        while self._stops:
            name, stop = self._stops.pop()
            stage_began = time.monotonic()
            # Each stage gets a share of what is left; the last ones (the broker) a minimum.
            timeout = max(min(deadline - time.monotonic() - 1.0, 4.0), 0.2)
            stopped = await finish_within(stop(), timeout)
            if stopped is None or stopped.cancelled():
                # What it held is published again by its source.
                log.warning("stopping %s took more than %.1fs; moved on", name, timeout)
            elif (exc := stopped.exception()) is not None:
                # One stage failing to stop must not strand the others.
                log.warning("stopping %s failed: %s", name, exc)
            log.info("stopping: %s ended in %.2fs", name, time.monotonic() - stage_began)
        for child in self._children():
            if child.running:
                await child.kill()
        log.info("stopped in %.2fs", time.monotonic() - began)

    def _children(self) -> list[ChildProcess]:
        children = [role.process for role in (self._worker, self._cloudtrail) if role is not None]
        if self._broker is not None:
            children.append(self._broker.child)
        return [c for c in children if c is not None]

    # -- stages -----------------------------------------------------------------------------

    async def _start_embedded_broker(self) -> str:
        broker = EmbeddedBroker(self.data_dir)
        self._broker = broker
        self._stops.append(("broker", self._stop_broker))
        await broker.start()
        self.kafka_bootstrap = broker.bootstrap
        assert broker.child is not None
        self._add_child("broker", broker.bootstrap, broker.child)
        self.supervisor.watch(
            "the embedded broker",
            lambda: self._broker.child if self._broker else None,
            self._restart_broker,
        )
        return broker.bootstrap

    async def _stop_broker(self) -> None:
        if self._broker is not None:
            await self._broker.stop()

    async def _restart_broker(self) -> None:
        """A new broker on the same port (clients reconnect to the address they know), the
        topics again, and a new worker: the old one's group and internal topics are gone.

        The old worker stops *before* the new broker listens. It remembers offsets of the
        dead broker's partitions; let it reach the new broker and it commits them there,
        past events it never read. The new worker would then skip those events, and a
        source waiting for them to be stored would let go of them: lost. What the old
        worker had not committed, its sources publish again."""
        assert self._broker is not None
        entry = self._worker_entry
        async with self.supervisor.replacing(entry) if entry else contextlib.nullcontext():
            if self._worker is not None:
                await self._worker.stop()
            broker = EmbeddedBroker(self.data_dir, port=self._broker.port)
            await broker.start()
            self._broker = broker
            assert broker.child is not None
            self._set_pid("broker", broker.child.pid)
            await ensure_topics(self.settings.kafka, self.kafka_bootstrap)
            if self._worker is not None:
                await self._worker.spawn()

    def _add_child(self, name: str, address: str | None, child: ChildProcess) -> None:
        """A started child, in /v1/status and the connection file."""
        self.components.append(
            RunningComponent(name=name, address=address, pid=child.pid, log=str(child.log_path))
        )

    def _set_pid(self, name: str, pid: int | None) -> None:
        """A restarted child's new pid, in /v1/status and the connection file."""
        for index, component in enumerate(self.components):
            if component.name == name:
                self.components[index] = component.model_copy(update={"pid": pid})
        if self.info is not None:
            self.info = self.info.model_copy(update={"components": list(self.components)})
            write_connection(self.data_dir, self.info)

    def effective_settings(self, settings: Settings) -> Settings:
        """``settings`` with what this runtime chose over them: the AWS the producers scan
        (the demo's simulated accounts and regions) and how often."""
        scheduler = self.scheduler
        if scheduler is None:
            return settings
        return settings.model_copy(
            update={"aws": scheduler.aws, "scan_interval_s": scheduler.interval_s}
        )

    def child_settings(self) -> Settings:
        """The settings every child gets: this process's, with the broker it really uses."""
        kafka = self.settings.kafka.model_copy(update={"bootstrap": self.kafka_bootstrap})
        storage = self.settings.storage.model_copy(update={"data_dir": self.data_dir})
        return self.settings.model_copy(update={"kafka": kafka, "storage": storage})

    def health(self) -> list[str]:
        """Why the pipeline is not ready now (empty when it is)."""
        reasons = list(self.supervisor.down())
        if self.broker_probe is not None and self.broker_probe.problem:
            reasons.append(self.broker_probe.problem)
        return reasons

    async def _check_kafka(self) -> str:
        servers = ",".join(self.settings.kafka.servers())
        # Over the configured security (TLS, SASL, MSK IAM), as every other client connects.
        if not await cluster_reachable(self.settings.kafka, timeout=10.0):
            raise RuntimeStartError(
                f"Kafka at {servers} did not answer a Metadata request within 10s: check "
                "kafka.bootstrap (CLOUDINV_KAFKA__BOOTSTRAP) and that the cluster is reachable"
            )
        self.kafka_bootstrap = servers
        self.components.append(RunningComponent(name="kafka", address=servers))
        return servers

    async def _start_simulated_aws(self) -> str:
        aws = SimulatedAws(self.data_dir)
        self._stops.append(("simulated AWS", aws.stop))
        await aws.start()
        self.aws_endpoint_url = aws.endpoint_url
        assert aws.child is not None
        self._add_child("aws", aws.endpoint_url, aws.child)
        return aws.endpoint_url

    async def _seed_estate(self) -> str:

        assert self.aws_endpoint_url is not None
        spec = EstateSpec()
        self._estate = await seed_estate(self.aws_endpoint_url, spec)
        self.accounts = list(spec.accounts)
        self.regions = list(spec.regions)
        return f"{len(spec.accounts)} accounts x {len(spec.regions)} regions"

    async def _start_mutator(self) -> str:

        assert self.aws_endpoint_url is not None
        mutator = EstateMutator(self.aws_endpoint_url, self._estate)
        stop = asyncio.Event()
        trail = self._trail

        async def run() -> None:
            try:
                await mutator.run(
                    self.options.mutate_interval_s,
                    stop,
                    on_change=trail.on_change if trail is not None else None,
                )
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the simulated estate stopped changing")

        self._tasks.append(asyncio.create_task(run(), name="estate-mutator"))
        return f"a change every {self.options.mutate_interval_s:g}s"

    async def _start_worker(self) -> str:
        worker = RoleChild(
            "stream worker",
            [sys.executable, "-m", "cloudinv", "worker"],
            self.data_dir / "logs" / "worker.log",
            lambda: settings_env(self.child_settings()),
        )
        self._worker = worker
        self._worker_entry = await self._start_role("worker", None, worker, settle_s=0.5)
        return f"pid {worker.pid}"

    async def _start_role(
        self,
        key: str,
        address: str | None,
        role: RoleChild,
        *,
        settle_s: float = 0.0,
    ) -> Supervised:
        """Start ``role``'s first process, stopped with the runtime, shown as ``key`` in
        /v1/status and the connection file, and restarted by the supervisor when it dies
        (each new pid shown in turn). With ``settle_s``, a child that exits within that time
        fails the start instead."""
        self._stops.append((role.name, role.stop))
        role.started = lambda pid: self._set_pid(key, pid)
        child = await role.spawn()
        if settle_s:
            await asyncio.sleep(settle_s)
            child.raise_if_exited()
        self._add_child(key, address, child)
        return self.supervisor.watch(f"the {role.name}", lambda: role.process, role.spawn)

    async def _start_producers(self) -> str:
        from aiobotocore.session import get_session

        await ensure_topics(self.settings.kafka, self.kafka_bootstrap)
        aws = self.settings.aws
        access: AwsAccess | None = None
        if self.options.mode == "demo":
            aws = aws.model_copy(
                update={
                    "accounts": [AccountRole(role_arn=arn) for arn in self._estate.role_arns],
                    "regions": self.regions,
                    "endpoint_url": self.aws_endpoint_url,
                }
            )
            # The demo only ever talks to its simulated AWS: never sign with real credentials.
            session = get_session()
            session.set_credentials("testing", "testing")
            access = AwsAccess.from_settings(aws, base_session=session)
        publisher = KafkaPublisher(
            client_kwargs(self.settings.kafka, self.kafka_bootstrap),
            self.settings.kafka.topic_prefix,
        )
        await publisher.start()
        self._stops.append(("publisher", publisher.stop))
        interval = self.options.scan_interval_s or self.settings.scan_interval_s
        types: list[str] | None = None
        if self.options.mode == "demo":
            types = list(ESTATE_TYPES)
        scheduler = ScanScheduler(
            aws,
            publisher,
            interval_s=interval,
            type_intervals_s=self.settings.scan_type_intervals_s,
            access=access,
            types=types,
        )
        self.scheduler = scheduler
        stop = asyncio.Event()

        async def run() -> None:
            await scheduler.run(stop)

        self._tasks.append(asyncio.create_task(run(), name="scan-scheduler"))
        return f"{len(scheduler.types)} resource types, every {interval:g}s"

    async def _start_cloudtrail(self) -> str:
        """The CloudTrail role (``cloudinv cloudtrail run``: the tailer of every queue and the
        re-describe reactor) as a supervised child, as it runs on a host of its own.

        In the demo the estate writes its own trail (``cloudinv.simulator.trail``) to a bucket
        in the log-archive account whose notifications feed the tailer's queue.
        """

        cloudtrail = self.settings.cloudtrail
        if self.options.mode == "demo":
            assert self.aws_endpoint_url is not None
            trail = EstateTrail(self.aws_endpoint_url, self._estate)
            where = await trail.setup()
            self._trail = trail
            self._run_task("demo-trail", trail.run)
            cloudtrail = cloudtrail.model_copy(
                update={"queue_urls": [where.queue_url], "region": TRAIL_REGION}
            )
        if not cloudtrail.queue_urls:
            return "no queue configured (cloudtrail.queue_urls)"
        settings = self.child_settings().model_copy(update={"cloudtrail": cloudtrail})
        if self.scheduler is not None:
            # The reactor re-describes with the producers' AWS (the demo's simulated accounts).
            settings = settings.model_copy(update={"aws": self.scheduler.aws})
        argv = [sys.executable, "-m", "cloudinv", "cloudtrail", "run"]
        argv += ["--bootstrap", self.kafka_bootstrap]
        env = settings_env(settings)
        role = RoleChild(
            "CloudTrail role", argv, self.data_dir / "logs" / "cloudtrail.log", lambda: env
        )
        self._cloudtrail = role
        await self._start_role("cloudtrail", ", ".join(cloudtrail.queue_urls), role)
        detail = f"tailing {len(cloudtrail.queue_urls)} queue(s), acknowledged when stored"
        if cloudtrail.react:
            detail += ", re-describing what write events touch"
        return f"{detail} (pid {role.pid})"

    def _run_task(self, name: str, body: Callable[[asyncio.Event], Awaitable[None]]) -> None:
        """Run ``body(stop)`` until the runtime stops; a crash is logged and the body run
        again after a backoff (1 s doubling to 30 s)."""
        stop = asyncio.Event()

        async def run() -> None:
            delay = 1.0
            while not stop.is_set():
                began = time.monotonic()
                try:
                    await body(stop)
                    return
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("%s stopped with an error; starting it again in %gs", name, delay)
                if time.monotonic() - began > 60:
                    delay = 1.0
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, 30.0)

        async def request_stop() -> None:
            stop.set()

        self._stops.append((name, request_stop))
        self._tasks.append(asyncio.create_task(run(), name=name))

    async def _start_api(self) -> str:

        token, digest = generate_token()
        self.api_token = token
        api_settings = self.settings.api.model_copy(
            update={
                "tokens": [
                    *self.settings.api.tokens,
                    ApiToken(sha256=SecretStr(digest), name=f"{self.options.mode}-generated"),
                ]
            }
        )
        settings = self.settings.model_copy(update={"api": api_settings})
        runtime = {
            "mode": self.options.mode,
            "components": self.components,
            "stats": self.stats,
            "health": self.health,
            # The AWS access the producers scan with (the demo's: its simulated AWS only),
            # for the reports the API makes live (S3 metrics).
            "aws": (self.scheduler.aws, self.scheduler.access) if self.scheduler else None,
            # What /v1/config shows: these settings with what the runtime chose over them.
            "settings": lambda: self.effective_settings(settings),
        }
        app = create_app(settings, runtime, open_local_stores=True)
        host, requested = self.settings.api.host, self.settings.api.port
        runner, port = await listen(
            app,
            host,
            requested,
            lambda exc: RuntimeStartError(
                f"the API cannot listen on {host}:{requested} ({exc.strerror}); choose another "
                "port with --api-port or CLOUDINV_API__PORT"
            ),
        )
        self._stops.append(("API", runner.cleanup))
        self.api_url = f"http://{self.settings.api.host}:{port}"
        self.components.append(RunningComponent(name="api", address=self.api_url, pid=os.getpid()))
        return self.api_url

    def stats(self) -> dict[str, Any]:
        """Pipeline counters for /v1/status."""
        out: dict[str, Any] = {}
        if self.scheduler is not None:
            stats = self.scheduler.stats
            out["scans"] = {
                "rounds": stats.rounds,
                "failed_rounds": stats.failed_rounds,
                "snapshots_published": stats.snapshots,
                "failed_scopes": stats.failed_scopes,
                "last_round_s": round(stats.last.seconds, 2) if stats.last else None,
            }
        return out

    async def watch_children(self) -> None:
        """Supervise the children (and probe the broker) until cancelled; raise
        RuntimeStartError when a child keeps failing."""
        self.supervisor.note = lambda text: self.console.print(
            f"! {text}", highlight=False, markup=False
        )
        self.broker_probe = BrokerProbe(
            self.settings.kafka, self.kafka_bootstrap, every_s=BROKER_PROBE_EVERY_S
        )
        self.broker_probe.start()
        try:
            await self.supervisor.run()
        finally:
            await self.broker_probe.stop()


@contextlib.asynccontextmanager
async def running(settings: Settings, options: RuntimeOptions) -> AsyncIterator[Runtime]:
    runtime = Runtime(settings, options)
    try:
        yield runtime
    finally:
        runtime.console.print("[bold]·[/] stopping …", highlight=False)
        log.info("stopping")
        await runtime.stop()
        runtime.console.print("[green]✓[/] stopped; no process left behind", highlight=False)


async def run_until_stopped(settings: Settings, options: RuntimeOptions) -> int:
    """Start everything, print where it runs, wait for Ctrl-C / SIGTERM, stop everything."""
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()

    def requested(sig: signal.Signals) -> None:
        log.info("%s: stop requested", sig.name)
        stop_requested.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, requested, sig)
    try:
        async with running(settings, options) as runtime:
            starting = asyncio.create_task(runtime.start())
            waiter = asyncio.create_task(stop_requested.wait())
            done, _ = await asyncio.wait({starting, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if starting not in done:
                starting.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await starting
                return 130
            waiter.cancel()
            info = starting.result()
            print_connection(info, runtime.console)
            watcher = asyncio.create_task(runtime.watch_children())
            stopper = asyncio.create_task(stop_requested.wait())
            done, _ = await asyncio.wait({watcher, stopper}, return_when=asyncio.FIRST_COMPLETED)
            for task in (watcher, stopper):
                task.cancel()
            if watcher in done and watcher.exception() is not None:
                raise watcher.exception()  # type: ignore[misc]
            return 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def print_connection(info: ConnectionInfo, console: Console) -> None:
    # stdout, unwrapped: what a user reads and a script may grep.
    out = Console(soft_wrap=True)
    out.print()
    out.print(f"[bold green]cloudinv {info.mode} is running[/]", highlight=False)
    out.print(f"  API        {info.api_url}   (health: {info.api_url}/healthz)", highlight=False)
    out.print(f"  API token  {info.api_token}", highlight=False)
    out.print(f"  web UI     {info.api_url}/#token={info.api_token}", highlight=False)
    out.print(
        f"  try        curl -H 'Authorization: Bearer {info.api_token}' {info.api_url}/v1/status",
        highlight=False,
    )
    out.print(
        f"  Kafka      {info.kafka_bootstrap}  (topics {info.topic_prefix}.*)", highlight=False
    )
    if info.aws_endpoint_url:
        out.print(f"  AWS        {info.aws_endpoint_url}", highlight=False)
    out.print(f"  accounts   {', '.join(info.accounts) or '(local credentials)'}", highlight=False)
    out.print(f"  regions    {', '.join(info.regions)}", highlight=False)
    out.print(
        f"  data       {info.data_dir}  (connection file: {info.data_dir}/demo.json)",
        highlight=False,
    )
    out.print("  stop       Ctrl-C", highlight=False)
    out.print()
