"""``cloudinv producers``: the collectors as a role of their own.

Scans every registered type on schedule and publishes to Kafka. Run one per group of
accounts to scale out (``--role-arn`` / config). Without a configured broker it publishes to
the running instance found through ``<data dir>/demo.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

from cloudinv.cli.role_options import add_role_options, metrics_port_override
from cloudinv.cli.running_demo import adopt_running_demo, unserved_by_running_demo
from cloudinv.core.connection import require_running_instance
from cloudinv.core.kafka import client_kwargs, ensure_topics
from cloudinv.core.logs import configure_logging
from cloudinv.core.settings import load_settings, role_arn_overrides
from cloudinv.producers.publisher import KafkaPublisher
from cloudinv.producers.schedule import ScanScheduler
from cloudinv.runtime.role_server import BrokerProbe, ProducersProbe, RoleServer


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "producers",
        help="scan AWS on a schedule and publish snapshots to Kafka",
        description="Run the collectors on their schedule (scan_interval_s, per-type "
        "scan_type_intervals_s) and publish snapshots and scan manifests to Kafka.",
    )
    parser.add_argument(
        "--role-arn",
        action="append",
        metavar="ARN",
        help="assume this role to reach an account (repeatable); the roles given are the "
        "whole selection, even with aws.organization_role_name set (split an organization "
        "between producers this way, or with aws.include_accounts / exclude_accounts)",
    )
    parser.add_argument("--regions", help="comma-separated regions, or 'all'")
    parser.add_argument(
        "--types",
        metavar="TYPES",
        help="comma-separated resource types to scan (default: every registered type); "
        "split types across producer processes to scale out",
    )
    parser.add_argument(
        "--interval",
        type=int,
        metavar="SECONDS",
        help="seconds between scans (default scan_interval_s, 900)",
    )
    add_role_options(parser, "producers_port")
    parser.set_defaults(handler=run_producers)


PRODUCER_FLAGS = {
    "aws.accounts": "--role-arn",
    "aws.regions": "--regions",
    "scan_interval_s": "--interval",
    "metrics.producers_port": "--metrics-port",
}


def scan_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings ``--role-arn``, ``--regions`` and ``--interval`` replace (``cloudinv
    producers`` and ``cloudinv up``)."""
    overrides: dict[str, Any] = {}
    aws: dict[str, Any] = {}
    if args.role_arn:
        aws.update(role_arn_overrides(args.role_arn))
    if args.regions:
        aws["regions"] = args.regions
    if aws:
        overrides["aws"] = aws
    if args.interval:
        overrides["scan_interval_s"] = args.interval
    return overrides


async def run_producers(args: argparse.Namespace) -> int:
    overrides = scan_overrides(args)
    overrides |= metrics_port_override(args, "producers_port")
    settings = load_settings(args.config, flags=PRODUCER_FLAGS, **overrides)
    if not args.role_arn:
        settings = settings.model_copy(
            update={"aws": adopt_running_demo(settings.aws, settings.data_dir)}
        )
    configure_logging("producers", settings.log_level, settings.log_format)
    bootstrap = args.bootstrap
    if bootstrap is None and settings.kafka.is_embedded:
        bootstrap = require_running_instance(settings.data_dir).kafka_bootstrap
    publisher = KafkaPublisher(
        client_kwargs(settings.kafka, bootstrap), settings.kafka.topic_prefix
    )
    scheduler = ScanScheduler(
        settings.aws,
        publisher,
        interval_s=settings.scan_interval_s,
        type_intervals_s=settings.scan_type_intervals_s,
        types=[t.strip() for t in args.types.split(",") if t.strip()] if args.types else None,
    )
    # Beside a running demo, the types its simulated AWS cannot serve are left out (as
    # scan --once does) instead of failing every round.
    scheduler.leave_out(
        await unserved_by_running_demo(
            settings.aws, settings.data_dir, [scheduler.registry.get(t) for t in scheduler.types]
        )
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    probe = ProducersProbe(scheduler, publisher, broker=BrokerProbe(settings.kafka, bootstrap))
    server: RoleServer | None = None
    if settings.metrics.producers_port:
        # Up before Kafka is reached, so /healthz answers (and /readyz says why not ready)
        # while the producer connects.
        server = RoleServer("producers", probe)
        await server.start(settings.metrics.host, settings.metrics.producers_port)
    try:
        await ensure_topics(settings.kafka, bootstrap)
        await publisher.start()
        probe.connected = True
        try:
            probe.loop_task = asyncio.create_task(scheduler.run(stop), name="scan-scheduler")
            watcher = asyncio.create_task(probe.watch(stop), name="scan-watcher")
            await asyncio.wait([probe.loop_task, watcher], return_when=asyncio.FIRST_COMPLETED)
            stop.set()
            await watcher
            await probe.loop_task
        finally:
            probe.connected = False
            await publisher.stop()
    finally:
        if server is not None:
            await server.stop()
    return 0
