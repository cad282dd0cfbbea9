"""The snapshot inventory: every EBS snapshot, RDS DB and cluster snapshot (manual and
automated) and EFS recovery point, with a summary by service, source and age.

It replaces the AWS Snapshot Inventory Tool without repeating its bugs: the CSV and the
console table are built from one column list, so every value sits under its header; a
snapshot still being created (no creation time yet) is listed, in the age bucket
``no creation time``; Aurora cluster snapshots are included; ages are counted from *now*,
not from the newest snapshot; EFS encryption is read from each recovery point (its
encryption key), falling back to its file system's, never assumed; recovery points are read
page by page.

Collecting, :func:`scan_snapshot_sources`: the scan engine over :data:`SNAPSHOT_TYPES`
(EBS volumes too: a snapshot's volume type, IOPS and throughput are its source volume's),
then AWS Backup ListRecoveryPointsByResource for every EFS file system found. That call
belongs to another service than the file system's list call, which a ``ResourceSpec``
cannot declare, so it is made here; its results are yielded as
``AWS::Backup::RecoveryPoint`` snapshots (configuration: the recovery point plus
``ResourceArn`` and ``ResourceType``) with one manifest per account and region. An endpoint
without the operation (moto) makes that manifest failed with a message that says so: a gap
in the report, not a crash.

Reporting, :func:`build_snapshot_report`: a pure function of snapshots, manifests and the
time ``now``, so the API can build the same report from stored snapshots.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, computed_field

from cloudinv.catalog.registry import default_registry
from cloudinv.core.models import (
    ResourceSnapshot,
    ScanError,
    ScanManifest,
    ScanStatus,
    UtcDatetime,
    utcnow,
)
from cloudinv.producers.collect import ACCESS_DENIED_CODES, error_code, to_scan_error
from cloudinv.producers.credentials import AccountTarget, AwsAccess
from cloudinv.producers.engine import ScanItem, ScanOptions, scan_types
from cloudinv.producers.reports import (
    UNSUPPORTED_OPERATION_CODES,
    ReportGap,
    format_cell,
    gaps_from_manifests,
)

EBS_SNAPSHOT = "AWS::EC2::Snapshot"
EBS_VOLUME = "AWS::EC2::Volume"
RDS_SNAPSHOT = "AWS::RDS::DBSnapshot"
RDS_CLUSTER_SNAPSHOT = "AWS::RDS::DBClusterSnapshot"
EFS_FILE_SYSTEM = "AWS::EFS::FileSystem"
RECOVERY_POINT = "AWS::Backup::RecoveryPoint"

SNAPSHOT_TYPES = (EBS_SNAPSHOT, EBS_VOLUME, RDS_SNAPSHOT, RDS_CLUSTER_SNAPSHOT, EFS_FILE_SYSTEM)
"""What the engine scans for this report; recovery points are listed after it."""

AGE_BUCKET_DAYS = (7, 30, 90, 180, 365, 730)
"""Upper bounds (inclusive, in whole days of age) of the age buckets; older ones go last."""
NO_CREATION_TIME = "no creation time"
AGE_BUCKETS: tuple[str, ...] = (
    "0-7 days",
    "8-30 days",
    "31-90 days",
    "91-180 days",
    "181-365 days",
    "366-730 days",
    "over 730 days",
    NO_CREATION_TIME,
)

_GIB = 1024**3
_ABSENT_FILE_SYSTEM = frozenset({"ResourceNotFoundException"})
"""The file system went away between its listing and its recovery points: none to list."""
_AUTOMATED_EBS_TAG_PREFIXES = ("aws:dlm:", "aws:backup:")
"""Tags that Data Lifecycle Manager and AWS Backup put on the EBS snapshots they make."""

Service = Literal["EBS", "RDS", "EFS"]
SnapshotType = Literal["manual", "automated"]


# -- the report ------------------------------------------------------------------------------


class SnapshotRow(BaseModel):
    """One snapshot or recovery point. Values AWS did not give are ``None``."""

    model_config = ConfigDict(frozen=True)

    account_id: str
    service: Service
    region: str
    snapshot_type: SnapshotType
    snapshot_id: str
    source: str
    """EBS volume id, RDS DB instance or cluster identifier, EFS file system id."""
    source_name: str
    """The volume's Name tag (else the snapshot's), the DB identifier, the file system's name."""
    engine: str
    size_gb: float | None
    """GiB as AWS counts them: volume size, allocated storage, recovery point bytes / 2**30."""
    status: str
    created_at: UtcDatetime | None
    age_days: int | None
    age_bucket: str
    encrypted: bool | None
    description: str
    volume_type: str
    volume_iops: int | None
    volume_throughput: int | None


