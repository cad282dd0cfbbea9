"""``cloudinv demo`` and ``cloudinv up``: every stage in one command.

``demo`` needs no AWS account and no Kafka: it starts an embedded broker and a simulated
estate that changes on its own. ``up`` runs the same stages against the configured AWS and
Kafka. Both write ``<data dir>/demo.json`` and stop everything on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from cloudinv.cli.producers import scan_overrides
from cloudinv.core.logs import configure_logging
from cloudinv.core.settings import Settings, load_settings
from cloudinv.runtime.stack import RuntimeOptions, run_until_stopped


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", help="where the store, logs and demo.json go (default .cloudinv)"
    )
    parser.add_argument("--api-host", help="API bind address (default 127.0.0.1)")
    parser.add_argument("--api-port", type=int, help="API port (default 8080; 0 picks a free port)")
    parser.add_argument(
        "--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log verbosity"
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = subparsers.add_parser(
        "demo",
        help="run everything on this machine against a simulated AWS estate (no account needed)",
        description="Start an embedded Kafka broker, a simulated AWS estate of 3 accounts x 3 "
        "regions that changes on its own, the stream worker, the producers and the API. "
        "Prints the API URL and a token; Ctrl-C stops everything.",
    )
    _common(demo)
    demo.add_argument(
        "--mutate-interval",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="how often the simulated estate changes (default 5)",
    )
    demo.add_argument(
        "--scan-interval",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how often the collectors scan the simulated estate (default 30)",
    )
    demo.set_defaults(handler=run_demo)

    up = subparsers.add_parser(
        "up",
        help="run every stage against the configured AWS accounts and Kafka",
        description="Run the producers, stream worker and API against real AWS and Kafka as "
        "configured (cloudinv.toml / CLOUDINV_*). Writes the same connection file as demo.",
    )
    _common(up)
    up.add_argument(
        "--role-arn",
        action="append",
        default=None,
        metavar="ARN",
        help="assume this role to reach an account (repeatable; the whole selection, "
        "Organizations discovery off)",
    )
    up.add_argument("--regions", help="comma-separated regions, or 'all'")
    up.add_argument(
        "--interval",
        type=int,
        metavar="SECONDS",
        help="seconds between scheduled scans (default 900)",
    )
    up.set_defaults(handler=run_up)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    storage: dict[str, Any] = {}
    api: dict[str, Any] = {}
    if args.data_dir:
        storage["data_dir"] = args.data_dir
    if args.api_host:
        api["host"] = args.api_host
    if args.api_port is not None:
        api["port"] = args.api_port
    if args.log_level:
        overrides["log_level"] = args.log_level
    return overrides | ({"storage": storage} if storage else {}) | ({"api": api} if api else {})


def _merge(settings_dump: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(settings_dump.get(key), dict):
            settings_dump[key] = _merge(dict(settings_dump[key]), value)
        else:
            settings_dump[key] = value
    return settings_dump


def _configure_logging(settings: Settings, role: str) -> None:
    """Everything to ``<data dir>/logs/cloudinv.log``; warnings also to stderr."""
    configure_logging(
        role,
        settings.log_level,
        settings.log_format,
        log_file=Path(settings.data_dir) / "logs" / "cloudinv.log",
        console_level="WARNING",
    )


async def run_demo(args: argparse.Namespace) -> int:
    # The demo only ever talks to its simulated AWS: whatever credentials the environment
    # holds are replaced by moto's dummy ones for this process and its children.
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        os.environ.pop(name, None)
    os.environ["AWS_ACCESS_KEY_ID"] = "testing"
    os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
    base = load_settings(args.config)
    settings = load_settings(args.config, **_merge(_sections(base), _overrides(args)))
    _configure_logging(settings, "demo")
    return await run_until_stopped(
        settings,
        RuntimeOptions(
            mode="demo",
            mutate_interval_s=args.mutate_interval,
            scan_interval_s=args.scan_interval,
        ),
    )


async def run_up(args: argparse.Namespace) -> int:
    overrides = _overrides(args) | scan_overrides(args)
    base = load_settings(args.config)
    settings = load_settings(args.config, **_merge(_sections(base), overrides))
    _configure_logging(settings, "up")
    return await run_until_stopped(settings, RuntimeOptions(mode="up"))


def _sections(settings: Any) -> dict[str, Any]:
    """Only the sections flags touch, as plain data, so init values merge with file/env."""
    dump = settings.model_dump(mode="python")
    return {k: dump[k] for k in ("storage", "api", "aws") if k in dump}
