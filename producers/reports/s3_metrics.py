"""Monthly S3 storage per bucket: object count and bytes in every storage class, from
CloudWatch, asked in each bucket's own region.

It replaces "Cloudwatch metrics for S3" without its bugs: CloudWatch is asked in the region
of each bucket (S3 publishes a bucket's storage metrics only there), every storage type S3
publishes has a column (Intelligent-Tiering tiers and Reduced Redundancy included), each
account's buckets are read with that account's credentials only, and one GetMetricData call
carries up to :data:`BUCKETS_PER_CALL` buckets' metrics instead of one call per metric.

The value of a metric for the month is **the last daily datapoint in the month**
(statistic ``Average`` over one-day periods, the only statistic S3 storage metrics have):
the bucket as it stood at the month's end, not its peak. A bucket with no datapoint for a
storage type has nothing stored in it (S3 publishes no zeros): 0. When CloudWatch could not
be read for a bucket's region, its values are unknown (``None``, a blank cell) and the
failure is one of the report's gaps; never 0.

Collecting: :func:`scan_buckets` (the scan engine with the bucket type narrowed to
ListBuckets and GetBucketLocation) and :func:`collect_bucket_metrics` (GetMetricData).
Reporting: :func:`build_s3_metrics_report`, a pure function of what they returned.
"""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from collections.abc import AsyncGenerator, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, computed_field

from cloudinv.catalog.registry import default_registry
from cloudinv.catalog.spec import ResourceSpec
from cloudinv.core.models import ResourceSnapshot, UtcDatetime
from cloudinv.producers.collect import error_code
from cloudinv.producers.credentials import GLOBAL_SERVICE_REGIONS, AccountTarget, AwsAccess
from cloudinv.producers.engine import ScanItem, ScanOptions, scan_types
from cloudinv.producers.reports import UNSUPPORTED_OPERATION_CODES, ReportGap, format_cell

BUCKET_TYPE = "AWS::S3::Bucket"
NAMESPACE = "AWS/S3"
OBJECTS_METRIC = "NumberOfObjects"
SIZE_METRIC = "BucketSizeBytes"
DAY_SECONDS = 86_400

STORAGE_TYPES: tuple[tuple[str, str], ...] = (
    ("size_standard", "StandardStorage"),
    ("size_intelligent_tiering_frequent", "IntelligentTieringFAStorage"),
    ("size_intelligent_tiering_infrequent", "IntelligentTieringIAStorage"),
    ("size_intelligent_tiering_archive_instant", "IntelligentTieringAIAStorage"),
    ("size_intelligent_tiering_archive", "IntelligentTieringAAStorage"),
    ("size_intelligent_tiering_deep_archive", "IntelligentTieringDAAStorage"),
    ("size_standard_ia", "StandardIAStorage"),
    ("size_standard_ia_size_overhead", "StandardIASizeOverhead"),
    ("size_standard_ia_object_overhead", "StandardIAObjectOverhead"),
    ("size_one_zone_ia", "OneZoneIAStorage"),
    ("size_one_zone_ia_size_overhead", "OneZoneIASizeOverhead"),
    ("size_reduced_redundancy", "ReducedRedundancyStorage"),
    ("size_glacier_instant", "GlacierInstantRetrievalStorage"),
    ("size_glacier_instant_size_overhead", "GlacierIRSizeOverhead"),
    ("size_glacier", "GlacierStorage"),
    ("size_glacier_staging", "GlacierStagingStorage"),
    ("size_glacier_object_overhead", "GlacierObjectOverhead"),
    ("size_glacier_s3_object_overhead", "GlacierS3ObjectOverhead"),
    ("size_deep_archive", "DeepArchiveStorage"),
    ("size_deep_archive_staging", "DeepArchiveStagingStorage"),
    ("size_deep_archive_object_overhead", "DeepArchiveObjectOverhead"),
    ("size_deep_archive_s3_object_overhead", "DeepArchiveS3ObjectOverhead"),
    ("size_express_one_zone", "ExpressOneZone"),
)
"""(column, ``StorageType`` dimension of BucketSizeBytes): every type S3 publishes. The
replaced tool's six size columns keep their names; overheads (the billed minimum object
sizes and the Glacier index bytes) are their own columns, so the class columns stay what
the objects occupy."""

