"""``cloudinv scan --once --out FILE``: one scan, snapshots to a file, no broker.

Scans every declared type (or those named with ``--type``) in the configured accounts and
regions (or those given with ``--role-arn``, ``--account`` and ``--regions``), writes each
snapshot as it arrives (JSON lines or CSV), shows a progress bar over scopes on stderr and
ends with a summary table. The exit status is 1 if any scope failed or was partial.
AWS endpoints come from ``aws.endpoint_url`` or the standard ``AWS_ENDPOINT_URL``.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import orjson
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cloudinv.catalog.registry import (
    Registry,
    UnknownResourceType,
    default_registry,
    excluded_types,
)
from cloudinv.catalog.spec import ResourceSpec
from cloudinv.cli.running_demo import adopt_running_demo, unserved_by_running_demo
from cloudinv.core.errors import ConfigError
from cloudinv.core.models import ResourceSnapshot, ScanManifest
from cloudinv.core.settings import AwsSettings, describe_validation_error, load_settings
from cloudinv.producers.credentials import AwsAccess
from cloudinv.producers.engine import ScanOptions, scan_types, select_types, unserved_of
from cloudinv.producers.tally import ScanTally

OUTPUT_SUFFIXES = (".jsonl", ".csv")
WRITE_BATCH = 500
CSV_COLUMNS = (
    "account_id",
    "region",
    "resource_type",
    "resource_id",
    "arn",
    "name",
    "tags",
    "configuration",
    "config_hash",
    "captured_at",
    "scan_id",
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "scan",
        help="collect the inventory of every declared resource type",
        description="Scan AWS accounts x regions x resource types. With --once, write the "
        "snapshots to a file and exit; continuous scanning to Kafka runs in `cloudinv up`.",
    )
    parser.add_argument("--once", action="store_true", help="scan once and exit (no broker)")
    parser.add_argument(
        "--out",
        metavar="FILE",
        type=Path,
        help="write snapshots to FILE: .jsonl (one ResourceSnapshot per line) or .csv",
    )
    parser.add_argument(
        "--manifests",
        metavar="FILE",
        type=Path,
        help="also write the scan manifests (one per account/region/type) as JSON lines",
    )
    add_aws_scope_options(parser, regions_help="regions to scan; replaces aws.regions")
    parser.add_argument(
        "--type",
        dest="types",
        action="append",
        metavar="TYPE",
        help="CloudFormation type to scan, e.g. AWS::EC2::Instance (repeatable; default all)",
    )
    parser.add_argument(
        "--account",
        dest="accounts",
        action="append",
        metavar="ID",
        help="scan only this account id (repeatable)",
    )
    parser.add_argument(
        "--curated",
        action="store_true",
        help="scan only the curated (hand-declared) types; sets aws.types = curated",
    )
    parser.add_argument(
        "--list-types",
        action="store_true",
        help="list the types the settings select and exit (with --all: every registered type "
        "and every CloudFormation type left out, with why)",
    )
    parser.add_argument(
        "--all", action="store_true", help="with --list-types: also the types left out"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run_scan)


async def run_scan(args: argparse.Namespace) -> int:
    registry = default_registry()
    aws = aws_settings(args)
    if args.curated:
        aws = aws.model_copy(update={"types": "curated"})
    try:
        specs = select_types(registry, aws, args.types)
    except UnknownResourceType as exc:
        raise ConfigError(
            f"--type, aws.include_types or aws.exclude_types: {exc} "
            "(see `cloudinv scan --list-types --all`)"
        ) from None
    if args.list_types:
        print_types(registry, specs, show_all=args.all)
        return 0
    if not args.once:
        raise ConfigError(
            "continuous scanning publishes to Kafka and runs inside `cloudinv up`; "
            "for a one-shot scan to a file use `cloudinv scan --once --out FILE.jsonl`"
        )
    out = _output_path(args.out)

    if args.accounts and aws.accounts and not aws.organization_role_name:
        # Known before any AWS call: a usage error (exit 2), not a failed scan.
        configured = {role.account_id for role in aws.accounts}
        missing = sorted(set(args.accounts) - configured)
        if missing:
            raise ConfigError(
                f"--account {', '.join(missing)}: not among the configured accounts "
                f"({', '.join(sorted(configured))}); add its role with --role-arn"
            )
    access = AwsAccess.from_settings(aws)
    targets = await access.discover_accounts(aws, only=args.accounts)
    stderr = Console(stderr=True)
    progress = Progress(
        TextColumn("scanning"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("scopes"),
        TextColumn("{task.fields[resources]} resources"),
        TimeElapsedColumn(),
        console=stderr,
        disable=args.no_progress,
        transient=False,
    )
    task = progress.add_task("scan", total=0, resources=0)

    def planned(count: int) -> None:
        progress.update(task, total=(progress.tasks[0].total or 0) + count)

    unserved = await unserved_by_running_demo(aws, load_settings(args.config).data_dir, specs)
    options = ScanOptions(
        max_concurrency=aws.max_concurrency, on_scopes_planned=planned, unserved=unserved
    )
    skipped = unserved_of(specs, options)
    tally = ScanTally()
    started = time.monotonic()
    with progress:
        async with SnapshotFile(out) as snapshots, ManifestFile(args.manifests) as manifests:
            async for item in scan_types(access, targets, aws.regions, specs, options=options):
                tally.add(item)
                if isinstance(item, ResourceSnapshot):
                    await snapshots.add(item)
                    progress.update(task, resources=tally.resources)
                else:
                    await manifests.add(item)
                    progress.advance(task)
    print_summary(tally, out, time.monotonic() - started, Console(width=_summary_width()), skipped)
    return 0 if tally.all_complete else 1


def print_types(registry: Registry, selected: list[ResourceSpec], *, show_all: bool) -> None:
    """One line per type: name, service, global/regional, origin; with ``show_all`` the
    unselected registered types and the CloudFormation types left out, with why."""
    chosen = {spec.cfn_type for spec in selected}
    for spec in registry:
        if spec.cfn_type not in chosen and not show_all:
            continue
        scope = "global" if spec.global_service else "regional"
        origin = "derived" if spec.derived else "curated"
        state = "" if spec.cfn_type in chosen else "\tnot selected"
        print(f"{spec.cfn_type}\t{spec.service}\t{scope}\t{origin}{state}")
    if show_all:
        for cfn_type, why in sorted(excluded_types().items()):
            print(f"{cfn_type}\t-\t-\tleft out\t{why}")


def _output_path(out: Path | None) -> Path:
    if out is None:
        raise ConfigError("--once needs --out FILE (.jsonl or .csv)")
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise ConfigError(f"--out {out}: expected a file name ending in .jsonl or .csv")
    if not out.parent.is_dir():
        raise ConfigError(f"--out {out}: directory {out.parent} does not exist")
    return out


def add_aws_scope_options(parser: argparse.ArgumentParser, *, regions_help: str) -> None:
    """The command line's accounts and regions (``--role-arn``, ``--external-id``,
    ``--regions``), read by :func:`aws_settings`."""
    parser.add_argument(
        "--role-arn",
        dest="role_arns",
        action="append",
        metavar="ARN",
        help="role to assume, one per account (repeatable); replaces aws.accounts",
    )
    parser.add_argument(
        "--external-id", metavar="ID", help="external id for the roles given with --role-arn"
    )
    parser.add_argument("--regions", metavar="R1,R2|all", help=regions_help)


def aws_settings(args: argparse.Namespace) -> AwsSettings:
    """The configured AWS settings with the command line's accounts and regions
    (:func:`add_aws_scope_options`) over them."""
    settings = load_settings(args.config)
    aws = settings.aws
    if not args.role_arns:
        aws = adopt_running_demo(aws, settings.data_dir)
    data: dict[str, Any] = aws.model_dump()
    if args.role_arns:
        data["accounts"] = [
            {"role_arn": arn, "external_id": args.external_id} for arn in args.role_arns
        ]
        data["organization_role_name"] = None
    if args.regions:
        data["regions"] = args.regions
    try:
        return AwsSettings.model_validate(data)
    except ValidationError as exc:
        flags = {"accounts": "--role-arn", "regions": "--regions"}
        raise ConfigError(
            describe_validation_error(exc, flags=flags).replace("invalid config ", "invalid aws.")
        ) from None


def _summary_width() -> int | None:
    # Wide enough for error messages when not printing to a terminal (logs, CI, tests).
    return None if sys.stdout.isatty() else 200


class SnapshotFile:
    """Snapshots written in batches from a thread; the file appears complete or not at all."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._partial = path.with_name(path.name + ".partial")
        self._batch: list[ResourceSnapshot] = []
        self._file: IO[str] | None = None
        self._csv: Any = None
        self.count = 0

    async def __aenter__(self) -> SnapshotFile:
        await asyncio.to_thread(self._open)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        try:
            if exc_type is None:
                await self.flush()
        finally:
            await asyncio.to_thread(self._close, exc_type is None)

    async def add(self, snapshot: ResourceSnapshot) -> None:
        self._batch.append(snapshot)
        if len(self._batch) >= WRITE_BATCH:
            await self.flush()

    async def flush(self) -> None:
        batch, self._batch = self._batch, []
        if batch:
            await asyncio.to_thread(self._write, batch)
            self.count += len(batch)

    def _open(self) -> None:
        self._file = self._partial.open("w", encoding="utf-8", newline="")
        if self.path.suffix.lower() == ".csv":
            self._csv = csv.writer(self._file)
            self._csv.writerow(CSV_COLUMNS)

    def _write(self, batch: list[ResourceSnapshot]) -> None:
        assert self._file is not None
        if self._csv is None:
            self._file.writelines(s.model_dump_json() + "\n" for s in batch)
            return
        for snapshot in batch:
            self._csv.writerow(_csv_row(snapshot))

    def _close(self, keep: bool) -> None:
        if self._file is not None:
            self._file.close()
        if keep:
            os.replace(self._partial, self.path)
        else:
            self._partial.unlink(missing_ok=True)


