"""The snapshot inventory and S3 metrics reports: pure builders, tables, CLI, real moto.

The snapshot report's rows, age buckets and totals are checked on hand-built snapshots
(including ones still being created); its EFS part on a recorded AWS Backup
ListRecoveryPointsByResource response, served in two pages by a proxy in front of moto
(moto lacks the operation), and on moto alone, where the missing operation is a reported
gap. The S3 metrics report runs against moto's CloudWatch in two regions, with decoy
datapoints in the wrong region, and through a proxy denying one region.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import random
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from rich.console import Console

from cloudinv.cli.report import print_snapshot_report
from cloudinv.core.models import ResourceSnapshot, ScanManifest, utcnow
from cloudinv.producers.credentials import AccountTarget, AwsAccess
from cloudinv.producers.engine import ScanOptions
from cloudinv.producers.reports.s3_metrics import (
    S3_COLUMNS,
    ReportMonth,
    build_s3_metrics_report,
    collect_bucket_metrics,
    scan_buckets,
)
from cloudinv.producers.reports.snapshots import (
    DETAIL_COLUMNS,
    RECOVERY_POINT,
    SUMMARY_COLUMNS,
    build_snapshot_report,
    detail_cells,
    scan_snapshot_sources,
    summary_cells,
)
from tests.cli_helpers import run_cli
from tests.conftest import SCAN_DENIED_REGION
from tests.moto_helpers import account_session

NOW = datetime(2026, 6, 30, 12, 0, tzinfo=UTC)
GIB = 1024**3

DOCUMENTED_DETAIL_COLUMNS = [
    "Account",
    "Service",
    "Region",
    "Type",
    "Snapshot ID",
    "Source",
    "Source Name",
    "Engine",
    "Size (GB)",
    "Status",
    "Creation Time",
    "Age (days)",
    "Encrypted",
    "Description",
    "Volume Type",
    "Volume IOPS",
    "Volume Throughput",
]
DOCUMENTED_SUMMARY_COLUMNS = [
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
]
STORAGE_CLASS_COLUMNS = {
    "StandardStorage": "size_standard",
    "IntelligentTieringFAStorage": "size_intelligent_tiering_frequent",
    "IntelligentTieringIAStorage": "size_intelligent_tiering_infrequent",
    "IntelligentTieringAIAStorage": "size_intelligent_tiering_archive_instant",
    "IntelligentTieringAAStorage": "size_intelligent_tiering_archive",
    "IntelligentTieringDAAStorage": "size_intelligent_tiering_deep_archive",
    "StandardIAStorage": "size_standard_ia",
    "StandardIASizeOverhead": "size_standard_ia_size_overhead",
    "StandardIAObjectOverhead": "size_standard_ia_object_overhead",
    "OneZoneIAStorage": "size_one_zone_ia",
    "OneZoneIASizeOverhead": "size_one_zone_ia_size_overhead",
    "ReducedRedundancyStorage": "size_reduced_redundancy",
    "GlacierInstantRetrievalStorage": "size_glacier_instant",
    "GlacierIRSizeOverhead": "size_glacier_instant_size_overhead",
    "GlacierStorage": "size_glacier",
    "GlacierStagingStorage": "size_glacier_staging",
    "GlacierObjectOverhead": "size_glacier_object_overhead",
    "GlacierS3ObjectOverhead": "size_glacier_s3_object_overhead",
    "DeepArchiveStorage": "size_deep_archive",
    "DeepArchiveStagingStorage": "size_deep_archive_staging",
    "DeepArchiveObjectOverhead": "size_deep_archive_object_overhead",
    "DeepArchiveS3ObjectOverhead": "size_deep_archive_s3_object_overhead",
    "ExpressOneZone": "size_express_one_zone",
}


def new_account() -> str:
    return f"8{random.randrange(10**10, 10**11):011d}"


def snapshot(
    resource_type: str,
    resource_id: str,
    configuration: dict[str, Any],
    *,
    account: str = "111111111111",
    region: str = "us-east-1",
    name: str | None = None,
    tags: dict[str, str] | None = None,
    arn: str | None = None,
) -> ResourceSnapshot:
    return ResourceSnapshot.build(
        account_id=account,
        region=region,
        resource_type=resource_type,
        resource_id=resource_id,
        arn=arn or f"arn:aws:test:{region}:{account}:{resource_id}",
        configuration=configuration,
        scan_id="test",
        name=name,
        tags=tags,
    )


def ago(days: float) -> str:
    return (NOW - timedelta(days=days)).isoformat()


FS_ARN = "arn:aws:elasticfilesystem:us-east-1:111111111111:file-system/fs-1"


def estate_snapshots() -> list[ResourceSnapshot]:
    rp = "arn:aws:backup:us-east-1:111111111111:recovery-point:"
    return [
        snapshot(
            "AWS::EC2::Volume",
            "vol-1",
            {"VolumeId": "vol-1", "VolumeType": "gp3", "Iops": 3000, "Throughput": 125},
            name="data",
        ),
        snapshot(
            "AWS::EC2::Snapshot",
            "snap-a",
            {
                "SnapshotId": "snap-a",
                "VolumeId": "vol-1",
                "VolumeSize": 100,
                "State": "completed",
                "StartTime": ago(3),
                "Encrypted": True,
                "Description": "nightly",
            },
        ),
        snapshot(  # made by Data Lifecycle Manager; its volume is gone
            "AWS::EC2::Snapshot",
            "snap-b",
            {
                "SnapshotId": "snap-b",
                "VolumeId": "vol-gone",
                "VolumeSize": 8,
                "State": "completed",
                "StartTime": ago(8),
                "Encrypted": False,
            },
            name="old-root",
            tags={"Name": "old-root", "aws:dlm:lifecycle-policy-id": "policy-1"},
        ),
        snapshot(  # still being created: no start time yet
            "AWS::EC2::Snapshot",
            "snap-c",
            {"SnapshotId": "snap-c", "VolumeId": "vol-1", "VolumeSize": 50, "State": "pending"},
        ),
        snapshot(
            "AWS::RDS::DBSnapshot",
            "db-1-manual",
            {
                "DBSnapshotIdentifier": "db-1-manual",
                "DBInstanceIdentifier": "db-1",
                "SnapshotType": "manual",
                "Engine": "postgres",
                "AllocatedStorage": 20,
                "Status": "available",
                "SnapshotCreateTime": ago(45),
                "Encrypted": False,
                "StorageType": "gp2",
            },
        ),
        snapshot(
            "AWS::RDS::DBSnapshot",
            "rds:db-1-auto",
            {
                "DBSnapshotIdentifier": "rds:db-1-auto",
                "DBInstanceIdentifier": "db-1",
                "SnapshotType": "automated",
                "Engine": "postgres",
                "AllocatedStorage": 20,
                "Status": "available",
                "SnapshotCreateTime": ago(7),
                "Encrypted": True,
                "StorageType": "io1",
                "Iops": 1000,
            },
        ),
        snapshot(  # still being created: no SnapshotCreateTime yet
            "AWS::RDS::DBSnapshot",
            "db-1-now",
            {
                "DBSnapshotIdentifier": "db-1-now",
                "DBInstanceIdentifier": "db-1",
                "SnapshotType": "manual",
                "Engine": "postgres",
                "AllocatedStorage": 20,
                "Status": "creating",
                "Encrypted": False,
            },
        ),
        snapshot(
            "AWS::RDS::DBClusterSnapshot",
            "rds:aurora-1-auto",
            {
                "DBClusterSnapshotIdentifier": "rds:aurora-1-auto",
                "DBClusterIdentifier": "aurora-1",
                "SnapshotType": "automated",
                "Engine": "aurora-postgresql",
                "AllocatedStorage": 1,
                "Status": "available",
                "SnapshotCreateTime": ago(400),
                "StorageEncrypted": True,
            },
            region="eu-west-1",
        ),
        snapshot(
            "AWS::EFS::FileSystem",
            "fs-1",
            {"FileSystemId": "fs-1", "FileSystemArn": FS_ARN, "Encrypted": False},
            name="shared",
            arn=FS_ARN,
        ),
        snapshot(
            RECOVERY_POINT,
            rp + "old",
            {
                "RecoveryPointArn": rp + "old",
                "ResourceArn": FS_ARN,
                "ResourceType": "EFS",
                "CreationDate": ago(800),
                "Status": "COMPLETED",
                "BackupSizeBytes": 2 * GIB,
                "EncryptionKeyArn": "arn:aws:kms:us-east-1:111111111111:key/k",
            },
            arn=rp + "old",
        ),
        snapshot(
            RECOVERY_POINT,
            rp + "plain",
            {
                "RecoveryPointArn": rp + "plain",
                "ResourceArn": FS_ARN,
                "ResourceType": "EFS",
                "CreationDate": ago(200),
                "Status": "COMPLETED",
                "BackupSizeBytes": GIB // 2,
            },
            arn=rp + "plain",
        ),
    ]


def test_snapshot_report_rows_age_buckets_and_totals() -> None:
    report = build_snapshot_report(estate_snapshots(), NOW)
    rows = {r.snapshot_id: r for r in report.rows}
    assert len(report.rows) == 9  # the volume and the file system are sources, not rows

    a = rows["snap-a"]
    assert (a.service, a.snapshot_type, a.source, a.source_name) == (
        "EBS",
        "manual",
        "vol-1",
        "data",
    )
    assert (a.volume_type, a.volume_iops, a.volume_throughput) == ("gp3", 3000, 125)
    assert (a.size_gb, a.encrypted, a.description, a.age_days) == (100, True, "nightly", 3)
    b = rows["snap-b"]
    assert (b.snapshot_type, b.source, b.source_name, b.volume_type) == (
        "automated",
        "vol-gone",
        "old-root",
        "",
    )
    assert b.age_bucket == "8-30 days"
    for still_creating in (rows["snap-c"], rows["db-1-now"]):
        assert still_creating.created_at is None and still_creating.age_days is None
        assert still_creating.age_bucket == "no creation time"
    assert rows["snap-c"].status == "pending" and rows["db-1-now"].status == "creating"

    auto = rows["rds:db-1-auto"]
    assert (auto.service, auto.snapshot_type, auto.engine, auto.age_bucket) == (
        "RDS",
        "automated",
        "postgres",
        "0-7 days",  # exactly 7 days old: the first bucket includes its bound
    )
    assert (auto.volume_type, auto.volume_iops, auto.encrypted) == ("io1", 1000, True)
    assert rows["db-1-manual"].age_bucket == "31-90 days"
    cluster = rows["rds:aurora-1-auto"]
    assert (cluster.source, cluster.engine, cluster.encrypted, cluster.age_bucket) == (
        "aurora-1",
        "aurora-postgresql",
        True,
        "366-730 days",
    )

    old = rows["arn:aws:backup:us-east-1:111111111111:recovery-point:old"]
    plain = rows["arn:aws:backup:us-east-1:111111111111:recovery-point:plain"]
    assert (old.service, old.source, old.source_name, old.size_gb) == ("EFS", "fs-1", "shared", 2)
    assert old.encrypted is True  # its encryption key is named
    assert plain.encrypted is False  # no key on the point: the file system is not encrypted
    assert (old.age_bucket, plain.age_bucket, plain.size_gb) == (
        "over 730 days",
        "181-365 days",
        0.5,
    )

    groups = {(g.service, g.source, g.age_bucket): g for g in report.groups}
    assert groups[("RDS", "db-1", "0-7 days")].snapshot_ids == ["rds:db-1-auto"]
    assert groups[("RDS", "db-1", "no creation time")].count == 1
    assert groups[("EBS", "vol-1", "0-7 days")].total_gb == 100
    assert groups[("EBS", "vol-1", "no creation time")].snapshot_ids == ["snap-c"]
    assert sum(g.count for g in report.groups) == len(report.rows)
    totals = {t.service: (t.count, t.total_gb) for t in report.service_totals}
    assert totals == {"EBS": (3, 158), "EFS": (2, 2.5), "RDS": (4, 61)}
    assert (report.total.count, report.total.total_gb) == (9, 221.5)
    assert report.complete


def test_ages_count_from_now_not_from_the_newest_snapshot() -> None:
    only_old = [
        snapshot(
            "AWS::EC2::Snapshot",
            "snap-old",
            {"SnapshotId": "snap-old", "VolumeId": "v", "StartTime": ago(100), "VolumeSize": 1},
        )
    ]
    (row,) = build_snapshot_report(only_old, NOW).rows
    assert (row.age_days, row.age_bucket) == (100, "91-180 days")


def test_incomplete_manifests_are_gaps() -> None:
    manifest = ScanManifest.model_validate(
        {
            "scan_id": "t",
            "account_id": "111111111111",
            "region": "eu-west-1",
            "resource_type": RECOVERY_POINT,
            "status": "failed",
            "started_at": NOW,
            "finished_at": NOW,
            "errors": [{"code": "404", "message": "not here", "operation": "X"}],
        }
    )
    complete = manifest.model_copy(update={"status": "complete", "errors": []})
    report = build_snapshot_report([], NOW, [manifest, complete])
    (gap,) = report.gaps
    assert (gap.region, gap.code, gap.unsupported, report.complete) == (
        "eu-west-1",
        "404",
        True,
        False,
    )


def table_lines(text: str, title: str) -> tuple[str, list[str]]:
    """The header line and body lines of the table titled ``title`` in rendered output."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == title)
    header = next(line for line in lines[start:] if line.startswith("┃"))
    body: list[str] = []
    for line in lines[lines.index(header, start) + 1 :]:
        if line.startswith("└"):
            break
        if line.startswith("│"):
            body.append(line)
    return header, body


