"""``cloudinv sql``: DuckDB over a warehouse the writer produced, with Athena's table names."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from pathlib import Path

import orjson

from cloudinv.sinks.parquet_warehouse import LocalTarget, ParquetWarehouse
from tests.cli_helpers import run_cli
from tests.test_warehouse import ACCOUNT, DAY, INSTANCE, OTHER, _version, change


async def write_warehouse(root: Path) -> None:
    warehouse = ParquetWarehouse([LocalTarget(root)])
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
