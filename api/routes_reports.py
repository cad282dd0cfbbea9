"""Reports: ``GET /v1/reports/snapshots`` and ``GET /v1/reports/s3-metrics``.

The snapshot report (``cloudinv.producers.reports.snapshots``) is built from the current versions of
the snapshot types the collectors keep (EBS snapshots and their volumes, RDS DB and cluster
snapshots, EFS file systems), so the API answers without calling AWS.

The S3 storage report (``cloudinv.producers.reports.s3_metrics``, as ``cloudinv report s3-metrics``)
needs CloudWatch, which the inventory does not hold: the API makes it with the configured AWS
access (``aws`` settings: roles, Organizations or the local credentials; ``aws.endpoint_url``)
and keeps it ten minutes (:class:`S3MetricsReports`). Without usable AWS access it answers
503 with what failed. A token limited to some accounts gets a report of those accounts only.
"""

from __future__ import annotations

import asyncio
import csv
import io
import time
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from aiohttp import web
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import Field, field_validator

from cloudinv.api.endpoints import Query, ServiceUnavailable, endpoint, wants_csv
from cloudinv.api.routes_common import AccountId, AccountView, Region, account_view, inventory_store
from cloudinv.core.models import ResourceSnapshot, ScanManifest, utcnow
from cloudinv.core.settings import AwsSettings, Settings
from cloudinv.producers.credentials import AccountDiscoveryError, AccountTarget, AwsAccess
from cloudinv.producers.engine import ScanOptions
from cloudinv.producers.reports import gaps_from_manifests
from cloudinv.producers.reports.s3_metrics import (
    S3_COLUMNS,
    ReportMonth,
    S3MetricsReport,
    build_s3_metrics_report,
    collect_bucket_metrics,
    s3_cells,
    scan_buckets,
)
from cloudinv.producers.reports.snapshots import (
    SNAPSHOT_TYPES,
    SnapshotReport,
    build_snapshot_report,
)
from cloudinv.sinks.store import VersionQuery, version_pages

T = TypeVar("T")


class SnapshotReportQuery(Query):
    account: str | None = Field(
        default=None, pattern=r"^\d{12}$", description="only this account (12 digits)"
    )


def _tags(configuration: dict[str, Any]) -> dict[str, str]:
    tags = configuration.get("Tags") or configuration.get("TagList") or []
    if isinstance(tags, list):
        return {
            str(t.get("Key")): str(t.get("Value", ""))
            for t in tags
            if isinstance(t, dict) and "Key" in t
        }
    return {}


@endpoint(
    "GET",
    "/v1/reports/snapshots",
    summary="Every EBS, RDS and EFS snapshot now kept, with a summary by service, source "
    "and age (counted from now)",
    query=SnapshotReportQuery,
    response=SnapshotReport,
    tags=["reports"],
)
async def snapshot_report(request: web.Request, query: SnapshotReportQuery) -> SnapshotReport:
    store = inventory_store(request)
    view = account_view(request, query.account)
    now = utcnow()
    snapshots: list[ResourceSnapshot] = []
    if not view.empty:
        for resource_type in SNAPSHOT_TYPES:
            wanted = VersionQuery(at=now, resource_type=resource_type, account_id=view.single)
            async for page in version_pages(store.list_as_of, wanted):
                for version in page:
                    if not view.allows(version.account_id):
                        continue
                    snapshots.append(
                        ResourceSnapshot.build(
                            account_id=version.account_id,
                            region=version.region,
                            resource_type=version.resource_type,
                            resource_id=version.resource_id,
                            arn=version.key,
                            name=version.name,
                            tags=_tags(version.configuration),
                            configuration=version.configuration,
                            scan_id="store",
                            captured_at=version.valid_from,
                        )
                    )
    return build_snapshot_report(snapshots, now)


# -- S3 storage metrics (CloudWatch, live) -----------------------------------------------------

S3_METRICS_TTL_S = 600.0
"""How long a computed S3 metrics report is served again (per month, accounts and region)."""


