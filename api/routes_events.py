"""CloudTrail endpoints: events by principal, service, event name, account, region, time and
request parameters (or their count), principals, services, and activity over time.

Times are ``from``/``to``, both inclusive (a ``to`` date includes that whole day; the
replaced CloudTrail-Tracker excluded it). Events are stored to the millisecond, so the range
is turned into whole milliseconds before it reaches the store.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Literal

import orjson
from aiohttp import web
from pydantic import BaseModel, Field, RootModel, field_validator

from cloudinv.api.endpoints import (
    NotFound,
    Page,
    PageQuery,
    RawJson,
    endpoint,
    wants_csv,
)
from cloudinv.api.routes_common import (
    AccountId,
    AccountView,
    EndTime,
    Region,
    StartTime,
    account_view,
    check_range,
    cursor_str,
    decode_cursor,
    encode_cursor,
    events_store,
    filtered_page,
    offset_page,
    store_cursor_errors,
)
from cloudinv.core.models import CloudTrailEvent
from cloudinv.sinks.events_store import (
    ActivityBucket,
    EventFilters,
    PrincipalSummary,
    ServiceSummary,
    StoredEvent,
)

TAGS = ["cloudtrail"]
_MS = timedelta(milliseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def since_ms(start: datetime | None) -> datetime | None:
    """The store's lower bound for ``event_time >= start`` at millisecond precision.

    Half a millisecond past the first whole millisecond at or after ``start``: the store
    truncates to milliseconds through a float, so a bound exactly on a millisecond could
    land one below it."""
    if start is None:
        return None
    ms = math.ceil((start - _EPOCH) / _MS)
    return _EPOCH + ms * _MS + _MS / 2


def until_ms(end: datetime | None) -> datetime | None:
    """The store's exclusive upper bound for an inclusive ``end`` (see :func:`since_ms`)."""
    if end is None:
        return None
    ms = math.floor((end - _EPOCH) / _MS)
    return _EPOCH + (ms + 1) * _MS + _MS / 2


class EventFilterQuery(PageQuery):
    principal: str | None = Field(
        default=None, min_length=1, description="principal label: ARN, root:<account>, service"
    )
    user: str | None = Field(
        default=None,
        min_length=1,
        description="user or session name, in any case (IAM names ignore case)",
    )
    service: str | None = Field(default=None, min_length=1, description="e.g. ec2")
    event_name: str | None = Field(default=None, min_length=1, description="e.g. RunInstances")
    account: AccountId | None = None
    region: Region | None = None
    errors_only: bool = Field(default=False, description="only calls that failed")
    read_only: bool | None = Field(default=None, description="only reads (true) or writes")
    from_: StartTime | None = Field(default=None, alias="from", description="at or after")
    to: EndTime | None = Field(default=None, description="at or before (a date: that day)")


class EventsQuery(EventFilterQuery):
    count: bool = Field(default=False, description="return the number of matching events")
    params: dict[str, str] = Field(default_factory=dict)

    @field_validator("params")
    @classmethod
    def _paths(cls, value: dict[str, str]) -> dict[str, str]:
        for path in value:
            if not path or any(not part for part in path.split(".")):
                raise ValueError(f"param.{path}: expected param.<dotted.path>=<value>")
        return value


class EventCount(BaseModel):
    count: int

    @property
    def items(self) -> list[EventCount]:
        """As CSV: one row."""
        return [self]


class EventsResult(RootModel[Page[CloudTrailEvent] | EventCount]):
    """A page of events, or their count with ``count=true``."""

    @property
    def items(self) -> Sequence[BaseModel]:
        return self.root.items


def _store_filters(query: EventsQuery, view: AccountView) -> EventFilters:
    return EventFilters(
        principal=query.principal,
        user_name=query.user,
        service=query.service,
        event_name=query.event_name,
        account_id=view.single,
        accounts=frozenset(view.accounts) if view.filtered and view.accounts else None,
        region=query.region,
        errors_only=query.errors_only,
        read_only=query.read_only,
        since=since_ms(query.from_),
        until=until_ms(query.to),
        params=tuple(query.params.items()),
    )