SIZE_COLUMNS: tuple[str, ...] = tuple(column for column, _ in STORAGE_TYPES)
S3_COLUMNS: tuple[str, ...] = (
    "bucket_name",
    "account",
    "region",
    "creation_date",
    "total_objects",
    "total_size",
    *SIZE_COLUMNS,
)
"""The CSV header: the replaced tool's columns (``account`` for ``account_name``, plus
``region`` and ``total_size``, the sum of the size columns), then one per storage type."""

QUERIES_PER_CALL = 500
"""GetMetricData's limit of metric queries in one request."""
BUCKETS_PER_CALL = QUERIES_PER_CALL // (1 + len(STORAGE_TYPES))

VALUE_RULE = (
    "last daily datapoint in the month (Average over 1-day periods); "
    "no datapoint = 0; blank = CloudWatch not readable in the bucket's region"
)

_MONTH_RE = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


@dataclass(frozen=True, order=True)
class ReportMonth:
    year: int
    month: int

    @classmethod
    def parse(cls, text: str) -> ReportMonth:
        """``YYYY-MM``; raises ValueError naming the input and the expected form."""
        match = _MONTH_RE.match(text.strip())
        if match is None:
            raise ValueError(f"{text!r}: expected a month as YYYY-MM, e.g. 2025-01")
        return cls(int(match[1]), int(match[2]))

    @classmethod
    def last_complete(cls, now: datetime) -> ReportMonth:
        """The month before the one ``now`` falls in (UTC)."""
        now = now.astimezone(UTC)
        return cls(now.year - 1, 12) if now.month == 1 else cls(now.year, now.month - 1)

    @property
    def start(self) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        """The first instant of the next month."""
        if self.month == 12:
            return datetime(self.year + 1, 1, 1, tzinfo=UTC)
        return datetime(self.year, self.month + 1, 1, tzinfo=UTC)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"


# -- the report ------------------------------------------------------------------------------


class BucketDatapoints(BaseModel):
    """What CloudWatch held for one bucket in the month: metric key (``NumberOfObjects`` or a
    storage type) → its last daily value. Keys without a datapoint are absent."""

    model_config = ConfigDict(frozen=True)

    account_id: str
    bucket_name: str
    region: str
    values: dict[str, float]


class BucketMetricsRow(BaseModel):
    model_config = ConfigDict(frozen=True)

    bucket_name: str
    account_id: str
    region: str
    creation_date: UtcDatetime | None
    total_objects: int | None
    total_size: int | None
    sizes: dict[str, int | None]
    """Bytes by size column (:data:`SIZE_COLUMNS`, every one present)."""


class S3MetricsReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    month: str
    period_start: UtcDatetime
    period_end: UtcDatetime
    generated_at: UtcDatetime
    value_rule: str
    size_columns: list[str]
    rows: list[BucketMetricsRow]
    gaps: list[ReportGap]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def complete(self) -> bool:
        return not self.gaps


