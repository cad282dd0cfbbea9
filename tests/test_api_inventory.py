"""Inventory, diff, change and metadata endpoints over a real server, against what the real
pipeline stored (see :mod:`tests.api_helpers`: moto estate -> scan engine -> broker -> Faust
change stage -> SQLite store; one attributed change written with ``put_changes``)."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import pytest

from cloudinv.api.endpoints import Page, json_bytes
from cloudinv.core.models import ChangeEvent, config_hash
from cloudinv.sinks.sqlite_store import SqliteStore, list_as_of_query
from cloudinv.sinks.store import ResourceVersion, VersionQuery
from tests.api_helpers import Api, PipelineData, pipeline_data, running_api


@pytest.fixture(scope="module")
async def data(
    broker: str, moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> PipelineData:
    return await pipeline_data(broker, moto_endpoint, tmp_path_factory)


@pytest.fixture(scope="module")
async def api(data: PipelineData) -> AsyncIterator[Api]:
    async with running_api(data.data_dir, {"admin": None}) as running:
        yield running


def iso(moment: Any) -> str:
    return quote(moment.isoformat().replace("+00:00", "Z"))


def enc(key: str) -> str:
    return quote(key, safe="")


async def all_pages(api: Api, path: str, scope: str = "admin") -> list[dict[str, Any]]:
    """Every item of a paged list, following next_cursor; no item may come twice."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    sep = "&" if "?" in path else "?"
    for _ in range(1000):
        url = path + (f"{sep}cursor={cursor}" if cursor else "")
        status, body, _ = await api.get(url, scope)
        assert status == 200, body
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("paging did not end")


def expected_now(data: PipelineData, account: str) -> set[str]:
    keys = set(data.first_keys[account])
    if account == data.a.id:
        keys.discard(data.terminated)
    if account == data.b.id:
        keys.add(data.created)
    return keys


# -- resources -------------------------------------------------------------------------------


async def test_resources_now_and_as_of_a_past_time(api: Api, data: PipelineData) -> None:
    for account in data.accounts:
        now = await all_pages(api, f"/v1/resources?account={account}&limit=2")
        assert [r["key"] for r in now] == sorted(expected_now(data, account))
        then = await all_pages(api, f"/v1/resources?account={account}&at={iso(data.between)}")
        assert {r["key"] for r in then} == data.first_keys[account]
    everything = await all_pages(api, "/v1/resources?limit=3")
    assert len(everything) == len({r["key"] for r in everything})
    assert {r["key"] for r in everything} == set().union(
        *(expected_now(data, a) for a in data.accounts)
    )
    # Before anything was scanned, nothing existed.
    status, body, _ = await api.get("/v1/resources?at=2020-01-01")
    assert status == 200 and body == {"items": [], "next_cursor": None}


async def test_resources_by_type_region_and_text(api: Api, data: PipelineData) -> None:
    instances = await all_pages(
        api, f"/v1/resources?type=aws::ec2::instance&account={data.a.id}&region=us-east-1"
    )
    assert {r["resource_type"] for r in instances} == {"AWS::EC2::Instance"}
    assert {r["resource_id"] for r in instances} == set(data.a.instances[1:])
    # Tags are read from the configuration and searched: env=prod only in account A.
    assert all({"Key": "env", "Value": "prod"} in r["configuration"]["Tags"] for r in instances)
    prod = await all_pages(api, "/v1/resources?q=PROD&limit=1")
    assert {r["key"] for r in prod} == {r["key"] for r in instances}
    by_tag_value = await all_pages(api, "/v1/resources?q=green")
    assert [r["key"] for r in by_tag_value] == [data.bucket]
    by_id = await all_pages(api, f"/v1/resources?q={data.a.instances[1]}")
    assert [r["resource_id"] for r in by_id] == [data.a.instances[1]]
    buckets = await all_pages(api, "/v1/resources?type=AWS::S3::Bucket")
    assert {r["region"] for r in buckets} == {"us-east-1"}  # its own region, as AWS Config


