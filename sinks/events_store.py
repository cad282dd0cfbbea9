"""The CloudTrail events store: every event once, activity aggregates, and the queries the
API serves (events by principal, service, account, time, event name and request
parameters; principals; services; hourly and daily activity).

SQLite in WAL mode at ``<data dir>/store/events.sqlite3``. Writes go through one writer
thread, reads through a small pool of read-only connections, so the event loop never waits
on SQLite and readers never wait on the writer.

Counting once: :meth:`EventsStore.write_batch` stages a batch, drops the events already
stored (by ``event_id``), and in the same transaction inserts the rest and adds exactly
those to the aggregates. A replayed batch, or the same log file delivered twice, changes
nothing. Aggregates are therefore derived from the deduplicated store, never from the raw
stream.

Times are stored as epoch milliseconds (UTC). Ranges are ``[since, until)``; a ``date``
given as ``until`` means "through the end of that day" (the replaced tool excluded it).

Queries. Each filter that narrows events has an index on (filter, time), and one account's
events of a service or an event name one on (account, filter, time); an events query names
the index of its most selective filters (principal, user name, event name, service,
account, else time: :func:`_index_for`), so SQLite never guesses without statistics and
walks one index in time order, reading no more rows than the page needs. User names match
case-insensitively (IAM names are). Bodies are stored as the model's own JSON (see
:func:`event_json`): :meth:`EventsStore.events_json` has SQLite join a page's bodies into
the JSON array the API sends, in one step and with no Python per event, and
:meth:`EventsStore.stored_events` returns them as they are (:class:`StoredEvent`). The
activity, principal and service endpoints read only the aggregates.
"""

from __future__ import annotations

import base64
import logging
import re
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cloudinv.core.codec import encode
from cloudinv.core.models import CloudTrailEvent, EventResource, Principal, UtcDatetime
from cloudinv.sinks.sqlite_db import SqliteBacked, SqliteSchema, equal_to, immediate, one_of
from cloudinv.sinks.store import cut_page

__all__ = [
    "EVENTS_STORE_FILE",
    "ActivityBucket",
    "ActivityUpdate",
    "EventFilters",
    "EventPage",
    "EventsStore",
    "EventsStoreError",
    "Granularity",
    "PrincipalSummary",
    "ServiceSummary",
    "StoredEvent",
    "StoredEventPage",
    "WriteResult",
    "check_activity_query",
    "check_events_limit",
    "event_json",
    "events_store_path",
    "flatten_params",
]

log = logging.getLogger(__name__)

EVENTS_STORE_FILE = Path("store") / "events.sqlite3"
Granularity = Literal["hour", "day"]
_BUCKET_MS: dict[str, int] = {"hour": 3_600_000, "day": 86_400_000}
_MAX_PARAMS = 64
_MAX_PARAM_VALUE = 256
_PAGE_SIZE = 16384
SCHEMA_VERSION = 2
"""2: every stored body is the model's own JSON (:func:`event_json`), and indexes by account
and service or event name; 1 and older files are upgraded when opened (:func:`_migrate`)."""


def events_store_path(data_dir: Path) -> Path:
    return data_dir / EVENTS_STORE_FILE


class EventsStoreError(Exception):
    """The store cannot do what was asked (closed, bad cursor, bad arguments)."""


# --- what the queries return ---------------------------------------------------------------


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EventPage(_Record):
    """Events, newest first; pass ``next_cursor`` back for the next page."""

    items: list[CloudTrailEvent]
    next_cursor: str | None = Field(default=None, description="None on the last page")


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One stored event: its JSON exactly as the model writes it (:func:`event_json`), and
    the fields the API's paging and account views need."""

    event_id: str
    account_id: str
    json: bytes

    def model(self) -> CloudTrailEvent:
        return CloudTrailEvent.model_validate_json(self.json)


@dataclass(frozen=True)
class StoredEventPage:
    """Stored events, newest first; pass ``next_cursor`` back for the next page."""

    items: list[StoredEvent]
    next_cursor: str | None

    def page(self) -> EventPage:
        return EventPage(items=[e.model() for e in self.items], next_cursor=self.next_cursor)


class PrincipalSummary(_Record):
    label: str = Field(description="The principal's key: ARN, root:<account> or service")
    type: str | None = None
    name: str | None = None
    arn: str | None = None
    account_id: str
    events: int
    errors: int
    writes: int
    first_seen: UtcDatetime
    last_seen: UtcDatetime


class ServiceSummary(_Record):
    service: str
    events: int
    errors: int
    writes: int


class ActivityBucket(_Record):
    """Activity of one principal or service (or all) in one hour or day."""

    start: UtcDatetime
    events: int
    errors: int
    writes: int
    reads: int
    by_event_name: dict[str, int] = Field(default_factory=dict)


