"""``cloudinv sql``: DuckDB over a warehouse the writer produced, with Athena's table names."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from pathlib import Path

import orjson

from cloudinv.sinks.parquet_warehouse import (
    LocalTarget,
    ParquetWarehouse,
    S3Target,
    WarehouseTarget,
)
from cloudinv.sinks.warehouse_query import S3Credentials, S3Warehouse, run_query
from tests.cli_helpers import run_cli
from tests.test_warehouse import ACCOUNT, DAY, INSTANCE, OTHER, _version, change


async def write_warehouse(root: Path | WarehouseTarget) -> None:
    warehouse = ParquetWarehouse([LocalTarget(root) if isinstance(root, Path) else root])
    await warehouse.start()
    stopped = {**INSTANCE, "State": {"Code": 80, "Name": "stopped"}}
    await warehouse.write_changes(
        [change(1), change(2, configuration=stopped, prior=INSTANCE)], [(0, 1), (0, 2)]
    )
    # Change 2 in a second part too, as readers may see it between two writes of a replay.
    await warehouse.write_changes([change(2, configuration=stopped, prior=INSTANCE)], [(0, 2)])
    await warehouse.write_changes(
        [change(5, resource_type="AWS::Custom::Thing", configuration={"x": 1})]
    )
    yesterday = [_version(1, ACCOUNT), _version(2, ACCOUNT), _version(3, OTHER)]
    await warehouse.write_snapshot(
        "AWS::EC2::Instance", (DAY - timedelta(days=1)).date(), yesterday, DAY - timedelta(days=1)
    )
    await warehouse.write_snapshot("AWS::EC2::Instance", DAY.date(), yesterday[:2], DAY)
    await warehouse.close()


async def test_queries_run_over_the_written_warehouse(tmp_path: Path) -> None:
    root = tmp_path / "wh"
    await write_warehouse(root)

    done = run_cli(
        "sql",
        "SELECT resource_type, dt, change_id, configuration_json FROM changes ORDER BY change_id",
        "--warehouse",
        str(root),
        "--format",
        "csv",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [(r["resource_type"], r["dt"], r["change_id"]) for r in rows] == [
        ("AWS::EC2::Instance", "2026-03-04", "change-0001"),
        ("AWS::EC2::Instance", "2026-03-04", "change-0002"),
        ("AWS::EC2::Instance", "2026-03-04", "change-0002"),
        ("AWS::Custom::Thing", "2026-03-04", "change-0005"),
    ]

    # Typed columns of the per-type table, and the dedupe of the latest-per-day view.
    done = run_cli(
        "sql",
        "SELECT DISTINCT resource_id, configuration.State.Name AS state, "
        "configuration.LaunchTime AS t FROM changes_ec2_instance "
        "WHERE configuration.State.Code = 80",
        "--warehouse",
        str(root),
        "--format",
        "json",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout) == [
        {"resource_id": "i-2", "state": "stopped", "t": "2026-03-01T08:00:00+00:00"}
    ]
    done = run_cli(
        "sql",
        "SELECT count(*) AS n FROM changes_latest_per_day",
        "--warehouse",
        str(root),
        "--format",
        "json",
        cwd=tmp_path,
    )
    assert orjson.loads(done.stdout) == [{"n": 3}]

    # Current: the latest day's snapshot only (i-3 was gone today).
    done = run_cli(
        "sql",
        "SELECT dt, resource_id FROM snapshots_current ORDER BY resource_id",
        "--warehouse",
        str(root),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "i-1" in done.stdout and "i-2" in done.stdout and "i-3" not in done.stdout
    assert "2026-03-04" in done.stdout and "2 row(s)" in done.stdout
    done = run_cli(
        "sql",
        "SELECT dt, count(*) AS n FROM snapshots_ec2_instance GROUP BY dt ORDER BY dt",
        "--warehouse",
        str(root),
        "--format",
        "json",
        cwd=tmp_path,
    )
    assert orjson.loads(done.stdout) == [{"dt": "2026-03-03", "n": 3}, {"dt": "2026-03-04", "n": 2}]


async def test_bad_queries_and_an_empty_warehouse_are_clear_errors(tmp_path: Path) -> None:
    root = tmp_path / "wh"
    await write_warehouse(root)
    done = run_cli("sql", "SELECT * FROM nowhere", "--warehouse", str(root), cwd=tmp_path)
    assert done.returncode == 1
    assert "query failed" in done.stderr and "nowhere" in done.stderr
    assert "snapshots_ec2_instance" in done.stderr  # the tables that do exist are listed
    assert "Traceback" not in done.stderr

    done = run_cli("sql", "SELEC 1", "--warehouse", str(root), cwd=tmp_path)
    assert done.returncode == 1 and "syntax error" in done.stderr.lower()

    # Only the tables a query names are made; the catalog still shows them all.
    shown = run_query(root, "SHOW TABLES")
    assert {"changes", "snapshots_current", "changes_ec2_instance"} <= {r[0] for r in shown.rows}

    empty = run_cli("sql", "SELECT 1", "--warehouse", str(tmp_path / "none"), cwd=tmp_path)
    assert empty.returncode == 1
    assert "has no Parquet files yet" in empty.stderr

    # Defaults to <storage.data_dir>/warehouse.
    data_dir = tmp_path / "data"
    await write_warehouse(data_dir / "warehouse")
    done = run_cli(
        "sql",
        "SELECT count(*) AS n FROM snapshots",
        "--format",
        "json",
        cwd=tmp_path,
        env={"CLOUDINV_STORAGE__DATA_DIR": str(data_dir)},
    )
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout) == [{"n": 5}]


S3_QUERIES = (
    "SELECT resource_type, dt, change_id, configuration_json FROM changes ORDER BY change_id",
    "SELECT DISTINCT resource_id, configuration.State.Name AS state FROM changes_ec2_instance "
    "WHERE configuration.State.Code = 80",
    "SELECT count(*) AS n FROM changes_latest_per_day",
    "SELECT dt, resource_id FROM snapshots_current ORDER BY resource_id",
    "SELECT dt, count(*) AS n FROM snapshots_ec2_instance GROUP BY dt ORDER BY dt",
    "SELECT account_id, count(*) FROM snapshots WHERE dt = '2026-03-03' GROUP BY 1 ORDER BY 1",
)


async def test_the_s3_warehouse_answers_as_the_local_one(
    tmp_path: Path, moto_endpoint: str, unique: str
) -> None:
    """DuckDB's httpfs extension cannot be installed here (it is downloaded on first use):
    S3 is read through pyarrow's S3 filesystem, against moto's S3."""
    from aiobotocore.session import get_session

    bucket = f"sql-{unique}"
    async with get_session().create_client(
        "s3", region_name="us-east-1", endpoint_url=moto_endpoint
    ) as s3:
        await s3.create_bucket(Bucket=bucket)
    await write_warehouse(S3Target(bucket, "inv", region="us-east-1", endpoint_url=moto_endpoint))
    local = tmp_path / "wh"
    await write_warehouse(local)
    source = S3Warehouse(
        f"s3://{bucket}/inv",
        credentials=S3Credentials("testing", "testing"),
        region="us-east-1",
        endpoint_url=moto_endpoint,
    )
    for query in S3_QUERIES:
        assert run_query(source, query).rows == run_query(local, query).rows, query

    # The command: --warehouse s3://..., and by default when storage.targets is ["s3"].
    env = {
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    query = "SELECT count(*) AS n FROM changes"
    done = run_cli(
        "sql", query, "--warehouse", f"s3://{bucket}/inv", "--format", "json",
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout) == [{"n": 4}]
    defaults = {
        **env,
        "CLOUDINV_STORAGE__TARGETS": '["s3"]',
        "CLOUDINV_STORAGE__S3_BUCKET": bucket,
        "CLOUDINV_STORAGE__S3_PREFIX": "inv",
    }
    done = run_cli("sql", query, "--format", "json", cwd=tmp_path, env=defaults)
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout) == [{"n": 4}]
    missing = run_cli(
        "sql", query, "--warehouse", f"s3://{bucket}/nothing-here", cwd=tmp_path, env=env
    )
    assert missing.returncode == 1 and "has no Parquet files yet" in missing.stderr