async def test_unknown_parameter_bad_type_and_bad_cursor_are_400(api: Api) -> None:
    cases = {
        "/v1/resources?colour=red": "colour",
        "/v1/resources?type=AWS::EC2::Instanse": "type",
        "/v1/resources?account=12": "account",
        "/v1/resources?at=yesterday": "at",
        "/v1/resources?at=2026-13-01": "at",
        "/v1/resources?cursor=not-a-cursor": "cursor",
        "/v1/resources?limit=0": "limit",
        "/v1/resources?format=xml": "format",
        "/v1/changes?cursor=eyJrIjoiZGlmZiJ9": "cursor",  # a cursor of another endpoint
        "/v1/changes?since=2026-11-02&until=2026-11-01": "since",
        "/v1/changes?change_type=renamed": "change_type",
        "/v1/diff": "from",
        "/v1/diff?from=2026-11-02&to=2026-11-01T23:00:00Z": "from",
        "/v1/scans?status=lost": "status",
    }
    for path, parameter in cases.items():
        status, body, resp = await api.get(path)
        assert status == 400, (path, body)
        assert resp.content_type == "application/problem+json"
        assert body["parameter"] == parameter, (path, body)
    _, body, _ = await api.get("/v1/resources?type=AWS::EC2::Instanse")
    assert "AWS::EC2::Instance" in body["detail"]


async def test_csv_by_accept_header_or_format(api: Api, data: PipelineData) -> None:
    path = f"/v1/resources?account={data.a.id}&type=AWS::EC2::Instance"
    for kwargs, url in (({"headers": {"Accept": "text/csv"}}, path), ({}, path + "&format=csv")):
        status, text, resp = await api.get(url, **kwargs)
        assert status == 200 and resp.content_type == "text/csv"
        rows = list(csv.DictReader(io.StringIO(text)))
        assert {r["resource_id"] for r in rows} == set(data.a.instances[1:])
        assert all(r["configuration"].startswith("{") for r in rows)


async def test_one_resource_by_encoded_or_plain_key(api: Api, data: PipelineData) -> None:
    for path in (f"/v1/resources/{enc(data.sg)}", f"/v1/resources/{data.sg}"):
        status, body, _ = await api.get(path)
        assert status == 200, body
        assert body["key"] == data.sg
        assert [p["FromPort"] for p in body["configuration"]["IpPermissions"]] == [22, 443]
    status, body, _ = await api.get(f"/v1/resources/{enc(data.sg)}?at={iso(data.between)}")
    assert [p["FromPort"] for p in body["configuration"]["IpPermissions"]] == [443]
    # The terminated instance existed between the scans, not now.
    status, body, _ = await api.get(f"/v1/resources/{enc(data.terminated)}")
    assert status == 404 and "no resource" in body["detail"]
    status, body, _ = await api.get(f"/v1/resources/{enc(data.terminated)}?at={iso(data.between)}")
    assert status == 200 and body["valid_to"] is not None
    status, _, _ = await api.get("/v1/resources/arn%3Aaws%3As3%3A%3A%3Anothing-here")
    assert status == 404


async def _raw(api: Api, path: str) -> bytes:
    async with (
        aiohttp.ClientSession() as http,
        http.get(api.base + path, headers=api.auth()) as resp,
    ):
        assert resp.status == 200 and resp.content_type == "application/json"
        return await resp.read()


async def test_pages_and_lookups_are_the_models_json_byte_for_byte(
    api: Api, data: PipelineData
) -> None:
    """List pages and key lookups are written from the stored JSON (by SQLite, or with the
    configuration spliced in), not through the models: they must be exactly what the models
    serialize to, current versions and closed ones alike."""
    store = api.inventory
    cases: list[tuple[str, dict[str, Any]]] = [
        ("", {}),
        (f"account={data.a.id}&limit=2", {"account_id": data.a.id, "limit": 2}),
        (f"at={iso(data.between)}", {"at": data.between}),
        (
            f"type=AWS::EC2::Instance&account={data.a.id}&at={iso(data.between)}",
            {"resource_type": "AWS::EC2::Instance", "account_id": data.a.id, "at": data.between},
        ),
        ("region=nowhere-1", {"region": "nowhere-1"}),
    ]
    closed = 0
    for query, kwargs in cases:
        body = await _raw(api, f"/v1/resources?{query}")
        at = kwargs.pop("at", None)
        limit = kwargs.pop("limit", 100)
        versions = await store.list_as_of(VersionQuery(at=at, limit=limit, **kwargs))
        cursor = orjson.loads(body)["next_cursor"]
        assert (cursor is not None) == (len(versions) == limit), query
        assert body == json_bytes(Page[ResourceVersion](items=versions, next_cursor=cursor))
        closed += sum(v.valid_to is not None for v in versions)
    assert closed > 0  # the terminated instance, as of before its deletion
    lookups = [
        (f"/v1/resources/{enc(data.sg)}", await store.current(data.sg)),
        (
            f"/v1/resources/{enc(data.terminated)}?at={iso(data.between)}",
            await store.as_of(data.terminated, data.between),
        ),
    ]
    for path, version in lookups:
        assert version is not None
        assert await _raw(api, path) == json_bytes(version)