class ActivityUpdate(_Record):
    """An aggregate after a batch: the new totals of one bucket of one principal or service
    in one account. Published on the activity topic, keyed by ``kind:key``."""

    granularity: Granularity
    kind: Literal["principal", "service"]
    key: str
    account_id: str
    bucket: ActivityBucket

    @property
    def topic_key(self) -> str:
        return f"{self.kind}:{self.key}"


@dataclass(frozen=True)
class WriteResult:
    received: int
    inserted: int
    updates: list[ActivityUpdate]
    rejected: list[str] = field(default_factory=list)
    """Why messages of the batch that are not CloudTrail events were left out."""


@dataclass(frozen=True)
class EventFilters:
    """The filters of :meth:`EventsStore.events` and :meth:`EventsStore.count`.

    ``params`` maps a dotted path into the request parameters (list items share their
    list's path, e.g. ``instancesSet.items.instanceId``) to the value as text.
    """

    principal: str | None = None
    user_name: str | None = None
    service: str | None = None
    event_name: str | None = None
    account_id: str | None = None
    region: str | None = None
    errors_only: bool = False
    read_only: bool | None = None
    since: datetime | date | None = None
    until: datetime | date | None = None
    params: tuple[tuple[str, str], ...] = ()
    accounts: frozenset[str] | None = None
    """Only events of these accounts (a caller allowed several); with ``account_id`` too,
    both apply."""


# --- rows ----------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT NOT NULL UNIQUE,
    event_time INTEGER NOT NULL,
    account_id TEXT NOT NULL,
    region TEXT NOT NULL,
    service TEXT NOT NULL,
    event_name TEXT NOT NULL,
    principal TEXT NOT NULL,
    principal_name TEXT,
    read_only INTEGER,
    error_code TEXT,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_time ON events(event_time);
CREATE INDEX IF NOT EXISTS events_by_principal ON events(principal, event_time);
CREATE INDEX IF NOT EXISTS events_by_service ON events(service, event_time);
CREATE INDEX IF NOT EXISTS events_by_account ON events(account_id, event_time);
CREATE INDEX IF NOT EXISTS events_by_name ON events(event_name, event_time);
CREATE INDEX IF NOT EXISTS events_by_account_service ON events(account_id, service, event_time);
CREATE INDEX IF NOT EXISTS events_by_account_name ON events(account_id, event_name, event_time);
DROP INDEX IF EXISTS events_by_user;
CREATE INDEX IF NOT EXISTS events_by_user_nocase
    ON events(principal_name COLLATE NOCASE, event_time);
