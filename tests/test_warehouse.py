"""The Parquet warehouse: files read back with the documented schema, locally and on moto's
S3; replays write the same objects; failed writes are retried and keep their data; the daily
snapshot comes from the store."""

from __future__ import annotations

import io
import os
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cloudinv.core.models import Attribution, ChangeEvent, JsonPatchOp
from cloudinv.sinks.parquet_warehouse import (
    CHANGE_COLUMNS,
    SETTLED_S,
    SNAPSHOT_COLUMNS,
    LocalTarget,
    ParquetWarehouse,
    PartitionKey,
    S3Target,
    WarehouseError,
    changes_schema,
)
from cloudinv.sinks.sqlite_store import SqliteStore
from cloudinv.sinks.versioning import improves
from cloudinv.sinks.warehouse_query import run_query
from cloudinv.sinks.warehouse_schema import configuration_type
from cloudinv.streams.warehouse import SnapshotExporter

ACCOUNT = "111111111111"
OTHER = "222222222222"
DAY = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)

INSTANCE = {
    "InstanceId": "i-0abc",
    "InstanceType": "t3.micro",
    "LaunchTime": "2026-03-01T08:00:00Z",
    "State": {"Code": 16, "Name": "running"},
    "EbsOptimized": False,
    "Tags": [{"Key": "Name", "Value": "web"}],
    "SecurityGroups": [{"GroupId": "sg-1", "GroupName": "default"}],
}


def change(
    i: int,
    *,
    resource_type: str = "AWS::EC2::Instance",
    configuration: dict[str, Any] | None = None,
    prior: dict[str, Any] | None = None,
    account: str = ACCOUNT,
    at: datetime = DAY,
) -> ChangeEvent:
    return ChangeEvent(
        change_id=f"change-{i:04d}",
        key=f"arn:aws:ec2:us-east-1:{account}:instance/i-{i}",
        resource_type=resource_type,
        resource_id=f"i-{i}",
        account_id=account,
        region="us-east-1",
        change_type="modified" if prior else "created",
        name=f"web-{i}",
        prior_configuration=prior,
        configuration=configuration if configuration is not None else INSTANCE,
        before_hash="a" * 64 if prior else None,
        after_hash="b" * 64,
        patch=[JsonPatchOp(op="replace", path="/State/Name", value="running")],
        changed_paths=["/State/Name"],
        captured_at=at,
        detected_at=at + timedelta(seconds=1),
        scan_id="scan-1",
        attribution=Attribution(
            event_id="ev-1",
            event_name="StartInstances",
            event_time=at,
            principal_arn="arn:aws:iam::111111111111:user/alice",
        ),
    )


def parts(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("part-*.parquet"))}


async def local_warehouse(root: Path, **kwargs: Any) -> ParquetWarehouse:
    warehouse = ParquetWarehouse([LocalTarget(root)], **kwargs)
    await warehouse.start()
    return warehouse


