"""What the /v1 route modules share: time and filter parameters, opaque cursors, the caller's
account scope, and paging through a store while filtering in the API.

Account scope. A token may be limited to some accounts (:class:`~cloudinv.api.auth.TokenScope`).
Every handler turns the caller's scope and its ``account`` parameter into an
:class:`AccountView` and reads only through it: an account outside the scope reads as empty
(lists) or unknown (single items, 404), never as "forbidden", so a token cannot even learn
which other accounts exist.

Cursors are opaque to clients: base64url of a small JSON object naming what they page
(``k``), so a cursor of one endpoint given to another is a 400, like any malformed one.
"""

from __future__ import annotations

import base64
import binascii
import heapq
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BeforeValidator, Field, WithJsonSchema

from cloudinv.api.auth import SCOPE_KEY, TokenScope
from cloudinv.api.endpoints import BadRequest, PageQuery, parse_time
from cloudinv.api.state import STORES_KEY, Stores
from cloudinv.catalog.registry import UnknownResourceType, default_registry
from cloudinv.sinks.cloudtrail_store import CloudTrailStore
from cloudinv.sinks.events_store import EventsStoreError
from cloudinv.sinks.store import (
    ChangeLog,
    InventoryStore,
    LoggedChange,
    StoredReads,
    StoreError,
    VersionQuery,
    version_pages,
)

__all__ = [
    "AccountId",
    "AccountView",
    "EndTime",
    "Region",
    "ResourceTypeName",
    "StartTime",
    "account_view",
    "check_range",
    "decode_cursor",
    "encode_cursor",
    "exclusive_end",
    "filtered_page",
    "merge_by_key",
    "stores",
]

T = TypeVar("T")
_MAX = datetime.max.replace(tzinfo=UTC)
_MIN = datetime.min.replace(tzinfo=UTC)
_TIME_HELP = (
    "ISO 8601 UTC time (2026-11-01T12:00:00Z) or a date (2026-11-01) meaning that whole day"
)


# -- parameters ---------------------------------------------------------------------------------


def _time(value: Any, *, end: bool) -> Any:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise ValueError("give this parameter once, as an ISO 8601 time or date")
    try:
        return parse_time(value, end=end)
    except OverflowError:
        raise ValueError("time out of range") from None


def _start(value: Any) -> Any:
    return _time(value, end=False)


def _end(value: Any) -> Any:
    return _time(value, end=True)


_TIME_SCHEMA = WithJsonSchema(
    {
        "type": "string",
        "anyOf": [{"format": "date"}, {"format": "date-time"}],
        "description": _TIME_HELP,
    }
)

StartTime = Annotated[datetime, BeforeValidator(_start), _TIME_SCHEMA]
"""A time parameter where a date alone means the start of that day."""

EndTime = Annotated[datetime, BeforeValidator(_end), _TIME_SCHEMA]
"""A time parameter where a date alone means the end of that day (inclusive)."""


def _type_name(value: Any) -> Any:
    """A registered CloudFormation type, case-insensitively, as the registry spells it."""
    if not isinstance(value, str):
        raise ValueError("give one resource type")

    try:
        return default_registry().get(value).cfn_type
    except UnknownResourceType as exc:
        raise ValueError(f"{exc}; GET /v1/types lists them") from None


ResourceTypeName = Annotated[
    str,
    BeforeValidator(_type_name),
    # The schema lists what the server takes: the registered types (GET /v1/types).
    WithJsonSchema(
        {
            "type": "string",
            "enum": sorted(default_registry().types()),
            "description": "a registered CloudFormation type name, e.g. AWS::EC2::Instance "
            "(matched case-insensitively; GET /v1/types lists them)",
        }
    ),
]
AccountId = Annotated[str, Field(pattern=r"^\d{12}$", description="12-digit AWS account id")]
Region = Annotated[
    str,
    Field(pattern=r"^[a-z0-9-]{1,32}$", description="AWS region, or 'global' for global types"),
]


def exclusive_end(end: datetime) -> datetime:
    """The exclusive bound just after an inclusive end (the stores take ``[since, until)``)."""
    return end if end >= _MAX - timedelta(microseconds=1) else end + timedelta(microseconds=1)


