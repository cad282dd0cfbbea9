"""The inventory store interface: versions, changes and scan history, as the API queries them.

Every backend (the local SQLite store of the embedded mode, later S3 Parquet or DynamoDB)
implements :class:`InventoryStore`. Writers are the sink agents of ``cloudinv.streams.changes``;
readers are the API and the change detector, which warms its per-key state from
:meth:`InventoryStore.latest` so that a restarted worker does not report old changes again.

Model of the data:

- A **version** is one configuration of one resource, valid over ``[valid_from, valid_to)``;
  ``valid_to`` is ``None`` while it is current. Each change closes the key's open version (at
  the change's ``captured_at``) and, unless it is a deletion, opens a new one. A deleted
  resource therefore has no open version; its last version's ``valid_to`` is the deletion time.
- A **change** is a :class:`~cloudinv.core.models.ChangeEvent`, stored once per ``change_id``.
- A **scan** is the record of one :class:`~cloudinv.core.models.ScanManifest` (keys not kept).

Writes are idempotent: replaying a batch of changes or scans leaves the store as it was.
All timestamps are timezone-aware UTC.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from cloudinv.core.models import (
    AccountId,
    Attribution,
    ChangeEvent,
    ChangeType,
    ResourceType,
    ScanError,
    ScanManifest,
    ScanStatus,
    UtcDatetime,
)

__all__ = [
    "AttributionFigure",
    "AttributionJoin",
    "ChangeFilters",
    "ChangeLog",
    "ChangePage",
    "ChangeQuery",
    "Direction",
    "Graph",
    "GraphEdge",
    "GraphNode",
    "InventoryStore",
    "LoggedChange",
    "RelatedResource",
    "RelationshipReads",
    "ResourceVersion",
    "ScanRecord",
    "StoreError",
    "StoredReads",
    "StoredRow",
    "VersionQuery",
    "WriteEvent",
    "change_pages",
    "check_limit",
    "version_pages",
]


class StoreError(Exception):
    """The store cannot do what was asked (closed, unreadable, bad cursor)."""


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ResourceVersion(_Record):
    """One configuration of one resource over ``[valid_from, valid_to)``."""

    key: str
    resource_type: ResourceType
    resource_id: str
    account_id: AccountId
    region: str
    name: str | None = None
    configuration: dict[str, Any]
    config_hash: str = Field(description="Hash of the normalized configuration (after_hash)")
    valid_from: UtcDatetime
    valid_to: UtcDatetime | None = Field(default=None, description="None while current")
    change_id: str = Field(description="The change that opened this version")

    @property
    def is_current(self) -> bool:
        return self.valid_to is None


class ScanRecord(_Record):
    """The stored history of one scan of one scope (manifests without their key lists)."""

    scan_id: str
    account_id: AccountId
    region: str
    resource_type: ResourceType
    status: ScanStatus
    started_at: UtcDatetime
    finished_at: UtcDatetime
    count: int
    errors: list[ScanError] = Field(default_factory=list)

    @classmethod
    def from_manifest(cls, manifest: ScanManifest) -> ScanRecord:
        return cls(
            scan_id=manifest.scan_id,
            account_id=manifest.account_id,
            region=manifest.region,
            resource_type=manifest.resource_type,
            status=manifest.status,
            started_at=manifest.started_at,
            finished_at=manifest.finished_at,
            count=manifest.count,
            errors=list(manifest.errors),
        )


@dataclass(frozen=True)
class ChangeFilters:
    """Optional equality filters of :meth:`InventoryStore.changes`; ``None`` means any."""

    key: str | None = None
    resource_type: str | None = None
    account_id: str | None = None
    region: str | None = None
    change_types: tuple[ChangeType, ...] | None = None


def check_limit(limit: int) -> None:
    """A page size must be at least 1 (:class:`ValueError` otherwise)."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")


_Read = TypeVar("_Read")


def cut_page(
    rows: Sequence[_Read], limit: int, cursor_after: Callable[[_Read], str]
) -> tuple[Sequence[_Read], str | None]:
    """A page read as up to ``limit + 1`` rows, the extra one only saying that another page
    follows: the first ``limit`` rows and the cursor after the last of them (``None`` on the
    last page)."""
    if len(rows) > limit:
        return rows[:limit], cursor_after(rows[limit - 1])
    return rows, None