async def test_stored_json_of_unusual_versions(tmp_path: Path) -> None:
    """No name, whole seconds (no fraction), text needing escapes, a closed version, an
    empty page: the store's own JSON is the model's."""
    moment = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    config = {
        "Name": 'quote " back \\ slash',
        "Tags": [{"Key": "é", "Value": "\u2603 ☃"}],
        "N": 1.5,
    }

    def change(change_id: str, change_type: Any, at: datetime, cfg: Any) -> ChangeEvent:
        return ChangeEvent(
            change_id=change_id,
            key="arn:aws:s3:::odd",
            resource_type="AWS::S3::Bucket",
            resource_id="odd",
            account_id="123456789012",
            region="us-east-1",
            change_type=change_type,
            configuration=cfg,
            after_hash=None if cfg is None else config_hash(cfg),
            captured_at=at,
            detected_at=at,
        )

    async with SqliteStore(tmp_path / "inventory.sqlite3") as store:
        await store.put_changes(
            [
                change("c1", "created", moment, config),
                change("c2", "modified", moment + timedelta(microseconds=5), {**config, "N": 2}),
            ]
        )
        for at in (moment, moment + timedelta(hours=1), moment - timedelta(days=1)):
            versions = await store.list_as_of(VersionQuery(at=at))
            body, count, last = await store.list_as_of_json(VersionQuery(at=at))
            assert count == len(versions) and last == (versions[-1].key if versions else None)
            expected = json_bytes(Page[ResourceVersion](items=versions))
            assert b'{"items":' + body + b',"next_cursor":null}' == expected
        (first,) = await store.list_as_of(VersionQuery(at=moment))
        assert first.name is None and first.valid_to == moment + timedelta(microseconds=5)

        # The change log (the live feed and the counts read it): commit order, from a seq.
        head = await store.change_log_head()
        logged = await store.change_log_after(0, 10)
        assert [c.seq for c in logged][-1] == head and len(logged) == 2
        assert [orjson.loads(c.event)["change_id"] for c in logged] == ["c1", "c2"]
        assert await store.change_log_after(head, 10) == []
        assert await store.current_counts() == {("AWS::S3::Bucket", "123456789012", "us-east-1"): 1}

        # Pages are index range scans in key order, whatever the filter: no sort, no walk.
        for filters in (
            {"resource_type": "AWS::S3::Bucket", "account_id": "123456789012"},
            {"account_id": "123456789012"},
            {"region": "us-east-1"},
        ):
            for at in (None, moment):
                sql, params = list_as_of_query(
                    VersionQuery(
                        at=at,
                        resource_type=filters.get("resource_type"),
                        account_id=filters.get("account_id"),
                        region=filters.get("region"),
                        limit=100,
                        after_key=None,
                    )
                )
                (plan,) = await store.explain(sql, params)
                assert plan.startswith("SEARCH versions USING INDEX"), (filters, plan)


async def test_history_has_every_version_its_change_and_attribution(
    api: Api, data: PipelineData
) -> None:
    history = await all_pages(api, f"/v1/resources/{enc(data.sg)}/history?limit=1")
    assert [h["change_type"] for h in history] == ["created", "modified", "modified"]
    assert [h["version"]["change_id"] for h in history] == [h["change_id"] for h in history]
    assert history[1]["patch"][0]["value"]["FromPort"] == 22
    assert history[0]["attribution"] is None
    assert history[2]["attribution"]["principal_name"] == "alice"
    assert history[2]["changed_paths"] == ["/Description"]
    gone = await all_pages(api, f"/v1/resources/{enc(data.terminated)}/history")
    assert [h["change_type"] for h in gone] == ["created", "deleted"]
    assert gone[1]["version"] is None
    status, _, _ = await api.get("/v1/resources/arn%3Aaws%3Aec2%3A%3Anope/history")
    assert status == 404


async def test_resource_diff_between_two_times(api: Api, data: PipelineData) -> None:
    status, body, _ = await api.get(
        f"/v1/resources/{enc(data.sg)}/diff?from={iso(data.between)}"
        f"&to={iso(data.attributed.captured_at - timedelta(microseconds=1))}"
    )
    assert status == 200, body
    assert body["change"] == "modified"
    assert [(op["op"], op["value"]["FromPort"]) for op in body["patch"]] == [("add", 22)]
    status, body, _ = await api.get(f"/v1/resources/{enc(data.terminated)}/diff?from=2020-01-01")
    assert body["change"] == "absent"
    status, body, _ = await api.get(
        f"/v1/resources/{enc(data.terminated)}/diff?from={iso(data.between)}"
    )
    assert body["change"] == "deleted" and body["after"] is None
    status, body, _ = await api.get(f"/v1/resources/{enc(data.created)}/diff?from=2020-01-01")
    assert body["change"] == "created" and body["before"] is None
    status, body, _ = await api.get(
        f"/v1/resources/{enc(data.sg)}/diff?from={iso(data.between)}&to=2020-01-01"
    )
    assert status == 400 and body["parameter"] == "from"