class S3MetricsQuery(Query):
    month: str | None = Field(
        default=None,
        description="the month to report, YYYY-MM, not after the current month (default: "
        "the last complete month, UTC)",
        json_schema_extra={"pattern": r"^[1-9]\d{3}-(0[1-9]|1[0-2])$"},
    )
    account: AccountId | None = None
    region: Region | None = Field(default=None, description="only buckets located in this region")
    format: str | None = Field(
        default=None, pattern="^(json|csv)$", description="json (default) or csv"
    )

    @field_validator("month")
    @classmethod
    def _month(cls, value: str | None) -> str | None:
        if value is None:
            return None
        month = ReportMonth.parse(value)  # ValueError names the input and the form
        if month.start > utcnow():
            raise ValueError(f"{value!r}: that month has not begun yet")
        return str(month)


S3_METRICS_FAILURE_TTL_S = 30.0
"""How long a failure to reach AWS is answered again without trying (a 503 costs nothing)."""


@dataclass(frozen=True)
class _Buckets:
    """The accounts a report covers and their buckets (with locations), as scanned."""

    targets: list[AccountTarget]
    buckets: list[ResourceSnapshot]
    manifests: list[ScanManifest]


class _Expiring(Generic[T]):
    """Values computed once per key and kept ``ttl_s`` (failures ``failure_ttl_s``);
    callers asking for a value being computed wait for that computation."""

    def __init__(self, ttl_s: float, failure_ttl_s: float) -> None:
        self._ttl_s = ttl_s
        self._failure_ttl_s = failure_ttl_s
        self._held: dict[Any, tuple[float, asyncio.Task[T]]] = {}

    def _fresh(self, held: tuple[float, asyncio.Task[T]], now: float) -> bool:
        started, task = held
        if not task.done() or task.cancelled():
            return not task.cancelled()
        ttl = self._failure_ttl_s if task.exception() is not None else self._ttl_s
        return now - started < ttl

    async def get(self, key: Any, compute: Callable[[], Awaitable[T]]) -> T:
        now = time.monotonic()
        held = self._held.get(key)
        if held is None or not self._fresh(held, now):
            for k in [k for k, h in self._held.items() if not self._fresh(h, now)]:
                del self._held[k]
            held = (now, asyncio.ensure_future(compute()))
            self._held[key] = held
        # Shielded: a client going away does not cancel what other requests wait for.
        return await asyncio.shield(held[1])


class S3MetricsReports:
    """The S3 metrics reports of one API process, made with the configured AWS access.

    Buckets (ListBuckets, GetBucketLocation) are kept per set of accounts and reports
    (GetMetricData) per month and set of accounts, each :data:`S3_METRICS_TTL_S`; a region
    filter only selects rows. A failure to reach AWS is kept
    :data:`S3_METRICS_FAILURE_TTL_S`, so a client retrying does not make every request wait
    on AWS's retries again."""

    def __init__(
        self,
        aws: AwsSettings,
        access: AwsAccess | None = None,
        *,
        refuse: str | None = None,
        ttl_s: float = S3_METRICS_TTL_S,
        failure_ttl_s: float = S3_METRICS_FAILURE_TTL_S,
    ) -> None:
        """``access``: the AWS access to use (default: made from ``aws``); ``refuse``: why
        this process must not call AWS at all (every report is then a 503 saying so)."""
        self._aws = aws
        self._access = access
        self._refuse = refuse
        self._buckets: _Expiring[_Buckets] = _Expiring(ttl_s, failure_ttl_s)
        self._reports: _Expiring[S3MetricsReport] = _Expiring(ttl_s, failure_ttl_s)

    def _aws_access(self) -> AwsAccess:
        if self._access is None:
            self._access = AwsAccess.from_settings(self._aws)
        return self._access

    async def get(
        self, month: ReportMonth, view: AccountView, region: str | None
    ) -> S3MetricsReport:
        report = await self._reports.get(
            (str(month), view.accounts), lambda: self._report(month, view)
        )
        if region is None:
            return report
        rows = [r for r in report.rows if r.region == region]
        gaps = [g for g in report.gaps if g.operation != "GetMetricData" or g.region == region]
        return report.model_copy(update={"rows": rows, "gaps": gaps})

    async def _report(self, month: ReportMonth, view: AccountView) -> S3MetricsReport:
        found = await self._buckets.get(view.accounts, lambda: self._scan(view))
        datapoints, metric_gaps = await collect_bucket_metrics(
            self._aws_access(),
            found.targets,
            found.buckets,
            month,
            concurrency=self._aws.max_concurrency,
        )
        gaps = [*gaps_from_manifests(found.manifests), *metric_gaps]
        return build_s3_metrics_report(found.buckets, datapoints, month, utcnow(), gaps)

    async def _scan(self, view: AccountView) -> _Buckets:
        if self._refuse is not None:
            raise AwsUnavailable(self._refuse)
        access = self._aws_access()
        try:
            targets = await access.discover_accounts(self._aws)
        except AccountDiscoveryError as exc:
            raise AwsUnavailable(str(exc)) from None
        targets = [t for t in targets if view.allows(t.account_id)]
        buckets: list[ResourceSnapshot] = []
        manifests: list[ScanManifest] = []
        if targets:
            options = ScanOptions(max_concurrency=self._aws.max_concurrency)
            async with aclosing(scan_buckets(access, targets, options=options)) as items:
                async for item in items:
                    if isinstance(item, ResourceSnapshot):
                        buckets.append(item)
                    else:
                        manifests.append(item)
        failed = [m for m in manifests if m.status == "failed"]
        if failed and not buckets and len(failed) == len(manifests):
            raise AwsUnavailable(
                "no account's buckets could be listed: "
                + "; ".join(
                    f"account {g.account_id}: {g.code}: {g.message[:200]}"
                    for g in gaps_from_manifests(failed)[:3]
                )
            )
        return _Buckets(targets, buckets, manifests)