def cells_of(line: str, bounds: list[int]) -> list[str]:
    return [line[a + 1 : b].strip() for a, b in itertools.pairwise(bounds)]


def test_console_tables_put_every_value_under_its_header() -> None:
    report = build_snapshot_report(estate_snapshots(), NOW)
    out = io.StringIO()
    print_snapshot_report(report, Console(file=out, width=400, color_system=None))
    text = out.getvalue()

    header, body = table_lines(text, "Snapshots")
    bounds = [i for i, ch in enumerate(header) if ch == "┃"]
    assert cells_of(header, bounds) == DOCUMENTED_DETAIL_COLUMNS
    assert len(body) == len(report.rows)
    for line, row in zip(body, report.rows, strict=True):
        assert [i for i, ch in enumerate(line) if ch == "│"] == bounds, line
        assert cells_of(line, bounds) == detail_cells(row)

    header, body = table_lines(text, "Summary by service, source and age")
    bounds = [i for i, ch in enumerate(header) if ch == "┃"]
    assert cells_of(header, bounds) == DOCUMENTED_SUMMARY_COLUMNS[:-1]
    expected = [cells[:-1] for cells in summary_cells(report)]
    assert [cells_of(line, bounds) for line in body] == expected
    assert expected[-1][:1] == ["total"] and expected[-1][7] == "9"


