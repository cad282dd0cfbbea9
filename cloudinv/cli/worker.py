"""``cloudinv worker``: run the stream agents (change detection, activity, alerts, sinks).

Run more copies to scale out: workers share the topics' partitions through the Kafka
consumer group, and a worker that dies has its partitions and table state taken over.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from cloudinv.cli.role_options import add_role_options, metrics_port_override
from cloudinv.core.errors import ConfigError
from cloudinv.core.logs import limit_reconnect_noise
from cloudinv.core.settings import load_settings
from cloudinv.runtime.role_server import WorkerRoleServer
from cloudinv.streams.app import StreamConfig
from cloudinv.streams.worker import build_worker_app, tune_gc


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "worker",
        help="run the stream processing agents against the configured Kafka",
        description="Run the Faust stream worker. Needs kafka.bootstrap set to a broker "
        "address (the demo sets it for the worker it starts).",
    )
    add_role_options(parser, "worker_port")
    parser.set_defaults(handler=run_worker)


def run_worker(args: argparse.Namespace) -> int:

    overrides: dict[str, Any] = {"kafka": {"bootstrap": args.bootstrap}} if args.bootstrap else {}
    overrides |= metrics_port_override(args, "worker_port")
    settings = load_settings(args.config, **overrides)
    if settings.kafka.is_embedded:
        raise ConfigError(
            "cloudinv worker needs a broker address: set kafka.bootstrap "
            "(CLOUDINV_KAFKA__BOOTSTRAP) or --bootstrap, or use `cloudinv demo`, which starts "
            "an embedded broker"
        )
    config = StreamConfig(
        bootstrap=settings.kafka.bootstrap,
        data_dir=settings.data_dir,
        app_id=settings.kafka.consumer_group,
        topic_prefix=settings.kafka.topic_prefix,
        partitions=settings.kafka.partitions,
        replication_factor=settings.kafka.replication_factor,
        kafka=settings.kafka,
        fetch_max_wait_ms=settings.kafka.fetch_max_wait_ms,
        # Two of the longest scan interval: a scheduled scan may see a change that long after
        # the write event that caused it.
        attribution_window_s=2.0
        * max([settings.scan_interval_s, *settings.scan_type_intervals_s.values()]),
    )
    if args.config:
        # Stages that read their own sections (alerts) load settings themselves: point them
        # at the same file.
        os.environ["CLOUDINV_CONFIG"] = str(args.config)
    app = build_worker_app(config)
    tune_gc()  # the whole process's, once, before the agents start
    if settings.metrics.worker_port:
        app.add_dependency(
            WorkerRoleServer(
                app, settings.metrics.host, settings.metrics.worker_port, kafka=settings.kafka
            )
        )
    # Faust's Worker owns the event loop and signal handling (SIGTERM/SIGINT stop it cleanly).
    from faust import Worker

    worker = Worker(app, loglevel=settings.log_level.lower(), quiet=True)
    # A broker that is away must not flood worker.log with a line per reconnect attempt.
    limit_reconnect_noise()
    worker.execute_from_commandline()
    return 0