async def test_changes_read_back_with_the_documented_schema(tmp_path: Path) -> None:
    warehouse = await local_warehouse(tmp_path)
    stopped = {**INSTANCE, "State": {"Code": 80, "Name": "stopped"}}
    batch = [
        change(1),
        change(2, configuration=stopped, prior=INSTANCE),
        change(3, resource_type="AWS::Custom::Thing", configuration={"x": 1}),
    ]
    assert await warehouse.write_changes(batch) == 2

    files = parts(tmp_path)
    instance_files = [p for p in files if "resource_type=AWS::EC2::Instance/dt=2026-03-04" in p]
    assert len(instance_files) == 1 and len(files) == 2
    table = pq.read_table(tmp_path / instance_files[0])
    typed = configuration_type("AWS::EC2::Instance")
    assert table.schema.names == [f.name for f in CHANGE_COLUMNS] + [
        "prior_configuration",
        "configuration",
    ]
    assert table.schema.field("configuration").type == typed
    assert table.schema.field("captured_at").type == pa.timestamp("ms", tz="UTC")
    rows = {r["change_id"]: r for r in table.to_pylist()}
    assert set(rows) == {"change-0001", "change-0002"}
    second = rows["change-0002"]
    assert second["configuration"]["State"] == {"Code": 80, "Name": "stopped"}
    assert second["prior_configuration"]["State"]["Name"] == "running"
    assert second["configuration"]["LaunchTime"] == datetime(2026, 3, 1, 8, tzinfo=UTC)
    assert second["configuration"]["Tags"] == [{"Key": "Name", "Value": "web"}]
    assert second["configuration"]["InstanceType"] == "t3.micro"
    assert second["changed_paths"] == ["/State/Name"]
    assert second["attribution"]["principal_arn"] == "arn:aws:iam::111111111111:user/alice"
    assert second["patch_json"] == '[{"op":"replace","path":"/State/Name","value":"running"}]'
    assert second["captured_at"] == DAY

    # An unregistered type has the common columns only, configuration as JSON.
    custom = next(p for p in files if "AWS::Custom::Thing" in p)
    custom_table = pq.read_table(tmp_path / custom)
    assert custom_table.schema.names == [f.name for f in CHANGE_COLUMNS]
    assert custom_table.column("configuration_json").to_pylist() == ['{"x":1}']


async def test_values_that_do_not_fit_their_shape_are_counted_and_kept_as_json(
    tmp_path: Path,
) -> None:
    warehouse = await local_warehouse(tmp_path)
    odd = {**INSTANCE, "State": "running", "EbsOptimized": "yes", "AmiLaunchIndex": "3"}
    await warehouse.write_changes([change(1, configuration=odd)])
    (path,) = parts(tmp_path)
    row = pq.read_table(tmp_path / path).to_pylist()[0]
    assert row["configuration"]["State"] is None
    assert row["configuration"]["EbsOptimized"] is None
    assert row["configuration"]["AmiLaunchIndex"] == 3
    assert '"State":"running"' in row["configuration_json"]
    assert warehouse.stats.coerce.mismatches == 2


async def test_a_replayed_batch_replaces_the_same_files(tmp_path: Path) -> None:
    warehouse = await local_warehouse(tmp_path / "a")
    batch = [change(i, at=DAY + timedelta(days=i % 2)) for i in range(10)]
    origins = [(3, 100 + i) for i in range(10)]
    await warehouse.write_changes(batch, origins)
    first = parts(tmp_path / "a")
    assert sorted(first) == [
        "changes/resource_type=AWS::EC2::Instance/dt=2026-03-04/"
        "part-p3-o00000000000000000100.parquet",
        "changes/resource_type=AWS::EC2::Instance/dt=2026-03-05/"
        "part-p3-o00000000000000000101.parquet",
    ]
    await warehouse.write_changes(batch, origins)
    assert parts(tmp_path / "a") == first

    # Without origins the part is named by its change ids: the same batch, the same name.
    hashed = await local_warehouse(tmp_path / "b")
    await hashed.write_changes(batch[:4])
    once = parts(tmp_path / "b")
    await hashed.write_changes(list(reversed(batch[:4])))
    assert sorted(parts(tmp_path / "b")) == sorted(once)
    assert len(once) == 2


async def test_a_replay_cut_into_other_batches_leaves_each_change_in_one_part(
    tmp_path: Path,
) -> None:
    batch = [change(i) for i in range(10)]
    origins = [(2, 100 + i) for i in range(10)]

    def rows(root: Path) -> list[str]:
        return sorted(
            i
            for data in parts(root).values()
            for i in pq.read_table(io.BytesIO(data)).column("change_id").to_pylist()
        )

    # Written in two batches, replayed in one: the second part is superseded.
    two_then_one = await local_warehouse(tmp_path / "a")
    await two_then_one.write_changes(batch[:4], origins[:4])
    await two_then_one.write_changes(batch[4:], origins[4:])
    assert len(parts(tmp_path / "a")) == 2
    await two_then_one.write_changes(batch, origins)
    assert [p.rsplit("/", 1)[1] for p in parts(tmp_path / "a")] == [
        "part-p2-o00000000000000000100.parquet"
    ]
    assert rows(tmp_path / "a") == [c.change_id for c in batch]

    # Written in one batch, replayed in two: the first part is replaced, the second new.
    one_then_two = await local_warehouse(tmp_path / "b")
    await one_then_two.write_changes(batch, origins)
    await one_then_two.write_changes(batch[:4], origins[:4])
    await one_then_two.write_changes(batch[4:], origins[4:])
    assert rows(tmp_path / "b") == [c.change_id for c in batch]
    assert len(parts(tmp_path / "b")) == 2

    # Other Kafka partitions' parts are never touched.
    await one_then_two.write_changes([change(50)], [(3, 101)])
    await one_then_two.write_changes(batch, origins)
    assert rows(tmp_path / "b") == sorted([c.change_id for c in batch] + ["change-0050"])


