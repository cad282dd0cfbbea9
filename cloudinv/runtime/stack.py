"""Running every stage in one process tree: ``cloudinv demo`` and ``cloudinv up``.

:class:`Runtime` starts, in order, the broker (embedded, or the configured Kafka), the
simulated AWS estate (demo only), the stream worker (a child process), the producers and the
API (in this process), then writes the connection file. Whatever happens — a normal exit,
Ctrl-C, SIGTERM, or one stage failing — it stops everything it started, in reverse order.
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

from aiohttp import web
from pydantic import SecretStr
from rich.console import Console

from cloudinv.api.app import create_app
from cloudinv.api.auth import generate_token
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
from cloudinv.producers.cloudtrail.tailer import tail
from cloudinv.producers.credentials import AwsAccess
from cloudinv.producers.publisher import KafkaPublisher
from cloudinv.producers.reactor import ChangeReactor
from cloudinv.producers.schedule import ScanScheduler
from cloudinv.runtime.embedded import (
    EmbeddedBroker,
    SimulatedAws,
    require_moto,
    resolve_broker_binary,
)
from cloudinv.runtime.processes import ChildProcess, ensure_port_free
from cloudinv.simulator.estate import ESTATE_TYPES, EstateMutator, EstateSpec, seed_estate
from cloudinv.simulator.trail import TRAIL_REGION, EstateTrail

log = logging.getLogger(__name__)

StopCallback = Callable[[], Awaitable[None]]


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
    reactor: Any = None
    _worker: ChildProcess | None = None

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
            accounts=self.accounts,
            regions=self.regions,
            data_dir=str(self.data_dir),
            components=self.components,
        )
        write_connection(self.data_dir, info)
        self._stops.append(("connection file", self._remove_connection))
        return info

    async def _remove_connection(self) -> None:
        remove_connection(self.data_dir, os.getpid())

    async def stop(self) -> None:
        """Stop everything started so far, newest first. Never raises."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        while self._stops:
            name, stop = self._stops.pop()
            try:
                await asyncio.wait_for(stop(), timeout=20)
            except Exception as exc:  # one stage failing to stop must not strand the others
                log.warning("stopping %s failed: %s", name, exc)

    # -- stages -----------------------------------------------------------------------------

    async def _start_embedded_broker(self) -> str:
        broker = EmbeddedBroker(self.data_dir)
        self._stops.append(("broker", broker.stop))
        await broker.start()
        self.kafka_bootstrap = broker.bootstrap
        assert broker.child is not None
        self.components.append(
            RunningComponent(
                name="broker",
                address=broker.bootstrap,
                pid=broker.child.pid,
                log=str(broker.child.log_path),
            )
        )
        return broker.bootstrap

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
        self.components.append(
            RunningComponent(
                name="aws",
                address=aws.endpoint_url,
                pid=aws.child.pid,
                log=str(aws.child.log_path),
            )
        )
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
        env = dict(os.environ)
        env.update(
            CLOUDINV_KAFKA__BOOTSTRAP=self.kafka_bootstrap,
            CLOUDINV_STORAGE__DATA_DIR=str(self.data_dir),
        )
        argv = [sys.executable, "-m", "cloudinv", "worker"]
        child = ChildProcess("stream worker", argv, self.data_dir / "logs" / "worker.log", env)
        self._stops.append(("stream worker", child.stop))
        await child.start()
        await asyncio.sleep(0.5)
        child.raise_if_exited()
        self.components.append(
            RunningComponent(name="worker", pid=child.pid, log=str(child.log_path))
        )
        self._worker = child
        return f"pid {child.pid}"

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
        """The tailer (SQS → CloudTrail topic) and the reactor (write events → re-describe).

        In the demo the estate writes its own trail (``cloudinv.simulator.trail``) to a bucket
        in the log-archive account whose notifications feed the tailer's queue.
        """

        queue_urls = list(self.settings.cloudtrail.queue_urls)
        region = self.settings.cloudtrail.region
        endpoint = self.settings.aws.effective_endpoint()
        if self.options.mode == "demo":
            assert self.aws_endpoint_url is not None
            trail = EstateTrail(self.aws_endpoint_url, self._estate)
            where = await trail.setup()
            self._trail = trail
            self._run_task("demo-trail", trail.run)
            queue_urls, region, endpoint = [where.queue_url], TRAIL_REGION, self.aws_endpoint_url
        if not queue_urls:
            return "no queue configured (cloudtrail.queue_urls)"
        kafka = client_kwargs(self.settings.kafka, self.kafka_bootstrap)
        for url in queue_urls:

            async def run_tailer(stop: asyncio.Event, url: str = url) -> None:
                await tail(
                    url,
                    kafka_client_kwargs=kafka,
                    topic_prefix=self.settings.kafka.topic_prefix,
                    data_dir=self.data_dir,
                    endpoint_url=endpoint,
                    region=region,
                    stop=stop,
                    verify_digests=self.settings.cloudtrail.verify_digests,
                )

            self._run_task(f"tailer {url}", run_tailer)
        detail = f"tailing {len(queue_urls)} queue(s)"
        if self.settings.cloudtrail.react and self.scheduler is not None:
            reactor = ChangeReactor(
                self.scheduler.aws,
                self.scheduler.publisher,
                kafka,
                self.settings.kafka.topic_prefix,
                access=self.scheduler.access,
            )
            self.reactor = reactor
            self._run_task("reactor", reactor.run)
            detail += ", re-describing what write events touch"
        return detail

    def _run_task(self, name: str, body: Callable[[asyncio.Event], Awaitable[None]]) -> None:
        """Run ``body(stop)`` until the runtime stops; a crash is logged, not fatal."""
        stop = asyncio.Event()

        async def run() -> None:
            try:
                await body(stop)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s stopped with an error", name)

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
            # The AWS access the producers scan with (the demo's: its simulated AWS only),
            # for the reports the API makes live (S3 metrics).
            "aws": (self.scheduler.aws, self.scheduler.access) if self.scheduler else None,
        }
        app = create_app(settings, runtime, open_local_stores=True)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.settings.api.host, self.settings.api.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise RuntimeStartError(
                f"the API cannot listen on {self.settings.api.host}:{self.settings.api.port} "
                f"({exc.strerror}); choose another port with --api-port or CLOUDINV_API__PORT"
            ) from None
        self._stops.append(("API", runner.cleanup))
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
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
        if self.reactor is not None:
            r = self.reactor.stats
            out["reactor"] = {
                "events": r.events,
                "rescans": r.rescans,
                "attributed_snapshots": r.attributed,
                "failures": r.failures,
            }
        return out

    async def watch_children(self) -> None:
        """Return when a child stage dies, so the runtime can stop instead of limping on."""
        while True:
            await asyncio.sleep(1.0)
            worker = self._worker
            if worker is not None and not worker.running:
                raise RuntimeStartError(
                    f"the stream worker exited unexpectedly (log: {worker.log_path}): "
                    + (worker.log_tail(1) or "no output")
                )


@contextlib.asynccontextmanager
async def running(settings: Settings, options: RuntimeOptions) -> AsyncIterator[Runtime]:
    runtime = Runtime(settings, options)
    try:
        yield runtime
    finally:
        runtime.console.print("[bold]·[/] stopping …", highlight=False)
        await runtime.stop()
        runtime.console.print("[green]✓[/] stopped; no process left behind", highlight=False)


async def run_until_stopped(settings: Settings, options: RuntimeOptions) -> int:
    """Start everything, print where it runs, wait for Ctrl-C / SIGTERM, stop everything."""
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_requested.set)
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
