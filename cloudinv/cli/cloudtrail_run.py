"""``cloudinv cloudtrail run``: the CloudTrail role on its own — the tailer of every
``cloudtrail.queue_urls`` queue and the re-describe reactor (``--only tail`` / ``--only
react`` for one of them). Scale it by running more copies; ``/healthz``, ``/readyz`` and
``/metrics`` on ``metrics.cloudtrail_port`` (``--metrics-port``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from typing import Any

from cloudinv.cli.role_options import add_role_options, metrics_port_override
from cloudinv.core.collector import tune_gc
from cloudinv.core.connection import require_running_instance
from cloudinv.core.errors import ConfigError
from cloudinv.core.logs import configure_logging
from cloudinv.core.settings import load_settings

__all__ = ["register_run"]


def register_run(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser(
        "run",
        help="the CloudTrail role: tail the configured queues and re-describe what write "
        "events touch, until stopped",
        description="Run the CloudTrail tailer (every cloudtrail.queue_urls queue) and the "
        "re-describe reactor (write events -> attributed snapshots) as a role of their own. "
        "Run more copies to scale: they share the queues and the reactor's consumer group.",
    )
    run.add_argument(
        "--queue-url",
        action="append",
        metavar="URL",
        help="SQS queue to tail (repeatable; default: cloudtrail.queue_urls)",
    )
    run.add_argument(
        "--only",
        choices=["tail", "react"],
        help="run only the tailer or only the reactor (default: both)",
    )
    add_role_options(run, "cloudtrail_port")
    run.set_defaults(handler=run_role)


async def run_role(args: argparse.Namespace) -> int:
    # Loaded here, not with the parser: every `cloudinv cloudtrail` command (a backfill of
    # local files among them) builds this parser, and the role loads the AWS SDK and more.
    from cloudinv.runtime.cloudtrail_role import CloudTrailRole
    from cloudinv.runtime.role_server import BrokerProbe, CloudTrailProbe, RoleServer

    tune_gc()  # a long-running process, as the worker: once, after the imports
    overrides: dict[str, Any] = {}
    if args.queue_url:
        overrides["cloudtrail"] = {"queue_urls": args.queue_url}
    overrides |= metrics_port_override(args, "cloudtrail_port")
    settings = load_settings(args.config, **overrides)
    configure_logging("cloudtrail", settings.log_level, settings.log_format)
    tail = args.only in (None, "tail")
    # cloudtrail.react = false turns the reactor off unless it is asked for by name.
    react = args.only == "react" or (args.only is None and settings.cloudtrail.react)
    if tail and not settings.cloudtrail.queue_urls:
        raise ConfigError(
            "no queue to tail: set cloudtrail.queue_urls (CLOUDINV_CLOUDTRAIL__QUEUE_URLS) or "
            "--queue-url, or run only the reactor with --only react"
        )
    bootstrap = args.bootstrap
    if bootstrap is None and settings.kafka.is_embedded:
        bootstrap = require_running_instance(settings.data_dir).kafka_bootstrap
    elif bootstrap is None:
        bootstrap = settings.kafka.bootstrap
    role = CloudTrailRole(
        settings,
        bootstrap,
        list(settings.cloudtrail.queue_urls) if tail else [],
        tail=tail,
        react=react,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    server: RoleServer | None = None
    if settings.metrics.cloudtrail_port:
        # Not ready while the broker does not answer, as the producers and workers.
        probe = CloudTrailProbe(role, broker=BrokerProbe(settings.kafka, bootstrap))
        server = RoleServer("cloudtrail", probe)
        await server.start(settings.metrics.host, settings.metrics.cloudtrail_port)
    try:
        await role.run(stop)
    finally:
        if server is not None:
            await server.stop()
    return 0