# -- against moto --------------------------------------------------------------------------


def seed_snapshots(endpoint: str, account: str, region: str) -> dict[str, Any]:
    session = account_session(endpoint, account)
    ec2 = session.client("ec2", endpoint_url=endpoint, region_name=region)
    volume = ec2.create_volume(
        AvailabilityZone=f"{region}a", Size=16, VolumeType="gp3", Iops=4000, Throughput=250
    )["VolumeId"]
    ebs = ec2.create_snapshot(VolumeId=volume, Description="before upgrade")["SnapshotId"]
    rds = session.client("rds", endpoint_url=endpoint, region_name=region)
    rds.create_db_instance(
        DBInstanceIdentifier="orders",
        DBInstanceClass="db.t3.micro",
        Engine="postgres",
        AllocatedStorage=20,
        MasterUsername="admin1",
        MasterUserPassword="secret-password",
        BackupRetentionPeriod=7,  # moto then makes an automated snapshot
    )
    rds.create_db_snapshot(DBInstanceIdentifier="orders", DBSnapshotIdentifier="orders-manual")
    rds.create_db_cluster(
        DBClusterIdentifier="ledger",
        Engine="aurora-postgresql",
        MasterUsername="admin1",
        MasterUserPassword="secret-password",
    )
    rds.create_db_cluster_snapshot(
        DBClusterIdentifier="ledger", DBClusterSnapshotIdentifier="ledger-manual"
    )
    efs = session.client("efs", endpoint_url=endpoint, region_name=region)
    file_system = efs.create_file_system(
        CreationToken=f"shared-{account}",
        Encrypted=False,
        Tags=[{"Key": "Name", "Value": "shared"}],
    )
    return {"volume": volume, "ebs": ebs, "file_system_arn": file_system["FileSystemArn"]}