class SnapshotGroup(BaseModel):
    """The snapshots of one source in one age bucket."""

    model_config = ConfigDict(frozen=True)

    service: Service
    account_id: str
    region: str
    source: str
    source_name: str
    age_bucket: str
    count: int
    total_gb: float
    types: list[SnapshotType]
    snapshot_ids: list[str]


class SnapshotTotal(BaseModel):
    model_config = ConfigDict(frozen=True)

    service: str
    """A service name, or ``all`` for the overall total."""
    count: int
    total_gb: float


class SnapshotReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    generated_at: UtcDatetime
    """The "now" ages are counted from."""
    rows: list[SnapshotRow]
    groups: list[SnapshotGroup]
    """By service, account, region, source and age bucket (in bucket order)."""
    service_totals: list[SnapshotTotal]
    total: SnapshotTotal
    gaps: list[ReportGap]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def complete(self) -> bool:
        return not self.gaps


def build_snapshot_report(
    snapshots: Iterable[ResourceSnapshot],
    now: datetime,
    manifests: Iterable[ScanManifest] = (),
) -> SnapshotReport:
    """The report over ``snapshots`` (of :data:`SNAPSHOT_TYPES` and recovery points; others
    are ignored), ages counted from ``now``; incomplete ``manifests`` become its gaps."""
    now = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
    items = list(snapshots)
    volumes = {
        (s.account_id, s.region, s.resource_id): s for s in items if s.resource_type == EBS_VOLUME
    }
    file_systems = {s.arn: s for s in items if s.resource_type == EFS_FILE_SYSTEM}
    rows: list[SnapshotRow] = []
    for s in items:
        if s.resource_type == EBS_SNAPSHOT:
            volume_id = _text(s.configuration.get("VolumeId"))
            rows.append(_ebs_row(s, volumes.get((s.account_id, s.region, volume_id)), now))
        elif s.resource_type in (RDS_SNAPSHOT, RDS_CLUSTER_SNAPSHOT):
            rows.append(_rds_row(s, now))
        elif s.resource_type == RECOVERY_POINT and _is_efs(s.configuration):
            file_system = file_systems.get(str(s.configuration.get("ResourceArn")))
            rows.append(_efs_row(s, file_system, now))
    rows.sort(key=_row_order)
    service_totals = [
        _total(service, [r for r in rows if r.service == service])
        for service in sorted({r.service for r in rows})
    ]
    return SnapshotReport(
        generated_at=now,
        rows=rows,
        groups=_groups(rows),
        service_totals=service_totals,
        total=_total("all", rows),
        gaps=gaps_from_manifests(manifests),
    )


