"""CloudTrail endpoints over a real server, against what the real CloudTrail stage stored:
the 142 records of the shared fixture, normalized and published on the CloudTrail topic,
stored by the Faust agent ``store_cloudtrail`` (see :mod:`tests.api_helpers`). Account A
holds all of them (2017-06-01), account B every third one a day later."""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime
from urllib.parse import quote

import pytest

from cloudinv.core.models import CloudTrailEvent
from cloudinv.sinks.events_store import flatten_params
from tests.api_helpers import Api, PipelineData, pipeline_data, running_api
from tests.test_api_inventory import all_pages


@pytest.fixture(scope="module")
async def data(
    broker: str, moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> PipelineData:
    return await pipeline_data(broker, moto_endpoint, tmp_path_factory)


@pytest.fixture(scope="module")
async def api(data: PipelineData) -> AsyncIterator[Api]:
    async with running_api(data.data_dir, {"admin": None}) as running:
        yield running


def every_event(data: PipelineData) -> list[CloudTrailEvent]:
    return [e for events in data.events.values() for e in events]


async def count(api: Api, query: str) -> int:
    status, body, _ = await api.get(f"/v1/events?count=true&{query}")
    assert status == 200, body
    return int(body["count"])


def z(moment: datetime) -> str:
    return quote(moment.isoformat().replace("+00:00", "Z"))


async def test_events_page_newest_first_without_duplicates(api: Api, data: PipelineData) -> None:
    a = data.a.id
    events = await all_pages(api, f"/v1/events?account={a}&limit=25")
    assert sorted(e["event_id"] for e in events) == sorted(e.event_id for e in data.events[a])
    times = [e["event_time"] for e in events]
    assert times == sorted(times, reverse=True)
    assert all(e["account_id"] == a for e in events)
    everything = await all_pages(api, "/v1/events?limit=100")
    assert len(everything) == len(every_event(data))
    # Credentials never come back.
    assert all("credentials" not in (e["response_elements"] or {}) for e in everything)


async def test_filters_and_counts_match_the_events(api: Api, data: PipelineData) -> None:
    events = every_event(data)
    assert await count(api, "") == len(events)
    principal, n = Counter(e.principal.label for e in events).most_common(1)[0]
    assert await count(api, f"principal={quote(principal)}") == n
    listed = await all_pages(api, f"/v1/events?principal={quote(principal)}&limit=50")
    assert len(listed) == n and {e["principal"]["arn"] for e in listed} == {principal}
    by_name = Counter((e.service, e.event_name) for e in events)
    (service, name), n = by_name.most_common(1)[0]
    assert await count(api, f"service={service}&event_name={name}") == n
    assert await count(api, f"service={service}") == sum(1 for e in events if e.service == service)
    assert await count(api, "errors_only=true") == sum(1 for e in events if e.error_code)
    assert await count(api, "read_only=false") == sum(1 for e in events if e.read_only is False)
    user = next(e.principal.name for e in events if e.principal.name)
    assert user is not None
    same_user = sum(1 for e in events if (e.principal.name or "").lower() == user.lower())
    # IAM names ignore case, and so does the filter.
    for spelling in (user, user.upper(), user.lower()):
        assert await count(api, f"user={quote(spelling)}") == same_user, spelling
        listed = await all_pages(api, f"/v1/events?user={quote(spelling)}&limit=7")
        assert len(listed) == same_user
        assert {e["principal"]["name"].lower() for e in listed} == {user.lower()}
    # Each listed event is exactly its model's JSON.
    by_id = {e.event_id: e for e in events}
    for item in listed:
        assert CloudTrailEvent.model_validate(item) == by_id[item["event_id"]]
        assert item == by_id[item["event_id"]].model_dump(mode="json", by_alias=True)
    assert await count(api, f"account={data.b.id}&region=us-east-1") == len(data.events[data.b.id])
    assert await count(api, f"account={data.c.id}") == 0


async def test_request_parameter_filters(api: Api, data: PipelineData) -> None:
    events = data.events[data.a.id]
    pairs = Counter(p for e in events for p in flatten_params(e.request_parameters))
    (path, value), n = next((p, k) for p, k in pairs.most_common() if 1 < k < len(events))
    query = f"account={data.a.id}&param.{path}={quote(value)}"
    assert await count(api, query) == n
    listed = await all_pages(api, f"/v1/events?{query}&limit=2")
    assert len(listed) == n
    assert await count(api, f"{query}&param.{path}=no-such-value") == 0
    status, body, _ = await api.get("/v1/events?param..x=1")
    assert status == 400 and body["parameter"] == "params"
    # The deepObject form /openapi.json declares means the same filter.
    deep = f"account={data.a.id}&{quote(f'param[{path}]')}={quote(value)}"
    assert await count(api, deep) == n


async def test_time_ranges_are_inclusive_to_the_millisecond(api: Api, data: PipelineData) -> None:
    a, b = data.events[data.a.id], data.events[data.b.id]
    assert await count(api, "from=2017-06-01&to=2017-06-01") == len(a)
    assert await count(api, "to=2017-06-01") == len(a)
    assert await count(api, "from=2017-06-02") == len(b)
    assert await count(api, "from=2017-06-01T00:00:00Z&to=2017-06-02") == len(a) + len(b)
    moment = a[0].event_time
    at_moment = sum(1 for e in a + b if e.event_time == moment)
    assert await count(api, f"from={z(moment)}&to={z(moment)}") == at_moment
    assert await count(api, f"from={z(moment)}") == sum(1 for e in a + b if e.event_time >= moment)
    # A time without zone is UTC.
    naive = moment.replace(tzinfo=None).isoformat()
    assert await count(api, f"from={naive}&to={naive}") == at_moment
    for bad, parameter in (
        ("from=2017-06-02&to=2017-06-01", "from"),
        ("from=June", "from"),
        ("to=2017-02-30", "to"),
        ("count=maybe", "count"),
        ("limit=100000", "limit"),
        ("user=", "user"),
    ):
        status, body, _ = await api.get(f"/v1/events?{bad}")
        assert status == 400 and body["parameter"] == parameter, (bad, body)


async def test_events_and_counts_as_csv(api: Api, data: PipelineData) -> None:
    status, text, resp = await api.get(f"/v1/events?account={data.b.id}&limit=5&format=csv")
    assert status == 200 and resp.content_type == "text/csv"
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 5 and all(r["account_id"] == data.b.id for r in rows)
    status, text, _ = await api.get("/v1/events?count=true", headers={"Accept": "text/csv"})
    assert text.split() == ["count", str(len(every_event(data)))]


async def test_principals_and_their_activity(api: Api, data: PipelineData) -> None:
    events = every_event(data)
    principals = await all_pages(api, "/v1/principals?limit=3")
    expected = Counter((e.principal.label, e.account_id) for e in events)
    assert {(p["label"], p["account_id"]): p["events"] for p in principals} == dict(expected)
    assert [p["events"] for p in principals] == sorted(
        (p["events"] for p in principals), reverse=True
    )
    only_b = await all_pages(api, f"/v1/principals?account={data.b.id}")
    assert {p["account_id"] for p in only_b} == {data.b.id}

    label, n = Counter(e.principal.label for e in data.events[data.a.id]).most_common(1)[0]
    status, body, _ = await api.get(
        f"/v1/principals/{quote(label, safe='')}/activity?granularity=hour"
    )
    assert status == 200, body
    assert body["principal"] == label and body["granularity"] == "hour"
    assert [(b["start"], b["events"]) for b in body["items"]] == [("2017-06-01T21:00:00Z", n)]
    bucket = body["items"][0]
    assert sum(bucket["by_event_name"].values()) == n == bucket["reads"] + bucket["writes"]
    # A range inside an hour counts that whole hour, and the answer says so.
    inside = "from=2017-06-01T21:10:00Z&to=2017-06-01T21:20:00Z"
    status, body, _ = await api.get(
        f"/v1/principals/{quote(label, safe='')}/activity?granularity=hour&{inside}"
    )
    assert status == 200, body
    assert [(b["start"], b["events"]) for b in body["items"]] == [("2017-06-01T21:00:00Z", n)]
    assert (body["covers_from"], body["covers_to"]) == (
        "2017-06-01T21:00:00Z",
        "2017-06-01T22:00:00Z",
    )
    status, body, _ = await api.get(
        f"/v1/principals/{quote(label, safe='')}/activity?granularity=day&from=2017-06-02"
    )
    assert body["items"] == []
    assert body["covers_from"] == "2017-06-02T00:00:00Z" and body["covers_to"] is None
    status, body, _ = await api.get("/v1/principals/arn%3Aaws%3Aiam%3A%3A1%3Auser%2Fx/activity")
    assert status == 404
    status, body, _ = await api.get(
        f"/v1/principals/{quote(label, safe='')}/activity?granularity=week"
    )
    assert status == 400 and body["parameter"] == "granularity"


async def test_services_and_their_activity(api: Api, data: PipelineData) -> None:
    events = every_event(data)
    services = await all_pages(api, "/v1/services?limit=2")
    assert {s["service"]: s["events"] for s in services} == dict(Counter(e.service for e in events))
    first_day = await all_pages(api, "/v1/services?from=2017-06-01&to=2017-06-01")
    assert sum(s["events"] for s in first_day) == len(data.events[data.a.id])
    status, body, _ = await api.get("/v1/services/ec2/activity?granularity=day")
    assert status == 200, body
    per_day: dict[str, int] = Counter()
    for e in events:
        if e.service == "ec2":
            per_day[e.event_time.date().isoformat() + "T00:00:00Z"] += 1
    assert {b["start"]: b["events"] for b in body["items"]} == dict(per_day)
    status, body, _ = await api.get("/v1/services/ec2/activity?from=2017-06-03&to=2017-06-01")
    assert status == 400 and body["parameter"] == "from"