def test_cli_snapshot_report_csv_and_efs_gap(moto_endpoint: str, tmp_path: Path) -> None:
    account = new_account()
    seeded = {
        region: seed_snapshots(moto_endpoint, account, region)
        for region in ("us-east-1", "eu-west-1")
    }
    out = tmp_path / "snapshots.csv"

    result = run_cli(
        "report",
        "snapshots",
        "--role-arn",
        f"arn:aws:iam::{account}:role/cloudinv-reader",
        "--regions",
        "us-east-1,eu-west-1",
        "--csv",
        str(out),
        "--no-progress",
        cwd=tmp_path,
        env={"AWS_ENDPOINT_URL": moto_endpoint},
    )

    # moto has no ListRecoveryPointsByResource: a reported gap, so exit 1, never a crash.
    assert result.returncode == 1, result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert "Not collected" in result.stdout and "ListRecoveryPointsByResource" in result.stdout
    assert "unsupported here" in result.stdout
    with out.open(newline="") as f:
        reader = csv.reader(f)
        assert next(reader) == DOCUMENTED_DETAIL_COLUMNS == list(DETAIL_COLUMNS)
        rows = [dict(zip(DOCUMENTED_DETAIL_COLUMNS, r, strict=True)) for r in reader]
    by_id = {(r["Region"], r["Snapshot ID"]): r for r in rows}
    for region, ids in seeded.items():
        ebs = by_id[(region, ids["ebs"])]
        assert (ebs["Source"], ebs["Volume Type"], ebs["Volume IOPS"]) == (
            ids["volume"],
            "gp3",
            "4000",
        )
        assert (ebs["Volume Throughput"], ebs["Size (GB)"], ebs["Description"]) == (
            "250",
            "16",
            "before upgrade",
        )
        assert by_id[(region, "orders-manual")]["Type"] == "manual"
        assert by_id[(region, "ledger-manual")]["Engine"] == "aurora-postgresql"
        automated = [r for r in rows if r["Region"] == region and r["Type"] == "automated"]
        assert {r["Source"] for r in automated} >= {"orders"}
    assert {r["Account"] for r in rows} == {account}
    summary = tmp_path / "snapshots-summary.csv"
    with summary.open(newline="") as f:
        summary_rows = list(csv.reader(f))
    assert summary_rows[0] == DOCUMENTED_SUMMARY_COLUMNS == list(SUMMARY_COLUMNS)
    assert summary_rows[-1][0] == "total" and summary_rows[-1][7] == str(len(rows))