def build_s3_metrics_report(
    buckets: Iterable[ResourceSnapshot],
    datapoints: Iterable[BucketDatapoints],
    month: ReportMonth,
    now: datetime,
    gaps: Iterable[ReportGap] = (),
) -> S3MetricsReport:
    """One row per bucket snapshot; a bucket without datapoints has unknown values."""
    found = {(d.account_id, d.bucket_name): d for d in datapoints}
    rows: list[BucketMetricsRow] = []
    for bucket in buckets:
        if bucket.resource_type != BUCKET_TYPE:
            continue
        points = found.get((bucket.account_id, bucket.resource_id))
        if points is None:
            sizes: dict[str, int | None] = dict.fromkeys(SIZE_COLUMNS)
            objects = total = None
        else:
            sizes = {
                column: round(points.values.get(storage_type, 0.0))
                for column, storage_type in STORAGE_TYPES
            }
            objects = round(points.values.get(OBJECTS_METRIC, 0.0))
            total = sum(v for v in sizes.values() if v is not None)
        rows.append(
            BucketMetricsRow(
                bucket_name=bucket.resource_id,
                account_id=bucket.account_id,
                region=bucket_region(bucket),
                creation_date=_time(bucket.configuration.get("CreationDate")),
                total_objects=objects,
                total_size=total,
                sizes=sizes,
            )
        )
    rows.sort(key=lambda r: (r.account_id, r.region, r.bucket_name))
    return S3MetricsReport(
        month=str(month),
        period_start=month.start,
        period_end=month.end,
        generated_at=now,
        value_rule=VALUE_RULE,
        size_columns=list(SIZE_COLUMNS),
        rows=rows,
        gaps=list(gaps),
    )


def s3_cells(row: BucketMetricsRow) -> list[str]:
    """The CSV cells of one row, in :data:`S3_COLUMNS` order."""
    values: list[Any] = [
        row.bucket_name,
        row.account_id,
        row.region,
        row.creation_date,
        row.total_objects,
        row.total_size,
        *(row.sizes[column] for column in SIZE_COLUMNS),
    ]
    return [format_cell(v) for v in values]


def bucket_region(bucket: ResourceSnapshot) -> str:
    """The bucket's region from GetBucketLocation (``null`` is us-east-1, ``EU`` eu-west-1),
    else ListBuckets' ``BucketRegion``."""
    location = bucket.configuration.get("Location")
    if location == "EU":
        return "eu-west-1"
    if isinstance(location, str) and location:
        return location
    listed = bucket.configuration.get("BucketRegion")
    if isinstance(listed, str) and listed:
        return listed
    partition = bucket.arn.split(":")[1] if bucket.arn.count(":") > 1 else "aws"
    return GLOBAL_SERVICE_REGIONS.get(partition, "us-east-1")


def _time(value: Any) -> datetime | None:
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


# -- collecting ------------------------------------------------------------------------------


def bucket_location_spec() -> ResourceSpec:
    """The registered bucket type with only its GetBucketLocation detail: the report needs
    the bucket's name, creation date and region, not its dozen configuration calls."""
    spec = default_registry().get(BUCKET_TYPE)
    location = tuple(d for d in spec.details if d.operation == "GetBucketLocation")
    return replace(spec, details=location)


def scan_buckets(
    access: AwsAccess, targets: Sequence[AccountTarget], *, options: ScanOptions | None = None
) -> AsyncGenerator[ScanItem, None]:
    """Every bucket of ``targets`` with its location (one global scope per account)."""
    return scan_types(access, targets, [], [bucket_location_spec()], options=options)


async def collect_bucket_metrics(
    access: AwsAccess,
    targets: Sequence[AccountTarget],
    buckets: Iterable[ResourceSnapshot],
    month: ReportMonth,
    *,
    concurrency: int = 16,
) -> tuple[list[BucketDatapoints], list[ReportGap]]:
    """The month's datapoints of ``buckets``, asked in each bucket's region with its
    account's credentials; a region CloudWatch could not be read in is a gap."""
    by_scope: dict[tuple[str, str], list[str]] = defaultdict(list)
    for bucket in buckets:
        by_scope[(bucket.account_id, bucket_region(bucket))].append(bucket.resource_id)
    by_account = {t.account_id: t for t in targets}
    gate = asyncio.Semaphore(concurrency)
    results = await asyncio.gather(
        *(
            _query_region(access, by_account[account_id], region, names, month, gate)
            for (account_id, region), names in by_scope.items()
        )
    )
    datapoints = [d for found, _ in results for d in found]
    gaps = [gap for _, gap in results if gap is not None]
    return datapoints, gaps


