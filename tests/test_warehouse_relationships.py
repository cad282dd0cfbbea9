"""The warehouse's relationships dataset: written beside the changes that add and remove
edges, replaced with them on a replay, compacted to one row per edge event, and read back as
edge lifetimes (``relationship_intervals``) by DuckDB, as Athena's DDL declares them."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq

from cloudinv.core.models import ChangeEvent, Edge
from cloudinv.sinks.athena_ddl import athena_ddl
from cloudinv.sinks.parquet_warehouse import (
    RELATIONSHIP_COLUMNS,
    SETTLED_S,
    LocalTarget,
    ParquetWarehouse,
    PartitionKey,
)
from cloudinv.sinks.warehouse_query import run_query

ACCOUNT = "111111111111"
T1 = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)
T2 = T1 + timedelta(hours=2)
INSTANCE = f"arn:aws:ec2:us-east-1:{ACCOUNT}:instance/i-1"
SG_A = f"arn:aws:ec2:us-east-1:{ACCOUNT}:security-group/sg-a"
SG_B = f"arn:aws:ec2:us-east-1:{ACCOUNT}:security-group/sg-b"
SUBNET = f"arn:aws:ec2:us-east-1:{ACCOUNT}:subnet/subnet-1"
DIR = "relationships/resource_type=AWS::EC2::Instance/dt=2026-03-04"


def edge(relationship: str, key: str, target_type: str) -> Edge:
    return Edge(relationship=relationship, target_key=key, target_type=target_type)


SG = "AWS::EC2::SecurityGroup"


def change(n: int, at: datetime, added: list[Edge], removed: list[Edge]) -> ChangeEvent:
    return ChangeEvent(
        change_id=f"change-{n}",
        key=INSTANCE,
        resource_type="AWS::EC2::Instance",
        resource_id="i-1",
        account_id=ACCOUNT,
        region="us-east-1",
        change_type="created" if n == 1 else "modified",
        configuration={"InstanceId": "i-1"},
        after_hash=f"{n}" * 64,
        captured_at=at,
        detected_at=at,
        relationships_added=added,
        relationships_removed=removed,
    )


CHANGES = [
    change(
        1,
        T1,
        [edge("is associated with", SG_A, SG), edge("is contained in", SUBNET, "AWS::EC2::Subnet")],
        [],
    ),
    change(2, T2, [edge("is associated with", SG_B, SG)], [edge("is associated with", SG_A, SG)]),
]


async def test_relationship_rows_are_written_beside_their_changes(tmp_path: Path) -> None:
    root = tmp_path / "wh"
    warehouse = ParquetWarehouse([LocalTarget(root)])
    await warehouse.start()
    await warehouse.write_changes(CHANGES[:1], [(0, 10)])
    await warehouse.write_changes(CHANGES[1:], [(0, 11)])
    # A replay of both in one batch replaces the parts it supersedes, in both datasets.
    await warehouse.write_changes(CHANGES, [(0, 10), (0, 11)])
    files = sorted((root / DIR).glob("part-*.parquet"))
    assert [f.name for f in files] == [f"part-p0-o{10:020d}.parquet"]
    assert [f.name for f in sorted((root / DIR.replace("relationships", "changes")).glob("*"))] == [
        f.name for f in files
    ]
    table = pq.read_table(files[0])
    assert table.schema.names == [f.name for f in RELATIONSHIP_COLUMNS]
    assert sorted(
        zip(
            table.column("change_id").to_pylist(),
            table.column("action").to_pylist(),
            table.column("target_key").to_pylist(),
            strict=True,
        )
    ) == [
        ("change-1", "added", SG_A),
        ("change-1", "added", SUBNET),
        ("change-2", "added", SG_B),
        ("change-2", "removed", SG_A),
    ]
    assert warehouse.stats.relationship_rows == 2 + 2 + 4  # the replay counts again

    # Written twice (a change published again with its attribution), compacted to one.
    await warehouse.write_changes(CHANGES[1:], [(1, 5)])
    partition = PartitionKey("relationships", "AWS::EC2::Instance", "2026-03-04")
    assert await warehouse.compact(partition, now=time.time() + SETTLED_S + 1) == 2
    (merged,) = sorted((root / DIR).glob("part-*.parquet"))
    assert pq.read_table(merged).num_rows == 4
    await warehouse.close()

    # DuckDB: each edge's lifetime; the edges of 11:00 and of now.
    def edges_at(at: str) -> set[tuple[str, str]]:
        result = run_query(
            root,
            "SELECT relationship, target_key FROM relationship_intervals WHERE "
            f"source_key = '{INSTANCE}' AND valid_from <= TIMESTAMP '{at}' "
            f"AND (valid_to IS NULL OR valid_to > TIMESTAMP '{at}')",
        )
        return {(r[0], r[1]) for r in result.rows}

    assert edges_at("2026-03-04 11:00:00") == {
        ("is associated with", SG_A),
        ("is contained in", SUBNET),
    }
    assert edges_at("2026-03-04 13:00:00") == {
        ("is associated with", SG_B),
        ("is contained in", SUBNET),
    }
    closed = run_query(
        root,
        "SELECT valid_from, valid_to, opened_by, source_type FROM relationship_intervals "
        f"WHERE target_key = '{SG_A}'",
    )
    assert [(r[2], r[3]) for r in closed.rows] == [("change-1", "AWS::EC2::Instance")]
    assert closed.rows[0][1] is not None


def test_athena_declares_the_relationships_table_and_view() -> None:
    ddl = athena_ddl("inventory-bucket")
    block = ddl.split("CREATE EXTERNAL TABLE IF NOT EXISTS `relationships` (")[1].split(";")[0]
    assert "`target_key` string" in block and "`captured_at` timestamp" in block
    assert "LOCATION 's3://inventory-bucket/cloudinv/relationships/'" in block
    assert 'CREATE OR REPLACE VIEW "relationship_intervals" AS' in ddl
