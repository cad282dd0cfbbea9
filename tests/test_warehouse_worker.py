"""The warehouse sink agent in a real Faust worker against the real broker: changes sent to
the changes topic become Parquet parts, and the daily snapshot is exported from the store."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from aiokafka import AIOKafkaProducer

from cloudinv.core.models import utcnow
from cloudinv.core.settings import StorageSettings
from cloudinv.core.topics import Topic, topic_name
from cloudinv.sinks.parquet_warehouse import LocalTarget, ParquetWarehouse
from cloudinv.sinks.sqlite_store import SqliteStore
from cloudinv.streams import warehouse as warehouse_stage
from cloudinv.streams.app import StreamConfig, create_app
from tests.test_warehouse import change


async def test_worker_writes_changes_and_the_daily_snapshot(
    broker: str, unique: str, tmp_path: Path
) -> None:
    config = StreamConfig(
        bootstrap=broker,
        data_dir=tmp_path,
        app_id=f"test-warehouse-{unique}",
        topic_prefix=f"w{unique}",
        partitions=2,
    )
    now = utcnow()
    async with SqliteStore.in_data_dir(tmp_path) as seed:
        await seed.put_changes([change(100 + i, at=now) for i in range(3)])

    app = create_app(config)
    stage = warehouse_stage.bind(
        app,
        config,
        storage=StorageSettings(
            data_dir=tmp_path,
            targets=["local"],
            warehouse_flush_s=0.3,
            warehouse_snapshot_interval_s=600,
        ),
        changed_min_gap_s=0.5,
    )
    assert stage is not None
    sent = [change(i, at=now) for i in range(5)]
    await app.start()
    try:
        async with asyncio.timeout(60):
            while stage.snapshot_runs < 1:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        # What the store sink does with the changes about to be sent: the next export, soon
        # after the warehouse wrote them (not after the 600 s interval), includes them.
        async with SqliteStore.in_data_dir(tmp_path) as store:
            await store.put_changes(sent)
        producer = AIOKafkaProducer(bootstrap_servers=broker)
        await producer.start()
        try:
            for c in sent:
                await producer.send_and_wait(
                    topic_name(Topic.CHANGES, config.topic_prefix),
                    value=c.model_dump_json().encode(),
                    key=c.key.encode(),
                )
            await producer.send_and_wait(
                topic_name(Topic.CHANGES, config.topic_prefix), value=b"not json", key=b"x"
            )
        finally:
            await producer.stop()

        root = tmp_path / "warehouse"
        async with asyncio.timeout(60):
            while stage.changes < len(sent) or stage.snapshot_runs < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.2)
    finally:
        await app.stop()

    day = now.date().isoformat()
    change_parts = sorted(
        (root / f"changes/resource_type=AWS::EC2::Instance/dt={day}").glob("part-p*-o*.parquet")
    )
    assert change_parts, "no changes part written"
    ids = sorted(i for p in change_parts for i in pq.read_table(p).column("change_id").to_pylist())
    assert ids == sorted(c.change_id for c in sent)
    assert stage.undecodable == 1

    snapshot = pq.read_table(
        root / f"snapshots/resource_type=AWS::EC2::Instance/dt={day}/part-snapshot.parquet"
    )
    assert sorted(snapshot.column("resource_id").to_pylist()) == sorted(
        [f"i-{i}" for i in range(5)] + ["i-100", "i-101", "i-102"]
    )


def test_the_worker_app_binds_the_sink_unless_no_parquet_target(tmp_path: Path) -> None:
    from cloudinv.streams.worker import build_worker_app

    config = StreamConfig(bootstrap="127.0.0.1:9", data_dir=tmp_path, app_id="wh-bind")
    app = build_worker_app(config)
    assert any(name.endswith("warehouse_changes") for name in app.agents)

    other = create_app(StreamConfig(bootstrap="127.0.0.1:9", data_dir=tmp_path, app_id="wh-no"))
    none = warehouse_stage.bind(other, config, storage=StorageSettings(targets=["dynamodb"]))
    assert none is None
    assert not any(name.endswith("warehouse_changes") for name in other.agents)


async def test_the_worker_app_writes_changes_to_the_local_warehouse(
    broker: str, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cloudinv.streams.worker import build_worker_app

    monkeypatch.setenv("CLOUDINV_STORAGE__WAREHOUSE_FLUSH_S", "0.3")
    config = StreamConfig(
        bootstrap=broker,
        data_dir=tmp_path,
        app_id=f"test-warehouse-app-{unique}",
        topic_prefix=f"wa{unique}",
        partitions=2,
    )
    app = build_worker_app(config)
    sent = [change(i, at=utcnow()) for i in range(3)]
    await app.start()
    try:
        producer = AIOKafkaProducer(bootstrap_servers=broker)
        await producer.start()
        try:
            for c in sent:
                await producer.send_and_wait(
                    topic_name(Topic.CHANGES, config.topic_prefix),
                    value=c.model_dump_json().encode(),
                    key=c.key.encode(),
                )
        finally:
            await producer.stop()
        root = tmp_path / "warehouse" / "changes"
        written: list[str] = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(20):
                while len(written) < len(sent):
                    await asyncio.sleep(0.3)
                    written = [
                        i
                        for p in root.rglob("part-*.parquet")
                        for i in pq.read_table(p).column("change_id").to_pylist()
                    ]
        assert sorted(written) == sorted(c.change_id for c in sent)
    finally:
        await app.stop()


async def test_of_two_workers_only_the_owner_of_partition_0_exports_the_snapshot(
    broker: str, unique: str, tmp_path: Path
) -> None:
    config = StreamConfig(
        bootstrap=broker,
        data_dir=tmp_path,
        app_id=f"test-warehouse-two-{unique}",
        topic_prefix=f"w2{unique}",
        partitions=2,
    )
    async with SqliteStore.in_data_dir(tmp_path) as seed:
        await seed.put_changes([change(i, at=utcnow()) for i in range(3)])
    storage = StorageSettings(
        data_dir=tmp_path,
        targets=["local"],
        warehouse_flush_s=0.3,
        warehouse_snapshot_interval_s=600,
    )
    apps, stages = [], []
    for n in range(2):
        # Each worker its own Faust data directory; one store and one warehouse for both.
        own = dataclasses.replace(config, data_dir=tmp_path / f"worker-{n}")
        app = create_app(own)
        stage = warehouse_stage.bind(
            app,
            own,
            storage=storage,
            warehouse=ParquetWarehouse([LocalTarget(tmp_path / "warehouse")]),
            store=SqliteStore.in_data_dir(tmp_path),
            changed_min_gap_s=0.2,
        )
        assert stage is not None
        apps.append(app)
        stages.append(stage)
    changes_topic = topic_name(Topic.CHANGES, config.topic_prefix)

    def owners() -> list[int]:
        """Which apps hold partition 0 of the changes topic now."""
        found = []
        for n, app in enumerate(apps):
            with contextlib.suppress(Exception):
                if any(
                    tp.topic == changes_topic and tp.partition == 0
                    for tp in app.consumer.assignment()
                ):
                    found.append(n)
        return found

    await asyncio.gather(*(app.start() for app in apps))
    try:
        # Wait for the group to settle: each worker holds partitions of the changes topic.
        assigned: list[set[Any]] = []
        try:
            async with asyncio.timeout(90):
                while True:
                    assigned = [
                        {tp for tp in app.consumer.assignment() if tp.topic == changes_topic}
                        for app in apps
                    ]
                    if all(assigned) and len(owners()) == 1:
                        break
                    await asyncio.sleep(0.2)
        except TimeoutError:
            raise AssertionError(f"no stable group: {assigned}") from None
        (leader,) = owners()
        other = 1 - leader
        before = [s.snapshot_runs for s in stages]
        # Changes on both workers ask both for an export; only the leader makes one.
        for stage in stages:
            stage.changed.set()
        async with asyncio.timeout(60):
            while stages[leader].snapshot_runs < before[leader] + 1:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        for stage in stages:
            stage.changed.set()
        async with asyncio.timeout(60):
            while stages[leader].snapshot_runs < before[leader] + 2:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        assert owners() == [leader]
        assert stages[other].snapshot_runs == before[other]
    finally:
        await asyncio.gather(*(app.stop() for app in apps), return_exceptions=True)
    day = utcnow().date().isoformat()
    folder = tmp_path / f"warehouse/snapshots/resource_type=AWS::EC2::Instance/dt={day}"
    assert [p.name for p in folder.glob("part-*.parquet")] == ["part-snapshot.parquet"]
