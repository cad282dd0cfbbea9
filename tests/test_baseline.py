"""Baselines and drift: ``cloudinv baseline pin`` records the current versions of a scope, and
drift (``compute_drift``, ``GET /v1/drift``, ``cloudinv baseline show``) lists exactly the
resources changed since: modified (with the JSON Patch from the baseline), deleted, and
created in a pinned scope. A resource changed and changed back, or outside every pinned
scope, is not drift.

The inventory is written as the change stage writes it: snapshots through the real
``ChangeDetector``, its ChangeEvents stored with ``SqliteStore.put_changes``.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import jsonpatch
import orjson
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from cloudinv.api.app import create_app
from cloudinv.api.auth import generate_token
from cloudinv.core.models import ChangeEvent, ResourceSnapshot
from cloudinv.core.settings import ApiToken, Settings
from cloudinv.sinks.alerts_store import AlertsStore, BaselineScope, compute_drift, pin_baseline
from cloudinv.sinks.sqlite_store import SqliteStore
from cloudinv.streams.changes import ChangeDetector, DeletionRequest
from tests.api_helpers import running_api
from tests.cli_helpers import run_cli
from tests.test_rules_pack import bucket, instance, perm, sg

A = "111100002222"
B = "333300004444"
REGION = "us-east-1"
SG = "AWS::EC2::SecurityGroup"


class Estate:
    """Resources of two accounts, stored as the change stage stores them."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.detector = ChangeDetector()
        self.clock = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
        self.configs: dict[str, dict[str, Any]] = {}

    def key(self, rtype: str, account: str, name: str) -> str:
        kind = {SG: "security-group", "AWS::EC2::Instance": "instance"}.get(rtype)
        if kind is None:
            return f"arn:aws:s3:::{name}"
        return f"arn:aws:ec2:{REGION}:{account}:{kind}/{name}"

    async def put(self, rtype: str, account: str, name: str, configuration: dict[str, Any]) -> str:
        self.clock += timedelta(seconds=1)
        key = self.key(rtype, account, name)
        change = self.detector.observe(
            ResourceSnapshot.build(
                account_id=account,
                region="global" if rtype == "AWS::S3::Bucket" else REGION,
                resource_type=rtype,
                resource_id=name,
                arn=key,
                name=name,
                configuration=configuration,
                scan_id="scan",
                captured_at=self.clock,
            )
        )
        if change is not None:
            await self._store(change)
        return key

    async def delete(self, rtype: str, account: str, name: str) -> str:
        self.clock += timedelta(seconds=1)
        key = self.key(rtype, account, name)
        change = self.detector.request_deletion(
            DeletionRequest(
                key=key,
                resource_type=rtype,
                account_id=account,
                region=REGION,
                scan_id="scan-2",
                scan_started_at=self.clock,
            )
        )
        assert change is not None
        await self._store(change)
        return key

    async def _store(self, change: ChangeEvent) -> None:
        assert await self.store.put_changes([change]) == 1
        if change.configuration is not None:
            self.configs[change.key] = change.configuration


