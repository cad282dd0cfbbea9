"""`GET /v1/reports/snapshots` over a real server and store: rows, totals, account scoping.
`GET /v1/reports/s3-metrics` against moto's S3 and CloudWatch (as the CLI report is tested in
tests/test_reports.py): values, JSON and CSV, account scoping, region filter, the kept report,
bad months, and 503 problems without credentials or with AWS unreachable."""

from __future__ import annotations

import asyncio
import csv
import io
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from cloudinv.api.app import create_app
from cloudinv.api.auth import generate_token
from cloudinv.api.state import Stores
from cloudinv.core.models import ChangeEvent, config_hash
from cloudinv.core.settings import ApiToken, Settings
from cloudinv.producers.reports.s3_metrics import S3_COLUMNS, ReportMonth
from cloudinv.sinks.sqlite_store import SqliteStore
from tests.moto_helpers import account_session
from tests.test_reports import create_bucket, new_account, put_metric

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


# -- GET /v1/reports/s3-metrics: live CloudWatch (moto), with the configured AWS access ----------


async def _s3_api(settings: Settings) -> TestServer:
    srv = TestServer(create_app(settings, stores=Stores()), host="127.0.0.1")
    await srv.start_server()
    return srv


def _tokens(*scopes: list[str] | None) -> tuple[list[str], list[ApiToken]]:
    tokens, configured = [], []
    for accounts in scopes:
        token, digest = generate_token()
        tokens.append(token)
        configured.append(ApiToken(sha256=SecretStr(digest), accounts=accounts))
    return tokens, configured


def _seed_s3(moto_endpoint: str, account: str, month: ReportMonth) -> tuple[str, str]:
    """Two buckets of ``account`` (us-east-1, eu-west-1) with datapoints in the month."""
    session = account_session(moto_endpoint, account)
    east, west = f"api-east-{account}", f"api-west-{account}"
    create_bucket(session, moto_endpoint, east, "us-east-1")
    create_bucket(session, moto_endpoint, west, "eu-west-1")
    cw_east = session.client("cloudwatch", endpoint_url=moto_endpoint, region_name="us-east-1")
    cw_west = session.client("cloudwatch", endpoint_url=moto_endpoint, region_name="eu-west-1")
    day = month.start + timedelta(days=9)
    put_metric(cw_east, east, "StandardStorage", 400, day - timedelta(days=5))
    put_metric(cw_east, east, "StandardStorage", 250, day)  # the last datapoint counts
    put_metric(cw_east, east, "GlacierStorage", 1000, day)
    put_metric(cw_east, east, "AllStorageTypes", 12, day)
    put_metric(cw_west, west, "StandardIAStorage", 77, day)
    put_metric(cw_west, west, "AllStorageTypes", 3, day)
    return east, west


