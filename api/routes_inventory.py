"""Inventory endpoints: what existed at a time, one resource, its history, and diffs.

Resource keys are ARNs, which contain ``/`` and ``:``. Send them URL-encoded
(``/v1/resources/arn%3Aaws%3Aec2%3A...%2Fi-0abc``); an unencoded key works too, except one
ending in ``/history``, ``/diff``, ``/related`` or ``/graph``, which those routes take first.

Diffs between two times compare the state at ``from`` with the state at ``to``. Only keys
with a change captured in ``(from, to]`` can differ, and a key's changes form a chain (each
starts from the state the previous one left), so a diff reads the changes of that window
only: the first change of a key gives its state at ``from``, the last its state at ``to``.
Its cost follows what changed, not the size of the estate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import cache
from typing import Any, Literal

import orjson
from aiohttp import web
from pydantic import BaseModel, Field

from cloudinv.api.endpoints import (
    NotFound,
    Page,
    PageQuery,
    Query,
    RawItem,
    RawJson,
    RawPage,
    endpoint,
    wants_csv,
)
from cloudinv.api.routes_common import (
    AccountId,
    AccountView,
    EndTime,
    Region,
    ResourceTypeName,
    StartTime,
    account_view,
    after,
    check_range,
    cursor_str,
    decode_cursor,
    encode_cursor,
    inventory_store,
    merge_by_key,
    store_cursor_errors,
)
from cloudinv.catalog.diff import changed_paths, json_patch
from cloudinv.catalog.registry import UnknownResourceType, default_registry
from cloudinv.catalog.spec import ResourceSpec
from cloudinv.catalog.transform import read_tags
from cloudinv.core.models import Attribution, ChangeType, JsonPatchOp, UtcDatetime
from cloudinv.sinks.store import (
    ChangeFilters,
    ChangeQuery,
    InventoryStore,
    ResourceVersion,
    StoredReads,
    StoredRow,
    VersionQuery,
)

TAGS = ["inventory"]
KEY_HELP = "The resource key (its ARN), URL-encoded"
_Q_BATCH = 500
_DIFF_SCAN_BATCH = 1000


class ResourcesQuery(PageQuery):
    type: ResourceTypeName | None = None
    account: AccountId | None = None
    region: Region | None = None
    at: EndTime | None = Field(
        default=None,
        description="what existed at this time (default now); a date alone: at its end",
    )
    q: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="case-insensitive text found in the key, id, name, or a tag key or value",
    )


class AtQuery(Query):
    at: EndTime | None = Field(
        default=None, description="the version valid at this time (default the current one)"
    )


class HistoryQuery(PageQuery):
    pass


class HistoryEntry(BaseModel):
    """One change of a resource and the version it opened (none for a deletion)."""

    change_id: str
    change_type: ChangeType
    captured_at: UtcDatetime
    detected_at: UtcDatetime
    scan_id: str | None = None
    attribution: Attribution | None = None
    patch: list[JsonPatchOp] = Field(default_factory=list)
    changed_paths: list[str] = Field(default_factory=list)
    version: ResourceVersion | None = None


class ResourceDiffQuery(Query):
    from_: StartTime = Field(alias="from", description="the earlier time")
    to: EndTime | None = Field(default=None, description="the later time (default now)")


class ResourceDiff(BaseModel):
    key: str
    from_: UtcDatetime = Field(alias="from")
    to: UtcDatetime
    change: Literal["created", "deleted", "modified", "unchanged", "absent"]
    before: ResourceVersion | None = Field(description="the version valid at from")
    after: ResourceVersion | None = Field(description="the version valid at to")
    patch: list[JsonPatchOp] = Field(
        default_factory=list, description="RFC 6902 from before to after, when modified"
    )
    changed_paths: list[str] = Field(default_factory=list)

    model_config = {"populate_by_name": True}


class DiffQuery(PageQuery):
    from_: StartTime = Field(alias="from", description="the earlier time")
    to: EndTime | None = Field(default=None, description="the later time (default now)")
    type: ResourceTypeName | None = None
    account: AccountId | None = None
    region: Region | None = None


class DiffEntry(BaseModel):
    key: str
    resource_type: str
    resource_id: str
    account_id: str
    region: str
    name: str | None = None
    change: Literal["created", "deleted", "modified"]
    before_hash: str | None = None
    after_hash: str | None = None
    configuration: dict[str, Any] | None = Field(
        default=None, description="created: the new configuration; deleted: the last one"
    )
    patch: list[JsonPatchOp] = Field(
        default_factory=list, description="modified: RFC 6902 from the old configuration"
    )
    changed_paths: list[str] = Field(default_factory=list)


# -- tags and text search -----------------------------------------------------------------------

_TAG_FIELDS = ("Tags", "TagSet", "TagList", "tags", "Tagging.TagSet")


@cache
def _tags_reader(resource_type: str) -> Any:

    try:
        return default_registry().get(resource_type)
    except UnknownResourceType:
        return None


@cache
def _generic_tag_specs() -> tuple[Any, ...]:
    """Specs that only say where tags usually are, for types the registry does not know."""

    return tuple(
        ResourceSpec(
            cfn_type="AWS::Unregistered::Resource",
            service="unregistered",
            list_operation="List",
            result_path="Items",
            id_field="Id",
            arn_template="arn:{partition}:unregistered:{region}:{account}:{id}",
            tags_field=field,
        )
        for field in _TAG_FIELDS
    )


def tags_of(version: ResourceVersion) -> dict[str, str]:
    """The resource's tags, read where its type declares them (or in the usual fields)."""

    spec = _tags_reader(version.resource_type)
    if spec is not None and spec.tags_field is not None:
        return read_tags(spec, version.configuration)
    for generic in _generic_tag_specs():
        found = read_tags(generic, version.configuration)
        if found:
            return found
    return {}