async def _query_region(
    access: AwsAccess,
    target: AccountTarget,
    region: str,
    bucket_names: list[str],
    month: ReportMonth,
    gate: asyncio.Semaphore,
) -> tuple[list[BucketDatapoints], ReportGap | None]:
    found: list[BucketDatapoints] = []
    failures: list[BaseException] = []
    chunks = [
        bucket_names[i : i + BUCKETS_PER_CALL]
        for i in range(0, len(bucket_names), BUCKETS_PER_CALL)
    ]
    try:
        async with access.client(access.session(target), "cloudwatch", region) as cloudwatch:
            for chunk in chunks:
                try:
                    async with gate:
                        values = await _metric_values(cloudwatch, chunk, month)
                except Exception as exc:
                    failures.append(exc)
                    if error_code(exc) in UNSUPPORTED_OPERATION_CODES:
                        break
                    continue
                found.extend(
                    BucketDatapoints(
                        account_id=target.account_id, bucket_name=name, region=region, values=v
                    )
                    for name, v in zip(chunk, values, strict=True)
                )
    except Exception as exc:  # the client could not be made (credentials, endpoint)
        failures.append(exc)
    if not failures:
        return found, None
    first = failures[0]
    missing = len(bucket_names) - len(found)
    return found, ReportGap(
        account_id=target.account_id,
        region=region,
        resource_type=BUCKET_TYPE,
        status="partial" if found else "failed",
        operation="GetMetricData",
        code=error_code(first),
        message=(
            f"CloudWatch metrics of {missing} bucket(s) not read: "
            + " ".join((str(first) or type(first).__name__).split())[:400]
        ),
        unsupported=error_code(first) in UNSUPPORTED_OPERATION_CODES,
    )


def _queries(bucket_names: Sequence[str]) -> list[dict[str, Any]]:
    """Query ids ``b<bucket>_<metric>``: metric 0 is the object count, then STORAGE_TYPES."""
    queries: list[dict[str, Any]] = []
    for b, name in enumerate(bucket_names):
        metrics = [(OBJECTS_METRIC, "AllStorageTypes")]
        metrics += [(SIZE_METRIC, storage_type) for _, storage_type in STORAGE_TYPES]
        for m, (metric_name, storage_type) in enumerate(metrics):
            queries.append(
                {
                    "Id": f"b{b}_{m}",
                    "MetricStat": {
                        "Metric": {
                            "Namespace": NAMESPACE,
                            "MetricName": metric_name,
                            "Dimensions": [
                                {"Name": "BucketName", "Value": name},
                                {"Name": "StorageType", "Value": storage_type},
                            ],
                        },
                        "Period": DAY_SECONDS,
                        "Stat": "Average",
                    },
                    "ReturnData": True,
                }
            )
    return queries


async def _metric_values(
    cloudwatch: Any, bucket_names: Sequence[str], month: ReportMonth
) -> list[dict[str, float]]:
    """For each bucket, metric key → the value of its latest datapoint in the month."""
    keys = [OBJECTS_METRIC, *(storage_type for _, storage_type in STORAGE_TYPES)]
    latest: dict[str, tuple[datetime, float]] = {}
    pages = cloudwatch.get_paginator("get_metric_data").paginate(
        MetricDataQueries=_queries(bucket_names),
        StartTime=month.start,
        EndTime=month.end,
        ScanBy="TimestampDescending",
    )
    async for page in pages:
        for result in page.get("MetricDataResults", []):
            for timestamp, value in zip(result["Timestamps"], result["Values"], strict=True):
                held = latest.get(result["Id"])
                if held is None or timestamp > held[0]:
                    latest[result["Id"]] = (timestamp, float(value))
    values: list[dict[str, float]] = []
    for b in range(len(bucket_names)):
        values.append(
            {key: latest[f"b{b}_{m}"][1] for m, key in enumerate(keys) if f"b{b}_{m}" in latest}
        )
    return values