@dataclass(frozen=True, slots=True)
class VersionQuery:
    """Which versions :meth:`InventoryStore.list_as_of` returns: every resource matching the
    equality filters (``None`` means any) as it was at ``at`` (now if ``None``), ordered by
    key, at most ``limit`` after ``after_key`` (the last key of the previous page)."""

    at: datetime | None = None
    resource_type: str | None = None
    account_id: str | None = None
    region: str | None = None
    limit: int = 1000
    after_key: str | None = None

    def __post_init__(self) -> None:
        check_limit(self.limit)


@dataclass(frozen=True, slots=True)
class ChangeQuery:
    """Which changes :meth:`InventoryStore.changes` returns: those captured in
    ``[since, until)`` matching ``filters``, ordered by capture time, at most ``limit`` after
    ``cursor`` (the ``next_cursor`` of the previous page)."""

    since: datetime | None = None
    until: datetime | None = None
    filters: ChangeFilters = ChangeFilters()
    limit: int = 100
    cursor: str | None = None

    def __post_init__(self) -> None:
        check_limit(self.limit)


class ChangePage(_Record):
    """One page of changes, oldest first; pass ``next_cursor`` back for the next page."""

    items: list[ChangeEvent]
    next_cursor: str | None = Field(default=None, description="None on the last page")