def matches(version: ResourceVersion, needle: str) -> bool:
    """Whether ``needle`` (lower case) is in the key, id, name, or a tag key or value."""
    texts = (version.key, version.resource_id, version.name or "")
    if any(needle in text.lower() for text in texts):
        return True
    return any(needle in k.lower() or needle in v.lower() for k, v in tags_of(version).items())


# -- listing ------------------------------------------------------------------------------------


ListAsOf = Callable[[VersionQuery], Awaitable[Sequence[ResourceVersion | StoredRow]]]
"""``InventoryStore.list_as_of`` or ``StoredReads.list_as_of_stored``."""


async def _list_batch(
    list_as_of: ListAsOf, view: AccountView, query: VersionQuery
) -> tuple[Sequence[ResourceVersion | StoredRow], bool]:
    """Up to ``query.limit`` versions of ``query`` the view allows, in key order, and
    whether more may follow (the account of ``query`` is the view's).

    ``list_as_of`` is the store's ``list_as_of`` or, where it has it, ``list_as_of_stored``
    (the same rows with their configurations left as stored JSON)."""
    if not view.filtered:
        got = await list_as_of(replace(query, account_id=view.single))
        return got, len(got) >= query.limit
    # Several accounts: the store filters on one, so read each and merge in key order.
    assert view.accounts is not None
    lists = await asyncio.gather(
        *(list_as_of(replace(query, account_id=account)) for account in view.accounts)
    )
    return merge_by_key(lists, key=lambda v: v.key, limit=query.limit)


def _to_version(item: ResourceVersion | StoredRow) -> ResourceVersion:
    return item if isinstance(item, ResourceVersion) else item.to_version()


def _versions(items: list[ResourceVersion | StoredRow]) -> list[ResourceVersion]:
    return [item for item in items if isinstance(item, ResourceVersion)]


def _stored_rows(items: list[ResourceVersion | StoredRow]) -> list[StoredRow]:
    return [item for item in items if not isinstance(item, ResourceVersion)]


