"""The options of the roles that serve no API (``cloudinv worker``, ``producers``, ``cloudtrail
run``): the Kafka broker (``--bootstrap``) and the port of the role's health and metrics
endpoints (``--metrics-port``, over ``metrics.<role>_port``)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_role_options", "metrics_port_override"]


def add_role_options(parser: argparse.ArgumentParser, port_setting: str) -> None:
    """``--bootstrap`` and ``--metrics-port``, which overrides ``metrics.<port_setting>``."""
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (overrides kafka.bootstrap)")
    parser.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve /healthz, /readyz and /metrics on this port (overrides "
        f"metrics.{port_setting}; 0: off)",
    )


def metrics_port_override(args: argparse.Namespace, port_setting: str) -> dict[str, Any]:
    """The settings override ``--metrics-port`` makes (none without it)."""
    if args.metrics_port is None:
        return {}
    return {"metrics": {port_setting: args.metrics_port}}