@runtime_checkable
class InventoryStore(Protocol):
    """Versions, changes and scans of the inventory. Every method is a coroutine.

    Implementations must not block the event loop, must make :meth:`as_of` and
    :meth:`list_as_of` indexed lookups (not scans of the whole history), and must make
    :meth:`put_changes` and :meth:`record_scans` idempotent.
    """

    async def open(self) -> None:
        """Create or migrate the storage; safe to call again."""
        ...

    async def close(self) -> None:
        """Release connections and threads; further calls raise :class:`StoreError`."""
        ...

    # -- writes (the sink agents) ---------------------------------------------------------

    async def put_changes(self, batch: Sequence[ChangeEvent]) -> int:
        """Store changes in order and move versions accordingly, in one transaction.

        A change whose ``change_id`` is already stored is skipped, as is one that would not
        move the key's state (a replayed or re-detected change: its ``after_hash`` is the
        open version's hash, or a deletion of a key with no open version, or one captured
        before the open version began). Returns how many changes were applied.
        """
        ...

    async def record_scans(self, batch: Sequence[ScanManifest]) -> int:
        """Record scan manifests (one row per scan id and scope; a replay overwrites)."""
        ...

    # -- reads (the API) -------------------------------------------------------------------

    async def current(self, key: str) -> ResourceVersion | None:
        """The open version of ``key``; ``None`` if unknown or deleted."""
        ...

    async def as_of(self, key: str, at: datetime) -> ResourceVersion | None:
        """The version of ``key`` valid at ``at``; ``None`` if it did not exist then."""
        ...

    async def list_as_of(self, query: VersionQuery) -> list[ResourceVersion]:
        """The versions ``query`` names (see :class:`VersionQuery`)."""
        ...

    async def history(self, key: str) -> list[ResourceVersion]:
        """Every version of ``key``, oldest first."""
        ...

    async def changes(self, query: ChangeQuery) -> ChangePage:
        """The changes ``query`` names (see :class:`ChangeQuery`)."""
        ...

    async def scans(
        self,
        *,
        account_id: str | None = None,
        region: str | None = None,
        resource_type: str | None = None,
        scan_id: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[ScanRecord]:
        """Scan history, most recently finished first."""
        ...

    # -- the change detector ---------------------------------------------------------------

    async def current_keys_in_scope(
        self, account_id: str, region: str, resource_type: str
    ) -> set[str]:
        """Keys with an open version in one (account, region, type) scope."""
        ...

    async def latest(self, keys: Sequence[str]) -> dict[str, ResourceVersion]:
        """The most recent version of each key, open or closed (closed = deleted then).

        Keys never stored are absent from the result.
        """
        ...


class _Keyed(Protocol):
    @property
    def key(self) -> str: ...


_Row = TypeVar("_Row", bound=_Keyed)


async def version_pages(
    list_as_of: Callable[[VersionQuery], Awaitable[Sequence[_Row]]], query: VersionQuery
) -> AsyncIterator[Sequence[_Row]]:
    """Every version ``query`` names, a page of at most ``query.limit`` at a time, as
    ``list_as_of`` returns them (:meth:`InventoryStore.list_as_of` or
    :meth:`StoredReads.list_as_of_stored`)."""
    while True:
        page = await list_as_of(query)
        if page:
            yield page
        if len(page) < query.limit:
            return
        query = replace(query, after_key=page[-1].key)


async def change_pages(
    store: InventoryStore, query: ChangeQuery
) -> AsyncIterator[list[ChangeEvent]]:
    """Every change ``query`` names, a page of at most ``query.limit`` at a time."""
    while True:
        page = await store.changes(query)
        if page.items:
            yield page.items
        if page.next_cursor is None:
            return
        query = replace(query, cursor=page.next_cursor)


@dataclass(frozen=True, slots=True)
class LoggedChange:
    """One stored change in commit order: ``seq`` is the store's own sequence number."""

    seq: int
    key: str
    resource_type: str
    account_id: str
    region: str
    change_type: str
    event: bytes
    """The ChangeEvent as stored: compact JSON, as on the changes topic."""


@runtime_checkable
class ChangeLog(Protocol):
    """Optional, beside :class:`InventoryStore`: changes in the order they were committed,
    which is what a live feed tails. :meth:`InventoryStore.changes` orders by capture time,
    and a change captured earlier can be committed later (a deletion carries its scan's
    start time; partitions are written in parallel), so a tail by capture time would miss
    it. Also current resource counts, without reading every configuration."""

    async def change_log_head(self) -> int:
        """The newest change's sequence number (0 when there is none)."""
        ...

    async def change_log_after(self, seq: int, limit: int) -> list[LoggedChange]:
        """Up to ``limit`` changes committed after ``seq``, in commit order."""
        ...

    async def current_counts(self) -> dict[tuple[str, str, str], int]:
        """Current (open) versions per (resource type, account, region)."""
        ...


class StoredRow(Protocol):
    """A version as stored, its configuration still the stored JSON (what
    :class:`StoredReads` returns): the API sends it without a model round trip."""

    @property
    def key(self) -> str: ...

    @property
    def account_id(self) -> str: ...

    def to_version(self) -> ResourceVersion:
        """The model (for CSV and text search)."""
        ...

    def json_fields(self) -> dict[str, Any]:
        """The fields of :class:`ResourceVersion` in its order, the configuration an
        ``orjson.Fragment`` of the stored JSON."""
        ...


@runtime_checkable
class StoredReads(Protocol):
    """Optional, beside :class:`InventoryStore`: the same reads answered with the stored
    JSON, for a store that keeps JSON it can send as it is (the SQLite store does: a page
    then costs no parsing, validating or encoding per version). The API uses them when the
    store is one (``isinstance(store, StoredReads)``) and the models otherwise."""

    async def current_stored(self, key: str) -> StoredRow | None: ...

    async def as_of_stored(self, key: str, at: datetime) -> StoredRow | None: ...

    async def list_as_of_stored(self, query: VersionQuery) -> Sequence[StoredRow]: ...

    async def list_as_of_json(self, query: VersionQuery) -> tuple[bytes, int, str | None]:
        """The JSON array of the versions, how many, and the last key."""
        ...

    async def changes_stored(self, query: ChangeQuery) -> tuple[bytes, str | None]:
        """The JSON array of the changes, and the next cursor."""
        ...

    async def change_spans_stored(
        self,
        query: ChangeQuery,
        *,
        accounts: Sequence[str] | None = None,
        after_key: str | None = None,
    ) -> tuple[bytes, str | None]:
        """Per key in key order after ``after_key`` (of ``accounts`` only, when given): the
        first and last change matching ``query`` without configurations, a JSON array of
        ``[first, last]`` pairs (``last`` null: the key changed once) for at most
        ``query.limit`` keys; and the last key when more may follow."""
        ...

    async def changes_by_id_stored(self, change_ids: Sequence[str]) -> bytes:
        """The JSON array of the whole stored changes with these ids."""


class WriteEvent(_Record):
    """A successful CloudTrail write event and the resources it names
    (refs of :mod:`cloudinv.catalog.event_resources`)."""

    refs: tuple[str, ...]
    attribution: Attribution


class AttributionFigure(_Record):
    """How many recent changes have a write event that explains them, and how many of those
    carry an attribution of it (``ratio``: None when no change has one); apart from those,
    how many carry an attribution inherited from the change before them (a later state
    transition: :mod:`cloudinv.sinks.versioning`)."""

    since: UtcDatetime
    changes: int
    matched: int
    attributed: int
    inherited: int = 0

    @property
    def ratio(self) -> float | None:
        return None if self.matched == 0 else self.attributed / self.matched


@runtime_checkable
class AttributionJoin(Protocol):
    """Beside :class:`InventoryStore`: the join of changes with the write events that caused
    them, whichever is stored first (see :mod:`cloudinv.sinks.versioning` for the window).

    Neither method changes a stored change: each returns the changes a write event explains
    better than their stored attribution, with that attribution, for the caller to send on the
    changes topic; :meth:`InventoryStore.put_changes` then updates them in place. Each method
    reads after its own write is committed, so of a change and its event stored at the same
    time, at least one of the two calls sees the other.
    """

    async def record_write_events(
        self, events: Sequence[WriteEvent], *, keep_since: datetime | None = None
    ) -> list[ChangeEvent]:
        """Store write events (idempotent by ref and event id), forget those before
        ``keep_since``, and return stored changes they explain better."""
        ...

    async def attribution_updates(self, changes: Sequence[ChangeEvent]) -> list[ChangeEvent]:
        """Of ``changes`` (just stored), those without attribution that a stored write event
        explains, with it."""
        ...

    async def attribution_figure(self, since: datetime) -> AttributionFigure:
        """Changes captured since ``since``: how many a stored write event explains, and
        how many of those are attributed."""
        ...


Direction = Literal["out", "in", "both"]
"""``out``: what a resource names (its subnet); ``in``: what names it (a subnet's instances)."""


class RelatedResource(_Record):
    """One resource related to the one asked about, as of the time asked.

    ``relationship`` reads from the resource asked about: an ``out`` edge carries the declared
    name (an instance ``is contained in`` its subnet), an ``in`` edge its inverse (a subnet
    ``contains`` the instance). ``exists`` is False when no version of the related resource is
    valid at that time (deleted, never inventoried, or not collected): its type and its
    account and region (read from its ARN) are still given."""

    direction: Literal["out", "in"]
    relationship: str
    key: str
    type: str
    account_id: str | None = None
    region: str | None = None
    name: str | None = None
    exists: bool


class GraphNode(_Record):
    """A resource in a neighbourhood, ``hops`` edges away from the one asked about."""

    key: str
    type: str
    account_id: str | None = None
    region: str | None = None
    name: str | None = None
    exists: bool
    hops: int


class GraphEdge(_Record):
    """A relationship as declared: ``source`` names ``target``."""

    source: str
    relationship: str
    target: str


class Graph(_Record):
    """The resources within ``hops`` edges of ``key`` (either direction), as of ``at``.

    At most ``limit`` nodes, nearest first; ``truncated`` says that more were reachable.
    ``edges`` are those between the nodes given."""

    key: str
    at: UtcDatetime | None = Field(default=None, description="None: now")
    hops: int
    nodes: list[GraphNode]
    edges: list[GraphEdge]
    truncated: bool


@runtime_checkable
class RelationshipReads(Protocol):
    """Beside :class:`InventoryStore`: the relationships between resources, versioned with
    them (:mod:`cloudinv.sinks.versioning`), as of any time (``at`` None: now)."""

    async def related(
        self,
        key: str,
        at: datetime | None = None,
        direction: Direction = "both",
        relationship: str | None = None,
        target_type: str | None = None,
        *,
        accounts: Sequence[str] | None = None,
    ) -> list[RelatedResource]:
        """The resources ``key`` names (``out``) and that name it (``in``), filtered by the
        relationship name as read from ``key`` and by the related resource's type;
        ``accounts``: only related resources of these accounts (None: any)."""
        ...

    async def neighbourhood(
        self,
        key: str,
        at: datetime | None = None,
        hops: int = 1,
        limit: int = 100,
        *,
        accounts: Sequence[str] | None = None,
    ) -> Graph:
        """Everything within ``hops`` (1..3) edges of ``key``, at most ``limit`` nodes;
        with ``accounts``, nodes of other accounts are neither given nor walked through."""
        ...