@endpoint(
    "GET",
    "/v1/resources",
    summary="Resources as they were at a time (default now), by type, account, region, text",
    query=ResourcesQuery,
    response=Page[ResourceVersion],
    tags=TAGS,
    csv_items=True,
)
async def list_resources(
    request: web.Request, query: ResourcesQuery
) -> Page[ResourceVersion] | RawPage | RawJson:
    view = account_view(request, query.account)
    state = decode_cursor(query.cursor, "resources")
    after_key = cursor_str(state, "after")
    if view.empty:
        return Page[ResourceVersion](items=[])
    store = inventory_store(request)
    needle = query.q.lower() if query.q else None
    stored = store if isinstance(store, StoredReads) else None
    if (
        stored is not None
        and needle is None
        and not view.filtered
        and not wants_csv(request, query)
    ):
        # The page as the store writes it: no Python work per version at all.
        body, count, last_key = await stored.list_as_of_json(
            VersionQuery(
                at=query.at,
                resource_type=query.type,
                account_id=view.single,
                region=query.region,
                limit=query.limit,
                after_key=after_key,
            )
        )
        cursor = encode_cursor("resources", after=last_key) if count >= query.limit else None
        return RawJson(b'{"items":' + body + b',"next_cursor":' + orjson.dumps(cursor) + b"}")
    # Stored rows when the store offers them: the page is sent without parsing, validating
    # and encoding every configuration again (most of a page's cost otherwise).
    list_as_of: ListAsOf = store.list_as_of if stored is None else stored.list_as_of_stored
    size = query.limit if needle is None else max(query.limit, _Q_BATCH)
    items: list[ResourceVersion | StoredRow] = []

    def page(next_cursor: str | None) -> Page[ResourceVersion] | RawPage:
        if stored is not None:
            return RawPage(raw=_stored_rows(items), next_cursor=next_cursor, to_model=_to_version)
        return Page[ResourceVersion](items=_versions(items), next_cursor=next_cursor)

    while True:
        got, more = await _list_batch(
            list_as_of,
            view,
            VersionQuery(
                at=query.at,
                resource_type=query.type,
                region=query.region,
                limit=size,
                after_key=after_key,
            ),
        )
        for i, version in enumerate(got):
            after_key = version.key
            if needle is not None and not matches(_to_version(version), needle):
                continue
            items.append(version)
            if len(items) == query.limit:
                rest = more or i < len(got) - 1
                return page(encode_cursor("resources", after=version.key) if rest else None)
        if not more:
            return page(None)


# -- one resource (suffix routes first: the key pattern would take them) ------------------------


async def _visible_history(request: web.Request, key: str) -> list[ResourceVersion]:
    """Every version of ``key``; 404 when unknown or in an account the caller cannot see."""
    versions: list[ResourceVersion] = await inventory_store(request).history(key)
    if not versions or not account_view(request).allows(versions[0].account_id):
        raise NotFound(f"no resource {key!r}")
    return versions


@endpoint(
    "GET",
    "/v1/resources/{key:.+}/history",
    summary="Every version of a resource with the change that made it and who caused it",
    query=HistoryQuery,
    response=Page[HistoryEntry],
    tags=TAGS,
    csv_items=True,
    path_params={"key": KEY_HELP},
)
async def resource_history(request: web.Request, query: HistoryQuery) -> Page[HistoryEntry]:
    key = request.match_info["key"]
    state = decode_cursor(query.cursor, "history")
    versions = await _visible_history(request, key)
    by_change = {v.change_id: v for v in versions}
    with store_cursor_errors():
        page = await inventory_store(request).changes(
            ChangeQuery(
                filters=ChangeFilters(key=key), limit=query.limit, cursor=cursor_str(state, "s")
            )
        )
    items = [
        HistoryEntry(
            change_id=c.change_id,
            change_type=c.change_type,
            captured_at=c.captured_at,
            detected_at=c.detected_at,
            scan_id=c.scan_id,
            attribution=c.attribution,
            patch=c.patch,
            changed_paths=c.changed_paths,
            version=by_change.get(c.change_id),
        )
        for c in page.items
    ]
    cursor = encode_cursor("history", s=page.next_cursor) if page.next_cursor else None
    return Page[HistoryEntry](items=items, next_cursor=cursor)


def _now() -> datetime:
    return datetime.now(UTC)