@endpoint(
    "GET",
    "/v1/events",
    summary="CloudTrail events, newest first, or their count; param.<path>=<value> filters",
    query=EventsQuery,
    response=EventsResult,
    tags=TAGS,
    csv_items=True,
)
async def list_events(request: web.Request, query: EventsQuery) -> EventsResult | RawJson:
    check_range(query.from_, query.to)
    view = account_view(request, query.account)
    state = decode_cursor(query.cursor, "events")
    if view.empty:
        empty: Page[CloudTrailEvent] | EventCount = (
            EventCount(count=0) if query.count else Page[CloudTrailEvent](items=[])
        )
        return EventsResult(empty)
    store = events_store(request)
    filters = _store_filters(query, view)
    if query.count:
        return EventsResult(EventCount(count=await store.count(filters)))

    csv = wants_csv(request, query)
    if cursor_str(state, "a") is None and not csv:
        # Store pages are API pages (the store filters on the caller's accounts too): the
        # page as the store writes it, no Python per event.
        with store_cursor_errors():
            body, store_cursor = await store.events_json(
                filters, limit=query.limit, cursor=cursor_str(state, "s")
            )
        cursor = encode_cursor("events", s=store_cursor) if store_cursor else None
    else:

        async def fetch(n: int, cursor: str | None) -> tuple[list[StoredEvent], str | None]:
            with store_cursor_errors():
                page = await store.stored_events(filters, limit=n, cursor=cursor)
            return page.items, page.next_cursor

        # CSV, or a cursor from a page that ended inside a store batch (older releases
        # filtered several accounts here): the store's rows, resumed where that page ended.
        items, next_state = await filtered_page(
            fetch,
            keep=None,
            ident=lambda e: e.event_id,
            limit=query.limit,
            state=state,
        )
        cursor = encode_cursor("events", **next_state) if next_state else None
        if csv:
            models = [e.model() for e in items]
            return EventsResult(Page[CloudTrailEvent](items=models, next_cursor=cursor))
        body = b"[" + b",".join(e.json for e in items) + b"]"
    # The stored JSON is the model's own (see event_json): sent without building models.
    return RawJson(b'{"items":' + body + b',"next_cursor":' + orjson.dumps(cursor) + b"}")


# -- principals and services --------------------------------------------------------------------


class PrincipalsQuery(PageQuery):
    account: AccountId | None = None


async def visible_principals(
    request: web.Request, account: str | None, label: str | None = None
) -> list[PrincipalSummary]:
    """The principals the caller may see (``label``: that one only, in each account)."""
    view = account_view(request, account)
    if view.empty:
        return []
    found: list[PrincipalSummary] = await events_store(request).principals(
        account_id=view.single, label=label
    )
    return [p for p in found if view.allows(p.account_id)]


@endpoint(
    "GET",
    "/v1/principals",
    summary="Every principal seen in CloudTrail, per account, most active first",
    query=PrincipalsQuery,
    response=Page[PrincipalSummary],
    tags=TAGS,
    csv_items=True,
)
async def list_principals(request: web.Request, query: PrincipalsQuery) -> Page[PrincipalSummary]:
    items, cursor = offset_page(
        await visible_principals(request, query.account), query, "principals"
    )
    return Page[PrincipalSummary](items=items, next_cursor=cursor)


class ServicesQuery(PageQuery):
    account: AccountId | None = None
    from_: StartTime | None = Field(default=None, alias="from", description="days from")
    to: EndTime | None = Field(default=None, description="days to (inclusive)")


@endpoint(
    "GET",
    "/v1/services",
    summary="Event counts per AWS service (whole days), busiest first",
    query=ServicesQuery,
    response=Page[ServiceSummary],
    tags=TAGS,
    csv_items=True,
)
async def list_services(request: web.Request, query: ServicesQuery) -> Page[ServiceSummary]:
    check_range(query.from_, query.to)
    view = account_view(request, query.account)
    if view.empty:
        return Page[ServiceSummary](items=[])
    store = events_store(request)
    accounts = view.accounts if view.filtered else (view.single,)
    assert accounts is not None
    per_account = await asyncio.gather(
        *(
            store.services(account_id=a, since=since_ms(query.from_), until=until_ms(query.to))
            for a in accounts
        )
    )
    totals: dict[str, list[int]] = {}
    for summaries in per_account:
        for s in summaries:
            t = totals.setdefault(s.service, [0, 0, 0])
            t[0], t[1], t[2] = t[0] + s.events, t[1] + s.errors, t[2] + s.writes
    merged = sorted(
        (
            ServiceSummary(service=k, events=v[0], errors=v[1], writes=v[2])
            for k, v in totals.items()
        ),
        key=lambda s: (-s.events, s.service),
    )
    items, cursor = offset_page(merged, query, "services")
    return Page[ServiceSummary](items=items, next_cursor=cursor)


