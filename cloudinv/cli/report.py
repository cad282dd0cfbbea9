"""``cloudinv report snapshots|s3-metrics``: the reports of the tools cloudinv replaces.

``snapshots`` lists every EBS snapshot, RDS DB and cluster snapshot and EFS recovery point
of the accounts and regions (``--role-arn``, ``--account``, ``--regions`` as for ``scan``),
then a summary by service, source and age bucket with per-service and overall totals.
``s3-metrics`` lists every bucket with its object count and bytes in each storage class for
a month (``--month YYYY-MM``, default the last complete month), read from CloudWatch in the
bucket's own region; ``--regions`` there keeps only the buckets located in those regions.

Both print rich tables on stdout (a progress bar on stderr) and, with ``--csv FILE``, write
the rows to FILE; ``snapshots`` writes its summary to FILE with ``-summary`` before the
extension. Scopes that could not be collected are listed under "Not collected" and make
the exit status 1; 0 means the report is complete. AWS endpoints come from
``aws.endpoint_url`` or the standard ``AWS_ENDPOINT_URL``.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import sys
from collections.abc import AsyncGenerator, Iterable, Sequence
from contextlib import aclosing
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cloudinv.cli.scan import add_aws_scope_options, aws_settings
from cloudinv.core.errors import ConfigError
from cloudinv.core.models import ResourceSnapshot, ScanManifest, utcnow
from cloudinv.producers.credentials import AwsAccess
from cloudinv.producers.engine import ScanItem, ScanOptions
from cloudinv.producers.reports import ReportGap, format_cell, gaps_from_manifests
from cloudinv.producers.reports.s3_metrics import (
    S3_COLUMNS,
    SIZE_COLUMNS,
    ReportMonth,
    S3MetricsReport,
    bucket_region,
    build_s3_metrics_report,
    collect_bucket_metrics,
    s3_cells,
    scan_buckets,
)
from cloudinv.producers.reports.snapshots import (
    DETAIL_COLUMNS,
    SUMMARY_COLUMNS,
    SnapshotReport,
    build_snapshot_report,
    detail_cells,
    scan_snapshot_sources,
    summary_cells,
)

_GIB = 1024**3
REPORT_WIDTH = 400


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "report",
        help="snapshot inventory and monthly S3 metrics reports",
        description="Reports over the accounts and regions cloudinv inventories.",
    )
    reports = parser.add_subparsers(dest="report", metavar="REPORT", required=True)

    snapshots = reports.add_parser(
        "snapshots",
        help="every EBS, RDS (DB and cluster) snapshot and EFS recovery point, summarized",
        description="List every EBS snapshot (owned by the account), RDS DB and cluster "
        "snapshot (manual and automated) and EFS recovery point (AWS Backup), with a "
        "summary by service, source and age (7, 30, 90, 180, 365, 730 days, older).",
    )
    _add_scope_options(snapshots)
    snapshots.add_argument(
        "--csv",
        metavar="FILE",
        type=Path,
        help="also write the rows to FILE (.csv) and the summary to FILE-summary.csv",
    )
    snapshots.set_defaults(handler=run_snapshots)

    metrics = reports.add_parser(
        "s3-metrics",
        help="object count and size of every bucket, per storage class, for a month",
        description="For every bucket: NumberOfObjects and BucketSizeBytes of every storage "
        "class from CloudWatch, asked in the bucket's own region; the value is the last "
        "daily datapoint in the month.",
    )
    _add_scope_options(metrics, regions_help="keep only buckets located in these regions")
    metrics.add_argument(
        "--month", metavar="YYYY-MM", help="the month to report (default: the last complete one)"
    )
    metrics.add_argument("--csv", metavar="FILE", type=Path, help="also write the rows to FILE")
    metrics.set_defaults(handler=run_s3_metrics)


def _add_scope_options(
    parser: argparse.ArgumentParser,
    *,
    regions_help: str = "regions to report; replaces aws.regions",
) -> None:
    """The account and region options of ``cloudinv scan``, and ``--account``."""
    add_aws_scope_options(parser, regions_help=regions_help)
    parser.add_argument(
        "--account",
        dest="accounts",
        action="append",
        metavar="ID",
        help="report only this account id (repeatable)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


# -- snapshots -------------------------------------------------------------------------------


async def run_snapshots(args: argparse.Namespace) -> int:
    out = _csv_path(args.csv)
    aws = aws_settings(args)
    access = AwsAccess.from_settings(aws)
    targets = await access.discover_accounts(aws, only=args.accounts)
    snapshots: list[ResourceSnapshot] = []
    manifests: list[ScanManifest] = []
    with _ScopeProgress(args.no_progress) as progress:
        options = ScanOptions(
            max_concurrency=aws.max_concurrency, on_scopes_planned=progress.planned
        )
        items = scan_snapshot_sources(access, targets, aws.regions, options=options)
        await _gather(items, snapshots, manifests, progress)
    report = build_snapshot_report(snapshots, utcnow(), manifests)
    if out is not None:
        summary_out = out.with_name(f"{out.stem}-summary{out.suffix}")
        await asyncio.to_thread(
            _write_csv, out, DETAIL_COLUMNS, (detail_cells(r) for r in report.rows)
        )
        await asyncio.to_thread(_write_csv, summary_out, SUMMARY_COLUMNS, summary_cells(report))
    console = Console(width=_report_width())
    print_snapshot_report(report, console)
    if out is not None:
        console.print(f"wrote {out} and {summary_out}")
    return 0 if report.complete else 1


def print_snapshot_report(report: SnapshotReport, console: Console) -> None:
    detail = _table("Snapshots", DETAIL_COLUMNS, numeric={"Size (GB)", "Age (days)"})
    for row in report.rows:
        detail.add_row(*detail_cells(row))
    console.print(detail)
    summary = _table(
        "Summary by service, source and age",
        SUMMARY_COLUMNS[:-1],  # the ids are in the detail table and the CSV
        numeric={"Snapshot Count", "Total Size (GB)"},
    )
    for cells in summary_cells(report):
        summary.add_row(*cells[:-1], end_section=cells[0] == "service total")
    console.print(summary)
    _print_gaps(report.gaps, console)
    console.print(
        f"{report.total.count} snapshots, {format_cell(report.total.total_gb)} GB "
        f"(ages counted from {format_cell(report.generated_at)})"
    )


# -- s3-metrics ------------------------------------------------------------------------------


async def run_s3_metrics(args: argparse.Namespace) -> int:
    out = _csv_path(args.csv)
    now = utcnow()
    month = _month(args.month, now)
    aws = aws_settings(args)
    # Buckets are global: only regions named on the command line filter them. The
    # configured aws.regions (one region by default) must not hide buckets elsewhere.
    wanted = _explicit_regions(args.regions)
    access = AwsAccess.from_settings(aws)
    targets = await access.discover_accounts(aws, only=args.accounts)
    buckets: list[ResourceSnapshot] = []
    manifests: list[ScanManifest] = []
    with _ScopeProgress(args.no_progress) as progress:
        options = ScanOptions(
            max_concurrency=aws.max_concurrency, on_scopes_planned=progress.planned
        )
        await _gather(scan_buckets(access, targets, options=options), buckets, manifests, progress)
    if wanted is not None:
        buckets = [b for b in buckets if bucket_region(b) in wanted]
    datapoints, metric_gaps = await collect_bucket_metrics(
        access, targets, buckets, month, concurrency=aws.max_concurrency
    )
    report = build_s3_metrics_report(
        buckets, datapoints, month, now, [*gaps_from_manifests(manifests), *metric_gaps]
    )
    if out is not None:
        await asyncio.to_thread(_write_csv, out, S3_COLUMNS, (s3_cells(r) for r in report.rows))
    console = Console(width=_report_width())
    print_s3_metrics_report(report, console)
    if out is not None:
        console.print(f"wrote {out}")
    return 0 if report.complete else 1


def print_s3_metrics_report(report: S3MetricsReport, console: Console) -> None:
    columns = ("bucket", "account", "region", "created", "objects", "total", "by storage class")
    table = _table(f"S3 storage, {report.month}", columns, numeric={"objects", "total"})
    for row in report.rows:
        classes = ", ".join(
            f"{column.removeprefix('size_')} {_bytes(size)}"
            for column in SIZE_COLUMNS
            if (size := row.sizes[column])
        )
        table.add_row(
            row.bucket_name,
            row.account_id,
            row.region,
            format_cell(row.creation_date),
            format_cell(row.total_objects),
            "" if row.total_size is None else _bytes(row.total_size),
            classes,
        )
    console.print(table)
    _print_gaps(report.gaps, console)
    console.print(f"{len(report.rows)} buckets; values: {report.value_rule}")


def _bytes(size: int) -> str:
    if size < 1024**2:
        return f"{size} B"
    return f"{size / _GIB:.3f} GiB"


def _month(text: str | None, now: datetime) -> ReportMonth:
    """The month asked for, or the last complete one; a month not yet begun is refused."""
    if text is None:
        return ReportMonth.last_complete(now)
    try:
        month = ReportMonth.parse(text)
    except ValueError as exc:
        raise ConfigError(f"--month {exc}") from None
    if month.start > now:
        raise ConfigError(f"--month {text}: that month has not begun yet")
    return month


def _explicit_regions(regions: str | None) -> set[str] | None:
    if not regions or regions == "all":
        return None
    return {r.strip() for r in regions.split(",") if r.strip()}


# -- shared ----------------------------------------------------------------------------------


def _report_width() -> int | None:
    # The terminal's width on a terminal; else (files, CI, tests) wide enough that ids and
    # times are not folded over several lines.
    return None if sys.stdout.isatty() else REPORT_WIDTH


def _csv_path(out: Path | None) -> Path | None:
    if out is None:
        return None
    if out.suffix.lower() != ".csv":
        raise ConfigError(f"--csv {out}: expected a file name ending in .csv")
    if not out.parent.is_dir():
        raise ConfigError(f"--csv {out}: directory {out.parent} does not exist")
    return out


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """Written beside and renamed: the file appears complete or not at all."""
    partial = path.with_name(path.name + ".partial")
    try:
        with partial.open("w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


async def _gather(
    items: AsyncGenerator[ScanItem, None],
    snapshots: list[ResourceSnapshot],
    manifests: list[ScanManifest],
    progress: _ScopeProgress,
) -> None:
    async with aclosing(items) as stream:
        async for item in stream:
            if isinstance(item, ResourceSnapshot):
                snapshots.append(item)
                progress.found(len(snapshots))
            else:
                manifests.append(item)
                progress.advance()


class _ScopeProgress:
    """The scan's progress bar on stderr: scopes done of planned, resources found."""

    def __init__(self, disabled: bool) -> None:
        self._progress = Progress(
            TextColumn("collecting"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("scopes"),
            TextColumn("{task.fields[resources]} resources"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            disable=disabled,
        )
        self._task = self._progress.add_task("report", total=0, resources=0)

    def __enter__(self) -> _ScopeProgress:
        self._progress.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._progress.stop()

    def planned(self, count: int) -> None:
        task = self._progress.tasks[0]
        self._progress.update(self._task, total=(task.total or 0) + count)

    def found(self, resources: int) -> None:
        self._progress.update(self._task, resources=resources)

    def advance(self) -> None:
        self._progress.advance(self._task)


def _table(title: str, columns: Sequence[str], *, numeric: set[str]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, justify="right" if column in numeric else "left", overflow="fold")
    return table


def _print_gaps(gaps: Sequence[ReportGap], console: Console) -> None:
    if not gaps:
        return
    table = _table(
        "Not collected",
        ("account", "region", "resource type", "status", "operation", "code", "message"),
        numeric=set(),
    )
    for gap in gaps:
        table.add_row(
            gap.account_id,
            gap.region,
            gap.resource_type,
            "unsupported here" if gap.unsupported else gap.status,
            gap.operation or "",
            gap.code,
            gap.message[:300],
        )
    console.print(table)