@endpoint(
    "GET",
    "/v1/resources/{key:.+}/diff",
    summary="How one resource differs between two times, as JSON Patch",
    query=ResourceDiffQuery,
    response=ResourceDiff,
    tags=TAGS,
    path_params={"key": KEY_HELP},
)
async def resource_diff(request: web.Request, query: ResourceDiffQuery) -> ResourceDiff:
    key = request.match_info["key"]
    to = query.to or _now()
    check_range(query.from_, to)
    await _visible_history(request, key)
    store = inventory_store(request)
    before, later = await asyncio.gather(store.as_of(key, query.from_), store.as_of(key, to))
    change: Literal["created", "deleted", "modified", "unchanged", "absent"]
    patch: list[JsonPatchOp] = []
    if before is None and later is None:
        change = "absent"
    elif before is None:
        change = "created"
    elif later is None:
        change = "deleted"
    elif before.config_hash == later.config_hash:
        change = "unchanged"
    else:
        change = "modified"
        patch = json_patch(before.configuration, later.configuration)
    return ResourceDiff(
        key=key,
        from_=query.from_,
        to=to,
        change=change,
        before=before,
        after=later,
        patch=patch,
        changed_paths=changed_paths(patch),
    )


@endpoint(
    "GET",
    "/v1/resources/{key:.+}",
    summary="One resource: its current version, or the one valid at a time",
    query=AtQuery,
    response=ResourceVersion,
    tags=TAGS,
    path_params={"key": KEY_HELP},
)
async def get_resource(request: web.Request, query: AtQuery) -> ResourceVersion | RawItem:
    key = request.match_info["key"]
    store = inventory_store(request)
    version: ResourceVersion | StoredRow | None
    if isinstance(store, StoredReads):  # the stored row, sent as it is (see list_resources)
        version = await (
            store.as_of_stored(key, query.at) if query.at is not None else store.current_stored(key)
        )
    else:
        version = (
            await store.as_of(key, query.at) if query.at is not None else await store.current(key)
        )
    if version is None or not account_view(request).allows(version.account_id):
        when = f" at {query.at.isoformat()}" if query.at is not None else ""
        raise NotFound(f"no resource {key!r}{when}")
    return version if isinstance(version, ResourceVersion) else RawItem(version)


# -- diffs between two times --------------------------------------------------------------------


@dataclass
class _Span:
    """The first and the last change of one key in a window, as the JSON objects of their
    ChangeEvents (a diff reads a few fields of each: parsing is all it needs)."""

    first: dict[str, Any]
    last: dict[str, Any]


async def changes_in_window(
    store: InventoryStore,
    view: AccountView,
    *,
    start: datetime,
    end: datetime,
    resource_type: str | None,
    region: str | None,
) -> dict[str, _Span]:
    """Per key, the first and last change captured in ``(start, end]`` the view may see, from
    every change of the window (a store without stored reads; see :func:`_stored_diff_page`)."""
    filters = ChangeFilters(resource_type=resource_type, account_id=view.single, region=region)
    spans: dict[str, _Span] = {}
    cursor: str | None = None
    while True:
        page = await store.changes(
            ChangeQuery(
                since=after(start),
                until=after(end),
                filters=filters,
                limit=_DIFF_SCAN_BATCH,
                cursor=cursor,
            )
        )
        cursor = page.next_cursor
        for change in (c.model_dump(mode="json") for c in page.items):
            if not view.allows(change["account_id"]):
                continue
            key = change["key"]
            span = spans.get(key)
            if span is None:
                spans[key] = _Span(change, change)
            else:
                span.last = change
        if cursor is None:
            return spans


def _differs(span: _Span) -> bool:
    """Whether the key's state at the window's end is not the one at its start."""
    return span.first.get("before_hash") != span.last.get("after_hash")


def _diff_page(spans: Iterable[_Span], limit: int) -> tuple[list[_Span], bool]:
    """The first ``limit`` spans whose key differs, and whether another follows."""
    page: list[_Span] = []
    for span in filter(_differs, spans):
        if len(page) == limit:
            return page, True
        page.append(span)
    return page, False