async def test_diff_lists_created_deleted_and_modified(api: Api, data: PipelineData) -> None:
    until_scan = iso(data.attributed.captured_at - timedelta(microseconds=1))
    entries = await all_pages(api, f"/v1/diff?from={iso(data.between)}&to={until_scan}&limit=1")
    assert {e["key"]: e["change"] for e in entries} == {
        data.terminated: "deleted",
        data.created: "created",
        data.sg: "modified",
        data.bucket: "modified",
    }
    by_key = {e["key"]: e for e in entries}
    assert by_key[data.created]["configuration"]["InstanceId"] in data.created
    assert by_key[data.terminated]["configuration"]["InstanceId"] in data.terminated
    assert [op["path"] for op in by_key[data.bucket]["patch"]] == by_key[data.bucket][
        "changed_paths"
    ]
    # Filters; and a window with only the attributed change.
    only_a = await all_pages(
        api, f"/v1/diff?from={iso(data.between)}&to={until_scan}&account={data.a.id}"
    )
    assert {e["key"] for e in only_a} == {data.terminated, data.sg, data.bucket}
    sgs = await all_pages(api, f"/v1/diff?from={iso(data.between)}&type=AWS::EC2::SecurityGroup")
    assert [e["key"] for e in sgs] == [data.sg]
    later = await all_pages(api, f"/v1/diff?from={until_scan}")
    assert [(e["key"], e["changed_paths"]) for e in later] == [(data.sg, ["/Description"])]
    status, body, _ = await api.get(f"/v1/diff?from={iso(data.between)}&format=csv")
    assert status == 200 and body.startswith("key,")