# -- activity -----------------------------------------------------------------------------------


class ActivityQuery(PageQuery):
    account: AccountId | None = None
    from_: StartTime | None = Field(default=None, alias="from")
    to: EndTime | None = None
    granularity: Literal["hour", "day"] = "hour"


class ActivityPage(Page[ActivityBucket]):
    """Activity over time, oldest bucket first; empty buckets are left out.

    Counts are of whole buckets (the aggregates are hourly and daily): a range that starts
    or ends inside a bucket counts all of that bucket. ``covers_from`` / ``covers_to`` say
    which span the counts are of; ``/v1/events?count=true`` counts a range exactly."""

    principal: str | None = None
    service: str | None = None
    granularity: Literal["hour", "day"]
    covers_from: datetime | None = Field(
        default=None, description="start of the first bucket the range touches (inclusive)"
    )
    covers_to: datetime | None = Field(
        default=None, description="end of the last bucket the range touches (exclusive)"
    )


def _covered(query: ActivityQuery) -> dict[str, datetime | None]:
    """The whole buckets ``query``'s range touches (see :class:`ActivityPage`)."""
    step = timedelta(hours=1) if query.granularity == "hour" else timedelta(days=1)

    def floor(t: datetime) -> datetime:
        if query.granularity == "hour":
            return t.replace(minute=0, second=0, microsecond=0)
        return t.replace(hour=0, minute=0, second=0, microsecond=0)

    return {
        "covers_from": floor(query.from_) if query.from_ is not None else None,
        "covers_to": floor(query.to) + step if query.to is not None else None,
    }


async def _activity(
    request: web.Request, query: ActivityQuery, *, principal: str | None, service: str | None
) -> list[ActivityBucket]:
    check_range(query.from_, query.to)
    view = account_view(request, query.account)
    if view.empty:
        return []
    store = events_store(request)
    accounts = view.accounts if view.filtered else (view.single,)
    assert accounts is not None
    per_account = await asyncio.gather(
        *(
            store.activity(
                principal=principal,
                service=service,
                account_id=a,
                since=since_ms(query.from_),
                until=until_ms(query.to),
                granularity=query.granularity,
            )
            for a in accounts
        )
    )
    if len(per_account) == 1:
        return list(per_account[0])
    merged: dict[datetime, ActivityBucket] = {}
    for buckets in per_account:
        for b in buckets:
            seen = merged.get(b.start)
            if seen is None:
                merged[b.start] = b
                continue
            names = dict(seen.by_event_name)
            for name, n in b.by_event_name.items():
                names[name] = names.get(name, 0) + n
            merged[b.start] = ActivityBucket(
                start=b.start,
                events=seen.events + b.events,
                errors=seen.errors + b.errors,
                writes=seen.writes + b.writes,
                reads=seen.reads + b.reads,
                by_event_name=names,
            )
    return [merged[k] for k in sorted(merged)]


@endpoint(
    "GET",
    "/v1/principals/{name:.+}/activity",
    summary="One principal's activity per hour or day",
    query=ActivityQuery,
    response=ActivityPage,
    tags=TAGS,
    csv_items=True,
    path_params={"name": "the principal's label (URL-encoded), as /v1/principals lists it"},
)
async def principal_activity(request: web.Request, query: ActivityQuery) -> ActivityPage:
    name = request.match_info["name"]
    if not await visible_principals(request, query.account, label=name):
        raise NotFound(f"no principal {name!r}")
    buckets = await _activity(request, query, principal=name, service=None)
    items, cursor = offset_page(buckets, query, "activity")
    return ActivityPage(
        items=items,
        next_cursor=cursor,
        principal=name,
        granularity=query.granularity,
        **_covered(query),
    )


@endpoint(
    "GET",
    "/v1/services/{service}/activity",
    summary="One service's activity per hour or day",
    query=ActivityQuery,
    response=ActivityPage,
    tags=TAGS,
    csv_items=True,
    path_params={"service": "the service, e.g. ec2"},
)
async def service_activity(request: web.Request, query: ActivityQuery) -> ActivityPage:
    service = request.match_info["service"]
    buckets = await _activity(request, query, principal=None, service=service)
    items, cursor = offset_page(buckets, query, "activity")
    return ActivityPage(
        items=items,
        next_cursor=cursor,
        service=service,
        granularity=query.granularity,
        **_covered(query),
    )