def _csv_row(snapshot: ResourceSnapshot) -> list[str]:
    return [
        snapshot.account_id,
        snapshot.region,
        snapshot.resource_type,
        snapshot.resource_id,
        snapshot.arn,
        snapshot.name or "",
        orjson.dumps(snapshot.tags, option=orjson.OPT_SORT_KEYS).decode(),
        orjson.dumps(snapshot.configuration, option=orjson.OPT_SORT_KEYS).decode(),
        snapshot.config_hash,
        snapshot.captured_at.isoformat(),
        snapshot.scan_id,
    ]


class ManifestFile:
    """Manifests as JSON lines, written from a thread; does nothing without a path."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lines: list[str] = []

    async def __aenter__(self) -> ManifestFile:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if self.path is not None and exc_type is None:
            await asyncio.to_thread(self.path.write_text, "".join(self._lines), "utf-8")

    async def add(self, manifest: ScanManifest) -> None:
        if self.path is not None:
            # Manifests are few (one per scope) and small next to snapshots.
            self._lines.append(manifest.model_dump_json() + "\n")


def failure_rows(unfinished: list[ScanManifest]) -> list[tuple[str, ...]]:
    """One row per (account, status, error): an account whose role was denied, or whose
    endpoint was dead, is one line however many scopes it had."""
    groups: dict[tuple[str, str, str, str], list[ScanManifest]] = {}
    for manifest in unfinished:
        error = manifest.errors[0] if manifest.errors else None
        key = (
            manifest.account_id,
            manifest.status,
            error.code if error else "",
            " ".join((error.message if error else "").split())[:160],
        )
        groups.setdefault(key, []).append(manifest)
    rows: list[tuple[str, ...]] = []
    for (account, status, code, message), manifests in groups.items():
        regions = sorted({m.region for m in manifests})
        types = sorted({m.resource_type for m in manifests})
        rows.append(
            (
                account,
                ", ".join(regions) if len(regions) <= 3 else f"{len(regions)} regions",
                types[0] if len(types) == 1 else f"{len(types)} types",
                status if len(manifests) == 1 else f"{status} ({len(manifests)} scopes)",
                code,
                message,
            )
        )
    return rows


def print_summary(
    tally: ScanTally,
    out: Path,
    seconds: float,
    console: Console,
    skipped: Mapping[str, str] | None = None,
) -> None:
    types = Table(title="Scan summary", title_justify="left")
    types.add_column("resource type")
    types.add_column("resources", justify="right")
    types.add_column("scopes ok", justify="right")
    types.add_column("partial", justify="right")
    types.add_column("failed", justify="right")
    for cfn_type in sorted(tally.by_type):
        t = tally.by_type[cfn_type]
        types.add_row(
            cfn_type,
            str(t.resources),
            str(t.complete),
            str(t.partial) if t.partial else "",
            str(t.failed) if t.failed else "",
        )
    console.print(types)
    if tally.unfinished:
        failures = Table(title="Scopes not complete", title_justify="left")
        for column in ("account", "region", "resource type", "status", "code", "message"):
            failures.add_column(column, overflow="fold")
        for row in failure_rows(tally.unfinished):
            failures.add_row(*row)
        console.print(failures)
    if skipped:
        table = Table(
            title="Types skipped: the simulated AWS cannot serve them", title_justify="left"
        )
        for column in ("resource type", "why"):
            table.add_column(column, overflow="fold")
        for cfn_type, why in sorted(skipped.items()):
            table.add_row(cfn_type, why)
        console.print(table)
    failed = tally.statuses["failed"]
    partial = tally.statuses["partial"]
    console.print(
        f"{tally.resources} resources from {tally.scopes} scopes "
        f"({tally.statuses['complete']} complete, {partial} partial, {failed} failed"
        + (f"; {len(skipped)} types skipped" if skipped else "")
        + ") "
        f"written to {out} in {seconds:.1f}s"
    )