RECORDED_PAGES = {
    None: {
        "NextToken": "page-2",
        "RecoveryPoints": [
            {
                "RecoveryPointArn": "arn:aws:backup:us-east-1:{account}:recovery-point:a1",
                "CreationDate": 1767225600.0,  # 2026-01-01
                "Status": "COMPLETED",
                "EncryptionKeyArn": "arn:aws:kms:us-east-1:{account}:key/1234",
                "EncryptionKeyType": "CUSTOMER_MANAGED_KMS_KEY",
                "BackupSizeBytes": 3 * GIB,
                "BackupVaultName": "Default",
                "IsParent": False,
                "ResourceName": "shared",
                "VaultType": "BACKUP_VAULT",
            }
        ],
    },
    "page-2": {
        "RecoveryPoints": [
            {
                "RecoveryPointArn": "arn:aws:backup:us-east-1:{account}:recovery-point:b2",
                "CreationDate": 1764547200.0,  # 2025-12-01
                "Status": "PARTIAL",
                "BackupSizeBytes": GIB,
                "BackupVaultName": "Default",
                "IsParent": False,
                "ResourceName": "shared",
            }
        ]
    },
}


@pytest.fixture
async def backup_proxy(moto_endpoint: str) -> AsyncIterator[tuple[str, list[tuple[str, str]]]]:
    """moto, except AWS Backup ListRecoveryPointsByResource, answered from RECORDED_PAGES
    (as AWS answers: rest-json, timestamps in epoch seconds). Yields the URL and the
    (file system ARN, nextToken) of each listing request served."""
    from aiohttp import web

    from tests.moto_proxy import moto_proxy

    route = re.compile(r"^/resources/(?P<arn>[^?]+)/recovery-points/?$")
    served: list[tuple[str, str]] = []

    async def intercept(request: web.Request) -> web.Response | None:
        match = route.match(request.raw_path.split("?", 1)[0])
        if request.method != "GET" or not match:
            return None
        arn = unquote(match["arn"])
        token = request.query.get("nextToken")
        served.append((arn, token or ""))
        account = arn.split(":")[4]
        body = json.dumps(RECORDED_PAGES[token]).replace("{account}", account)
        return web.Response(text=body, content_type="application/json")

    async with moto_proxy(moto_endpoint, intercept) as url:
        yield url, served