async def test_drift_lists_exactly_what_changed_since_the_pin(tmp_path: Path) -> None:
    async with SqliteStore.in_data_dir(tmp_path) as inventory:
        estate = Estate(inventory)
        web = await estate.put(SG, A, "sg-web", sg(perm(443)))
        old = await estate.put(SG, A, "sg-old", sg(perm(80)))
        stable = await estate.put(SG, A, "sg-stable", sg(perm(8443)))
        flip = await estate.put(SG, B, "sg-flip", sg(perm(443), description="b"))
        data = await estate.put("AWS::S3::Bucket", A, "data-a", bucket())
        server = await estate.put("AWS::EC2::Instance", A, "i-0a", instance("required"))
        baseline_web = estate.configs[web]

    # Pin the security groups of every account from the command line, and account A's
    # buckets through the function.
    result = await asyncio.to_thread(
        run_cli, "baseline", "pin", "--type", "aws::ec2::securitygroup", "--data-dir",
        str(tmp_path), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "pinned 4 resource(s) of type=AWS::EC2::SecurityGroup" in result.stdout
    async with (
        SqliteStore.in_data_dir(tmp_path) as inventory,
        AlertsStore.in_data_dir(tmp_path) as alerts,
    ):
        pin = await pin_baseline(
            alerts, inventory, BaselineScope(resource_type="AWS::S3::Bucket", account_id=A)
        )
        assert pin.count == 1

        estate = Estate(inventory)
        estate.detector.warm(
            [web, old, stable, flip, data, server],
            await inventory.latest([web, old, stable, flip, data, server]),
        )
        estate.clock += timedelta(hours=1)
        await estate.put(SG, A, "sg-web", sg(perm(443), perm(22)))  # modified
        await estate.delete(SG, A, "sg-old")  # deleted
        new = await estate.put(SG, A, "sg-new", sg(perm(22)))  # created in a pinned scope
        await estate.put(SG, B, "sg-flip", sg(perm(443), description="b, edited"))
        await estate.put(SG, B, "sg-flip", sg(perm(443), description="b"))  # and back
        await estate.put("AWS::S3::Bucket", A, "data-a", bucket(PublicAccessBlock=None))
        await estate.put("AWS::EC2::Instance", A, "i-0a", instance("optional"))  # not pinned
        await estate.put("AWS::S3::Bucket", B, "data-b", bucket())  # B's buckets: not pinned

        drift = await compute_drift(alerts, inventory)
        assert [(d.key, d.drift) for d in drift] == sorted(
            [(web, "modified"), (old, "deleted"), (new, "created"), (data, "modified")]
        )
        by_key = {d.key: d for d in drift}
        # The patch turns the baseline into the current configuration.
        patch = [
            op.model_dump(by_alias=True, mode="json", exclude_none=True) for op in by_key[web].patch
        ]
        assert jsonpatch.apply_patch(baseline_web, patch) == estate.configs[web]
        assert by_key[web].changed_paths and all(
            p.startswith("/IpPermissions") for p in by_key[web].changed_paths
        )
        assert by_key[data].changed_paths == ["/PublicAccessBlock"]
        assert by_key[old].current_hash is None and by_key[new].baseline_hash is None

        assert {d.key for d in await compute_drift(alerts, inventory, resource_type=SG)} == {
            web,
            old,
            new,
        }
        assert await compute_drift(alerts, inventory, account_ids=[B]) == []
        assert [d.key for d in await compute_drift(alerts, inventory, account_ids=[A])] == [
            d.key for d in drift
        ]

    # The API: the same list, paged, scoped by token, as CSV.
    async with running_api(tmp_path, {"admin": None, "b": [B]}) as api:
        status, page, _ = await api.get("/v1/drift")
        assert status == 200
        assert [(i["key"], i["drift"]) for i in page["items"]] == [(d.key, d.drift) for d in drift]
        keys: list[str] = []
        cursor = ""
        while True:
            status, page, _ = await api.get(f"/v1/drift?limit=1{cursor}")
            assert status == 200
            keys += [i["key"] for i in page["items"]]
            if not page["next_cursor"]:
                break
            cursor = f"&cursor={page['next_cursor']}"
        assert keys == [d.key for d in drift]
        status, page, _ = await api.get(f"/v1/drift?type={SG}&account={A}")
        assert {i["key"] for i in page["items"]} == {web, old, new}
        status, page, _ = await api.get("/v1/drift", "b")
        assert status == 200 and page["items"] == []
        status, text, _ = await api.get("/v1/drift?format=csv")
        assert status == 200 and text.splitlines()[0].startswith("key,resource_type")
        assert len(text.splitlines()) == 1 + len(drift)

    # ``cloudinv api`` opens the data directory's stores itself (the alerts store too).
    token, digest = generate_token()
    settings = Settings(
        storage={"data_dir": tmp_path},
        api={"tokens": [ApiToken(sha256=SecretStr(digest), name="admin")]},
    )
    server = TestServer(create_app(settings, open_local_stores=True))
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": f"Bearer {token}"}
            async with http.get(server.make_url("/v1/drift"), headers=headers) as resp:
                assert resp.status == 200
                assert len((await resp.json())["items"]) == len(drift)
            async with http.get(server.make_url("/v1/alerts"), headers=headers) as resp:
                assert resp.status == 200 and (await resp.json())["items"] == []
    finally:
        await server.close()

    # The command line shows it too, and a new pin makes the scope clean again.
    shown = await asyncio.to_thread(
        run_cli, "baseline", "show", "--data-dir", str(tmp_path), cwd=tmp_path
    )
    assert shown.returncode == 0, shown.stderr
    assert f"modified  {web} (sg-web)" in shown.stdout
    assert f"deleted   {old} (sg-old)" in shown.stdout
    assert "4 resource(s) drifted" in shown.stderr
    as_json = await asyncio.to_thread(
        run_cli, "baseline", "show", "--json", "--type", SG, "--data-dir", str(tmp_path),
        cwd=tmp_path,
    )  # fmt: skip
    assert {orjson.loads(line)["key"] for line in as_json.stdout.splitlines()} == {web, old, new}

    repinned = await asyncio.to_thread(
        run_cli, "baseline", "pin", "--type", SG, "--account", A, "--data-dir", str(tmp_path),
        cwd=tmp_path,
    )  # fmt: skip
    assert repinned.returncode == 0, repinned.stderr
    async with (
        SqliteStore.in_data_dir(tmp_path) as inventory,
        AlertsStore.in_data_dir(tmp_path) as alerts,
    ):
        assert [d.key for d in await compute_drift(alerts, inventory)] == [data]


async def test_pin_rejects_bad_scopes_and_show_needs_a_pin(tmp_path: Path) -> None:
    missing = await asyncio.to_thread(
        run_cli, "baseline", "pin", "--data-dir", str(tmp_path), cwd=tmp_path
    )
    assert missing.returncode == 2 and "no inventory in" in missing.stderr
    async with SqliteStore.in_data_dir(tmp_path) as inventory:
        await Estate(inventory).put(SG, A, "sg-1", sg())
    bad_type = await asyncio.to_thread(
        run_cli, "baseline", "pin", "--type", "AWS::EC2::SecurityGrup", "--data-dir",
        str(tmp_path), cwd=tmp_path,
    )  # fmt: skip
    assert bad_type.returncode == 2
    assert "did you mean AWS::EC2::SecurityGroup" in bad_type.stderr
    bad_account = await asyncio.to_thread(
        run_cli, "baseline", "pin", "--account", "12", "--data-dir", str(tmp_path), cwd=tmp_path
    )
    assert bad_account.returncode == 2 and "12-digit" in bad_account.stderr
    unpinned = await asyncio.to_thread(
        run_cli, "baseline", "show", "--data-dir", str(tmp_path), cwd=tmp_path
    )
    assert unpinned.returncode == 1 and "no baseline pinned" in unpinned.stderr
