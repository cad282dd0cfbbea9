"""Metadata endpoints: resource types with their current counts, accounts, scan history."""

from __future__ import annotations

import asyncio
import heapq
from datetime import datetime
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, Field

from cloudinv.api.endpoints import Page, PageQuery, endpoint
from cloudinv.api.routes_common import (
    AccountId,
    AccountView,
    EndTime,
    Region,
    ResourceTypeName,
    StartTime,
    account_view,
    counts_at,
    cursor_offset,
    encode_cursor,
    inventory_store,
    offset_page,
    stores,
)
from cloudinv.catalog.registry import default_registry
from cloudinv.core.models import UtcDatetime
from cloudinv.sinks.store import ScanRecord

TAGS = ["meta"]


class TypesQuery(PageQuery):
    account: AccountId | None = None
    at: EndTime | None = Field(
        default=None,
        description="count the resources that existed at this time (default now); "
        "a date alone: at its end",
    )


class TypeInfo(BaseModel):
    type: str = Field(description="CloudFormation type name")
    service: str | None = Field(description="botocore service that lists it")
    global_service: bool = False
    registered: bool = Field(
        description="declared in cloudinv.catalog.resources (collected by scans)"
    )
    resources: int = Field(
        description="resources of this type the caller can see, now or at the time asked"
    )


async def _visible_counts(
    request: web.Request, view: AccountView, at: datetime | None
) -> dict[tuple[str, str, str], int]:
    if view.empty:
        return {}
    counts = await counts_at(inventory_store(request), at, view.single)
    return {scope: n for scope, n in counts.items() if view.allows(scope[1])}


@endpoint(
    "GET",
    "/v1/types",
    summary="Every registered resource type, with how many resources of it exist now "
    "(or existed at a time)",
    query=TypesQuery,
    response=Page[TypeInfo],
    tags=TAGS,
    csv_items=True,
)
async def list_types(request: web.Request, query: TypesQuery) -> Page[TypeInfo]:

    counts = await _visible_counts(request, account_view(request, query.account), query.at)
    per_type: dict[str, int] = {}
    for (rtype, _, _), n in counts.items():
        per_type[rtype] = per_type.get(rtype, 0) + n
    registry = default_registry()
    items = [
        TypeInfo(
            type=spec.cfn_type,
            service=spec.service,
            global_service=spec.global_service,
            registered=True,
            resources=per_type.pop(spec.cfn_type, 0),
        )
        for spec in registry
    ]
    # Types stored but no longer (or not yet) declared still show, so counts add up.
    items += [
        TypeInfo(type=t, service=None, registered=False, resources=n)
        for t, n in sorted(per_type.items())
    ]
    page, cursor = offset_page(items, query, "types")
    return Page[TypeInfo](items=page, next_cursor=cursor)


class AccountsQuery(PageQuery):
    at: EndTime | None = Field(
        default=None,
        description="count the resources that existed at this time (default now); "
        "a date alone: at its end. Events and the last scan are not affected.",
    )


class AccountInfo(BaseModel):
    account_id: str
    resources: int = Field(description="resources now, or at the time asked")
    resource_types: int = Field(description="types with resources then")
    regions: list[str] = Field(description="regions with resources then")
    events: int = Field(description="CloudTrail events stored (all of them, whatever the time)")
    last_scan_at: UtcDatetime | None = Field(description="when its last scan finished")


@endpoint(
    "GET",
    "/v1/accounts",
    summary="Accounts with resources (now or at a time) or CloudTrail events, and when each "
    "was last scanned",
    query=AccountsQuery,
    response=Page[AccountInfo],
    tags=TAGS,
    csv_items=True,
)
async def list_accounts(request: web.Request, query: AccountsQuery) -> Page[AccountInfo]:
    view = account_view(request)
    counts = await _visible_counts(request, view, query.at)
    resources: dict[str, int] = {}
    types: dict[str, set[str]] = {}
    regions: dict[str, set[str]] = {}
    for (rtype, account, region), n in counts.items():
        resources[account] = resources.get(account, 0) + n
        types.setdefault(account, set()).add(rtype)
        regions.setdefault(account, set()).add(region)
    events: dict[str, int] = {}
    events_store = stores(request).events
    if events_store is not None:
        for p in await events_store.principals():
            if view.allows(p.account_id):
                events[p.account_id] = events.get(p.account_id, 0) + p.events
    accounts = sorted({*resources, *events})
    page, cursor = offset_page(accounts, query, "accounts")
    store = inventory_store(request)
    last_scans = await asyncio.gather(*(store.scans(account_id=a, limit=1) for a in page))
    items = [
        AccountInfo(
            account_id=a,
            resources=resources.get(a, 0),
            resource_types=len(types.get(a, ())),
            regions=sorted(regions.get(a, ())),
            events=events.get(a, 0),
            last_scan_at=scans[0].finished_at if scans else None,
        )
        for a, scans in zip(page, last_scans, strict=True)
    ]
    return Page[AccountInfo](items=items, next_cursor=cursor)


class ScansQuery(PageQuery):
    account: AccountId | None = None
    region: Region | None = None
    type: ResourceTypeName | None = None
    scan_id: str | None = Field(default=None, min_length=1)
    since: StartTime | None = Field(default=None, description="finished at or after this")
    status: Literal["complete", "partial", "failed"] | None = Field(
        default=None, description="only scans that ended so (partial and failed carry errors)"
    )


@endpoint(
    "GET",
    "/v1/scans",
    summary="Scan history, most recent first, with the errors of failed and partial scopes",
    query=ScansQuery,
    response=Page[ScanRecord],
    tags=TAGS,
    csv_items=True,
)
async def list_scans(request: web.Request, query: ScansQuery) -> Page[ScanRecord]:
    view = account_view(request, query.account)
    start = cursor_offset(query, "scans")
    if view.empty:
        return Page[ScanRecord](items=[])
    store = inventory_store(request)

    async def fetch(n: int) -> tuple[list[ScanRecord], bool]:
        """The first n scans (newest first) and whether there may be more."""
        accounts = view.accounts if view.filtered else (view.single,)
        assert accounts is not None
        lists = await asyncio.gather(
            *(
                store.scans(
                    account_id=a,
                    region=query.region,
                    resource_type=query.type,
                    scan_id=query.scan_id,
                    since=query.since,
                    limit=n,
                )
                for a in accounts
            )
        )
        merged = list(heapq.merge(*lists, key=_newest_first))
        return merged[:n], any(len(rows) >= n for rows in lists)

    need = start + query.limit + 1
    size = need
    while True:
        rows, more = await fetch(size)
        kept = [r for r in rows if query.status is None or r.status == query.status]
        if len(kept) >= need or not more:
            break
        size *= 2
    end = start + query.limit
    cursor = encode_cursor("scans", o=end) if len(kept) > end else None
    return Page[ScanRecord](items=kept[start:end], next_cursor=cursor)


def _newest_first(record: ScanRecord) -> tuple[float, str]:
    return (-_timestamp(record.finished_at), record.scan_id)


def _timestamp(moment: datetime) -> float:
    return moment.timestamp()
