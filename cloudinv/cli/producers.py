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

from cloudinv.connection import require_running_instance
from cloudinv.kafka import client_kwargs, ensure_topics
from cloudinv.logs import configure_logging
from cloudinv.settings import load_settings


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
        help="assume this role to reach an account (repeatable)",
    )
    parser.add_argument("--regions", help="comma-separated regions, or 'all'")
    parser.add_argument(
        "--interval",
        type=int,
        metavar="SECONDS",
        help="seconds between scans (default scan_interval_s, 900)",
    )
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (overrides kafka.bootstrap)")
    parser.set_defaults(handler=run_producers)


async def run_producers(args: argparse.Namespace) -> int:
    from producers.publisher import KafkaPublisher
    from producers.schedule import ScanScheduler

    overrides: dict[str, Any] = {}
    aws: dict[str, Any] = {}
    if args.role_arn:
        aws["accounts"] = [{"role_arn": arn} for arn in args.role_arn]
    if args.regions:
        aws["regions"] = args.regions
    if aws:
        overrides["aws"] = aws
    if args.interval:
        overrides["scan_interval_s"] = args.interval
    settings = load_settings(args.config, **overrides)
    configure_logging("producers", settings.log_level, settings.log_format)
    bootstrap = args.bootstrap
    if bootstrap is None and settings.kafka.is_embedded:
        bootstrap = require_running_instance(settings.data_dir).kafka_bootstrap
    await ensure_topics(settings.kafka, bootstrap)
    publisher = KafkaPublisher(
        client_kwargs(settings.kafka, bootstrap), settings.kafka.topic_prefix
    )
    await publisher.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        scheduler = ScanScheduler(
            settings.aws,
            publisher,
            interval_s=settings.scan_interval_s,
            type_intervals_s=settings.scan_type_intervals_s,
        )
        await scheduler.run(stop)
    finally:
        await publisher.stop()
    return 0