async def test_s3_metrics_report_json_csv_scope_region_and_cache(moto_endpoint: str) -> None:
    month = ReportMonth.last_complete(datetime.now(UTC))
    a, b = new_account(), new_account()
    east_a, west_a = await asyncio.to_thread(_seed_s3, moto_endpoint, a, month)
    east_b, _ = await asyncio.to_thread(_seed_s3, moto_endpoint, b, month)
    (admin, only_a), configured = _tokens(None, [a])
    settings = Settings(
        api={"tokens": configured},
        aws={
            "endpoint_url": moto_endpoint,
            "accounts": [{"role_arn": f"arn:aws:iam::{x}:role/cloudinv-reader"} for x in (a, b)],
        },
    )
    srv = await _s3_api(settings)
    base = str(srv.make_url("/v1/reports/s3-metrics"))
    try:
        async with aiohttp.ClientSession() as http:

            async def get(query: str, token: str = admin, **headers: str) -> Any:
                async with http.get(
                    f"{base}?{query}", headers={"Authorization": f"Bearer {token}", **headers}
                ) as resp:
                    body = await resp.read()
                    return resp.status, resp.content_type, body

            status, ctype, body = await get(f"month={month}")
            assert (status, ctype) == (200, "application/json"), body
            report = orjson.loads(body)
            rows = {r["bucket_name"]: r for r in report["rows"]}
            assert set(rows) >= {east_a, west_a, east_b}
            assert {r["account_id"] for r in report["rows"]} == {a, b}
            ea, wa = rows[east_a], rows[west_a]
            assert (ea["region"], wa["region"]) == ("us-east-1", "eu-west-1")
            assert ea["sizes"]["size_standard"] == 250 and ea["sizes"]["size_glacier"] == 1000
            assert (ea["total_size"], ea["total_objects"]) == (1250, 12)
            assert (wa["sizes"]["size_standard_ia"], wa["total_objects"]) == (77, 3)
            assert report["month"] == str(month) and report["complete"] is True

            # Kept: the same report again, not a second round of AWS calls.
            status, _, again = await get(f"month={month}")
            assert orjson.loads(again)["generated_at"] == report["generated_at"]

            # A token limited to account A sees A's buckets only, even asking for B.
            status, _, body = await get(f"month={month}", only_a)
            assert {r["account_id"] for r in orjson.loads(body)["rows"]} == {a}
            status, _, body = await get(f"month={month}&account={b}", only_a)
            assert status == 200 and orjson.loads(body)["rows"] == []

            status, _, body = await get(f"month={month}&region=eu-west-1&account={a}")
            assert [r["bucket_name"] for r in orjson.loads(body)["rows"]] == [west_a]

            status, ctype, body = await get(f"month={month}&account={a}&format=csv")
            assert (status, ctype) == (200, "text/csv")
            lines = list(csv.reader(io.StringIO(body.decode())))
            assert lines[0] == list(S3_COLUMNS)
            by_name = {line[0]: dict(zip(lines[0], line, strict=True)) for line in lines[1:]}
            assert set(by_name) == {east_a, west_a}
            assert (by_name[east_a]["total_size"], by_name[east_a]["size_glacier"]) == (
                "1250",
                "1000",
            )
            status, ctype, _ = await get(f"month={month}&account={a}", Accept="text/csv")
            assert ctype == "text/csv"

            for bad, parameter in (
                ("month=2025-13", "month"),
                ("month=last", "month"),
                (f"month={datetime.now(UTC).year + 1}-01", "month"),
                ("month=2025-01&account=12", "account"),
                ("month=2025-01&bucket=x", "bucket"),
            ):
                status, ctype, body = await get(bad)
                assert (status, ctype) == (400, "application/problem+json"), bad
                assert orjson.loads(body)["parameter"] == parameter
    finally:
        await srv.close()


async def test_s3_metrics_without_aws_credentials_is_a_503_problem(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    (admin,), configured = _tokens(None)
    srv = await _s3_api(Settings(api={"tokens": configured}))
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                srv.make_url("/v1/reports/s3-metrics?month=2025-01"),
                headers={"Authorization": f"Bearer {admin}"},
            ) as resp,
        ):
            assert resp.status == 503 and resp.content_type == "application/problem+json"
            detail = (await resp.json(content_type=None))["detail"]
            assert "AWS access" in detail and "credentials" in detail, detail
    finally:
        await srv.close()


async def test_s3_metrics_with_aws_unreachable_is_a_503_problem(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    (admin,), configured = _tokens(None)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    settings = Settings(
        api={"tokens": configured},
        aws={
            "endpoint_url": closed,
            "accounts": [{"role_arn": "arn:aws:iam::123412341234:role/cloudinv-reader"}],
        },
    )
    srv = await _s3_api(settings)
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(2):  # the second answer comes from the kept failure
                async with http.get(
                    srv.make_url("/v1/reports/s3-metrics"),
                    headers={"Authorization": f"Bearer {admin}"},
                ) as resp:
                    assert resp.status == 503, await resp.text()
                    problem = await resp.json(content_type=None)
                    assert "123412341234" in problem["detail"], problem
    finally:
        await srv.close()
