"""The inventory and CloudTrail endpoints answered from the DynamoDB stores (moto's server)
over a real aiohttp server: the same tests as :mod:`tests.test_api_inventory` and
:mod:`tests.test_api_events`, imported so that they run here with this module's ``api``
fixture.

The store holds what the real pipeline stored (see :mod:`tests.api_helpers`): every change
and scan of the pipeline's SQLite store is written to a fresh DynamoDB store with
``put_changes`` and ``record_scans``, in the order the SQLite store returns them, and the two
stores are first checked to hold the same versions. The pipeline's CloudTrail events are
written to a DynamoDB events store with ``write_batch`` (twice: the replay adds nothing).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from cloudinv.core.models import ChangeEvent, ScanManifest
from cloudinv.sinks.dynamodb_events_store import DynamoEventsStore
from cloudinv.sinks.dynamodb_store import DynamoStore
from cloudinv.sinks.events_store import EventFilters, EventsStore, events_store_path
from cloudinv.sinks.sqlite_store import SqliteStore
from cloudinv.sinks.store import ChangeQuery, VersionQuery
from tests.api_helpers import Api, PipelineData, pipeline_data, running_api
from tests.test_api_events import (
    test_events_and_counts_as_csv as test_events_and_counts_as_csv,
)
from tests.test_api_events import (
    test_events_page_newest_first_without_duplicates as test_events_page_newest_first_without_duplicates,  # noqa: E501
)
from tests.test_api_events import (
    test_filters_and_counts_match_the_events as test_filters_and_counts_match_the_events,
)
from tests.test_api_events import (
    test_principals_and_their_activity as test_principals_and_their_activity,
)
from tests.test_api_events import (
    test_request_parameter_filters as test_request_parameter_filters,
)
from tests.test_api_events import (
    test_services_and_their_activity as test_services_and_their_activity,
)
from tests.test_api_events import (
    test_time_ranges_are_inclusive_to_the_millisecond as test_time_ranges_are_inclusive_to_the_millisecond,  # noqa: E501
)
from tests.test_api_inventory import (
    test_an_end_date_is_inclusive as test_an_end_date_is_inclusive,
)
from tests.test_api_inventory import (
    test_changes_by_time_type_account_change_type_and_principal as test_changes_by_time_type_account_change_type_and_principal,  # noqa: E501
)
from tests.test_api_inventory import (
    test_csv_by_accept_header_or_format as test_csv_by_accept_header_or_format,
)
from tests.test_api_inventory import (
    test_diff_lists_created_deleted_and_modified as test_diff_lists_created_deleted_and_modified,
)
from tests.test_api_inventory import (
    test_history_has_every_version_its_change_and_attribution as test_history_has_every_version_its_change_and_attribution,  # noqa: E501
)
from tests.test_api_inventory import (
    test_one_resource_by_encoded_or_plain_key as test_one_resource_by_encoded_or_plain_key,
)
from tests.test_api_inventory import (
    test_resource_diff_between_two_times as test_resource_diff_between_two_times,
)
from tests.test_api_inventory import (
    test_resources_by_type_region_and_text as test_resources_by_type_region_and_text,
)
from tests.test_api_inventory import (
    test_resources_now_and_as_of_a_past_time as test_resources_now_and_as_of_a_past_time,
)
from tests.test_api_inventory import (
    test_types_accounts_and_scans as test_types_accounts_and_scans,
)
from tests.test_api_inventory import (
    test_unknown_parameter_bad_type_and_bad_cursor_are_400 as test_unknown_parameter_bad_type_and_bad_cursor_are_400,  # noqa: E501
)


@pytest.fixture(scope="module")
async def data(
    broker: str, moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> PipelineData:
    return await pipeline_data(broker, moto_endpoint, tmp_path_factory)


async def copy_store(source: SqliteStore, target: DynamoStore) -> int:
    """Every change and scan of ``source`` written to ``target``; returns the changes."""
    changes: list[ChangeEvent] = []
    cursor = None
    while True:
        page = await source.changes(ChangeQuery(limit=500, cursor=cursor))
        changes += page.items
        cursor = page.next_cursor
        if cursor is None:
            break
    for start in range(0, len(changes), 40):
        await target.put_changes(changes[start : start + 40])
    scans = await source.scans(limit=100_000)
    await target.record_scans(
        [
            # Scan records keep counts, not keys: keys stand in for the count.
            ScanManifest(**s.model_dump(exclude={"count"}), keys=[f"k{i}" for i in range(s.count)])
            for s in scans
        ]
    )
    return len(changes)


@pytest.fixture(scope="module")
async def dynamo(data: PipelineData, moto_endpoint: str) -> AsyncIterator[DynamoStore]:
    prefix = f"api{random.randrange(16**8):08x}"
    async with (
        DynamoStore(
            prefix, region="us-east-1", endpoint_url=moto_endpoint, write_concurrency=1
        ) as store,
        SqliteStore.in_data_dir(data.data_dir) as local,
    ):
        copied = await copy_store(local, store)
        assert copied > 0
        # Both stores now hold the same versions and scans.
        for account in data.accounts:
            everything = await local.list_as_of(VersionQuery(account_id=account, limit=100_000))
            assert (
                await store.list_as_of(VersionQuery(account_id=account, limit=100_000))
                == everything
            )
            for version in everything:
                assert await store.history(version.key) == await local.history(version.key)
        assert await store.scans(limit=1000) == await local.scans(limit=1000)
        # The same current counts, and every change in the change log once, numbered 1..n.
        assert await store.current_counts() == await local.current_counts()
        logged = await store.change_log_after(0, 100_000)
        assert [r.seq for r in logged] == list(range(1, copied + 1))
        assert await store.change_log_head() == copied
        assert sorted(r.event for r in logged) == sorted(
            r.event for r in await local.change_log_after(0, 100_000)
        )
        yield store
    assert "Scan" not in store.stats.calls, store.stats.calls


@pytest.fixture(scope="module")
async def dynamo_events(data: PipelineData, moto_endpoint: str) -> AsyncIterator[DynamoEventsStore]:
    prefix = f"ev{random.randrange(16**8):08x}"
    events = [e for batch in data.events.values() for e in batch]
    async with DynamoEventsStore(
        prefix, region="us-east-1", endpoint_url=moto_endpoint, write_concurrency=1
    ) as store:
        first = await store.write_batch(events[:60])
        rest = await store.write_batch(events)  # the first 60 again: not counted twice
        assert (first.inserted, rest.inserted) == (60, len(events) - 60)
        assert (await store.write_batch(events[::-1])).inserted == 0
        async with EventsStore(events_store_path(data.data_dir), readonly=True) as local:
            assert await store.principals() == await local.principals()
            assert await store.services() == await local.services()
            for granularity in ("hour", "day"):
                assert await store.activity(granularity=granularity) == (
                    await local.activity(granularity=granularity)
                )
        yield store
    assert "Scan" not in store.calls, store.calls


@pytest.fixture(scope="module")
async def api(
    data: PipelineData, dynamo: DynamoStore, dynamo_events: DynamoEventsStore
) -> AsyncIterator[Api]:
    async with running_api(
        data.data_dir, {"admin": None, "a": [data.a.id]}, dynamo, dynamo_events
    ) as running:
        assert running.inventory is dynamo and running.events is dynamo_events
        yield running


async def test_a_limited_token_sees_only_its_account(api: Api, data: PipelineData) -> None:
    status, body, _ = await api.get("/v1/resources?limit=1000", "a")
    assert status == 200
    assert {r["account_id"] for r in body["items"]} == {data.a.id}
    status, body, _ = await api.get(f"/v1/resources?account={data.b.id}", "a")
    assert status == 200 and body["items"] == []
    status, body, _ = await api.get("/v1/changes?limit=1000", "a")
    assert {c["account_id"] for c in body["items"]} == {data.a.id}
    status, body, _ = await api.get(f"/v1/changes?account={data.b.id}", "a")
    assert body["items"] == []
    status, body, _ = await api.get(f"/v1/resources/{data.created.replace('/', '%2F')}", "a")
    assert status in (403, 404)


async def test_both_events_stores_page_the_same_events_for_a_set_of_accounts(
    data: PipelineData, dynamo_events: DynamoEventsStore
) -> None:
    """``EventFilters.accounts`` (a token allowed several accounts): the same events, newest
    first, in pages of the same sizes, from both stores."""
    a, b, c = (x.id for x in (data.a, data.b, data.c))
    cases = [
        EventFilters(accounts=frozenset({a, c})),
        EventFilters(accounts=frozenset({a, c}), service="ec2"),
        EventFilters(accounts=frozenset({b})),
        EventFilters(accounts=frozenset({a}), account_id=b),
    ]
    async with EventsStore(events_store_path(data.data_dir), readonly=True) as local:
        for filters in cases:
            expected = sum(
                1
                for batch in data.events.values()
                for e in batch
                if e.account_id in (filters.accounts or ())
                and filters.account_id in (None, e.account_id)
                and filters.service in (None, e.service)
            )
            found = []
            for store in (local, dynamo_events):
                assert await store.count(filters) == expected, (store, filters)
                items: list[dict[str, Any]] = []
                sizes: list[int] = []
                cursor = None
                while True:
                    body, cursor = await store.events_json(filters, limit=3, cursor=cursor)
                    page = orjson.loads(body)
                    items += page
                    sizes.append(len(page))
                    if cursor is None:
                        break
                times = [i["event_time"] for i in items]
                assert times == sorted(times, reverse=True)
                found.append((sorted(i["event_id"] for i in items), sizes))
            assert found[0] == found[1], filters
            assert len(found[0][0]) == expected
