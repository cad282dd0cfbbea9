"""Warehouse benchmark: files per type and day, and a ``cloudinv sql`` query over a day,
before and after compaction.

Writes one day of a demo-shaped warehouse through the real writer
(``cloudinv.sinks.parquet_warehouse.ParquetWarehouse``) into a local directory: ``--types``
resource types, each with its daily snapshot (``--resources`` per type), and the changes a
running worker leaves: a part per flush (``--flushes``; the worker flushes every 30 s, so 32
is 16 minutes) and per Kafka partition (``--partitions``), ``--changes`` changes each. Then:

1. counts the Parquet files of the day per type and times a query over the day with
   ``cloudinv.sinks.warehouse_query.run_query`` (what ``cloudinv sql`` runs: a DuckDB
   connection with every table and view, then the query), median of ``--repeat`` runs;
2. compacts every changes partition of the day (``ParquetWarehouse.compact``, as the worker
   that owns partition 0 does after each snapshot export, here with every part settled);
3. counts and times again.

Targets (issue 17): after compaction, at most a few files per type and day, and the query
answers in under 1 s. Usage::

    .venv/bin/python bench/warehouse.py                   # 20 types, 32 flushes, 1 partition
    .venv/bin/python bench/warehouse.py --types 5 --flushes 4    # a quick check
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cloudinv.catalog.registry import default_registry  # noqa: E402
from cloudinv.core.models import ChangeEvent, JsonPatchOp  # noqa: E402
from cloudinv.sinks.parquet_warehouse import (  # noqa: E402
    SETTLED_S,
    LocalTarget,
    ParquetWarehouse,
    PartitionKey,
)
from cloudinv.sinks.store import ResourceVersion  # noqa: E402
from cloudinv.sinks.warehouse_query import run_query  # noqa: E402

DAY = datetime(2026, 11, 3, 8, tzinfo=UTC)
ACCOUNTS = ["111111111111", "222222222222", "333333333333"]
MAX_FILES_PER_TYPE = 3
TARGET_S = 1.0
QUERY = (
    "SELECT resource_type, change_type, count(*) AS n FROM changes "
    f"WHERE dt = '{DAY.date().isoformat()}' GROUP BY 1, 2 ORDER BY 1, 2"
)


def _change(cfn_type: str, n: int, at: datetime) -> ChangeEvent:
    account = ACCOUNTS[n % len(ACCOUNTS)]
    rid = f"r-{n % 500:05d}"
    configuration = {"Name": rid, "Revision": n, "Tags": [{"Key": "env", "Value": "dev"}]}
    return ChangeEvent(
        change_id=f"{cfn_type}-{n:08d}",
        key=f"arn:aws:bench:us-east-1:{account}:{cfn_type.split('::')[-1].lower()}/{rid}",
        resource_type=cfn_type,
        resource_id=rid,
        account_id=account,
        region="us-east-1",
        change_type="modified",
        name=rid,
        prior_configuration={**configuration, "Revision": n - 1},
        configuration=configuration,
        before_hash="a" * 64,
        after_hash="b" * 64,
        patch=[JsonPatchOp(op="replace", path="/Revision", value=n)],
        changed_paths=["/Revision"],
        captured_at=at,
        detected_at=at + timedelta(seconds=1),
        scan_id="bench",
    )


def _version(cfn_type: str, n: int) -> ResourceVersion:
    change = _change(cfn_type, n, DAY)
    return ResourceVersion(
        key=change.key,
        resource_type=cfn_type,
        resource_id=change.resource_id,
        account_id=change.account_id,
        region=change.region,
        name=change.name,
        configuration=change.configuration or {},
        config_hash="c" * 64,
        valid_from=DAY,
        valid_to=None,
        change_id=change.change_id,
    )


async def populate(root: Path, args: argparse.Namespace) -> tuple[ParquetWarehouse, list[str]]:
    types = default_registry().types()[: args.types]
    warehouse = ParquetWarehouse([LocalTarget(root)])
    await warehouse.start()
    for cfn_type in types:
        versions = [_version(cfn_type, n) for n in range(args.resources)]
        await warehouse.write_snapshot(cfn_type, DAY.date(), versions, DAY)
    n = 0
    for flush in range(args.flushes):
        at = DAY + timedelta(seconds=30 * flush)
        batch: list[ChangeEvent] = []
        origins: list[tuple[int, int]] = []
        for partition in range(args.partitions):
            for cfn_type in types:
                for _ in range(args.changes):
                    batch.append(_change(cfn_type, n, at))
                    origins.append((partition, n))
                    n += 1
        await warehouse.write_changes(batch, origins)
    return warehouse, types


def files_per_type(root: Path) -> Counter[str]:
    day = f"dt={DAY.date().isoformat()}"
    return Counter(
        p.parent.parent.name.removeprefix("resource_type=")
        for p in root.rglob("part-*.parquet")
        if p.parent.name == day
    )


def time_query(root: Path, repeat: int) -> tuple[float, int]:
    seconds = []
    rows = 0
    for _ in range(repeat):
        started = time.perf_counter()
        result = run_query(root, QUERY)
        seconds.append(time.perf_counter() - started)
        rows = sum(int(row[-1]) for row in result.rows)
    return statistics.median(seconds), rows


async def compact_day(warehouse: ParquetWarehouse, types: list[str]) -> int:
    later = time.time() + SETTLED_S + 1
    merged = 0
    for cfn_type in types:
        partition = PartitionKey("changes", cfn_type, DAY.date().isoformat())
        merged += await warehouse.compact(partition, now=later)
    return merged


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--types", type=int, default=20)
    parser.add_argument("--resources", type=int, default=300, help="per type, in the snapshot")
    parser.add_argument("--flushes", type=int, default=32, help="32 = 16 minutes of a worker")
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--changes", type=int, default=2, help="per type, partition and flush")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cloudinv-bench-warehouse-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        warehouse, types = asyncio.run(populate(root, args))
        print(f"populated {len(types)} types in {time.perf_counter() - started:.1f} s")
        before = files_per_type(root)
        before_s, before_rows = time_query(root, args.repeat)
        started = time.perf_counter()
        merged = asyncio.run(compact_day(warehouse, types))
        compact_s = time.perf_counter() - started
        after = files_per_type(root)
        after_s, after_rows = time_query(root, args.repeat)
    if before_rows != after_rows:
        print(f"ERROR: the query counted {before_rows} changes before, {after_rows} after")
        return 1
    print(f"\n{before_rows:,} changes of one day, {len(types)} types; query: {QUERY}\n")
    print(f"{'':22} {'files':>7} {'max/type':>9} {'query s':>8}")
    print(f"{'before compaction':22} {sum(before.values()):7d} {max(before.values()):9d} "
          f"{before_s:8.2f}")  # fmt: skip
    print(f"{'after compaction':22} {sum(after.values()):7d} {max(after.values()):9d} "
          f"{after_s:8.2f}")  # fmt: skip
    print(f"\ncompaction merged {merged} parts in {compact_s:.1f} s")
    met = max(after.values()) <= MAX_FILES_PER_TYPE and after_s < TARGET_S
    print(
        f"target (issue 17): at most {MAX_FILES_PER_TYPE} files per type and day after "
        f"compaction, query < {TARGET_S:.0f} s: {'met' if met else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
