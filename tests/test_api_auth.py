"""A token limited to some accounts sees nothing of the others, on every endpoint: lists,
single resources, counts and aggregates, and the live feed.

Over the stores the real pipeline filled (see :mod:`tests.api_helpers`). Tokens: ``admin``
(every account), ``a`` (account A only) and ``ac`` (accounts A and C: the API then merges
or filters what the store returns per account). The live feed's own part writes a fresh
store, as ``test_api_feed`` does.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from tests.api_helpers import Api, PipelineData, pipeline_data, read_sse, running_api
from tests.test_api_feed import A, B, Writer, changes_of, count_changes, open_stream, subscribed
from tests.test_api_inventory import all_pages, enc, expected_now, iso


@pytest.fixture(scope="module")
async def data(
    broker: str, moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> PipelineData:
    return await pipeline_data(broker, moto_endpoint, tmp_path_factory)


@pytest.fixture(scope="module")
async def api(data: PipelineData) -> AsyncIterator[Api]:
    scopes = {"admin": None, "a": [data.a.id], "ac": [data.a.id, data.c.id]}
    async with running_api(data.data_dir, scopes) as running:
        yield running


def accounts_of(items: list[dict[str, Any]]) -> set[str]:
    return {i["account_id"] for i in items}


async def test_resources(api: Api, data: PipelineData) -> None:
    a, b, c = data.a.id, data.b.id, data.c.id
    mine = await all_pages(api, "/v1/resources?limit=2", "a")
    assert [r["key"] for r in mine] == sorted(expected_now(data, a))
    assert await all_pages(api, f"/v1/resources?account={b}", "a") == []
    assert await all_pages(api, f"/v1/resources?at={iso(data.between)}&q=dev", "a") == []
    merged = await all_pages(api, "/v1/resources?limit=2", "ac")
    assert [r["key"] for r in merged] == sorted(expected_now(data, a) | expected_now(data, c))
    then = await all_pages(api, f"/v1/resources?at={iso(data.between)}&limit=3", "ac")
    assert {r["key"] for r in then} == data.first_keys[a] | data.first_keys[c]
    found = await all_pages(api, "/v1/resources?q=data-&limit=1", "ac")
    assert {r["key"] for r in found} == {data.a.bucket_key(), data.c.bucket_key()}


async def test_one_resource_its_history_and_diff(api: Api, data: PipelineData) -> None:
    theirs = enc(data.created)  # account B's
    for path in (
        f"/v1/resources/{theirs}",
        f"/v1/resources/{theirs}?at={iso(data.attributed.captured_at)}",
        f"/v1/resources/{theirs}/history",
        f"/v1/resources/{theirs}/diff?from=2020-01-01",
    ):
        status, body, _ = await api.get(path, "a")
        assert status == 404, (path, body)
        unknown, _, _ = await api.get(path.replace(theirs, enc("arn:aws:ec2:::nothing")), "a")
        assert unknown == 404  # the same answer as for a key that does not exist
        status, _, _ = await api.get(path, "admin")
        assert status == 200, path
    for scope in ("a", "ac"):
        status, _, _ = await api.get(f"/v1/resources/{enc(data.sg)}/history", scope)
        assert status == 200


async def test_diffs_and_changes(api: Api, data: PipelineData) -> None:
    a = data.a.id
    diff = await all_pages(api, f"/v1/diff?from={iso(data.between)}", "a")
    assert {e["key"] for e in diff} == {data.terminated, data.sg, data.bucket}
    assert await all_pages(api, f"/v1/diff?from={iso(data.between)}&account={data.b.id}", "a") == []
    diff_ac = await all_pages(api, f"/v1/diff?from={iso(data.between)}&limit=1", "ac")
    assert {e["key"] for e in diff_ac} == {data.terminated, data.sg, data.bucket}

    admin = await all_pages(api, "/v1/changes?limit=50")
    mine = await all_pages(api, "/v1/changes?limit=3", "a")
    assert [c["change_id"] for c in mine] == [c["change_id"] for c in admin if c["account_id"] == a]
    # Several accounts: filtered here, paged through store batches, nothing lost or repeated.
    for limit in (1, 2, 7):
        ac = await all_pages(api, f"/v1/changes?limit={limit}", "ac")
        assert [c["change_id"] for c in ac] == [
            c["change_id"] for c in admin if c["account_id"] in (a, data.c.id)
        ]
    assert await all_pages(api, f"/v1/changes?account={data.b.id}", "a") == []
    assert len(await all_pages(api, "/v1/changes?principal=alice", "ac")) == 1


async def test_events_counts_and_aggregates(api: Api, data: PipelineData) -> None:
    a, b = data.a.id, data.b.id
    mine = data.events[a]
    for scope in ("a", "ac"):
        events = await all_pages(api, "/v1/events?limit=40", scope)
        assert accounts_of(events) == {a} and len(events) == len(mine)
        status, body, _ = await api.get("/v1/events?count=true", scope)
        assert body == {"count": len(mine)}
        status, body, _ = await api.get(f"/v1/events?count=true&account={b}", scope)
        assert body == {"count": 0}
        principals = await all_pages(api, "/v1/principals", scope)
        assert accounts_of(principals) == {a}
        services = await all_pages(api, "/v1/services", scope)
        assert {s["service"]: s["events"] for s in services} == dict(
            Counter(e.service for e in mine)
        )
        status, body, _ = await api.get("/v1/services/ec2/activity?granularity=day", scope)
        assert [x["start"] for x in body["items"]] == ["2017-06-01T00:00:00Z"]
    theirs = next(e.principal.label for e in data.events[b] if e.principal.arn)
    status, _, _ = await api.get(f"/v1/principals/{quote(theirs, safe='')}/activity", "a")
    assert status == 404
    status, _, _ = await api.get(f"/v1/principals/{quote(theirs, safe='')}/activity", "admin")
    assert status == 200


async def test_types_accounts_and_scans(api: Api, data: PipelineData) -> None:
    a, c = data.a.id, data.c.id
    types = {t["type"]: t["resources"] for t in await all_pages(api, "/v1/types", "a")}
    assert sum(types.values()) == len(expected_now(data, a))
    accounts = await all_pages(api, "/v1/accounts", "a")
    assert [x["account_id"] for x in accounts] == [a]
    accounts = await all_pages(api, "/v1/accounts", "ac")
    assert sorted(x["account_id"] for x in accounts) == sorted([a, c])
    scans = await all_pages(api, "/v1/scans?limit=4", "ac")
    assert accounts_of(scans) == {a, c} and len(scans) == 2 * 2 * 3
    times = [s["finished_at"] for s in scans]
    assert times == sorted(times, reverse=True)
    assert await all_pages(api, f"/v1/scans?account={data.b.id}", "a") == []


async def test_the_feed_replays_only_the_callers_accounts(api: Api, data: PipelineData) -> None:
    admin = await all_pages(api, "/v1/changes?limit=100")
    mine = [c["change_id"] for c in admin if c["account_id"] == data.a.id]
    async with aiohttp.ClientSession() as http:
        resp = await open_stream(http, api, scope="a", **{"Last-Event-ID": "0"})
        got = changes_of(await read_sse(resp, until=count_changes(len(mine))))
        resp.close()
    # The feed is in commit order; the list by capture time: compare as sets.
    assert sorted(c.change_id for _, c in got) == sorted(mine)


async def test_the_live_feed_sends_only_the_callers_accounts(tmp_path: Path) -> None:
    async with (
        running_api(tmp_path, {"admin": None, "a": [A]}) as api,
        aiohttp.ClientSession() as http,
    ):
        writer = Writer(api)
        mine = await open_stream(http, api, scope="a")
        asked_other = await open_stream(http, api, f"?account={B}", scope="a")
        everything = await open_stream(http, api)
        await subscribed(api, 3)
        await writer.write(
            writer.snapshot(1, account=B), writer.snapshot(2), writer.snapshot(3, account=B)
        )
        got_all = changes_of(await read_sse(everything, until=count_changes(3)))
        got_mine = changes_of(await read_sse(mine, until=count_changes(1)))
        assert [c.account_id for _, c in got_all] == [B, A, B]
        assert [c.account_id for _, c in got_mine] == [A]
        await writer.write(writer.snapshot(4))
        got_mine = changes_of(await read_sse(mine, until=count_changes(1)))
        assert [c.account_id for _, c in got_mine] == [A]
        # The client asking for B's changes with an A-only token received none of them.
        nothing = await read_sse(asked_other, until=lambda e: False, timeout=0.5, partial=True)
        assert nothing == []
        for resp in (mine, asked_other, everything):
            resp.close()