class ProtocolOnly:
    """The SQLite store behind only the :class:`~cloudinv.sinks.store.InventoryStore` methods: the
    API's generic paths, as with a store that offers no stored-JSON reads."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        if name.endswith(("_stored", "_json")) or name.startswith("change_log"):
            raise AttributeError(name)
        return getattr(self._store, name)


async def test_diff_from_stored_json_is_the_generic_diff(api: Api, data: PipelineData) -> None:
    """The diff reads each key's first and last change of the window (picked by SQLite)
    without configurations, then the few it shows whole: the same entries as the generic path
    over every ChangeEvent of the window (the security group changed twice in the window: its
    patch is diffed from the first change's prior configuration)."""
    generic_store = ProtocolOnly(api.inventory)
    assert not hasattr(generic_store, "changes_stored")
    async with running_api(data.data_dir, {"admin": None}, inventory=generic_store) as generic:
        pages = {}
        for query in (
            f"from={iso(data.between)}",
            f"from={iso(data.between)}&limit=1",
            f"from={iso(data.between)}&account={data.a.id}",
            "from=2020-01-01",
        ):
            pages[query] = await all_pages(api, f"/v1/diff?{query}")
            assert pages[query] == await all_pages(generic, f"/v1/diff?{query}"), query
    since_between = {e["key"]: e for e in pages[f"from={iso(data.between)}"]}
    assert since_between[data.sg]["changed_paths"] == ["/Description", "/IpPermissions/0"]
    created = {e["key"]: e["change"] for e in pages["from=2020-01-01"]}
    assert created[data.sg] == "created" and data.terminated not in created


# -- changes ------------------------------------------------------------------------------------


async def test_changes_by_time_type_account_change_type_and_principal(
    api: Api, data: PipelineData
) -> None:
    since = iso(data.second_started)
    second = await all_pages(api, f"/v1/changes?since={since}&limit=2")
    assert {(c["key"], c["change_type"]) for c in second} == {
        (data.terminated, "deleted"),
        (data.created, "created"),
        (data.sg, "modified"),
        (data.bucket, "modified"),
        (data.attributed.key, "modified"),
    }
    everything = await all_pages(api, "/v1/changes?limit=7")
    first_count = sum(len(keys) for keys in data.first_keys.values())
    assert len(everything) == first_count + 5
    assert [c["captured_at"] for c in everything] == sorted(c["captured_at"] for c in everything)
    deleted = await all_pages(api, "/v1/changes?change_type=deleted")
    assert [c["key"] for c in deleted] == [data.terminated]
    two_kinds = await all_pages(api, f"/v1/changes?since={since}&change_type=created,deleted")
    assert {c["key"] for c in two_kinds} == {data.terminated, data.created}
    b_only = await all_pages(api, f"/v1/changes?since={since}&account={data.b.id}")
    assert [c["key"] for c in b_only] == [data.created]
    sgs = await all_pages(api, "/v1/changes?type=AWS::EC2::SecurityGroup&limit=1")
    assert {c["resource_type"] for c in sgs} == {"AWS::EC2::SecurityGroup"}
    by_principal = await all_pages(api, "/v1/changes?principal=alice&limit=1")
    assert [c["change_id"] for c in by_principal] == [data.attributed.change_id]
    by_arn = await all_pages(
        api, f"/v1/changes?principal={quote(data.attributed.attribution.principal_arn or '')}"
    )
    assert [c["change_id"] for c in by_arn] == [data.attributed.change_id]
    key_only = await all_pages(api, f"/v1/changes?key={enc(data.sg)}")
    assert len(key_only) == 3


async def test_an_end_date_is_inclusive(api: Api, data: PipelineData) -> None:
    day = data.second_started.date().isoformat()
    whole_day = await all_pages(api, f"/v1/changes?since={day}&until={day}")
    first_count = sum(len(keys) for keys in data.first_keys.values())
    assert len(whole_day) == first_count + 5
    before = (data.second_started.date() - timedelta(days=1)).isoformat()
    assert await all_pages(api, f"/v1/changes?until={before}") == []


# -- metadata -----------------------------------------------------------------------------------


async def test_types_accounts_and_scans(api: Api, data: PipelineData) -> None:
    types = {t["type"]: t for t in await all_pages(api, "/v1/types?limit=10")}
    assert len(types) >= 60 and all(t["registered"] for t in types.values())
    instances = sum(len(expected_now(data, a) & _instances(data, a)) for a in data.accounts)
    assert types["AWS::EC2::Instance"]["resources"] == instances
    assert types["AWS::S3::Bucket"]["resources"] == 3
    accounts = {a["account_id"]: a for a in await all_pages(api, "/v1/accounts")}
    assert set(accounts) == set(data.accounts)
    for account in data.accounts:
        assert accounts[account]["resources"] == len(expected_now(data, account))
        assert accounts[account]["last_scan_at"] is not None
    assert accounts[data.a.id]["events"] == len(data.events[data.a.id])
    assert accounts[data.c.id]["events"] == 0

    # As of a past time (the time-travel menus): what existed then, counted in the API.
    then = {
        a["account_id"]: a for a in await all_pages(api, f"/v1/accounts?at={iso(data.between)}")
    }
    for account in data.accounts:
        assert then[account]["resources"] == len(data.first_keys[account])
        assert then[account]["events"] == accounts[account]["events"]  # events: not by time
    assert then[data.a.id]["resources"] != accounts[data.a.id]["resources"]  # one was deleted
    one = await all_pages(api, f"/v1/types?account={data.a.id}&at={iso(data.between)}")
    assert sum(t["resources"] for t in one) == len(data.first_keys[data.a.id])
    then_instances = sum(
        len(data.first_keys[a] & _keys_of_instances(data, a)) for a in data.accounts
    )
    types_then = {t["type"]: t for t in await all_pages(api, f"/v1/types?at={iso(data.between)}")}
    assert types_then["AWS::EC2::Instance"]["resources"] == then_instances
    before = (data.second_started.date() - timedelta(days=1)).isoformat()
    empty_then = await all_pages(api, f"/v1/accounts?at={before}")
    assert all(a["resources"] == 0 and a["regions"] == [] for a in empty_then)
    scans = await all_pages(api, "/v1/scans?limit=4")
    assert len(scans) == 2 * 3 * 3  # two scans x three accounts x three types
    assert [s["finished_at"] for s in scans] == sorted(
        (s["finished_at"] for s in scans), reverse=True
    )
    mine = await all_pages(api, f"/v1/scans?account={data.a.id}&type=AWS::S3::Bucket")
    assert len(mine) == 2 and all(s["status"] == "complete" for s in mine)
    assert await all_pages(api, "/v1/scans?status=failed") == []


def _instances(data: PipelineData, account: str) -> set[str]:
    return {k for k in expected_now(data, account) if ":instance/" in k}


def _keys_of_instances(data: PipelineData, account: str) -> set[str]:
    return {k for k in data.first_keys[account] | expected_now(data, account) if ":instance/" in k}