async def _stored_diff_page(
    store: StoredReads,
    view: AccountView,
    query: DiffQuery,
    *,
    end: datetime,
    after_key: str | None,
) -> tuple[list[_Span], bool]:
    """:func:`_diff_page` with each key's first and last change picked by the store, a few
    keys more than the page at a time (a key that does not differ is skipped)."""
    window = ChangeQuery(
        since=after(query.from_),
        until=after(end),
        filters=ChangeFilters(
            resource_type=query.type, account_id=view.single, region=query.region
        ),
        limit=min(query.limit + 1 + query.limit // 4, _DIFF_SCAN_BATCH),
    )
    accounts = view.accounts if view.filtered else None
    page: list[_Span] = []
    while True:
        pairs, last_key = await store.change_spans_stored(
            window, accounts=accounts, after_key=after_key
        )
        for first, last in orjson.loads(pairs):
            span = _Span(first, last or first)
            if not _differs(span):
                continue
            if len(page) == query.limit:
                return page, True
            page.append(span)
        if last_key is None:
            return page, False
        after_key = last_key


def _configurations_needed(span: _Span) -> list[str]:
    """The changes whose configurations the span's diff entry shows or diffs."""
    first, last = span.first, span.last
    if not _differs(span):
        return []
    if first.get("before_hash") is None:
        return [last["change_id"]]  # created: its configuration
    if last.get("after_hash") is None:
        return [first["change_id"]]  # deleted: the configuration it ended
    if first is last:
        return []  # one modification: its own patch
    return [first["change_id"], last["change_id"]]


async def _with_configurations(store: InventoryStore, spans: list[_Span]) -> None:
    """Read the whole stored changes the spans' entries need (the spans were read without
    their configurations)."""
    if not isinstance(store, StoredReads):
        return
    wanted = {cid for span in spans for cid in _configurations_needed(span)}
    if not wanted:
        return
    events: list[dict[str, Any]] = orjson.loads(await store.changes_by_id_stored(sorted(wanted)))
    full = {event["change_id"]: event for event in events}
    for span in spans:
        span.first = full.get(span.first["change_id"], span.first)
        span.last = full.get(span.last["change_id"], span.last)


def diff_entry(span: _Span) -> DiffEntry | None:
    """What the changes of one key in a window amount to (None: nothing).

    The state at the window's start is what its first change left (``before_hash``,
    ``prior_configuration``); the state at its end is what the last one made."""
    first, last = span.first, span.last
    before_hash, after_hash = first.get("before_hash"), last.get("after_hash")
    if before_hash == after_hash:
        return None  # created and deleted within the window, or changed back
    entry: dict[str, Any] = {
        "key": last["key"],
        "resource_type": last["resource_type"],
        "resource_id": last["resource_id"],
        "account_id": last["account_id"],
        "region": last["region"],
        "name": last.get("name"),
        "before_hash": before_hash,
        "after_hash": after_hash,
    }
    if before_hash is None:
        return DiffEntry(change="created", configuration=last.get("configuration"), **entry)
    if after_hash is None:
        return DiffEntry(change="deleted", configuration=first.get("prior_configuration"), **entry)
    if first is last:
        # One change in the window: its own patch is from the state before to the state after.
        return DiffEntry(
            change="modified",
            patch=last.get("patch") or [],
            changed_paths=last.get("changed_paths") or [],
            **entry,
        )
    patch = json_patch(first.get("prior_configuration"), last.get("configuration"))
    return DiffEntry(change="modified", patch=patch, changed_paths=changed_paths(patch), **entry)


@endpoint(
    "GET",
    "/v1/diff",
    summary="Resources created, deleted and modified (with JSON Patch) between two times",
    query=DiffQuery,
    response=Page[DiffEntry],
    tags=TAGS,
    csv_items=True,
)
async def diff(request: web.Request, query: DiffQuery) -> Page[DiffEntry]:
    to = query.to or _now()
    check_range(query.from_, to)
    view = account_view(request, query.account)
    state = decode_cursor(query.cursor, "diff")
    after_key = cursor_str(state, "after")
    if view.empty:
        return Page[DiffEntry](items=[])
    store = inventory_store(request)
    if isinstance(store, StoredReads):
        page, more = await _stored_diff_page(store, view, query, end=to, after_key=after_key)
    else:
        spans = await changes_in_window(
            store,
            view,
            start=query.from_,
            end=to,
            resource_type=query.type,
            region=query.region,
        )
        page, more = _diff_page(
            (spans[k] for k in sorted(spans) if after_key is None or k > after_key), query.limit
        )
    # The page's keys first (the hashes say whether a key differs), then the configurations
    # of those entries only.
    await _with_configurations(store, page)
    items = [entry for entry in map(diff_entry, page) if entry is not None]
    cursor = encode_cursor("diff", after=items[-1].key) if more and items else None
    return Page[DiffEntry](items=items, next_cursor=cursor)
