"""`GET /v1/reports/snapshots` over a real server and store: rows, totals, account scoping."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from api.app import Stores, create_app
from api.auth import generate_token
from cloudinv.models import ChangeEvent, config_hash
from cloudinv.settings import ApiToken, Settings
from sinks.sqlite_store import SqliteStore

NOW = datetime.now(UTC)


def _created(
    account: str, rtype: str, rid: str, key: str, config: dict[str, object]
) -> ChangeEvent:
    return ChangeEvent(
        change_id=f"c-{rid}",
        key=key,
        resource_type=rtype,
        resource_id=rid,
        account_id=account,
        region="eu-west-1",
        change_type="created",
        configuration=config,
        after_hash=config_hash(config),
        captured_at=NOW - timedelta(minutes=5),
        detected_at=NOW - timedelta(minutes=5),
    )


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[str, str, str]]:
    store = SqliteStore(tmp_path / "inventory.sqlite3")
    await store.open()
    await store.put_changes(
        [
            _created(
                "111111111111",
                "AWS::EC2::Snapshot",
                "snap-1",
                "arn:aws:ec2:eu-west-1:111111111111:snapshot/snap-1",
                {
                    "SnapshotId": "snap-1",
                    "VolumeId": "vol-1",
                    "VolumeSize": 8,
                    "StartTime": (NOW - timedelta(days=40)).isoformat(),
                    "State": "completed",
                    "Encrypted": False,
                    "Description": "nightly",
                },
            ),
            _created(
                "222222222222",
                "AWS::EC2::Snapshot",
                "snap-2",
                "arn:aws:ec2:eu-west-1:222222222222:snapshot/snap-2",
                {
                    "SnapshotId": "snap-2",
                    "VolumeId": "vol-2",
                    "VolumeSize": 20,
                    "State": "pending",
                    "Encrypted": True,
                },
            ),
        ]
    )
    everyone, everyone_hash = generate_token()
    only_a, only_a_hash = generate_token()
    settings = Settings(
        api={
            "tokens": [
                ApiToken(sha256=SecretStr(everyone_hash)),
                ApiToken(sha256=SecretStr(only_a_hash), accounts=["111111111111"]),
            ]
        }
    )
    srv = TestServer(create_app(settings, stores=Stores(inventory=store)), host="127.0.0.1")
    await srv.start_server()
    try:
        yield str(srv.make_url("")).rstrip("/"), everyone, only_a
    finally:
        await srv.close()
        await store.close()


async def test_snapshot_report_lists_rows_and_totals(server: tuple[str, str, str]) -> None:
    base, everyone, only_a = server
    async with aiohttp.ClientSession() as http:
        async with http.get(
            f"{base}/v1/reports/snapshots", headers={"Authorization": f"Bearer {everyone}"}
        ) as resp:
            assert resp.status == 200
            report = await resp.json()
        rows = {row["snapshot_id"]: row for row in report["rows"]}
        assert set(rows) == {"snap-1", "snap-2"}
        assert rows["snap-1"]["age_days"] == 40 and rows["snap-1"]["size_gb"] == 8
        # Still being created (no start time): listed, not a crash.
        assert rows["snap-2"]["created_at"] is None
        assert report["total"]["count"] == 2 and report["total"]["total_gb"] == 28

        async with http.get(
            f"{base}/v1/reports/snapshots", headers={"Authorization": f"Bearer {only_a}"}
        ) as resp:
            scoped = await resp.json()
        assert [row["snapshot_id"] for row in scoped["rows"]] == ["snap-1"]
        assert scoped["total"]["count"] == 1

        async with http.get(
            f"{base}/v1/reports/snapshots?account=2222",
            headers={"Authorization": f"Bearer {everyone}"},
        ) as resp:
            assert resp.status == 400