async def test_efs_recovery_points_are_read_page_by_page(
    moto_endpoint: str, backup_proxy: tuple[str, list[tuple[str, str]]]
) -> None:
    proxy, served = backup_proxy
    account = new_account()
    session = account_session(moto_endpoint, account)
    efs = session.client("efs", endpoint_url=moto_endpoint, region_name="us-east-1")
    fs = efs.create_file_system(
        CreationToken="rp", Encrypted=False, Tags=[{"Key": "Name", "Value": "shared"}]
    )
    access = AwsAccess(endpoint_url=proxy)
    target = AccountTarget(
        account_id=account,
        role_arn=f"arn:aws:iam::{account}:role/cloudinv-reader",
        credentials=access.role_credentials(f"arn:aws:iam::{account}:role/cloudinv-reader"),
    )
    snapshots: list[ResourceSnapshot] = []
    manifests: list[ScanManifest] = []
    async for item in scan_snapshot_sources(access, [target], ["us-east-1"], options=ScanOptions()):
        (snapshots if isinstance(item, ResourceSnapshot) else manifests).append(item)

    assert served == [(fs["FileSystemArn"], ""), (fs["FileSystemArn"], "page-2")]
    assert {m.status for m in manifests} == {"complete"}
    report = build_snapshot_report(snapshots, datetime(2026, 1, 31, tzinfo=UTC), manifests)
    efs_rows = {r.snapshot_id.rsplit(":", 1)[-1]: r for r in report.rows if r.service == "EFS"}
    assert set(efs_rows) == {"a1", "b2"}
    a1, b2 = efs_rows["a1"], efs_rows["b2"]
    assert (a1.source, a1.source_name, a1.size_gb, a1.status) == (
        fs["FileSystemId"],
        "shared",
        3,
        "COMPLETED",
    )
    assert a1.created_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert (a1.encrypted, b2.encrypted) == (True, False)  # a key named; else the file system's
    assert (a1.age_bucket, b2.age_bucket) == ("8-30 days", "31-90 days")
    assert report.complete


# -- S3 metrics -----------------------------------------------------------------------------


def put_metric(
    cloudwatch: Any, bucket: str, storage_type: str, value: float, when: datetime, metric: str = ""
) -> None:
    metric = metric or (
        "NumberOfObjects" if storage_type == "AllStorageTypes" else "BucketSizeBytes"
    )
    cloudwatch.put_metric_data(
        Namespace="AWS/S3",
        MetricData=[
            {
                "MetricName": metric,
                "Dimensions": [
                    {"Name": "BucketName", "Value": bucket},
                    {"Name": "StorageType", "Value": storage_type},
                ],
                "Timestamp": when,
                "Value": value,
            }
        ],
    )


def create_bucket(session: Any, endpoint: str, name: str, region: str) -> None:
    s3 = session.client("s3", endpoint_url=endpoint, region_name=region)
    extra = (
        {}
        if region == "us-east-1"
        else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    )
    s3.create_bucket(Bucket=name, **extra)