async def test_large_partitions_are_split_into_several_files(tmp_path: Path) -> None:
    warehouse = await local_warehouse(tmp_path, max_rows_per_file=3)
    await warehouse.write_changes([change(i) for i in range(7)], [(0, i) for i in range(7)])
    files = parts(tmp_path)
    assert len(files) == 3
    total = sum(pq.read_table(io.BytesIO(data)).num_rows for data in files.values())
    assert total == 7


async def test_a_type_with_no_resources_has_no_snapshot_file(tmp_path: Path) -> None:
    """Most registered types are empty in an estate: no file for them (each would cost every
    query a read), and a type whose last resources went away loses its earlier file."""
    warehouse = await local_warehouse(tmp_path)
    try:
        assert await warehouse.write_snapshot("AWS::EC2::Volume", DAY.date(), [], DAY) == 0
        assert parts(tmp_path) == {}
        versions = [_version(i, ACCOUNT) for i in range(2)]
        assert await warehouse.write_snapshot("AWS::EC2::Instance", DAY.date(), versions, DAY) == 1
        assert len(parts(tmp_path)) == 1
        assert await warehouse.write_snapshot("AWS::EC2::Instance", DAY.date(), [], DAY) == 0
        assert parts(tmp_path) == {}
        assert warehouse.stats.files_deleted == 1
    finally:
        await warehouse.close()


