"""``cloudinv baseline pin|show``: record the approved state of the inventory, and list the drift
from it.

``pin`` records the current version of every resource of a scope (``--type``, ``--account``,
``--region``; each left out means all) in the local data directory as the approved state,
replacing that scope's previous baseline. ``show`` lists every resource of the pinned scopes
whose configuration differs from its baseline (with the changed paths, or the whole JSON
Patch with ``--patch``), and the resources created or deleted since. The same list is
``GET /v1/drift``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from cloudinv.core.errors import ConfigError
from cloudinv.core.settings import load_settings

if TYPE_CHECKING:
    from cloudinv.sinks.alerts_store import AlertsBackend
    from cloudinv.sinks.store import InventoryStore


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "baseline",
        help="pin the current inventory as the approved state, or show drift from it",
        description=(__doc__ or "").replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="baseline_command", metavar="COMMAND", required=True)
    pin = commands.add_parser("pin", help="record the current versions as the approved state")
    show = commands.add_parser("show", help="list the resources that drifted from the baseline")
    for sub in (pin, show):
        sub.add_argument("--type", dest="resource_type", help="CloudFormation type")
        sub.add_argument("--account", help="12-digit account id")
        sub.add_argument("--data-dir", type=Path, help="data directory (default storage.data_dir)")
    pin.add_argument("--region", help="AWS region, or 'global'")
    show.add_argument("--patch", action="store_true", help="print each JSON Patch in full")
    show.add_argument("--json", action="store_true", help="one JSON object per line")
    pin.set_defaults(handler=run_pin)
    show.set_defaults(handler=run_show)


def _type_name(value: str | None) -> str | None:
    if value is None:
        return None
    from cloudinv.catalog.registry import UnknownResourceType, default_registry

    try:
        return default_registry().get(value).cfn_type
    except UnknownResourceType as exc:
        raise ConfigError(f"--type: {exc}") from None


def _account(value: str | None) -> str | None:
    if value is not None and not re.fullmatch(r"\d{12}", value):
        raise ConfigError(f"--account {value!r}: expected a 12-digit account id")
    return value


def _stores(args: argparse.Namespace) -> tuple[InventoryStore, AlertsBackend]:
    """The deployment's inventory and alerts stores (unopened): the configured DynamoDB
    tables with ``dynamodb`` in storage.targets, else the data directory's SQLite files."""
    from cloudinv.sinks.factory import alerts_store, inventory_store
    from cloudinv.sinks.sqlite_store import STORE_FILE

    settings = load_settings(args.config)
    data_dir = Path(args.data_dir or settings.data_dir)
    if "dynamodb" not in settings.storage.targets and not (data_dir / STORE_FILE).is_file():
        raise ConfigError(
            f"no inventory in {data_dir} (expected {data_dir / STORE_FILE}): run the worker "
            "or the demo first, or pass --data-dir"
        )
    return inventory_store(settings, data_dir), alerts_store(settings, data_dir)


async def run_pin(args: argparse.Namespace) -> int:
    from cloudinv.sinks.alerts_store import BaselineScope, pin_baseline

    scope = BaselineScope(_type_name(args.resource_type), _account(args.account), args.region)
    inventory, alerts = _stores(args)
    await inventory.open()
    await alerts.open()
    try:
        pin = await pin_baseline(alerts, inventory, scope)
    finally:
        await alerts.close()
        await inventory.close()
    print(
        f"pinned {pin.count} resource(s) of {scope.label()} as the baseline "
        f"at {pin.pinned_at.isoformat()}"
    )
    return 0


async def run_show(args: argparse.Namespace) -> int:
    from cloudinv.sinks.alerts_store import compute_drift

    resource_type = _type_name(args.resource_type)
    account = _account(args.account)
    inventory, alerts = _stores(args)
    await inventory.open()
    await alerts.open()
    try:
        pins = await alerts.pins()
        items = await compute_drift(
            alerts,
            inventory,
            resource_type=resource_type,
            account_ids=None if account is None else [account],
        )
    finally:
        await alerts.close()
        await inventory.close()
    if not pins:
        print("no baseline pinned yet: run `cloudinv baseline pin` first", file=sys.stderr)
        return 1
    for item in items:
        if args.json:
            print(item.model_dump_json(by_alias=True))
            continue
        label = f" ({item.name})" if item.name else ""
        print(f"{item.drift:<8}  {item.key}{label}")
        if args.patch:
            for op in item.patch:
                print(
                    "          " + orjson.dumps(op.model_dump(by_alias=True, mode="json")).decode()
                )
        elif item.drift == "modified":
            print("          changed: " + ", ".join(item.changed_paths[:20]))
    scopes = "; ".join(p.scope.label() for p in pins)
    print(f"{len(items)} resource(s) drifted from the baseline ({scopes})", file=sys.stderr)
    return 0