def test_cli_s3_metrics_reads_each_bucket_in_its_own_region(
    moto_endpoint: str, tmp_path: Path
) -> None:
    account = new_account()
    session = account_session(moto_endpoint, account)
    month = ReportMonth.last_complete(utcnow())  # the command's default
    day = lambda n: month.start + timedelta(days=n - 1)  # noqa: E731
    east, west = f"m-east-{account}", f"m-west-{account}"
    # 21 more in eu-west-1: its buckets need two GetMetricData calls (20 per call).
    more = [f"m-west-{account}-{i}" for i in range(21)]
    create_bucket(session, moto_endpoint, east, "us-east-1")
    for name in (west, *more):
        create_bucket(session, moto_endpoint, name, "eu-west-1")
    cw_east = session.client("cloudwatch", endpoint_url=moto_endpoint, region_name="us-east-1")
    cw_west = session.client("cloudwatch", endpoint_url=moto_endpoint, region_name="eu-west-1")
    put_metric(cw_east, east, "StandardStorage", 300, day(10))
    put_metric(cw_east, east, "StandardStorage", 100, day(20))  # the last one, not the max
    put_metric(cw_east, east, "GlacierStorage", 7000, day(20))
    put_metric(cw_east, east, "AllStorageTypes", 42, day(20))
    put_metric(cw_east, east, "StandardStorage", 999_999, month.end + timedelta(hours=12))
    put_metric(cw_east, west, "StandardStorage", 555, day(20))  # a decoy in the wrong region
    put_metric(cw_west, west, "StandardStorage", 2048, day(15))
    put_metric(cw_west, west, "IntelligentTieringAIAStorage", 11, day(15))
    put_metric(cw_west, west, "ReducedRedundancyStorage", 22, day(15))
    put_metric(cw_west, west, "DeepArchiveStorage", 33, day(15))
    put_metric(cw_west, west, "AllStorageTypes", 5, day(15))
    for i, name in enumerate(more):
        put_metric(cw_west, name, "StandardIAStorage", i + 1, day(2))
    out = tmp_path / "s3.csv"

    result = run_cli(
        "report",
        "s3-metrics",
        "--role-arn",
        f"arn:aws:iam::{account}:role/cloudinv-reader",
        "--csv",
        str(out),
        "--no-progress",
        cwd=tmp_path,
        env={"AWS_ENDPOINT_URL": moto_endpoint},
    )

    assert result.returncode == 0, result.stderr + result.stdout
    assert f"S3 storage, {month}" in result.stdout
    with out.open(newline="") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or [])
        rows = {r["bucket_name"]: r for r in reader}
    assert header[:6] == [
        "bucket_name",
        "account",
        "region",
        "creation_date",
        "total_objects",
        "total_size",
    ]
    assert header[6:] == list(STORAGE_CLASS_COLUMNS.values()) and header == list(S3_COLUMNS)
    assert set(rows) == {east, west, *more}
    e, w = rows[east], rows[west]
    assert (e["region"], e["account"], w["region"]) == ("us-east-1", account, "eu-west-1")
    assert (e["size_standard"], e["size_glacier"], e["total_objects"], e["total_size"]) == (
        "100",
        "7000",
        "42",
        "7100",
    )
    assert (w["size_standard"], w["total_objects"], w["total_size"]) == ("2048", "5", "2114")
    assert w["size_intelligent_tiering_archive_instant"] == "11"
    assert (w["size_reduced_redundancy"], w["size_deep_archive"]) == ("22", "33")
    assert e["size_deep_archive"] == "0" and w["size_glacier"] == "0"
    assert [rows[name]["size_standard_ia"] for name in more] == [str(i + 1) for i in range(21)]


async def test_s3_metrics_unreadable_region_is_blank_and_a_gap(
    moto_endpoint: str, denying_proxy: str
) -> None:
    account = new_account()
    session = account_session(moto_endpoint, account)
    month = ReportMonth.parse("2026-03")
    readable, denied = f"ok-{account}", f"denied-{account}"
    create_bucket(session, moto_endpoint, readable, "us-east-1")
    create_bucket(session, moto_endpoint, denied, SCAN_DENIED_REGION)
    for name, region in ((readable, "us-east-1"), (denied, SCAN_DENIED_REGION)):
        cloudwatch = session.client("cloudwatch", endpoint_url=moto_endpoint, region_name=region)
        put_metric(cloudwatch, name, "StandardStorage", 64, month.start + timedelta(days=3))

    access = AwsAccess(endpoint_url=denying_proxy)
    role = f"arn:aws:iam::{account}:role/cloudinv-reader"
    target = AccountTarget(
        account_id=account, role_arn=role, credentials=access.role_credentials(role)
    )
    buckets: list[ResourceSnapshot] = []
    manifests: list[ScanManifest] = []
    async for item in scan_buckets(access, [target]):
        (buckets if isinstance(item, ResourceSnapshot) else manifests).append(item)
    datapoints, gaps = await collect_bucket_metrics(access, [target], buckets, month)
    report = build_s3_metrics_report(buckets, datapoints, month, utcnow(), gaps)

    rows = {r.bucket_name: r for r in report.rows}
    assert (rows[readable].sizes["size_standard"], rows[readable].total_size) == (64, 64)
    assert rows[denied].region == SCAN_DENIED_REGION
    assert rows[denied].total_objects is None and rows[denied].total_size is None
    assert set(rows[denied].sizes.values()) == {None}  # unknown, never 0
    (gap,) = report.gaps
    assert (gap.region, gap.status, gap.operation) == (
        SCAN_DENIED_REGION,
        "failed",
        "GetMetricData",
    )
    assert not report.complete