CREATE TABLE IF NOT EXISTS event_params (
    path TEXT NOT NULL,
    value TEXT NOT NULL,
    event_rowid INTEGER NOT NULL,
    PRIMARY KEY (path, value, event_rowid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS activity (
    granularity TEXT NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    account_id TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    event_name TEXT NOT NULL,
    events INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    writes INTEGER NOT NULL,
    PRIMARY KEY (granularity, kind, key, account_id, bucket, event_name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS activity_by_bucket ON activity(granularity, kind, bucket);
CREATE TABLE IF NOT EXISTS principals (
    label TEXT NOT NULL,
    account_id TEXT NOT NULL,
    type TEXT,
    name TEXT,
    arn TEXT,
    events INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    writes INTEGER NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    PRIMARY KEY (label, account_id)
) WITHOUT ROWID;
"""

_COLUMNS = (
    "event_id, event_time, account_id, region, service, event_name, principal, "
    "principal_name, read_only, error_code, body"
)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


def _ms(value: datetime) -> int:
    """Epoch milliseconds, floored exactly (integer arithmetic, no float rounding)."""
    return (value - _EPOCH) // _ONE_MS


def _from_ms(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, UTC)


def _bound_ms(value: datetime | date | None, *, end: bool) -> int | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return _ms(moment)
    day = datetime(value.year, value.month, value.day, tzinfo=UTC)
    return _ms(day + timedelta(days=1) if end else day)


def _param_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def flatten_params(params: dict[str, Any] | None) -> list[tuple[str, str]]:
    """Scalar leaves of request parameters as (dotted path, text value), list items under
    their list's path; at most 64 leaves, values longer than 256 characters left out."""
    out: list[tuple[str, str]] = []

    def walk(value: Any, path: str) -> None:
        if len(out) >= _MAX_PARAMS:
            return
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}.{key}" if path else str(key))
        elif isinstance(value, list):
            for item in value:
                walk(item, path)
        elif value is not None and path:
            text = _param_text(value)
            if len(text) <= _MAX_PARAM_VALUE:
                out.append((path, text))

    walk(params or {}, "")
    return list(dict.fromkeys(out))


def _row(event: CloudTrailEvent) -> tuple[Any, ...]:
    p = event.principal
    return (
        event.event_id,
        _ms(event.event_time),
        event.account_id,
        event.region,
        event.service,
        event.event_name,
        p.label,
        p.name,
        None if event.read_only is None else int(event.read_only),
        event.error_code,
        encode(event),
        p.type,
        p.arn,
    )


_EVENT_FIELDS = frozenset(CloudTrailEvent.model_fields)
_PRINCIPAL_FIELDS = frozenset(Principal.model_fields)
_PRINCIPAL_DEFAULTS = {name: None for name in _PRINCIPAL_FIELDS}
_LABEL: Callable[[Any], str] = vars(Principal)["label"].fget
_REQUIRED = frozenset(
    ("event_id", "event_time", "event_source", "service", "event_name", "region", "account_id")
) | {"principal", "resources"}
"""Fields the fast path needs present and not null (``resources`` is a list, maybe empty)."""
_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "event_id": str,
    "event_time": str,
    "event_source": str,
    "service": str,
    "event_name": str,
    "region": str,
    "account_id": str,
    "principal": dict,
    "source_ip": str,
    "user_agent": str,
    "read_only": bool,
    "error_code": str,
    "error_message": str,
    "event_type": str,
    "resources": list,
    "request_parameters": dict,
    "response_elements": dict,
    "additional_event_data": dict,
    "source_file": str,
}
if _FIELD_TYPES.keys() != _EVENT_FIELDS:  # pragma: no cover - caught by any test run
    raise RuntimeError("every CloudTrailEvent field needs a type in events_store._FIELD_TYPES")
_RESOURCE_FIELDS = frozenset(EventResource.model_fields)
_CANONICAL_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.(?!000000)\d{6})?Z")


def _canonical(d: Any) -> bool:
    """True when a parsed body has the shape of the model's own JSON (see :func:`event_json`):
    every field, no other, times in UTC with ``Z``."""
    if d.__class__ is not dict or d.keys() != _EVENT_FIELDS:
        return False
    principal, resources, moment = d["principal"], d["resources"], d["event_time"]
    return (
        principal.__class__ is dict
        and principal.keys() == _PRINCIPAL_FIELDS
        and resources.__class__ is list
        and all(r.__class__ is dict and r.keys() == _RESOURCE_FIELDS for r in resources)
        and moment.__class__ is str
        and _CANONICAL_TIME.fullmatch(moment) is not None
    )


def _is_canonical(body: bytes) -> bool:
    try:
        return _canonical(orjson.loads(body))
    except orjson.JSONDecodeError:
        return False


def _model_json(body: bytes) -> bytes:
    """The model's own JSON of an event's JSON (raises ``ValidationError`` if not an event)."""
    event = CloudTrailEvent.model_validate_json(body)
    return event.__pydantic_serializer__.to_json(event, by_alias=True)


def event_json(body: bytes) -> bytes:
    """A stored event's JSON exactly as the model writes it (same fields, same values).

    The SQLite store keeps only such bodies (written so, and older files rewritten when
    opened: :func:`_migrate`), so it sends them unchecked. Other stores' bodies from the
    wire are the codec's encoding of the model (every field, times in UTC with ``Z``) and
    are returned as they are after a parse that checks that shape (about 30 times cheaper
    than building the model); any other body (an older or foreign producer's, with fields
    left out) goes through the model."""
    if _is_canonical(body):
        return body
    return _model_json(body)


class _NotFastPath(ValueError):
    """The message is not in the shape the fast path takes; the model decides."""


def _row_from_json(data: bytes) -> tuple[tuple[Any, ...], dict[str, Any] | None]:
    """A row straight from an encoded event (the wire format of the CloudTrail topic),
    type-checked field by field without building the model: the worker's hot path. Anything
    unusual raises :class:`_NotFastPath`, and the model then decides (and names the
    problem), so this check only has to be strict, not explanatory."""
    d = orjson.loads(data)
    if d.__class__ is not dict or not _REQUIRED <= d.keys() <= _EVENT_FIELDS:
        raise _NotFastPath
    types = _FIELD_TYPES
    for name, value in d.items():
        if value is not None and not isinstance(value, types[name]):
            raise _NotFastPath
    raw_principal = d["principal"]
    if not raw_principal.keys() <= _PRINCIPAL_FIELDS:
        raise _NotFastPath
    for value in raw_principal.values():
        if value is not None and value.__class__ is not str:
            raise _NotFastPath
    for resource in d["resources"]:
        if resource.__class__ is not dict or not resource.keys() <= _RESOURCE_FIELDS:
            raise _NotFastPath
        for value in resource.values():
            if value is not None and value.__class__ is not str:
                raise _NotFastPath
    # Principal.label itself, on a plain namespace: the one definition, without building
    # a model per event.
    principal = SimpleNamespace(**(_PRINCIPAL_DEFAULTS | raw_principal))
    label: str = _LABEL(principal)
    moment = datetime.fromisoformat(d["event_time"])
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    read_only = d.get("read_only")
    row = (
        d["event_id"],
        _ms(moment),
        d["account_id"],
        d["region"],
        d["service"],
        d["event_name"],
        label,
        principal.name,
        None if read_only is None else int(read_only),
        d.get("error_code"),
        # Stored as the model's own JSON, so reads send it unchecked (see event_json).
        (data if data.__class__ is bytes else bytes(data)) if _canonical(d) else _model_json(data),
        principal.type,
        principal.arn,
    )
    return row, d.get("request_parameters")


Prepared = tuple[tuple[Any, ...], list[tuple[str, str]]]
"""One event's row and its request-parameter (path, value) pairs."""


def _prepare(batch: Sequence[CloudTrailEvent | bytes]) -> tuple[dict[str, Prepared], list[str]]:
    """Rows by event id (the first of any duplicates in the batch), and the reasons for the
    messages that are not events."""
    prepared: dict[str, Prepared] = {}
    rejected: list[str] = []
    for item in batch:
        if isinstance(item, CloudTrailEvent):
            row, request = _row(item), item.request_parameters
        else:
            try:
                row, request = _row_from_json(item)
            except (ValueError, TypeError, KeyError, orjson.JSONDecodeError):
                # Not in the fast path's shape: the model decides, and names the problem.
                try:
                    event = CloudTrailEvent.model_validate_json(item)
                except ValidationError as exc:
                    rejected.append(f"not a CloudTrailEvent: {exc.errors()[0]}")
                    continue
                row, request = _row(event), event.request_parameters
        if row[0] not in prepared:
            prepared[row[0]] = (row, flatten_params(request))
    return prepared, rejected


AggregateKey = tuple[str, str, str, str, int, str]
"""(granularity, kind, key, account, bucket start ms, event name)"""


def _aggregates(rows: Iterable[tuple[Any, ...]]) -> dict[AggregateKey, list[int]]:
    """Events, errors and writes per aggregate key, over new rows only."""
    out: dict[AggregateKey, list[int]] = {}
    for row in rows:
        event_time, account, service, name, principal = row[1], row[2], row[4], row[5], row[6]
        error = int(row[9] is not None)
        write = int(row[8] == 0)
        for granularity, size in _BUCKET_MS.items():
            bucket = event_time - event_time % size
            for kind, key in (("principal", principal), ("service", service)):
                agg_key = (granularity, kind, key, account, bucket, name)
                counts = out.get(agg_key)
                if counts is None:
                    out[agg_key] = [1, error, write]
                else:
                    counts[0] += 1
                    counts[1] += error
                    counts[2] += write
    return out


def _principal_rows(rows: Iterable[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    out: dict[tuple[str, str], list[Any]] = {}
    for row in rows:
        key = (row[6], row[2])
        error, write, event_time = int(row[9] is not None), int(row[8] == 0), row[1]
        entry = out.get(key)
        if entry is None:
            out[key] = [row[11], row[7], row[12], 1, error, write, event_time, event_time]
        else:
            entry[3] += 1
            entry[4] += error
            entry[5] += write
            entry[6] = min(entry[6], event_time)
            entry[7] = max(entry[7], event_time)
    return [(label, account, *values) for (label, account), values in out.items()]


# --- cursors -------------------------------------------------------------------------------


def _encode_cursor(event_time: int, rowid: int) -> str:
    return base64.urlsafe_b64encode(f"{event_time}:{rowid}".encode()).decode()


def _decode_cursor(cursor: str) -> tuple[int, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor.encode()).decode()
        event_time, rowid = raw.split(":")
        return int(event_time), int(rowid)
    except (ValueError, UnicodeDecodeError):
        raise EventsStoreError(f"cursor {cursor!r} is not one this store returned") from None


# --- the store -----------------------------------------------------------------------------


_MIGRATE_BATCH = 5000


def _migrate(conn: sqlite3.Connection, version: int) -> None:
    """Schema 1 (and the unstamped 0) to 2: bodies not in the model's own JSON (from older
    or foreign producers) are rewritten to it, so that reads can send every body unchecked
    (the schema's new indexes are built by its DDL, just before).
    Inside the transaction that stamps version 2: one process does it, once. A body the
    model no longer accepts is left as it was (nothing stored is lost), and counted."""
    if version >= 2:
        return
    total = rewritten = kept = 0
    last = 0
    while True:
        rows = conn.execute(
            "SELECT rowid, body FROM events WHERE rowid > ? ORDER BY rowid LIMIT ?",
            (last, _MIGRATE_BATCH),
        ).fetchall()
        if not rows:
            break
        last = rows[-1][0]
        total += len(rows)
        updates = []
        for rowid, body in rows:
            if _is_canonical(body):
                continue
            try:
                updates.append((_model_json(body), rowid))
            except ValidationError:
                kept += 1
        conn.executemany("UPDATE events SET body = ? WHERE rowid = ?", updates)
        rewritten += len(updates)
    if total:
        path = conn.execute("PRAGMA database_list").fetchone()[2]
        log.log(
            logging.WARNING if kept else logging.INFO,
            "events store %s: schema %d -> %d: indexes by account and service or event "
            "name added, %d of %d stored events rewritten as the model's JSON%s",
            path,
            version,
            SCHEMA_VERSION,
            rewritten,
            total,
            f"; {kept} that the model no longer accepts kept as they were" if kept else "",
        )


_SQLITE_SCHEMA = SqliteSchema(
    what="the events store",
    version=SCHEMA_VERSION,
    ddl=_SCHEMA,
    # 16 KiB pages cost about 15% less CPU per stored event than the 4 KiB default (fewer
    # b-tree splits and WAL frames for the same rows; bench/cloudtrail.py), and an event
    # page is still one read.
    page_size=_PAGE_SIZE,
    writer_pragmas=("cache_size = -65536",),
    # Readers map the file instead of copying each page they touch through read(): an
    # events page reads about a hundred rows scattered over the table, and this halves
    # SQLite's CPU for it (bench/api.py). Address space only; the OS page cache holds it.
    reader_pragmas=(f"mmap_size = {1 << 30}",),
    migrate=_migrate,
)


class EventsStore(SqliteBacked):
    """See the module docstring. ``await open()`` before use; ``readonly`` for the API."""

    SCHEMA = _SQLITE_SCHEMA
    FILE = EVENTS_STORE_FILE
    ERROR = EventsStoreError
    THREADS = "events"

    def __init__(self, path: Path, *, readonly: bool = False, readers: int = 4) -> None:
        super().__init__(path, reader_threads=readers, readonly=readonly)

    # -- writes ----------------------------------------------------------------------------

    async def write_batch(self, batch: Sequence[CloudTrailEvent | bytes]) -> WriteResult:
        """Store new events and add them (only them) to the aggregates, in one transaction.

        Items are events or their wire encoding (the CloudTrail topic's bytes, parsed in the
        writer thread). Returns how many were new, the aggregate buckets they changed, and
        why any item that is not an event was left out.
        """
        if not batch:
            return WriteResult(0, 0, [])
        items = list(batch)
        return await self._db.on_writer(lambda conn: self._write_batch(conn, items))

    def _write_batch(
        self, conn: sqlite3.Connection, batch: list[CloudTrailEvent | bytes]
    ) -> WriteResult:
        prepared, rejected = _prepare(batch)
        with immediate(conn):
            existing = _existing_ids(conn, list(prepared))
            new = sorted(
                (v for k, v in prepared.items() if k not in existing), key=lambda v: v[0][1]
            )
            updates: list[ActivityUpdate] = []
            if new:
                # Explicit rowids (we hold the write lock) so parameters need no lookup.
                (top,) = conn.execute("SELECT coalesce(max(rowid), 0) FROM events").fetchone()
                conn.executemany(
                    f"INSERT INTO events (rowid, {_COLUMNS}) VALUES ({', '.join('?' * 12)})",
                    [(top + 1 + i, *row[:11]) for i, (row, _) in enumerate(new)],
                )
                conn.executemany(
                    "INSERT OR IGNORE INTO event_params (path, value, event_rowid) "
                    "VALUES (?, ?, ?)",
                    [
                        (path, value, top + 1 + i)
                        for i, (_, params) in enumerate(new)
                        for path, value in params
                    ],
                )
                updates = self._aggregate(conn, [row for row, _ in new])
        return WriteResult(
            received=len(batch), inserted=len(new), updates=updates, rejected=rejected
        )

    @staticmethod
    def _aggregate(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> list[ActivityUpdate]:
        """Add new rows to the aggregates; return the touched buckets' new totals."""
        aggregates = _aggregates(rows)
        conn.executemany(
            "INSERT INTO activity (granularity, kind, key, account_id, bucket, event_name, "
            "events, errors, writes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT DO UPDATE SET events = events + excluded.events, "
            "errors = errors + excluded.errors, writes = writes + excluded.writes",
            [(*key, *counts) for key, counts in aggregates.items()],
        )
        conn.executemany(
            "INSERT INTO principals (label, account_id, type, name, arn, events, errors, "
            "writes, first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT DO UPDATE SET events = events + excluded.events, "
            "errors = errors + excluded.errors, writes = writes + excluded.writes, "
            "first_seen = min(first_seen, excluded.first_seen), "
            "last_seen = max(last_seen, excluded.last_seen), "
            "type = coalesce(type, excluded.type), name = coalesce(name, excluded.name), "
            "arn = coalesce(arn, excluded.arn)",
            _principal_rows(rows),
        )
        updates = []
        for granularity, kind, key, account, bucket in dict.fromkeys(k[:5] for k in aggregates):
            names = conn.execute(
                "SELECT event_name, events, errors, writes FROM activity WHERE granularity = ? "
                "AND kind = ? AND key = ? AND account_id = ? AND bucket = ?",
                (granularity, kind, key, account, bucket),
            ).fetchall()
            updates.append(
                ActivityUpdate(
                    granularity=granularity,
                    kind=kind,
                    key=key,
                    account_id=account,
                    bucket=_bucket(bucket, names),
                )
            )
        return updates

    # -- reads -----------------------------------------------------------------------------

    async def events(
        self, filters: EventFilters | None = None, *, limit: int = 100, cursor: str | None = None
    ) -> EventPage:
        """Matching events, newest first; ``limit`` 1-10,000 (see :class:`EventFilters`;
        user names match ignoring case)."""
        check_events_limit(limit)
        f = filters or EventFilters()
        return await self._read(
            lambda conn: self._stored_events(conn, f, limit, cursor).page(), snapshot=False
        )

    async def stored_events(
        self, filters: EventFilters | None = None, *, limit: int = 100, cursor: str | None = None
    ) -> StoredEventPage:
        """As :meth:`events`, with each event's stored JSON instead of its model."""
        check_events_limit(limit)
        f = filters or EventFilters()
        return await self._read(
            lambda conn: self._stored_events(conn, f, limit, cursor), snapshot=False
        )

    def _stored_events(
        self, conn: sqlite3.Connection, filters: EventFilters, limit: int, cursor: str | None
    ) -> StoredEventPage:
        sql, args = _page_query(
            filters, cursor, "e.rowid, e.event_time, e.event_id, e.account_id, e.body"
        )
        rows, next_cursor = cut_page(
            conn.execute(sql, [*args, limit + 1]).fetchall(),
            limit,
            lambda row: _encode_cursor(row[1], row[0]),
        )
        # Bodies are stored as the model's own JSON (see event_json): no check needed.
        items = [StoredEvent(event_id, account, body) for _, _, event_id, account, body in rows]
        return StoredEventPage(items=items, next_cursor=next_cursor)

    async def events_json(
        self, filters: EventFilters | None = None, *, limit: int = 100, cursor: str | None = None
    ) -> tuple[bytes, str | None]:
        """As :meth:`stored_events`, the page as one JSON array of the events (each exactly
        the model's JSON) and the next cursor.

        SQLite builds the array, so the read is one step: a row-at-a-time read gives up
        Python's GIL at every row and, when the event loop is busy, waits up to the
        interpreter's switch interval to take it back, each time; and no Python runs per
        event (the API's events page: about half the CPU of :meth:`stored_events`)."""
        check_events_limit(limit)
        sql, args = _page_json_query(filters or EventFilters(), cursor, limit)

        def run(conn: sqlite3.Connection) -> tuple[bytes, str | None]:
            body, count, last_time, last_rowid = conn.execute(sql, args).fetchone()
            more = count > limit
            return (
                b"[" + (body or b"") + b"]",
                _encode_cursor(last_time, last_rowid) if more else None,
            )

        return await self._read(run, snapshot=False)

    async def count(self, filters: EventFilters | None = None) -> int:
        """How many events match (the same filters as :meth:`events`)."""
        f = filters or EventFilters()
        return await self._read(lambda conn: self._count(conn, f), snapshot=False)

    def _count(self, conn: sqlite3.Connection, filters: EventFilters) -> int:
        where, args = _where(filters)
        sql = f"SELECT count(*) FROM events e {_index_for(filters)} {_clause(where)}"
        return int(conn.execute(sql, args).fetchone()[0])

    async def event(self, event_id: str) -> CloudTrailEvent | None:
        return await self._read(lambda conn: self._event(conn, event_id), snapshot=False)

    def _event(self, conn: sqlite3.Connection, event_id: str) -> CloudTrailEvent | None:
        row = conn.execute("SELECT body FROM events WHERE event_id = ?", (event_id,)).fetchone()
        return CloudTrailEvent.model_validate_json(row[0]) if row else None

    async def principals(
        self, *, account_id: str | None = None, label: str | None = None
    ) -> list[PrincipalSummary]:
        """Every principal seen (per account), most active first; ``label``: that one only."""
        return await self._read(
            lambda conn: self._principals(conn, account_id, label), snapshot=False
        )

    def _principals(
        self, conn: sqlite3.Connection, account_id: str | None, label: str | None
    ) -> list[PrincipalSummary]:
        sql = (
            "SELECT label, type, name, arn, account_id, events, errors, writes, first_seen, "
            "last_seen FROM principals"
        )
        where, args = equal_to((("label", label), ("account_id", account_id)))
        sql += f" {_clause(where)} ORDER BY events DESC, label"
        return [
            PrincipalSummary(
                label=label,
                type=kind,
                name=name,
                arn=arn,
                account_id=account,
                events=events,
                errors=errors,
                writes=writes,
                first_seen=_from_ms(first),
                last_seen=_from_ms(last),
            )
            for label, kind, name, arn, account, events, errors, writes, first, last in (
                conn.execute(sql, args).fetchall()
            )
        ]

    async def services(
        self,
        *,
        account_id: str | None = None,
        since: datetime | date | None = None,
        until: datetime | date | None = None,
    ) -> list[ServiceSummary]:
        """Event counts per service (from the daily aggregates: whole days), busiest first."""
        return await self._read(
            lambda conn: self._services(conn, account_id, since, until), snapshot=False
        )

    def _services(
        self,
        conn: sqlite3.Connection,
        account_id: str | None,
        since: datetime | date | None,
        until: datetime | date | None,
    ) -> list[ServiceSummary]:
        where = ["granularity = 'day'", "kind = 'service'"]
        args: list[Any] = []
        _range(where, args, "bucket", since, until, _BUCKET_MS["day"])
        if account_id is not None:
            where.append("account_id = ?")
            args.append(account_id)
        rows = conn.execute(
            "SELECT key, sum(events), sum(errors), sum(writes) FROM activity "
            f"{_clause(where)} GROUP BY key ORDER BY sum(events) DESC, key",
            args,
        )
        return [
            ServiceSummary(service=key, events=events, errors=errors, writes=writes)
            for key, events, errors, writes in rows.fetchall()
        ]

    async def activity(
        self,
        *,
        principal: str | None = None,
        service: str | None = None,
        account_id: str | None = None,
        since: datetime | date | None = None,
        until: datetime | date | None = None,
        granularity: Granularity = "hour",
    ) -> list[ActivityBucket]:
        """Per-bucket activity of one principal or one service (or, with neither, of
        everything), oldest bucket first. Buckets with no events are left out."""
        check_activity_query(principal, service, granularity)
        return await self._read(
            lambda conn: self._activity(
                conn, principal, service, account_id, since, until, granularity
            ),
            snapshot=False,
        )

    def _activity(
        self,
        conn: sqlite3.Connection,
        principal: str | None,
        service: str | None,
        account_id: str | None,
        since: datetime | date | None,
        until: datetime | date | None,
        granularity: str,
    ) -> list[ActivityBucket]:
        kind, key = ("principal", principal) if principal is not None else ("service", service)
        where, args = equal_to(
            (("granularity", granularity), ("kind", kind), ("key", key), ("account_id", account_id))
        )
        _range(where, args, "bucket", since, until, _BUCKET_MS[granularity])
        rows = conn.execute(
            "SELECT bucket, event_name, sum(events), sum(errors), sum(writes) FROM activity "
            f"{_clause(where)} GROUP BY bucket, event_name ORDER BY bucket",
            args,
        )
        grouped: dict[int, list[tuple[str, int, int, int]]] = {}
        for bucket, name, events, errors, writes in rows.fetchall():
            grouped.setdefault(bucket, []).append((name, events, errors, writes))
        return [_bucket(bucket, names) for bucket, names in grouped.items()]

    async def parameter_paths(self, *, limit: int = 1000) -> list[str]:
        """Request-parameter paths that can be filtered on (``EventFilters.params``)."""
        return await self._read(lambda conn: self._parameter_paths(conn, limit), snapshot=False)

    def _parameter_paths(self, conn: sqlite3.Connection, limit: int) -> list[str]:
        rows = conn.execute(
            "SELECT DISTINCT path FROM event_params ORDER BY path LIMIT ?", (limit,)
        )
        return [path for (path,) in rows.fetchall()]


def _bucket(start_ms: int, names: Iterable[tuple[str, int, int, int]]) -> ActivityBucket:
    by_name: dict[str, int] = {}
    events = errors = writes = 0
    for name, n, e, w in names:
        by_name[name] = by_name.get(name, 0) + n
        events, errors, writes = events + n, errors + e, writes + w
    return ActivityBucket(
        start=_from_ms(start_ms),
        events=events,
        errors=errors,
        writes=writes,
        reads=events - writes,
        by_event_name=by_name,
    )


def _existing_ids(conn: sqlite3.Connection, ids: list[str]) -> set[str]:
    found: set[str] = set()
    for i in range(0, len(ids), 500):
        clause, values = one_of("event_id", ids[i : i + 500])
        rows = conn.execute(f"SELECT event_id FROM events WHERE {clause}", values)
        found.update(event_id for (event_id,) in rows)
    return found


def _clause(where: list[str]) -> str:
    return f"WHERE {' AND '.join(where)}" if where else ""


def _range(
    where: list[str],
    args: list[Any],
    column: str,
    since: datetime | date | None,
    until: datetime | date | None,
    bucket_ms: int,
) -> None:
    """Buckets overlapping ``[since, until)``."""
    low = _bound_ms(since, end=False)
    high = _bound_ms(until, end=True)
    if low is not None:
        where.append(f"{column} > ?")
        args.append(low - bucket_ms)
    if high is not None:
        where.append(f"{column} < ?")
        args.append(high)


def _where(f: EventFilters) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    args: list[Any] = []
    if f.user_name is not None:
        where.append("e.principal_name = ? COLLATE NOCASE")
        args.append(f.user_name)
    clauses, values = equal_to(
        (
            ("e.principal", f.principal),
            ("e.service", f.service),
            ("e.event_name", f.event_name),
            ("e.account_id", f.account_id),
            ("e.region", f.region),
        )
    )
    where += clauses
    args += values
    if f.accounts is not None:
        where.append(f"e.account_id IN ({', '.join('?' * len(f.accounts))})" if f.accounts else "0")
        args += sorted(f.accounts)
    if f.errors_only:
        where.append("e.error_code IS NOT NULL")
    if f.read_only is not None:
        where.append("e.read_only = ?")
        args.append(int(f.read_only))
    low = _bound_ms(f.since, end=False)
    high = _bound_ms(f.until, end=True)
    if low is not None:
        where.append("e.event_time >= ?")
        args.append(low)
    if high is not None:
        where.append("e.event_time < ?")
        args.append(high)
    for path, value in f.params:
        where.append(
            "e.rowid IN (SELECT event_rowid FROM event_params WHERE path = ? AND value = ?)"
        )
        args += [path, value]
    return where, args


def _page_query(filters: EventFilters, cursor: str | None, columns: str) -> tuple[str, list[Any]]:
    """The SELECT of ``columns`` of one page of events matching ``filters`` after ``cursor``,
    newest first, along the index :func:`_index_for` names; its last parameter is the
    LIMIT."""
    where, args = _where(filters)
    if cursor:
        event_time, rowid = _decode_cursor(cursor)
        # The first condition bounds the index range; the second breaks time ties.
        where.append("e.event_time <= ?")
        where.append("(e.event_time < ? OR (e.event_time = ? AND e.rowid < ?))")
        args += [event_time, event_time, event_time, rowid]
    sql = (
        f"SELECT {columns} FROM events e {_index_for(filters)} {_clause(where)} "
        "ORDER BY e.event_time DESC, e.rowid DESC LIMIT ?"
    )
    return sql, args


def _page_json_query(
    filters: EventFilters, cursor: str | None, limit: int
) -> tuple[str, list[Any]]:
    """One query for one page as JSON (:meth:`EventsStore.events_json`): the events' bodies
    joined with commas, how many rows were read (``limit`` + 1 when another page follows),
    and the time and rowid of the page's last event (for the next cursor)."""
    sql, args = _page_query(filters, cursor, "e.rowid AS r, e.event_time AS t, e.body AS b")
    # The first limit + 1 rows, numbered in page order; the extra row only says that
    # another page follows, from the cursor of the last row on this one.
    page_sql = (
        "SELECT CAST(group_concat(b, ',') FILTER (WHERE n <= ?1) AS BLOB), count(*), "
        "max(t) FILTER (WHERE n = ?1), max(r) FILTER (WHERE n = ?1) FROM ("
        "SELECT r, t, b, row_number() OVER (ORDER BY t DESC, r DESC) AS n "
        f"FROM ({sql}))"
    )
    return page_sql, [limit, *args, limit + 1]


def check_events_limit(limit: int) -> None:
    """An events page holds 1 to 10,000 events (:class:`EventsStoreError` otherwise)."""
    if not 1 <= limit <= 10_000:
        raise EventsStoreError(f"limit must be between 1 and 10000, got {limit}")


def check_activity_query(
    principal: str | None, service: str | None, granularity: Granularity
) -> None:
    """Activity is of one principal, one service or everything, by hour or by day
    (:class:`EventsStoreError` otherwise)."""
    if principal is not None and service is not None:
        raise EventsStoreError("activity: give a principal or a service, not both")
    if granularity not in _BUCKET_MS:
        raise EventsStoreError(f"granularity must be 'hour' or 'day', got {granularity!r}")


_INDEX_BY_FILTER: tuple[tuple[str, Callable[[EventFilters], bool]], ...] = (
    ("events_by_principal", lambda f: f.principal is not None),
    ("events_by_user_nocase", lambda f: f.user_name is not None),
    ("events_by_account_name", lambda f: f.event_name is not None and f.account_id is not None),
    ("events_by_name", lambda f: f.event_name is not None),
    ("events_by_account_service", lambda f: f.service is not None and f.account_id is not None),
    ("events_by_service", lambda f: f.service is not None),
    ("events_by_account", lambda f: f.account_id is not None),
)
"""Indexes by the filters they need, the most selective first. One account's events of a
service or an event name (what a single-account token or an account's page asks) have
their own, so the walk does not step over every other account's."""


def _index_for(f: EventFilters) -> str:
    """The ``INDEXED BY`` clause of the index that fits ``f`` best.

    Each of these indexes ends in event_time, so the rows come out in the query's order
    from the first match; with none of them, the time index. With only request-parameter
    filters, SQLite chooses (it reads the parameter index first)."""
    for index, fits in _INDEX_BY_FILTER:
        if fits(f):
            return f"INDEXED BY {index}"
    if f.params:
        return ""
    return "INDEXED BY events_by_time"