class AwsUnavailable(Exception):
    """AWS could not be used for a live report (no credentials, unreachable, denied)."""


S3_REPORTS_KEY = web.AppKey("s3_metrics_reports", S3MetricsReports)


def setup_reports(
    app: web.Application, settings: Settings, runtime: dict[str, Any] | None = None
) -> None:
    """The live reports' state. ``runtime["aws"]``, when the process scans too, is the
    (settings, access) its producers use: the API reports with the same access. The demo
    must never call real AWS: without its simulated AWS's access, it makes no live report."""
    runtime = runtime or {}
    scanning = runtime.get("aws")
    if scanning is not None:
        aws, access = scanning
        app[S3_REPORTS_KEY] = S3MetricsReports(aws, access)
    elif runtime.get("mode") == "demo":
        app[S3_REPORTS_KEY] = S3MetricsReports(
            settings.aws, refuse="the demo calls only its simulated AWS, which it did not pass"
        )
    else:
        app[S3_REPORTS_KEY] = S3MetricsReports(settings.aws)


def s3_metrics_csv(report: S3MetricsReport) -> str:
    """The CLI's CSV (``cloudinv report s3-metrics --csv``): header, then one row a bucket."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(S3_COLUMNS)
    writer.writerows(s3_cells(row) for row in report.rows)
    return buffer.getvalue()


@endpoint(
    "GET",
    "/v1/reports/s3-metrics",
    summary="Every bucket's object count and bytes per storage class for a month, read live "
    "from CloudWatch in each bucket's region (kept 10 minutes); 503 without AWS access",
    query=S3MetricsQuery,
    response=S3MetricsReport,
    tags=["reports"],
    csv=True,
)
async def s3_metrics_report(
    request: web.Request, query: S3MetricsQuery
) -> S3MetricsReport | web.Response:
    month = ReportMonth.parse(query.month) if query.month else ReportMonth.last_complete(utcnow())
    view = account_view(request, query.account)
    if view.empty:
        report = build_s3_metrics_report([], [], month, utcnow())
    else:
        try:
            report = await request.app[S3_REPORTS_KEY].get(month, view, query.region)
        except AwsUnavailable as exc:
            raise ServiceUnavailable(
                f"the S3 metrics report needs AWS access (CloudWatch, S3): {exc}"
            ) from None
        except (BotoCoreError, ClientError) as exc:
            raise ServiceUnavailable(
                f"the S3 metrics report needs AWS access (CloudWatch, S3): {exc}"
            ) from None
    if wants_csv(request, query):
        return web.Response(text=s3_metrics_csv(report), content_type="text/csv")
    return report