def after(moment: datetime) -> datetime:
    """The first instant after ``moment`` (for ``(from, to]`` windows)."""
    return exclusive_end(moment)


def check_range(
    start: datetime | None, end: datetime | None, names: tuple[str, str] = ("from", "to")
) -> None:
    """A range whose start is after its end is a 400 naming the start parameter."""
    if start is not None and end is not None and start > end:
        raise BadRequest(
            names[0],
            f"{names[0]} ({start.isoformat()}) is after {names[1]} ({end.isoformat()})",
            f"{names[0]} at or before {names[1]}",
        )


# -- cursors ------------------------------------------------------------------------------------


def encode_cursor(kind: str, **state: Any) -> str:
    raw = orjson.dumps({"k": kind, **state})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None, kind: str) -> dict[str, Any] | None:
    """The state of a cursor this endpoint returned; anything else is a 400."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        state = orjson.loads(raw)
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        state = None
    if not isinstance(state, dict) or state.get("k") != kind:
        raise BadRequest(
            "cursor",
            f"cursor {cursor[:60]!r} is not one this endpoint returned",
            "the next_cursor of a previous page of the same endpoint",
        )
    return state


def cursor_str(state: dict[str, Any] | None, field: str) -> str | None:
    """A text field of a decoded cursor (None without a cursor); anything else is a 400."""
    if state is None:
        return None
    value = state.get(field)
    if value is not None and not isinstance(value, str):
        raise BadRequest("cursor", "cursor is damaged", "the next_cursor of a previous page")
    return value


def cursor_offset(query: PageQuery, kind: str) -> int:
    """Where a page by position starts: 0 without a cursor, else its offset (a damaged one
    is a 400)."""
    state = decode_cursor(query.cursor, kind)
    start = state.get("o", 0) if state else 0
    if not isinstance(start, int) or start < 0:
        raise BadRequest("cursor", "cursor is damaged", "the next_cursor of a previous page")
    return start


def offset_page(items: Sequence[T], query: PageQuery, kind: str) -> tuple[list[T], str | None]:
    """A page of a list read whole, by position, and the cursor of the next one."""
    start = cursor_offset(query, kind)
    end = start + query.limit
    return list(items[start:end]), encode_cursor(kind, o=end) if end < len(items) else None


@contextmanager
def store_cursor_errors() -> Iterator[None]:
    """A store rejecting the cursor it was given (from a tampered API cursor) is a 400."""

    try:
        yield
    except (StoreError, EventsStoreError) as exc:
        if "cursor" not in str(exc):
            raise
        raise BadRequest(
            "cursor", "cursor is damaged", "the next_cursor of a previous page"
        ) from None


# -- scope --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AccountView:
    """The accounts one query may read: ``accounts`` None means every account, an empty
    tuple means none (an account outside the caller's scope was asked for)."""

    accounts: tuple[str, ...] | None

    @property
    def empty(self) -> bool:
        return self.accounts == ()

    @property
    def single(self) -> str | None:
        """The one account to filter on in the store, when there is exactly one."""
        return self.accounts[0] if self.accounts is not None and len(self.accounts) == 1 else None

    @property
    def filtered(self) -> bool:
        """Several accounts: the store cannot filter on them, the API must."""
        return self.accounts is not None and len(self.accounts) > 1

    def allows(self, account_id: str | None) -> bool:
        return self.accounts is None or (account_id is not None and account_id in self.accounts)


def scope_of(request: web.Request) -> TokenScope:
    return request.get(SCOPE_KEY) or TokenScope(name=None, accounts=None)


def account_view(request: web.Request, account: str | None = None) -> AccountView:
    """What the caller may read, narrowed to ``account`` when the query names one."""
    scope = scope_of(request)
    if account is not None:
        return AccountView((account,) if scope.allows(account) else ())
    if scope.accounts is None:
        return AccountView(None)
    return AccountView(tuple(sorted(scope.accounts)))


def stores(request: web.Request) -> Stores:
    return request.app[STORES_KEY]


def inventory_store(request: web.Request) -> InventoryStore:
    store = stores(request).inventory
    if store is None:
        raise web.HTTPServiceUnavailable(reason="no inventory store is configured")
    return store


def events_store(request: web.Request) -> CloudTrailStore:
    store = stores(request).events
    if store is None:
        raise web.HTTPServiceUnavailable(reason="no CloudTrail events store is configured")
    return store


# -- paging with filters the store does not have ------------------------------------------------

Fetch = Callable[[int, str | None], Awaitable[tuple[Sequence[T], str | None]]]
"""``fetch(n, store_cursor)``: up to n items after the cursor, and the store's next cursor."""


async def filtered_page(
    fetch: Fetch[T],
    *,
    keep: Callable[[T], bool] | None,
    ident: Callable[[T], str],
    limit: int,
    state: dict[str, Any] | None,
    batch: int = 500,
) -> tuple[list[T], dict[str, Any] | None]:
    """One page of the items ``keep`` accepts, read from a store paged by its own cursor.

    The page may end in the middle of a store batch, where the store has no cursor; the
    returned state is then the cursor of that batch's start (``s``) and the identity of the
    last item returned (``a``): the next page reads that batch again and resumes after the
    item. Items are never removed from the stores, so the item is found again.
    ``keep`` None means no filtering: store pages map one to one onto API pages.
    """
    store_cursor = cursor_str(state, "s")
    resume_after = cursor_str(state, "a")
    size = limit if keep is None and resume_after is None else max(limit, batch)
    items: list[T] = []
    while True:
        got, next_cursor = await fetch(size, store_cursor)
        start = 0
        if resume_after is not None:
            idents = [ident(item) for item in got]
            if resume_after in idents:
                start = idents.index(resume_after) + 1
                resume_after = None
            else:
                start = len(got)
        for i in range(start, len(got)):
            item = got[i]
            if keep is not None and not keep(item):
                continue
            items.append(item)
            if len(items) == limit:
                if i < len(got) - 1:
                    return items, {"s": store_cursor, "a": ident(item)}
                return items, None if next_cursor is None else {"s": next_cursor}
        if next_cursor is None:
            return items, None
        store_cursor = next_cursor


def merge_by_key(
    lists: Sequence[Sequence[T]], key: Callable[[T], Any], limit: int
) -> tuple[list[T], bool]:
    """The first ``limit`` items of lists each sorted by ``key``, and whether more may follow
    (some list was full, so it may continue past what was read)."""
    merged = list(heapq.merge(*lists, key=key))
    more = any(len(items) >= limit for items in lists)
    return merged[:limit], more or len(merged) > limit


# -- the change log ------------------------------------------------------------------------------

LogRow = LoggedChange
"""One stored change in commit order (what the live feed tails)."""


def change_log(store: InventoryStore) -> ChangeLog | None:
    """``store`` when it can be tailed in commit order
    (:class:`~cloudinv.sinks.store.ChangeLog`)."""
    return store if isinstance(store, ChangeLog) else None


async def counts_at(
    store: InventoryStore, at: datetime | None, account_id: str | None = None
) -> dict[tuple[str, str, str], int]:
    """Resources per (type, account, region) that existed at ``at`` (now when None), in one
    account or all, whatever the store.

    Now, a store that keeps a change log counts its open versions itself. At a past time
    the versions valid then are listed (keys and scopes only matter: a store offering
    :class:`~cloudinv.sinks.store.StoredReads` hands them over without parsing their
    configurations), a page of 1,000 at a time.
    """
    log = change_log(store)
    if at is None and log is not None:
        counts = await log.current_counts()
        if account_id is None:
            return counts
        return {scope: n for scope, n in counts.items() if scope[1] == account_id}
    query = VersionQuery(at=at, account_id=account_id)
    found: dict[tuple[str, str, str], int] = {}
    if isinstance(store, StoredReads):
        async for rows in version_pages(store.list_as_of_stored, query):
            for f in (row.json_fields() for row in rows):
                scope = (f["resource_type"], f["account_id"], f["region"])
                found[scope] = found.get(scope, 0) + 1
    else:
        async for versions in version_pages(store.list_as_of, query):
            for v in versions:
                scope = (v.resource_type, v.account_id, v.region)
                found[scope] = found.get(scope, 0) + 1
    return found