def age_bucket(created_at: datetime | None, now: datetime) -> tuple[int | None, str]:
    """Age in whole days (never negative) and its bucket; ``None`` time: no creation time."""
    if created_at is None:
        return None, NO_CREATION_TIME
    days = max(0, (now - created_at) // timedelta(days=1))
    for bound, label in zip(AGE_BUCKET_DAYS, AGE_BUCKETS, strict=False):
        if days <= bound:
            return days, label
    return days, AGE_BUCKETS[len(AGE_BUCKET_DAYS)]


def _ebs_row(s: ResourceSnapshot, volume: ResourceSnapshot | None, now: datetime) -> SnapshotRow:
    c = s.configuration
    created = _time(c.get("StartTime"))
    days, bucket = age_bucket(created, now)
    v = volume.configuration if volume is not None else {}
    automated = any(key.startswith(_AUTOMATED_EBS_TAG_PREFIXES) for key in s.tags)
    return SnapshotRow(
        account_id=s.account_id,
        service="EBS",
        region=s.region,
        snapshot_type="automated" if automated else "manual",
        snapshot_id=s.resource_id,
        source=_text(c.get("VolumeId")),
        source_name=(volume.name if volume is not None and volume.name else None) or s.name or "",
        engine="",
        size_gb=_number(c.get("VolumeSize")),
        status=_text(c.get("State")),
        created_at=created,
        age_days=days,
        age_bucket=bucket,
        encrypted=_flag(c.get("Encrypted")),
        description=_text(c.get("Description")),
        volume_type=_text(v.get("VolumeType")),
        volume_iops=_integer(v.get("Iops")),
        volume_throughput=_integer(v.get("Throughput")),
    )


def _rds_row(s: ResourceSnapshot, now: datetime) -> SnapshotRow:
    c = s.configuration
    cluster = s.resource_type == RDS_CLUSTER_SNAPSHOT
    source = _text(c.get("DBClusterIdentifier" if cluster else "DBInstanceIdentifier"))
    # Absent while the snapshot is being created.
    created = _time(c.get("SnapshotCreateTime"))
    days, bucket = age_bucket(created, now)
    # "awsbackup" snapshots are made on a schedule too; shared and public ones are not listed.
    automated = c.get("SnapshotType") in ("automated", "awsbackup")
    return SnapshotRow(
        account_id=s.account_id,
        service="RDS",
        region=s.region,
        snapshot_type="automated" if automated else "manual",
        snapshot_id=s.resource_id,
        source=source,
        source_name=source,
        engine=_text(c.get("Engine")),
        size_gb=_number(c.get("AllocatedStorage")),
        status=_text(c.get("Status")),
        created_at=created,
        age_days=days,
        age_bucket=bucket,
        encrypted=_flag(c.get("StorageEncrypted" if cluster else "Encrypted")),
        description="",
        volume_type=_text(c.get("StorageType")),
        volume_iops=_integer(c.get("Iops")),
        volume_throughput=_integer(c.get("StorageThroughput")),
    )


def _efs_row(
    s: ResourceSnapshot, file_system: ResourceSnapshot | None, now: datetime
) -> SnapshotRow:
    c = s.configuration
    created = _time(c.get("CreationDate"))
    days, bucket = age_bucket(created, now)
    resource_arn = _text(c.get("ResourceArn"))
    size = _number(c.get("BackupSizeBytes", c.get("BackupSizeInBytes")))
    fs = file_system.configuration if file_system is not None else {}
    # ListRecoveryPointsByResource does not say whether a plan or an on-demand job made the
    # point; ListRecoveryPointsByBackupVault does (CreatedBy), and is honoured when present.
    created_by = c.get("CreatedBy")
    manual = isinstance(created_by, dict) and not created_by.get("BackupPlanId")
    return SnapshotRow(
        account_id=s.account_id,
        service="EFS",
        region=s.region,
        snapshot_type="manual" if manual else "automated",
        snapshot_id=s.resource_id,
        source=file_system.resource_id if file_system else resource_arn.rsplit("/", 1)[-1],
        source_name=(file_system.name if file_system else None) or _text(c.get("ResourceName")),
        engine="",
        size_gb=None if size is None else round(size / _GIB, 3),
        status=_text(c.get("Status")),
        created_at=created,
        age_days=days,
        age_bucket=bucket,
        encrypted=_recovery_point_encrypted(c, fs),
        description="",
        volume_type="",
        volume_iops=None,
        volume_throughput=None,
    )


def _recovery_point_encrypted(point: dict[str, Any], file_system: dict[str, Any]) -> bool | None:
    """The recovery point's own answer (IsEncrypted, or an encryption key named), else its
    file system's ``Encrypted``, else unknown."""
    if isinstance(point.get("IsEncrypted"), bool):
        return bool(point["IsEncrypted"])
    if point.get("EncryptionKeyArn") or point.get("EncryptionKeyType"):
        return True
    return _flag(file_system.get("Encrypted"))


def _is_efs(configuration: dict[str, Any]) -> bool:
    resource_type = configuration.get("ResourceType")
    if resource_type is not None:
        return str(resource_type).upper() == "EFS"
    return ":elasticfilesystem:" in str(configuration.get("ResourceArn", ""))


def _row_order(row: SnapshotRow) -> tuple[Any, ...]:
    created = row.created_at.timestamp() if row.created_at else float("inf")
    return (row.service, row.account_id, row.region, row.source, created, row.snapshot_id)


def _groups(rows: list[SnapshotRow]) -> list[SnapshotGroup]:
    by_key: dict[tuple[str, str, str, str, str], list[SnapshotRow]] = defaultdict(list)
    for row in rows:
        by_key[(row.service, row.account_id, row.region, row.source, row.age_bucket)].append(row)
    order = {label: i for i, label in enumerate(AGE_BUCKETS)}
    groups = [
        SnapshotGroup(
            service=members[0].service,
            account_id=members[0].account_id,
            region=members[0].region,
            source=members[0].source,
            source_name=members[0].source_name,
            age_bucket=members[0].age_bucket,
            count=len(members),
            total_gb=_sum_gb(members),
            types=sorted({m.snapshot_type for m in members}),
            snapshot_ids=[m.snapshot_id for m in members],
        )
        for members in by_key.values()
    ]
    groups.sort(key=lambda g: (g.service, g.account_id, g.region, g.source, order[g.age_bucket]))
    return groups


def _total(service: str, rows: list[SnapshotRow]) -> SnapshotTotal:
    return SnapshotTotal(service=service, count=len(rows), total_gb=_sum_gb(rows))


def _sum_gb(rows: Iterable[SnapshotRow]) -> float:
    return round(sum(r.size_gb or 0.0 for r in rows), 3)


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _integer(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


def _flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


# -- the report as tables (CSV and console read the same columns) ----------------------------


_DETAIL: tuple[tuple[str, Callable[[SnapshotRow], Any]], ...] = (
    ("Account", attrgetter("account_id")),
    ("Service", attrgetter("service")),
    ("Region", attrgetter("region")),
    ("Type", attrgetter("snapshot_type")),
    ("Snapshot ID", attrgetter("snapshot_id")),
    ("Source", attrgetter("source")),
    ("Source Name", attrgetter("source_name")),
    ("Engine", attrgetter("engine")),
    ("Size (GB)", attrgetter("size_gb")),
    ("Status", attrgetter("status")),
    ("Creation Time", attrgetter("created_at")),
    ("Age (days)", attrgetter("age_days")),
    ("Encrypted", attrgetter("encrypted")),
    ("Description", attrgetter("description")),
    ("Volume Type", attrgetter("volume_type")),
    ("Volume IOPS", attrgetter("volume_iops")),
    ("Volume Throughput", attrgetter("volume_throughput")),
)
DETAIL_COLUMNS: tuple[str, ...] = tuple(header for header, _ in _DETAIL)
"""The detail CSV's header: the replaced tool's 15 columns plus Account and Age (days)."""

SUMMARY_COLUMNS: tuple[str, ...] = (
    "Row",
    "Service",
    "Account",
    "Region",
    "Source",
    "Source Name",
    "Age",
    "Snapshot Count",
    "Total Size (GB)",
    "Types",
    "Snapshot IDs",
)
"""The summary CSV's header. ``Row`` is ``group`` (one source in one age bucket),
``service total`` or ``total``; totals leave the columns they sum over blank."""


def detail_cells(row: SnapshotRow) -> list[str]:
    return [format_cell(get(row)) for _, get in _DETAIL]


def summary_cells(report: SnapshotReport) -> list[list[str]]:
    """The summary rows, groups first, then each service's total, then the overall total."""
    rows: list[dict[str, Any]] = [
        {
            "Row": "group",
            "Service": g.service,
            "Account": g.account_id,
            "Region": g.region,
            "Source": g.source,
            "Source Name": g.source_name,
            "Age": g.age_bucket,
            "Snapshot Count": g.count,
            "Total Size (GB)": g.total_gb,
            "Types": g.types,
            "Snapshot IDs": g.snapshot_ids,
        }
        for g in report.groups
    ]
    rows += [
        {
            "Row": "service total",
            "Service": t.service,
            "Snapshot Count": t.count,
            "Total Size (GB)": t.total_gb,
        }
        for t in report.service_totals
    ]
    rows.append(
        {
            "Row": "total",
            "Snapshot Count": report.total.count,
            "Total Size (GB)": report.total.total_gb,
        }
    )
    return [[format_cell(row.get(column)) for column in SUMMARY_COLUMNS] for row in rows]


# -- collecting ------------------------------------------------------------------------------


async def scan_snapshot_sources(
    access: AwsAccess,
    targets: Sequence[AccountTarget],
    regions: list[str] | str,
    *,
    options: ScanOptions | None = None,
) -> AsyncGenerator[ScanItem, None]:
    """Every snapshot source in ``targets`` x ``regions``: the engine's items for
    :data:`SNAPSHOT_TYPES`, then the EFS recovery points and their manifests."""
    options = options or ScanOptions()
    registry = default_registry()
    specs = [registry.get(cfn_type) for cfn_type in SNAPSHOT_TYPES]
    file_systems: dict[tuple[str, str], list[ResourceSnapshot]] = defaultdict(list)
    async with aclosing(scan_types(access, targets, regions, specs, options=options)) as items:
        async for item in items:
            if isinstance(item, ResourceSnapshot) and item.resource_type == EFS_FILE_SYSTEM:
                file_systems[(item.account_id, item.region)].append(item)
            yield item
    if not file_systems:
        return
    if options.on_scopes_planned is not None:
        options.on_scopes_planned(len(file_systems))
    by_account = {t.account_id: t for t in targets}
    gate = asyncio.Semaphore(options.max_concurrency)
    listings = [
        _RecoveryPointListing(
            access=access,
            target=by_account[account_id],
            region=region,
            file_systems=found,
            scan_id=options.scan_id,
            gate=gate,
        )
        for (account_id, region), found in file_systems.items()
    ]
    tasks = [asyncio.create_task(listing.run()) for listing in listings]
    try:
        for done in asyncio.as_completed(tasks):
            snapshots, manifest = await done
            for snapshot in snapshots:
                yield snapshot
            yield manifest
    finally:
        # A consumer that stops early must not leave listings running.
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@dataclass(kw_only=True)
class _RecoveryPointListing:
    """The recovery points of the EFS file systems of one account and region."""

    access: AwsAccess
    target: AccountTarget
    region: str
    file_systems: list[ResourceSnapshot]
    scan_id: str
    gate: asyncio.Semaphore
    snapshots: list[ResourceSnapshot] = field(default_factory=list)
    errors: list[ScanError] = field(default_factory=list)

    async def run(self) -> tuple[list[ResourceSnapshot], ScanManifest]:
        started = utcnow()
        listed = 0
        async with self.gate:
            try:
                session = self.access.session(self.target)
                async with self.access.client(session, "backup", self.region) as backup:
                    for file_system in self.file_systems:
                        if await self._list(backup, file_system):
                            listed += 1
                        elif self._hopeless():
                            break
            except Exception as exc:  # the client could not be made (credentials, endpoint)
                self.errors.append(to_scan_error(exc, None))
        status: ScanStatus = "complete"
        if self.errors:
            status = "partial" if listed else "failed"
        return self.snapshots, ScanManifest(
            scan_id=self.scan_id,
            account_id=self.target.account_id,
            region=self.region,
            resource_type=RECOVERY_POINT,
            status=status,
            started_at=started,
            finished_at=utcnow(),
            keys=[s.arn for s in self.snapshots],
            errors=self.errors[:10],
        )

    async def _list(self, backup: Any, file_system: ResourceSnapshot) -> bool:
        """List one file system's recovery points; False (and the error kept) on failure."""
        operation = "ListRecoveryPointsByResource"
        try:
            pages = backup.get_paginator("list_recovery_points_by_resource").paginate(
                ResourceArn=file_system.arn
            )
            points: list[dict[str, Any]] = []
            async for page in pages:
                points.extend(page.get("RecoveryPoints") or [])
        except Exception as exc:
            code = error_code(exc)
            if code in _ABSENT_FILE_SYSTEM:
                return True
            if code in UNSUPPORTED_OPERATION_CODES:
                message = (
                    f"AWS Backup {operation} is not offered by this endpoint ({code}): the "
                    f"recovery points of {len(self.file_systems)} EFS file system(s) in "
                    f"{self.target.account_id}/{self.region} are not listed"
                )
                self.errors.append(ScanError(code=code, message=message, operation=operation))
            else:
                self.errors.append(to_scan_error(exc, operation))
            return False
        for point in points:
            arn = point.get("RecoveryPointArn")
            if not isinstance(arn, str) or not arn:
                continue
            self.snapshots.append(
                ResourceSnapshot.build(
                    account_id=self.target.account_id,
                    region=self.region,
                    resource_type=RECOVERY_POINT,
                    resource_id=arn,
                    arn=arn,
                    configuration={
                        **point,
                        "ResourceArn": file_system.arn,
                        "ResourceType": "EFS",
                    },
                    scan_id=self.scan_id,
                )
            )
        return True

    def _hopeless(self) -> bool:
        """The last error will repeat for every other file system here: stop asking."""
        code = self.errors[-1].code
        return code in UNSUPPORTED_OPERATION_CODES or code in ACCESS_DENIED_CODES