async def test_a_failed_write_keeps_the_batch_until_a_later_flush_succeeds(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "warehouse"
    blocker.write_text("a file where the warehouse directory should be")
    warehouse = ParquetWarehouse([LocalTarget(blocker)], attempts=2, first_delay_s=0.01)
    warehouse.add_changes([change(1), change(2)])
    with pytest.raises(WarehouseError, match="after 2 attempts"):
        await warehouse.flush()
    assert warehouse.pending == 2
    assert warehouse.stats.retries == 1

    blocker.unlink()
    assert await warehouse.flush() == 1
    assert warehouse.pending == 0
    (path,) = parts(blocker)
    assert pq.read_table(blocker / path).num_rows == 2


async def test_s3_target_on_moto_writes_the_same_layout(moto_endpoint: str, unique: str) -> None:
    from aiobotocore.session import get_session

    bucket = f"warehouse-{unique}"
    async with get_session().create_client(
        "s3", region_name="us-east-1", endpoint_url=moto_endpoint
    ) as s3:
        await s3.create_bucket(Bucket=bucket)
        # A tiny multipart threshold: every file goes through a multipart upload.
        target = S3Target(
            bucket, "inv/", region="us-east-1", endpoint_url=moto_endpoint, multipart_threshold=1
        )
        warehouse = ParquetWarehouse([target])
        await warehouse.start()
        try:
            batch = [change(i) for i in range(3)]
            await warehouse.write_changes(batch, [(0, 7 + i) for i in range(3)])
            await warehouse.write_changes(batch, [(0, 7 + i) for i in range(3)])  # a replay
            versions = [_version(i, ACCOUNT) for i in range(2)] + [_version(9, OTHER)]
            await warehouse.write_snapshot("AWS::EC2::Instance", DAY.date(), versions, DAY)
            await warehouse.write_snapshot("AWS::EC2::Instance", DAY.date(), versions[:2], DAY)
        finally:
            await warehouse.close()

        listed = await s3.list_objects_v2(Bucket=bucket, Prefix="inv/")
        keys = sorted(item["Key"] for item in listed["Contents"])
        assert keys == [
            "inv/changes/resource_type=AWS::EC2::Instance/dt=2026-03-04/"
            "part-p0-o00000000000000000007.parquet",
            "inv/snapshots/resource_type=AWS::EC2::Instance/dt=2026-03-04/part-snapshot.parquet",
        ]
        body = await (await s3.get_object(Bucket=bucket, Key=keys[0]))["Body"].read()
        table = pq.read_table(io.BytesIO(body))
        assert table.column("change_id").to_pylist() == [f"change-{i:04d}" for i in range(3)]
        assert table.schema.field("configuration").type == configuration_type("AWS::EC2::Instance")
        body = await (await s3.get_object(Bucket=bucket, Key=keys[1]))["Body"].read()
        snapshot = pq.read_table(io.BytesIO(body))
        assert snapshot.schema.names == [f.name for f in SNAPSHOT_COLUMNS] + ["configuration"]
        assert snapshot.column("resource_id").to_pylist() == ["i-0", "i-1"]
    assert warehouse.stats.files_deleted == 0  # one snapshot file, replaced in place


async def test_s3_multipart_upload_of_a_large_part(moto_endpoint: str, unique: str) -> None:
    from aiobotocore.session import get_session

    bucket = f"warehouse-big-{unique}"
    data = os.urandom(11 * 1024 * 1024 + 3)
    async with get_session().create_client(
        "s3", region_name="us-east-1", endpoint_url=moto_endpoint
    ) as s3:
        await s3.create_bucket(Bucket=bucket)
        target = S3Target(bucket, "", endpoint_url=moto_endpoint, multipart_threshold=1)
        try:
            await target.put("changes/resource_type=AWS::X::Y/dt=2026-01-01/part-big.parquet", data)
            assert await target.list("changes/resource_type=AWS::X::Y/dt=2026-01-01") == [
                "changes/resource_type=AWS::X::Y/dt=2026-01-01/part-big.parquet"
            ]
        finally:
            await target.close()
        key = "changes/resource_type=AWS::X::Y/dt=2026-01-01/part-big.parquet"
        head = await s3.head_object(Bucket=bucket, Key=key)
        assert head["ETag"].strip('"').endswith("-2")  # two 8 MiB-or-less parts
        body = await (await s3.get_object(Bucket=bucket, Key=key))["Body"].read()
        assert body == data


def test_targets_follow_the_storage_settings(tmp_path: Path) -> None:
    from cloudinv.core.errors import ConfigError
    from cloudinv.sinks.parquet_warehouse import targets_for

    local_only = targets_for(["local", "dynamodb"], data_dir=tmp_path, s3_bucket=None, s3_prefix="")
    assert [t.name for t in local_only] == [f"local:{tmp_path / 'warehouse'}"]
    assert targets_for(["dynamodb"], data_dir=tmp_path, s3_bucket=None, s3_prefix="") == []
    both = targets_for(["local", "s3"], data_dir=tmp_path, s3_bucket="inv", s3_prefix="p/")
    assert [t.name for t in both][1] == "s3://inv/p"
    with pytest.raises(ConfigError, match="s3_bucket is not set"):
        targets_for(["s3"], data_dir=tmp_path, s3_bucket=None, s3_prefix="")


def _version(i: int, account: str) -> Any:
    from cloudinv.sinks.store import ResourceVersion

    return ResourceVersion(
        key=f"arn:aws:ec2:us-east-1:{account}:instance/i-{i}",
        resource_type="AWS::EC2::Instance",
        resource_id=f"i-{i}",
        account_id=account,
        region="us-east-1",
        name=None,
        configuration={**INSTANCE, "InstanceId": f"i-{i}"},
        config_hash="c" * 64,
        valid_from=DAY - timedelta(days=1),
        change_id=f"opened-{i}",
    )


async def test_daily_snapshot_comes_from_the_store_as_of_each_day(tmp_path: Path) -> None:
    root = tmp_path / "warehouse"
    warehouse = await local_warehouse(root)
    day1 = datetime(2026, 3, 4, 12, tzinfo=UTC)
    async with SqliteStore.in_data_dir(tmp_path) as store:
        await store.put_changes(
            [
                change(1, at=day1, account=ACCOUNT),
                change(2, at=day1, account=ACCOUNT),
                change(3, at=day1, account=OTHER),
            ]
        )
        now = [day1 + timedelta(hours=1)]
        exporter = SnapshotExporter(
            store, warehouse, lambda: ["AWS::EC2::Instance"], lambda: now[0]
        )
        assert await exporter.run_once() == 3
        day1_dir = root / "snapshots/resource_type=AWS::EC2::Instance/dt=2026-03-04"
        # Every account in one file.
        assert sorted(p.name for p in day1_dir.iterdir()) == ["part-snapshot.parquet"]
        assert pq.read_table(day1_dir / "part-snapshot.parquet").column(
            "account_id"
        ).to_pylist() == [ACCOUNT, ACCOUNT, OTHER]

        # Next day: i-3 (the other account's only resource) was deleted the evening before.
        gone = ChangeEvent(
            **{
                **change(3, account=OTHER, at=day1).model_dump(),
                "change_id": "gone-3",
                "change_type": "deleted",
                "prior_configuration": INSTANCE,
                "configuration": None,
                "before_hash": "b" * 64,
                "after_hash": None,
                "patch": [],
                "captured_at": day1 + timedelta(hours=8),
                "detected_at": day1 + timedelta(hours=8),
            }
        )
        await store.put_changes([gone])
        now[0] = day1 + timedelta(days=1)
        assert await exporter.run_once() == 2 + 2
        # Yesterday's final snapshot (as of 23:59:59.999999) no longer holds i-3 ...
        assert sorted(p.name for p in day1_dir.iterdir()) == ["part-snapshot.parquet"]
        final = pq.read_table(day1_dir / "part-snapshot.parquet")
        assert (
            final.column("snapshot_at").to_pylist()
            == [datetime(2026, 3, 4, 23, 59, 59, 999000, tzinfo=UTC)] * 2
        )
        # ... and today's holds the two current instances, typed.
        day2 = root / "snapshots/resource_type=AWS::EC2::Instance/dt=2026-03-05"
        today = pq.read_table(day2 / "part-snapshot.parquet").to_pylist()
        assert sorted(r["resource_id"] for r in today) == ["i-1", "i-2"]
        assert today[0]["configuration"]["State"]["Name"] == "running"
        assert today[0]["change_id"].startswith("change-")
    assert date(2026, 3, 5) == exporter.last_day


CHANGES_DIR = "changes/resource_type=AWS::EC2::Instance/dt=2026-03-04"
CHANGES_PARTITION = PartitionKey("changes", "AWS::EC2::Instance", "2026-03-04")


async def write_small_batches(warehouse: ParquetWarehouse) -> list[str]:
    """Ten flushes of two Kafka partitions, one change twice (a replay cut differently
    without origins); returns the change ids written, in captured_at order."""
    ids = []
    for n in range(10):
        batch = [change(n * 2 + k, at=DAY + timedelta(minutes=n * 2 + k)) for k in range(2)]
        await warehouse.write_changes(batch, [(n % 2, 100 + n * 2 + k) for k in range(2)])
        ids += [c.change_id for c in batch]
    await warehouse.write_changes([change(3, at=DAY + timedelta(minutes=3))])
    return ids


async def test_compaction_merges_a_days_settled_parts_into_one_file(tmp_path: Path) -> None:
    root = tmp_path / "warehouse"
    warehouse = await local_warehouse(root)
    ids = await write_small_batches(warehouse)
    folder = root / CHANGES_DIR
    assert len(list(folder.glob("part-*.parquet"))) == 11

    # Parts just written are not settled: nothing happens.
    assert await warehouse.compact(CHANGES_PARTITION) == 0
    assert len(list(folder.glob("part-*.parquet"))) == 11

    later = time.time() + SETTLED_S + 1
    assert await warehouse.compact(CHANGES_PARTITION, now=later) == 11
    (merged,) = folder.glob("part-*.parquet")
    assert merged.name.startswith("part-c")
    table = pq.read_table(merged)
    # Every change once, oldest first, with the schema of the parts.
    assert table.column("change_id").to_pylist() == ids
    assert table.schema == changes_schema("AWS::EC2::Instance")
    assert not list(folder.glob(".tmp-*"))
    # Once one file, compaction leaves it alone.
    assert await warehouse.compact(CHANGES_PARTITION, now=later) == 0

    # New parts join the compacted file once they are settled.
    await warehouse.write_changes([change(50, at=DAY + timedelta(hours=5))], [(0, 500)])
    assert await warehouse.compact(CHANGES_PARTITION) == 0
    assert await warehouse.compact(CHANGES_PARTITION, now=time.time() + SETTLED_S + 1) == 2
    (again,) = folder.glob("part-*.parquet")
    assert again.name != merged.name
    assert pq.read_table(again).column("change_id").to_pylist() == [*ids, "change-0050"]
    assert warehouse.stats.compactions == 2 and warehouse.stats.files_compacted == 13


async def test_compaction_splits_above_the_row_limit_and_only_compacts_changes(
    tmp_path: Path,
) -> None:
    root = tmp_path / "warehouse"
    warehouse = await local_warehouse(root, max_rows_per_file=8)
    ids = await write_small_batches(warehouse)
    assert await warehouse.compact(CHANGES_PARTITION, now=time.time() + SETTLED_S + 1) > 0
    # part-c<digest>.parquet, then part-c<digest>-1.parquet, -2 ...
    files = sorted((root / CHANGES_DIR).glob("part-*.parquet"), key=lambda f: len(f.name))
    files = files[:1] + sorted(files[1:])
    assert [pq.read_table(f).num_rows for f in files] == [8, 8, 4]
    assert [i for f in files for i in pq.read_table(f).column("change_id").to_pylist()] == ids
    with pytest.raises(ValueError, match="only changes"):
        await warehouse.compact(PartitionKey("snapshots", "AWS::EC2::Instance", "2026-03-04"))


async def test_compaction_on_s3_replaces_the_parts_with_one_object(
    moto_endpoint: str, unique: str
) -> None:
    from aiobotocore.session import get_session

    bucket = f"warehouse-compact-{unique}"
    async with get_session().create_client(
        "s3", region_name="us-east-1", endpoint_url=moto_endpoint
    ) as s3:
        await s3.create_bucket(Bucket=bucket)
        target = S3Target(bucket, "inv", region="us-east-1", endpoint_url=moto_endpoint)
        warehouse = ParquetWarehouse([target])
        await warehouse.start()
        try:
            ids = await write_small_batches(warehouse)
            assert len(await target.list(CHANGES_DIR)) == 11
            later = time.time() + SETTLED_S + 1
            assert await warehouse.compact(CHANGES_PARTITION, now=later) == 11
            (key,) = await target.list(CHANGES_DIR)
            table = pq.read_table(io.BytesIO(await target.get(key)))
        finally:
            await warehouse.close()
        assert key.rsplit("/", 1)[1].startswith("part-c")
        assert table.column("change_id").to_pylist() == ids


async def test_compaction_keeps_the_attributed_copy_of_a_change_published_twice(
    tmp_path: Path,
) -> None:
    """A change stored before its CloudTrail event is published again, same change_id, with
    its attribution: the compacted day holds that copy, whichever part came first; one
    published again with a better attribution (it ranks higher) holds the later one."""
    root = tmp_path / "warehouse"
    warehouse = await local_warehouse(root)
    attributed = change(7, at=DAY)
    unattributed = attributed.model_copy(update={"attribution": None})
    await warehouse.write_changes([unattributed], [(0, 10)])
    await warehouse.write_changes([attributed], [(0, 11)])
    await warehouse.write_changes([change(8, at=DAY).model_copy(update={"attribution": None})])
    inherited = change(9, at=DAY)
    assert inherited.attribution is not None
    declared = inherited.attribution.model_copy(
        update={"event_id": "ev-2", "event_name": "ModifyInstanceAttribute", "match": "declared"}
    )
    inherited = inherited.model_copy(
        update={"attribution": inherited.attribution.model_copy(update={"match": "inherited"})}
    )
    await warehouse.write_changes(
        [inherited.model_copy(update={"attribution": declared})], [(0, 21)]
    )
    await warehouse.write_changes([inherited], [(0, 20)])
    await warehouse.write_changes(
        [change(9, at=DAY).model_copy(update={"attribution": None})], [(0, 22)]
    )
    assert await warehouse.compact(CHANGES_PARTITION, now=time.time() + SETTLED_S + 1) == 6
    (merged,) = (root / CHANGES_DIR).glob("part-*.parquet")
    rows = pq.read_table(merged).to_pylist()
    by_id = {r["change_id"]: r for r in rows}
    assert len(rows) == 3
    assert by_id["change-0007"]["attribution"]["event_name"] == "StartInstances"
    assert by_id["change-0008"]["attribution"] is None
    assert by_id["change-0009"]["attribution"]["event_id"] == "ev-2"
    assert by_id["change-0009"]["attribution"]["match"] == "declared"


async def test_the_latest_per_day_view_picks_the_copy_compaction_keeps(tmp_path: Path) -> None:
    """Copies of one change (same change_id, captured_at and detected_at) published as its
    attribution improved: the view picks the same copy as compaction, before and after it,
    by the attribution's rank, not by `match` alone (an event in the change's window ranks
    above a declared one outside it) nor by the order the copies were written in."""
    root = tmp_path / "warehouse"
    warehouse = await local_warehouse(root)
    base = change(9, prior=INSTANCE).model_copy(
        update={"attribution": None, "prior_seen_at": DAY - timedelta(minutes=5)}
    )
    event = Attribution(
        event_id="ev-outside",
        event_name="ModifyInstanceAttribute",
        event_time=DAY + timedelta(minutes=3),  # after the change was observed: outside
        match="declared",
    )
    outside = base.model_copy(update={"attribution": event})
    referenced = base.model_copy(
        update={
            "attribution": event.model_copy(
                update={
                    "event_id": "ev-in-window",
                    "event_time": DAY - timedelta(minutes=1),
                    "match": "referenced",
                }
            )
        }
    )
    inherited = change(7, prior=INSTANCE).model_copy(
        update={"attribution": event.model_copy(update={"event_id": "ev-i", "match": "inherited"})}
    )
    in_window = {"event_id": "ev-d", "event_time": DAY - timedelta(seconds=30)}
    declared = inherited.model_copy(update={"attribution": event.model_copy(update=in_window)})
    # Published in this order: each copy only when it improves on the one before, as the
    # attribution join does; the offsets make the parts' order the publishing order.
    published = [base, outside, referenced, inherited, declared]
    for earlier, later in ((base, outside), (outside, referenced), (inherited, declared)):
        assert improves(later, later.attribution, earlier.attribution)
    for offset, copy in enumerate(published, start=30):
        await warehouse.write_changes([copy], [(0, offset)])
    query = (
        "SELECT change_id, attribution.event_id AS event_id, attribution_rank "
        "FROM changes_latest_per_day ORDER BY change_id"
    )
    expected = [("change-0007", "ev-d", 11), ("change-0009", "ev-in-window", 9)]
    assert run_query(root, query).rows == expected
    assert await warehouse.compact(CHANGES_PARTITION, now=time.time() + SETTLED_S + 1) == 5
    (merged,) = (root / CHANGES_DIR).glob("part-*.parquet")
    kept = sorted(
        (r["change_id"], r["attribution"]["event_id"], r["attribution_rank"])
        for r in pq.read_table(merged).to_pylist()
    )
    assert kept == expected
    assert run_query(root, query).rows == expected
