"""``GET /v1/changes``: stored changes by time, type, account, region, change type, principal.

The store filters on one account, key, type, region and change types; a token limited to
several accounts and the ``principal`` filter (who caused the change, from its CloudTrail
attribution) are applied here, paging on until the page is full.
"""

from __future__ import annotations

from typing import Annotated, Any

from aiohttp import web
from pydantic import BeforeValidator, Field, WithJsonSchema

from cloudinv.api.endpoints import Page, PageQuery, Query, endpoint
from cloudinv.api.routes_common import (
    AccountId,
    AccountView,
    EndTime,
    Region,
    ResourceTypeName,
    StartTime,
    account_view,
    check_range,
    decode_cursor,
    encode_cursor,
    exclusive_end,
    filtered_page,
    inventory_store,
    store_cursor_errors,
)
from cloudinv.core.models import ChangeEvent, ChangeType
from cloudinv.sinks.store import ChangeFilters, ChangeQuery

TAGS = ["changes"]
_CHANGE_TYPES = ("created", "modified", "deleted")


def _change_types(value: Any) -> Any:
    parts = value if isinstance(value, list) else [value]
    names: list[str] = []
    for part in parts:
        if not isinstance(part, str):
            raise ValueError("expected created, modified or deleted, comma-separated")
        for name in part.split(","):
            if name.strip() not in _CHANGE_TYPES:
                raise ValueError(
                    f"{name.strip()!r} is not a change type: expected created, modified or "
                    "deleted, comma-separated"
                )
            names.append(name.strip())
    return tuple(dict.fromkeys(names))


ChangeTypes = Annotated[
    tuple[ChangeType, ...],
    BeforeValidator(_change_types),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": "^(created|modified|deleted)(,(created|modified|deleted))*$",
            "description": "created, modified or deleted; several comma-separated",
        }
    ),
]


class ChangeFilterQuery(Query):
    """The filters the change list and the live feed share."""

    type: ResourceTypeName | None = None
    account: AccountId | None = None
    region: Region | None = None
    key: str | None = Field(default=None, min_length=1, description="one resource key (ARN)")
    change_type: ChangeTypes | None = None
    principal: str | None = Field(
        default=None,
        min_length=1,
        description="who caused the change: principal ARN or name from its CloudTrail event",
    )


class ChangesQuery(ChangeFilterQuery, PageQuery):
    since: StartTime | None = Field(default=None, description="captured at or after this")
    until: EndTime | None = Field(default=None, description="captured at or before this")


def principal_matches(change: ChangeEvent, principal: str) -> bool:
    who = change.attribution
    return who is not None and principal in (who.principal_arn, who.principal_name)


def change_filters(query: ChangeFilterQuery, view: AccountView) -> ChangeFilters:
    return ChangeFilters(
        key=query.key,
        resource_type=query.type,
        account_id=view.single,
        region=query.region,
        change_types=query.change_type,
    )


@endpoint(
    "GET",
    "/v1/changes",
    summary="Changes captured in a time range, oldest first, with JSON Patch and attribution",
    query=ChangesQuery,
    response=Page[ChangeEvent],
    tags=TAGS,
    csv_items=True,
)
async def list_changes(request: web.Request, query: ChangesQuery) -> Page[ChangeEvent]:
    check_range(query.since, query.until, ("since", "until"))
    view = account_view(request, query.account)
    state = decode_cursor(query.cursor, "changes")
    if view.empty:
        return Page[ChangeEvent](items=[])
    store = inventory_store(request)
    filters = change_filters(query, view)
    until = exclusive_end(query.until) if query.until is not None else None
    principal = query.principal

    async def fetch(n: int, cursor: str | None) -> tuple[list[ChangeEvent], str | None]:
        with store_cursor_errors():
            page = await store.changes(
                ChangeQuery(since=query.since, until=until, filters=filters, limit=n, cursor=cursor)
            )
        return page.items, page.next_cursor

    def keep(change: ChangeEvent) -> bool:
        return view.allows(change.account_id) and (
            principal is None or principal_matches(change, principal)
        )

    items, next_state = await filtered_page(
        fetch,
        keep=keep if view.filtered or principal is not None else None,
        ident=lambda c: c.change_id,
        limit=query.limit,
        state=state,
    )
    cursor = encode_cursor("changes", **next_state) if next_state else None
    return Page[ChangeEvent](items=items, next_cursor=cursor)
