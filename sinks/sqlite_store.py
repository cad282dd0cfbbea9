"""The local inventory store: SQLite in WAL mode, the embedded default.

One file, ``<data_dir>/store/inventory.sqlite3``, holds versions, changes and scan history
(see :mod:`cloudinv.sinks.store` for the model). SQLite calls run on threads owned by the store,
never
on the event loop: one writer thread with one connection (SQLite has one writer at a time
anyway), and a few reader threads, each with its own connection, which WAL lets read while
the writer writes. Other processes (the API) may open the same file.

Schema (``PRAGMA user_version`` = 3; a version-1 file gains ``resource_refs`` and
``write_events`` when opened, a version-2 file ``relationships``). Times are INTEGER
microseconds since the Unix epoch, UTC, so that comparisons and indexes are plain integer
ones::

    versions(change_id TEXT PRIMARY KEY,      -- the change that opened the version
             key, resource_type, resource_id, account_id, region, name,
             config_hash TEXT,                -- hash of the normalized configuration
             configuration BLOB,              -- JSON (UTF-8)
             valid_from INTEGER NOT NULL,     -- the opening change's captured_at
             valid_to INTEGER)                -- NULL while current
      versions_by_key   UNIQUE (key, valid_from)                 as_of, history, latest
      versions_by_scope (resource_type, account_id, key, valid_from, valid_to, region)
                                                                  list_as_of by type/account
      versions_by_account (account_id, key, valid_from, valid_to) list_as_of by account
      versions_by_region (region, key, valid_from, valid_to)       list_as_of by region (ARNs
                                                                  hold the region: key order
                                                                  alone walks other regions)
      versions_open     (resource_type, account_id, region, key) WHERE valid_to IS NULL
                                                                  current_keys_in_scope
      versions_open_key (key) WHERE valid_to IS NULL              put_changes
    changes(seq INTEGER PRIMARY KEY AUTOINCREMENT, change_id TEXT UNIQUE,
            key, resource_type, account_id, region, change_type,
            captured_at INTEGER, detected_at INTEGER,
            event BLOB)                       -- the ChangeEvent, JSON (UTF-8)
      changes_by_time (captured_at, seq), changes_by_key (key, captured_at, seq),
      changes_by_scope (account_id, resource_type, captured_at, seq)
    scans(scan_id, account_id, region, resource_type, status, started_at, finished_at,
          resource_count, errors BLOB, PRIMARY KEY (scan_id, account_id, region, resource_type))
      scans_by_time (finished_at), scans_by_scope (account_id, region, resource_type, finished_at)
    resource_refs(ref, key, PRIMARY KEY (ref, key))  -- every name an event may give a stored
                                      -- resource (cloudinv.catalog.event_resources.refs_of)
    write_events(ref, event_time, event_id, attribution BLOB, PRIMARY KEY (ref, event_id))
      write_events_by_time (event_time)   the attribution join's recent write events
    relationships(source_key, source_type, relationship, target_key, target_type,
                  valid_from INTEGER, valid_to INTEGER, change_id,   -- the opening change
                  PRIMARY KEY (source_key, relationship, target_key, valid_from))
      relationships_by_target (target_key, valid_from, valid_to)   what names a resource

"As of T" is one seek on ``versions_by_key`` (the last version with ``valid_from <= T``,
then ``valid_to > T`` or NULL); "everything of type Y in account Z at T" walks
``versions_by_scope`` in key order, filtering on index entries, and stops after ``limit``.

Reads come in three forms: models (the :class:`~cloudinv.sinks.store.InventoryStore` methods, built
without validating again: rows were validated on the way in); :class:`StoredVersion` rows
whose configuration stays the stored JSON (``*_stored``); and JSON written by SQLite itself
(:meth:`SqliteStore.list_as_of_json`, :meth:`SqliteStore.changes_stored`), so that a page
is one SQLite step and no Python work per row. The change log
(:class:`~cloudinv.sinks.store.ChangeLog`: commit order, counts) serves the live feed.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar

import orjson
from pydantic import TypeAdapter

from cloudinv.catalog.event_resources import refs_of
from cloudinv.core.models import Attribution, ChangeEvent, ScanManifest
from cloudinv.sinks.relationships import EdgeReads, NodeInfo, StoredEdge
from cloudinv.sinks.sqlite_db import SqliteBacked, SqliteSchema, equal_to, one_of
from cloudinv.sinks.store import (
    AttributionFigure,
    ChangePage,
    ChangeQuery,
    LoggedChange,
    ResourceVersion,
    ScanRecord,
    StoreError,
    VersionQuery,
    WriteEvent,
)
from cloudinv.sinks.versioning import (
    OBSERVED_LAG,
    EdgeBook,
    EdgeRow,
    Head,
    StepKind,
    advance,
    best_attribution,
    change_refs,
    edges_of_history,
    improves,
    inherit_in_batch,
    inheriting_keys,
    may_keep_edges,
    plan,
    rejoin,
    unattributed_refs,
    window_us,
)

__all__ = ["STORE_FILE", "SqliteStore", "StoredVersion", "from_us", "to_us"]

log = logging.getLogger(__name__)

STORE_FILE = Path("store") / "inventory.sqlite3"
"""Where the store lives, relative to the data directory."""

SCHEMA_VERSION = 3
MIN_SQLITE = (3, 33, 0)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CHANGE_LIST = TypeAdapter(list[ChangeEvent])
_ONE_US = timedelta(microseconds=1)
_INSERT_PARAMS = 30_000
"""Bound values per INSERT statement at most (SQLite allows 32,766 by default since 3.32)."""
_OBSERVED_LAG_US = int(OBSERVED_LAG.total_seconds() * 1_000_000)
T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    change_id     TEXT PRIMARY KEY,
    key           TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_id   TEXT NOT NULL,
    account_id    TEXT NOT NULL,
    region        TEXT NOT NULL,
    name          TEXT,
    config_hash   TEXT NOT NULL,
    configuration BLOB NOT NULL,
    valid_from    INTEGER NOT NULL,
    valid_to      INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS versions_by_key ON versions (key, valid_from);
CREATE INDEX IF NOT EXISTS versions_by_scope
    ON versions (resource_type, account_id, key, valid_from, valid_to, region);
CREATE INDEX IF NOT EXISTS versions_by_account
    ON versions (account_id, key, valid_from, valid_to);
CREATE INDEX IF NOT EXISTS versions_by_region
    ON versions (region, key, valid_from, valid_to);
CREATE INDEX IF NOT EXISTS versions_open
    ON versions (resource_type, account_id, region, key) WHERE valid_to IS NULL;
CREATE INDEX IF NOT EXISTS versions_open_key ON versions (key) WHERE valid_to IS NULL;

CREATE TABLE IF NOT EXISTS changes (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    change_id     TEXT NOT NULL UNIQUE,
    key           TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    account_id    TEXT NOT NULL,
    region        TEXT NOT NULL,
    change_type   TEXT NOT NULL,
    captured_at   INTEGER NOT NULL,
    detected_at   INTEGER NOT NULL,
    event         BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS changes_by_time ON changes (captured_at, seq);
CREATE INDEX IF NOT EXISTS changes_by_key ON changes (key, captured_at, seq);
CREATE INDEX IF NOT EXISTS changes_by_scope
    ON changes (account_id, resource_type, captured_at, seq);

CREATE TABLE IF NOT EXISTS scans (
    scan_id        TEXT NOT NULL,
    account_id     TEXT NOT NULL,
    region         TEXT NOT NULL,
    resource_type  TEXT NOT NULL,
    status         TEXT NOT NULL,
    started_at     INTEGER NOT NULL,
    finished_at    INTEGER NOT NULL,
    resource_count INTEGER NOT NULL,
    errors         BLOB NOT NULL,
    PRIMARY KEY (scan_id, account_id, region, resource_type)
);
CREATE INDEX IF NOT EXISTS scans_by_time ON scans (finished_at);
CREATE INDEX IF NOT EXISTS scans_by_scope
    ON scans (account_id, region, resource_type, finished_at);

CREATE TABLE IF NOT EXISTS resource_refs (
    ref TEXT NOT NULL,
    key TEXT NOT NULL,
    PRIMARY KEY (ref, key)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS write_events (
    ref         TEXT NOT NULL,
    event_time  INTEGER NOT NULL,
    event_id    TEXT NOT NULL,
    attribution BLOB NOT NULL,
    PRIMARY KEY (ref, event_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS write_events_by_time ON write_events (event_time);

CREATE TABLE IF NOT EXISTS relationships (
    source_key    TEXT NOT NULL,
    source_type   TEXT NOT NULL,
    relationship  TEXT NOT NULL,
    target_key    TEXT NOT NULL,
    target_type   TEXT NOT NULL,
    valid_from    INTEGER NOT NULL,
    valid_to      INTEGER,
    change_id     TEXT NOT NULL,
    PRIMARY KEY (source_key, relationship, target_key, valid_from)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS relationships_by_target
    ON relationships (target_key, valid_from, valid_to);

-- A file of schema 1 has versions and no refs: the refs of every resource stored (what
-- cloudinv.catalog.event_resources.refs_of gives, in SQL). The guard is a constant term,
-- checked once: with any ref present, nothing is read.
INSERT OR IGNORE INTO resource_refs (ref, key)
SELECT resource_type || '|' || account_id || '|' || region || '|' || ident, key FROM (
    SELECT resource_type, account_id, region, key, resource_id AS ident FROM versions
        WHERE NOT EXISTS (SELECT 1 FROM resource_refs)
    UNION SELECT resource_type, account_id, region, key, name FROM versions
        WHERE name IS NOT NULL AND name != '' AND NOT EXISTS (SELECT 1 FROM resource_refs)
    UNION SELECT resource_type, account_id, region, key, key FROM versions
        WHERE NOT EXISTS (SELECT 1 FROM resource_refs)
);
"""

_VERSION_COLUMNS = (
    "key, resource_type, resource_id, account_id, region, name, configuration, config_hash, "
    "valid_from, valid_to, change_id"
)


def _iso_sql(column: str) -> str:
    """SQL for an integer-microseconds time as pydantic writes a UTC datetime: ISO 8601,
    ``Z``, the fraction only when there is one."""
    return (
        f"strftime('%Y-%m-%dT%H:%M:%S', {column} / 1000000, 'unixepoch') || "
        f"CASE WHEN {column} % 1000000 = 0 THEN '' "
        f"ELSE printf('.%06d', {column} % 1000000) END || 'Z'"
    )


_VERSION_JSON = (
    # Concatenated, not json_object(): the stored configuration is JSON already and goes in
    # as it is, where json() would parse every one of them again.
    """'{"key":' || json_quote(key) || ',"resource_type":' || json_quote(resource_type)"""
    """ || ',"resource_id":' || json_quote(resource_id)"""
    """ || ',"account_id":' || json_quote(account_id) || ',"region":' || json_quote(region)"""
    """ || ',"name":' || json_quote(name)"""
    """ || ',"configuration":' || CAST(configuration AS TEXT)"""
    """ || ',"config_hash":' || json_quote(config_hash)"""
    f""" || ',"valid_from":"' || {_iso_sql("valid_from")} || '"'"""
    f""" || ',"valid_to":' || CASE WHEN valid_to IS NULL THEN 'null'"""
    f""" ELSE '"' || {_iso_sql("valid_to")} || '"' END"""
    """ || ',"change_id":' || json_quote(change_id) || '}'"""
)
"""One version as the JSON object :class:`ResourceVersion` serializes to, written by SQLite."""


def to_us(value: datetime) -> int:
    """A timezone-aware datetime as integer microseconds since the epoch (naive = UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // _ONE_US


def from_us(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


def _version(row: sqlite3.Row | tuple[Any, ...]) -> ResourceVersion:
    # Rows were validated on the way in (put_changes takes ChangeEvents): building the model
    # without validating again halves the cost of a page of versions.
    return ResourceVersion.model_construct(
        key=row[0],
        resource_type=row[1],
        resource_id=row[2],
        account_id=row[3],
        region=row[4],
        name=row[5],
        configuration=orjson.loads(row[6]),
        config_hash=row[7],
        valid_from=from_us(row[8]),
        valid_to=None if row[9] is None else from_us(row[9]),
        change_id=row[10],
    )


@dataclass(frozen=True, slots=True)
class StoredVersion:
    """A version row as stored, its configuration still the stored JSON text.

    What the API sends for key lookups and list pages: :meth:`json_fields` puts the
    configuration into the response as it is (``orjson.Fragment``), so a page of versions
    is neither parsed nor validated nor encoded again. :meth:`to_version` gives the model.
    """

    key: str
    resource_type: str
    resource_id: str
    account_id: str
    region: str
    name: str | None
    configuration_json: bytes
    config_hash: str
    valid_from_us: int
    valid_to_us: int | None
    change_id: str

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> StoredVersion:
        return cls(
            key=row[0],
            resource_type=row[1],
            resource_id=row[2],
            account_id=row[3],
            region=row[4],
            name=row[5],
            configuration_json=bytes(row[6]),
            config_hash=row[7],
            valid_from_us=row[8],
            valid_to_us=row[9],
            change_id=row[10],
        )

    def to_version(self) -> ResourceVersion:
        return _version(
            (
                self.key,
                self.resource_type,
                self.resource_id,
                self.account_id,
                self.region,
                self.name,
                self.configuration_json,
                self.config_hash,
                self.valid_from_us,
                self.valid_to_us,
                self.change_id,
            )
        )

    def json_fields(self) -> dict[str, Any]:
        """The fields of :class:`ResourceVersion` in its order, ready for ``orjson.dumps``
        with ``OPT_UTC_Z`` (which gives the same bytes as the model's own JSON)."""
        return {
            "key": self.key,
            "resource_type": self.resource_type,
            "resource_id": self.resource_id,
            "account_id": self.account_id,
            "region": self.region,
            "name": self.name,
            "configuration": orjson.Fragment(self.configuration_json),
            "config_hash": self.config_hash,
            "valid_from": from_us(self.valid_from_us),
            "valid_to": None if self.valid_to_us is None else from_us(self.valid_to_us),
            "change_id": self.change_id,
        }


def _migrate(conn: sqlite3.Connection, version: int) -> None:
    """A file of schema 1 or 2 kept versions but no relationships: their edges, with their
    history, from every stored version (key by key, in time order)."""
    if version == 0 or version >= 3:
        return
    cursor = conn.execute(
        "SELECT key, resource_type, account_id, region, change_id, valid_from, valid_to, "
        "CAST(configuration AS TEXT) FROM versions ORDER BY key, valid_from"
    )
    stored = 0
    while rows := cursor.fetchmany(1000):
        edges = EdgeBook()
        edges.opened = edges_of_history(
            (r[0], r[1], r[2], r[3], r[4], r[5], r[6], orjson.loads(r[7])) for r in rows
        )
        _write_edges(conn, edges)
        stored += len(edges.opened)
    if stored:
        log.info("the local store: %d relationships derived from the stored versions", stored)


_SQLITE_SCHEMA = SqliteSchema(
    what="the local store",
    version=SCHEMA_VERSION,
    ddl=_SCHEMA,
    min_sqlite=MIN_SQLITE,  # UPDATE ... FROM, JSON functions
    migrate=_migrate,
)


class SqliteStore(SqliteBacked, EdgeReads):
    """:class:`~cloudinv.sinks.store.InventoryStore` on one SQLite file in WAL mode."""

    SCHEMA = _SQLITE_SCHEMA
    FILE = STORE_FILE
    ERROR = StoreError
    THREADS = "store"

    # -- writes ----------------------------------------------------------------------------

    async def put_changes(self, batch: Sequence[ChangeEvent]) -> int:
        """Store changes; a batch with a ``wire`` attribute (the JSON of each change, as
        the change stage's sink read them from the topic) is stored without re-encoding."""
        if not batch:
            return 0
        wire = getattr(batch, "wire", None)
        if isinstance(wire, list) and len(wire) == len(batch):
            rows = list(zip(batch, wire, strict=True))
        else:
            rows = [(change, change.model_dump_json(by_alias=True).encode()) for change in batch]
        return await self._write(lambda conn: _apply_changes(conn, rows))

    async def record_scans(self, batch: Sequence[ScanManifest]) -> int:
        if not batch:
            return 0
        rows = [
            (
                m.scan_id,
                m.account_id,
                m.region,
                m.resource_type,
                m.status,
                to_us(m.started_at),
                to_us(m.finished_at),
                m.count,
                orjson.dumps([e.model_dump(mode="json") for e in m.errors]),
            )
            for m in batch
        ]

        def run(conn: sqlite3.Connection) -> int:
            conn.executemany(
                "INSERT OR REPLACE INTO scans (scan_id, account_id, region, resource_type, "
                "status, started_at, finished_at, resource_count, errors) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            return len(rows)

        return await self._write(run)

    # -- the attribution join (cloudinv.sinks.store.AttributionJoin) -------------------------

    async def record_write_events(
        self, events: Sequence[WriteEvent], *, keep_since: datetime | None = None
    ) -> list[ChangeEvent]:
        cutoff = None if keep_since is None else to_us(keep_since)
        # An event already older than the window is not kept (it would be deleted at the
        # next call); it may still explain the stored changes below.
        rows = [
            [
                ref,
                to_us(e.attribution.event_time),
                e.attribution.event_id,
                e.attribution.model_dump_json(),
            ]
            for e in events
            if cutoff is None or to_us(e.attribution.event_time) >= cutoff
            for ref in e.refs
        ]

        def run(conn: sqlite3.Connection) -> list[ChangeEvent]:
            if cutoff is not None:
                conn.execute("DELETE FROM write_events WHERE event_time < ?", (cutoff,))
            if not events:
                return []
            if rows:
                _insert_rows(
                    conn,
                    "INSERT OR IGNORE INTO write_events (ref, event_time, event_id, attribution)",
                    rows,
                    blobs=(3,),
                )
            # Read in the same transaction: a change stored before it commits is seen here.
            keys_by_ref: dict[str, list[str]] = {}
            for ref, key in (
                _json_query(
                    conn,
                    "SELECT json_group_array(json_array(ref, key)) FROM resource_refs "
                    "WHERE ref IN (SELECT value FROM json_each(?))",
                    sorted({ref for e in events for ref in e.refs}),
                )
                or ()
            ):
                keys_by_ref.setdefault(ref, []).append(key)
            candidates: dict[str, list[Attribution]] = {}
            for e in events:
                for key in {k for ref in e.refs for k in keys_by_ref.get(ref, ())}:
                    candidates.setdefault(key, []).append(e.attribution)
            if not candidates:
                return []
            earliest = min(to_us(e.attribution.event_time) for e in events)
            stored = (
                _json_query(
                    conn,
                    "SELECT json_group_array(event) FROM (SELECT CAST(event AS TEXT) AS event "
                    "FROM changes WHERE key IN (SELECT value FROM json_each(?)) AND "
                    f"captured_at >= {earliest - _OBSERVED_LAG_US} ORDER BY key, captured_at, seq)",
                    sorted(candidates),
                )
                or ()
            )
            histories: dict[str, list[ChangeEvent]] = {}
            for text in stored:
                change = ChangeEvent.model_validate_json(text)
                histories.setdefault(change.key, []).append(change)
            return [
                update
                for key, history in histories.items()
                for update in rejoin(history, candidates[key])
            ]

        return await self._write(run)

    async def attribution_updates(self, changes: Sequence[ChangeEvent]) -> list[ChangeEvent]:
        refs = unattributed_refs(changes)
        updates: dict[str, ChangeEvent] = {}
        if refs:

            def run(conn: sqlite3.Connection) -> list[tuple[str, str]]:
                found: list[tuple[str, str]] = (
                    _json_query(
                        conn,
                        "SELECT json_group_array(json_array(ref, CAST(attribution AS TEXT))) "
                        "FROM write_events WHERE ref IN (SELECT value FROM json_each(?))",
                        sorted({ref for rs in refs.values() for ref in rs}),
                    )
                    or []
                )
                return found

            by_ref: dict[str, list[Attribution]] = {}
            for ref, text in await self._read(run, snapshot=False):
                by_ref.setdefault(ref, []).append(Attribution.model_validate_json(text))
            for change in changes:
                if change.change_id not in refs:
                    continue
                candidates = [a for ref in refs[change.change_id] for a in by_ref.get(ref, ())]
                found = best_attribution(change, candidates) if candidates else None
                if found is not None:
                    updates[change.change_id] = change.model_copy(update={"attribution": found})
        joined = [updates.get(c.change_id, c) for c in changes]
        keys = inheriting_keys(joined)
        if keys:
            previous = await self._previous_changes(keys)
            for update in inherit_in_batch(joined, keys, previous):
                updates[update.change_id] = update
        return list(updates.values())

    async def _previous_changes(self, first: dict[str, datetime]) -> dict[str, ChangeEvent]:
        """Per key, its stored change captured last before the given time."""
        pairs = [[key, to_us(t)] for key, t in first.items()]

        def run(conn: sqlite3.Connection) -> list[str | None]:
            found: list[str | None] = (
                _json_query(
                    conn,
                    "SELECT json_group_array((SELECT CAST(event AS TEXT) FROM changes "
                    "WHERE key = json_extract(j.value, '$[0]') "
                    "AND captured_at < json_extract(j.value, '$[1]') "
                    "ORDER BY captured_at DESC, seq DESC LIMIT 1)) FROM json_each(?) AS j",
                    pairs,
                )
                or []
            )
            return found

        out: dict[str, ChangeEvent] = {}
        for text in await self._read(run, snapshot=False):
            if text is not None:
                change = ChangeEvent.model_validate_json(text)
                out[change.key] = change
        return out

    async def attribution_figure(self, since: datetime) -> AttributionFigure:
        t = to_us(since)

        def run(conn: sqlite3.Connection) -> tuple[list[Any], list[Any]]:
            changes = (
                _json_query(
                    conn,
                    "SELECT json_group_array(json_array(key, resource_type, account_id, region,"
                    " json_extract(event, '$.resource_id'), json_extract(event, '$.name'),"
                    " captured_at, json_extract(event, '$.prior_seen_at'),"
                    " json_extract(event, '$.observed_at'),"
                    " json_extract(event, '$.attribution') IS NOT NULL,"
                    " json_extract(event, '$.attribution.match') IS 'inherited'))"
                    " FROM changes WHERE captured_at >= json_extract(?, '$[0]')",
                    [t],
                )
                or []
            )
            events = (
                _json_query(
                    conn,
                    "SELECT json_group_array(json_array(ref, event_time)) FROM write_events "
                    "WHERE event_time >= json_extract(?, '$[0]')",
                    [t - _OBSERVED_LAG_US],
                )
                or []
            )
            return changes, events

        changes, events = await self._read(run)
        times: dict[str, list[int]] = {}
        for ref, event_time in events:
            times.setdefault(ref, []).append(event_time)
        matched = attributed = inherited = 0
        for key, rt, account, region, rid, name, captured, prior, observed, has, inh in changes:
            inherited += bool(inh)
            after, until = window_us(captured, prior, observed)
            refs = refs_of(rt, account, region, key=key, resource_id=rid, name=name)
            if any(
                (after is None or et > after) and et <= until
                for ref in refs
                for et in times.get(ref, ())
            ):
                matched += 1
                attributed += bool(has) and not inh
        return AttributionFigure(
            since=since,
            changes=len(changes),
            matched=matched,
            attributed=attributed,
            inherited=inherited,
        )

    # -- reads -----------------------------------------------------------------------------

    async def current(self, key: str) -> ResourceVersion | None:
        stored = await self.current_stored(key)
        return None if stored is None else stored.to_version()

    async def current_stored(self, key: str) -> StoredVersion | None:
        """:meth:`current` with the configuration left as stored JSON."""

        def run(conn: sqlite3.Connection) -> StoredVersion | None:
            row = conn.execute(
                f"SELECT {_VERSION_COLUMNS} FROM versions WHERE key = ? AND valid_to IS NULL",
                (key,),
            ).fetchone()
            return None if row is None else StoredVersion.from_row(row)

        return await self._read(run, snapshot=False)

    async def as_of(self, key: str, at: datetime) -> ResourceVersion | None:
        stored = await self.as_of_stored(key, at)
        return None if stored is None else stored.to_version()

    async def as_of_stored(self, key: str, at: datetime) -> StoredVersion | None:
        """:meth:`as_of` with the configuration left as stored JSON."""
        t = to_us(at)

        def run(conn: sqlite3.Connection) -> StoredVersion | None:
            row = conn.execute(
                f"SELECT {_VERSION_COLUMNS} FROM versions "
                "WHERE key = ? AND valid_from <= ? ORDER BY valid_from DESC LIMIT 1",
                (key, t),
            ).fetchone()
            if row is None or (row[9] is not None and row[9] <= t):
                return None
            return StoredVersion.from_row(row)

        return await self._read(run, snapshot=False)

    async def list_as_of(self, query: VersionQuery) -> list[ResourceVersion]:
        return [row.to_version() for row in await self.list_as_of_stored(query)]

    async def list_as_of_stored(self, query: VersionQuery) -> list[StoredVersion]:
        """:meth:`list_as_of` with the configurations left as stored JSON."""
        sql, params = list_as_of_query(query)

        def run(conn: sqlite3.Connection) -> list[StoredVersion]:
            return [StoredVersion.from_row(row) for row in conn.execute(sql, params).fetchall()]

        return await self._read(run, snapshot=False)

    async def list_as_of_json(self, query: VersionQuery) -> tuple[bytes, int, str | None]:
        """:meth:`list_as_of` as SQLite writes it: the JSON array of the versions (each as
        :class:`ResourceVersion` serializes), how many, and the last key.

        The page is one value built by SQLite, so the read is one step: a row-at-a-time
        read gives up Python's GIL at every row and, when the event loop is busy, waits up
        to the interpreter's switch interval to take it back, each time (see _json_query).
        """
        sql, params = list_as_of_query(query, columns=f"key, {_VERSION_JSON} AS j")
        page_sql = f"SELECT '[' || group_concat(j, ',') || ']', count(*), max(key) FROM ({sql})"

        def run(conn: sqlite3.Connection) -> tuple[bytes, int, str | None]:
            items, count, last = conn.execute(page_sql, params).fetchone()
            return (items or "[]").encode(), int(count), last

        return await self._read(run, snapshot=False)

    async def history(self, key: str) -> list[ResourceVersion]:
        def run(conn: sqlite3.Connection) -> list[ResourceVersion]:
            rows = conn.execute(
                f"SELECT {_VERSION_COLUMNS} FROM versions WHERE key = ? ORDER BY valid_from",
                (key,),
            )
            return [_version(row) for row in rows]

        return await self._read(run, snapshot=False)

    async def changes(self, query: ChangeQuery) -> ChangePage:
        events, next_cursor = await self.changes_stored(query)
        return ChangePage(items=_CHANGE_LIST.validate_json(events), next_cursor=next_cursor)

    async def changes_stored(self, query: ChangeQuery) -> tuple[bytes, str | None]:
        """:meth:`changes` as stored: the JSON array of the ChangeEvents (made by SQLite in
        one step, see :meth:`list_as_of_json`), and the next cursor."""
        limit = query.limit
        where, params = _change_filters(query)
        # The page's rows are chosen on index entries alone, then read: where the order is
        # not an index's (one account, any type), SQLite sorts small entries, not events.
        sql = (
            "SELECT captured_at, seq, event FROM changes WHERE seq IN (SELECT seq FROM changes"
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + " ORDER BY captured_at, seq LIMIT ?) ORDER BY captured_at, seq"
        )
        params.append(limit + 1)
        event = "CAST(event AS TEXT)"
        # One more row than the page says whether another page follows; row numbers (in
        # the page's order) keep it out of the array and find the cursor's row.
        page_sql = (
            "SELECT '[' || coalesce(group_concat(CASE WHEN rn <= ? THEN event END, ','), '')"
            " || ']', count(*), max(CASE WHEN rn = ? THEN captured_at END),"
            " max(CASE WHEN rn = ? THEN seq END)"
            f" FROM (SELECT captured_at, seq, {event} AS event,"
            f" row_number() OVER () AS rn FROM ({sql}))"
        )
        page_params = [limit, limit, limit, *params]

        def run(conn: sqlite3.Connection) -> tuple[str, int, int | None, int | None]:
            row: tuple[str, int, int | None, int | None] = conn.execute(
                page_sql, page_params
            ).fetchone()
            return row

        page = await self._read(run, snapshot=False)
        next_cursor = f"{page[2]}:{page[3]}" if page[1] > limit else None
        return page[0].encode(), next_cursor

    async def change_spans_stored(
        self,
        query: ChangeQuery,
        *,
        accounts: Sequence[str] | None = None,
        after_key: str | None = None,
    ) -> tuple[bytes, str | None]:
        """Per key with changes matching ``query`` (its cursor aside), in key order after
        ``after_key``: its first and last change by capture time, as stored but without their
        configurations, as a JSON array of ``[first, last]`` pairs (``last`` null when the key
        changed once: its one change is ``first``) for at most ``query.limit`` keys; and the
        last of those keys when more may follow. ``accounts``: only these accounts. What a
        diff between two times reads: SQLite picks each key's two changes, instead of the API
        reading every change of the window."""
        where, params = _change_filters(replace(query, cursor=None))
        if accounts is not None:
            clause, values = one_of("account_id", accounts) if accounts else ("0", [])
            where.append(clause)
            params += values
        if after_key is not None:
            where.append("key > ?")
            params.append(after_key)
        keys = (
            "SELECT key, fseq, lseq FROM (SELECT key, row_number() OVER in_order AS rn,"
            " first_value(seq) OVER whole AS fseq, last_value(seq) OVER whole AS lseq"
            " FROM changes"
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + " WINDOW in_order AS (PARTITION BY key ORDER BY captured_at, seq),"
            " whole AS (PARTITION BY key ORDER BY captured_at, seq"
            " ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING))"
            " WHERE rn = 1 ORDER BY key LIMIT ?"
        )
        # The pairs' array is built by SQLite (the event loop only parses it), without the
        # configurations (most of a change's bytes: read for the few entries that show them,
        # changes_by_id_stored); a key changed once has its one change once, then null.
        slim = "json_remove(CAST(event AS TEXT), '$.configuration', '$.prior_configuration')"
        sql = (
            "SELECT '[' || coalesce(group_concat(pair, ','), '') || ']', count(*), max(key)"
            " FROM (SELECT k.key AS key,"
            f" '[' || (SELECT {slim} FROM changes WHERE seq = k.fseq) || ',' ||"
            " CASE WHEN k.lseq = k.fseq THEN 'null'"
            f" ELSE (SELECT {slim} FROM changes WHERE seq = k.lseq) END || ']' AS pair"
            f" FROM ({keys}) AS k ORDER BY k.key)"
        )
        limit = query.limit

        def run(conn: sqlite3.Connection) -> tuple[str, int, str | None]:
            row: tuple[str, int, str | None] = conn.execute(sql, [*params, limit]).fetchone()
            return row

        pairs, count, last_key = await self._read(run, snapshot=False)
        return pairs.encode(), last_key if count == limit else None

    async def changes_by_id_stored(self, change_ids: Sequence[str]) -> bytes:
        """The stored ChangeEvents of ``change_ids`` (those stored), as one JSON array."""
        if not change_ids:
            return b"[]"
        ids = orjson.dumps(list(change_ids)).decode()

        def run(conn: sqlite3.Connection) -> str:
            row = conn.execute(
                "SELECT '[' || coalesce(group_concat(CAST(event AS TEXT), ','), '') || ']' "
                "FROM changes WHERE change_id IN (SELECT value FROM json_each(?))",
                (ids,),
            ).fetchone()
            return str(row[0])

        return (await self._read(run, snapshot=False)).encode()

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
        where, params = equal_to(
            (
                ("account_id", account_id),
                ("region", region),
                ("resource_type", resource_type),
                ("scan_id", scan_id),
            )
        )
        if since is not None:
            where.append("finished_at >= ?")
            params.append(to_us(since))
        sql = (
            "SELECT scan_id, account_id, region, resource_type, status, started_at, "
            "finished_at, resource_count, errors FROM scans"
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + " ORDER BY finished_at DESC, scan_id LIMIT ?"
        )
        params.append(limit)

        def run(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return list(conn.execute(sql, params))

        return [
            ScanRecord(
                scan_id=row[0],
                account_id=row[1],
                region=row[2],
                resource_type=row[3],
                status=row[4],
                started_at=from_us(row[5]),
                finished_at=from_us(row[6]),
                count=row[7],
                errors=orjson.loads(row[8]),
            )
            for row in await self._read(run)
        ]

    async def current_keys_in_scope(
        self, account_id: str, region: str, resource_type: str
    ) -> set[str]:
        def run(conn: sqlite3.Connection) -> set[str]:
            rows = conn.execute(
                "SELECT key FROM versions WHERE resource_type = ? AND account_id = ? "
                "AND region = ? AND valid_to IS NULL",
                (resource_type, account_id, region),
            )
            return {row[0] for row in rows}

        return await self._read(run)

    async def latest(self, keys: Sequence[str]) -> dict[str, ResourceVersion]:
        unique = list(dict.fromkeys(keys))
        if not unique:
            return {}
        # JSON functions take no BLOBs: the configuration travels as a string in the array.
        columns = ", ".join(
            "CAST(v.configuration AS TEXT)" if c.strip() == "configuration" else f"v.{c.strip()}"
            for c in _VERSION_COLUMNS.split(",")
        )

        def run(conn: sqlite3.Connection) -> dict[str, ResourceVersion]:
            # One row for the whole answer (see _json_query): the detector asks for up to a
            # few thousand keys at a time.
            rows = _json_query(
                conn,
                f"SELECT json_group_array(json_array({columns})) "
                "FROM (SELECT key, MAX(valid_from) AS vf FROM versions "
                "WHERE key IN (SELECT value FROM json_each(?)) GROUP BY key) AS m "
                "JOIN versions AS v ON v.key = m.key AND v.valid_from = m.vf",
                unique,
            )
            return {row[0]: _version(row) for row in rows}

        return await self._read(run)

    # -- relationships (cloudinv.sinks.store.RelationshipReads, cloudinv.sinks.relationships) ---

    async def edges_at(
        self, keys: Sequence[str], at: datetime | None, direction: Literal["out", "in"]
    ) -> list[StoredEdge]:
        if not keys:
            return []
        side = "source_key" if direction == "out" else "target_key"
        when, params = _valid_at("", at)
        sql = (
            "SELECT json_group_array(json_array(source_key, source_type, relationship, "
            f"target_key, target_type)) FROM relationships WHERE {side} IN "
            f"(SELECT value FROM json_each(?)) AND {when}"
        )
        values = orjson.dumps(list(dict.fromkeys(keys))).decode()

        def run(conn: sqlite3.Connection) -> list[StoredEdge]:
            row = conn.execute(sql, (values, *params)).fetchone()
            return [StoredEdge(*edge) for edge in orjson.loads(row[0])]

        return await self._read(run)

    async def nodes_at(self, keys: Sequence[str], at: datetime | None) -> dict[str, NodeInfo]:
        if not keys:
            return {}
        when, params = _valid_at("", at)
        sql = (
            "SELECT json_group_array(json_array(key, resource_type, account_id, region, name)) "
            f"FROM versions WHERE key IN (SELECT value FROM json_each(?)) AND {when}"
        )
        values = orjson.dumps(list(dict.fromkeys(keys))).decode()

        def run(conn: sqlite3.Connection) -> dict[str, NodeInfo]:
            row = conn.execute(sql, (values, *params)).fetchone()
            return {node[0]: NodeInfo(*node) for node in orjson.loads(row[0])}

        return await self._read(run)

    # -- the change log (cloudinv.sinks.store.ChangeLog: the live feed, counts) ------------------

    async def change_log_head(self) -> int:
        def run(conn: sqlite3.Connection) -> int:
            return int(conn.execute("SELECT max(seq) FROM changes").fetchone()[0] or 0)

        return await self._read(run, snapshot=False)

    async def change_log_after(self, seq: int, limit: int) -> list[LoggedChange]:
        def run(conn: sqlite3.Connection) -> list[LoggedChange]:
            rows = conn.execute(
                "SELECT seq, key, resource_type, account_id, region, change_type, event "
                "FROM changes WHERE seq > ? ORDER BY seq LIMIT ?",
                (seq, limit),
            ).fetchall()
            return [LoggedChange(r[0], r[1], r[2], r[3], r[4], r[5], bytes(r[6])) for r in rows]

        return await self._read(run, snapshot=False)

    async def current_counts(self) -> dict[tuple[str, str, str], int]:
        def run(conn: sqlite3.Connection) -> dict[tuple[str, str, str], int]:
            rows = conn.execute(
                "SELECT resource_type, account_id, region, count(*) FROM versions "
                "WHERE valid_to IS NULL GROUP BY resource_type, account_id, region"
            ).fetchall()
            return {(r[0], r[1], r[2]): int(r[3]) for r in rows}

        return await self._read(run, snapshot=False)

    async def explain(self, sql: str, params: Sequence[Any] = ()) -> list[str]:
        """SQLite's query plan for ``sql`` (tests check that lookups use the indexes)."""

        def run(conn: sqlite3.Connection) -> list[str]:
            return [str(row[3]) for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]

        return await self._read(run)


def list_as_of_query(
    query: VersionQuery, *, columns: str = _VERSION_COLUMNS
) -> tuple[str, list[Any]]:
    """The SQL of :meth:`SqliteStore.list_as_of` (exposed so tests can check its plan)."""
    where, params = equal_to(
        (
            ("resource_type", query.resource_type),
            ("account_id", query.account_id),
            ("region", query.region),
        )
    )
    if query.at is None:
        where.append("valid_to IS NULL")
    else:
        t = to_us(query.at)
        where.append("valid_from <= ? AND (valid_to IS NULL OR valid_to > ?)")
        params += [t, t]
    if query.after_key is not None:
        where.append("key > ?")
        params.append(query.after_key)
    sql = f"SELECT {columns} FROM versions WHERE {' AND '.join(where)} ORDER BY key LIMIT ?"
    params.append(query.limit)
    return sql, params


def _valid_at(prefix: str, at: datetime | None) -> tuple[str, list[int]]:
    """SQL (and its parameters) for "valid at ``at``" of a row with valid_from/valid_to."""
    if at is None:
        return f"{prefix}valid_to IS NULL", []
    t = to_us(at)
    return f"{prefix}valid_from <= ? AND ({prefix}valid_to IS NULL OR {prefix}valid_to > ?)", [
        t,
        t,
    ]


def _change_filters(query: ChangeQuery) -> tuple[list[str], list[Any]]:
    """The WHERE clauses (and their values) of a :class:`ChangeQuery` on the changes table."""
    where: list[str] = []
    params: list[Any] = []
    if query.since is not None:
        where.append("captured_at >= ?")
        params.append(to_us(query.since))
    if query.until is not None:
        where.append("captured_at < ?")
        params.append(to_us(query.until))
    if query.cursor is not None:
        at_us, seq = _parse_cursor(query.cursor)
        where.append("(captured_at, seq) > (?, ?)")
        params += [at_us, seq]
    f = query.filters
    clauses, values = equal_to(
        (
            ("key", f.key),
            ("resource_type", f.resource_type),
            ("account_id", f.account_id),
            ("region", f.region),
        )
    )
    where += clauses
    params += values
    if f.change_types is not None:
        clause, values = one_of("change_type", f.change_types)
        where.append(clause)
        params += values
    return where, params


def _parse_cursor(cursor: str) -> tuple[int, int]:
    try:
        at_us, seq = cursor.split(":")
        return int(at_us), int(seq)
    except ValueError:
        raise StoreError(
            f"bad changes cursor {cursor!r}: pass back next_cursor of a previous page"
        ) from None


def _json_query(conn: sqlite3.Connection, sql: str, values: Any) -> Any:
    """Run a query returning one JSON value, passing ``values`` as one JSON parameter.

    Batches go in and out of SQLite as single JSON documents (``json_each``,
    ``json_group_array``): every SQLite step releases Python's GIL and then waits to take it
    back, up to the interpreter's switch interval (5 ms) when the event loop thread is busy.
    Row-at-a-time statements made a 1,000-change batch wait for seconds; a handful of
    statements per batch does not.
    """
    row = conn.execute(sql, (orjson.dumps(values).decode(),)).fetchone()
    return orjson.loads(row[0]) if row and row[0] is not None else None


def _apply_changes(conn: sqlite3.Connection, rows: Sequence[tuple[ChangeEvent, bytes]]) -> int:
    """Apply changes in order inside the caller's transaction; returns how many applied
    (changes updated in place with a better attribution included).

    The batch is planned in Python (:mod:`cloudinv.sinks.versioning`) from what the store
    holds (two queries), then written with a handful of statements, whatever its size.
    """
    keys = sorted({change.key for change, _ in rows})
    stored_attribution: dict[str, Attribution | None] = {
        change_id: None if attribution is None else Attribution.model_validate(attribution)
        for change_id, attribution in _json_query(
            conn,
            "SELECT json_group_array(json_array(change_id, json_extract(event, '$.attribution')))"
            " FROM changes WHERE change_id IN (SELECT value FROM json_each(?))",
            [change.change_id for change, _ in rows],
        )
        or ()
    }
    heads: dict[str, Head | None] = {
        key: Head(change_id, config_hash, valid_from, valid_to)
        for key, change_id, config_hash, valid_from, valid_to in _json_query(
            conn,
            "SELECT json_group_array(json_array(key, change_id, config_hash, valid_from, "
            "valid_to)) FROM versions AS v WHERE key IN (SELECT value FROM json_each(?)) "
            "AND valid_from = (SELECT MAX(valid_from) FROM versions WHERE key = v.key)",
            keys,
        )
        or ()
    }
    # The open edges of keys whose changes move them; of the others, only which have any.
    moving = {change.key for change, _ in rows if not may_keep_edges(change)}
    edges = EdgeBook(
        _open_edges(conn, [key for key in keys if key in moving]),
        unloaded=_with_open_edges(conn, [key for key in keys if key not in moving]),
        load=lambda key: _open_edges(conn, [key]),
    )
    closes: dict[str, int] = {}
    new_versions: dict[str, list[Any]] = {}
    new_changes: dict[str, list[Any]] = {}
    refs: list[tuple[str, str]] = []

    for change, event in rows:
        key = change.key
        t = to_us(change.captured_at)
        row = [
            change.change_id,
            key,
            change.resource_type,
            change.account_id,
            change.region,
            change.change_type,
            t,
            to_us(change.detected_at),
            event,
        ]
        if change.change_id in stored_attribution:
            # Stored already: kept, unless it comes back better attributed (logged again).
            if improves(change, change.attribution, stored_attribution[change.change_id]):
                stored_attribution[change.change_id] = change.attribution
                new_changes[change.change_id] = row
            continue
        head = heads.get(key)
        step = plan(change, t, head)
        if step.kind is not StepKind.APPLY:
            continue
        closed = step.closes
        if closed is not None:
            if closed.stored:
                closes[closed.change_id] = t
            else:
                new_versions[closed.change_id][10] = t
        if step.opens:
            new_versions[change.change_id] = [
                change.change_id,
                key,
                change.resource_type,
                change.resource_id,
                change.account_id,
                change.region,
                change.name,
                change.after_hash,
                orjson.dumps(change.configuration),
                t,
                None,
            ]
        heads[key] = advance(change, t, step)
        edges.apply(change, t, step)
        stored_attribution[change.change_id] = change.attribution
        new_changes[change.change_id] = row
        refs += [(ref, key) for ref in change_refs(change)]
    if closes:
        conn.execute(
            "UPDATE versions SET valid_to = json_extract(j.value, '$[1]') "
            "FROM json_each(?) AS j WHERE versions.change_id = json_extract(j.value, '$[0]')",
            (orjson.dumps(list(closes.items())).decode(),),
        )
    if new_versions:
        _insert_rows(
            conn,
            "INSERT INTO versions (change_id, key, resource_type, resource_id, account_id, "
            "region, name, config_hash, configuration, valid_from, valid_to)",
            list(new_versions.values()),
            blobs=(8,),
        )
    if new_changes:
        # REPLACE: a change updated in place leaves its old row and takes the next sequence
        # number, so that the change log (the live feed) carries it again.
        _insert_rows(
            conn,
            "INSERT OR REPLACE INTO changes (change_id, key, resource_type, account_id, region, "
            "change_type, captured_at, detected_at, event)",
            list(new_changes.values()),
            blobs=(8,),
        )
    if refs:
        _insert_rows(conn, "INSERT OR IGNORE INTO resource_refs (ref, key)", refs)
    _write_edges(conn, edges)
    return len(new_changes)


def _open_edges(conn: sqlite3.Connection, keys: Sequence[str]) -> list[EdgeRow]:
    """The open edges of ``keys`` (the sources), for :class:`EdgeBook`."""
    return [
        EdgeRow(
            source_key=row[0],
            source_type=row[1],
            relationship=row[2],
            target_key=row[3],
            target_type=row[4],
            valid_from=row[5],
            valid_to=None,
            change_id=row[6],
        )
        for row in _json_query(
            conn,
            "SELECT json_group_array(json_array(source_key, source_type, relationship, "
            "target_key, target_type, valid_from, change_id)) FROM relationships "
            "WHERE source_key IN (SELECT value FROM json_each(?)) AND valid_to IS NULL",
            list(keys),
        )
        or ()
    ]


def _with_open_edges(conn: sqlite3.Connection, keys: Sequence[str]) -> list[str]:
    """Which of ``keys`` (sources) have open edges."""
    if not keys:
        return []
    found: list[str] = (
        _json_query(
            conn,
            "SELECT json_group_array(source_key) FROM (SELECT DISTINCT source_key "
            "FROM relationships WHERE source_key IN (SELECT value FROM json_each(?)) "
            "AND valid_to IS NULL)",
            list(keys),
        )
        or []
    )
    return found


def _write_edges(conn: sqlite3.Connection, edges: EdgeBook) -> None:
    """Close the stored edges a batch ended and insert the ones it opened."""
    if edges.closed:
        conn.execute(
            "UPDATE relationships SET valid_to = json_extract(j.value, '$[4]') "
            "FROM json_each(?) AS j WHERE source_key = json_extract(j.value, '$[0]') "
            "AND relationship = json_extract(j.value, '$[1]') "
            "AND target_key = json_extract(j.value, '$[2]') "
            "AND valid_from = json_extract(j.value, '$[3]')",
            (
                orjson.dumps(
                    [
                        [e.source_key, e.relationship, e.target_key, e.valid_from, e.valid_to]
                        for e in edges.closed
                    ]
                ).decode(),
            ),
        )
    if edges.opened:
        _insert_rows(
            conn,
            "INSERT OR IGNORE INTO relationships (source_key, source_type, relationship, "
            "target_key, target_type, valid_from, valid_to, change_id)",
            [
                [
                    e.source_key,
                    e.source_type,
                    e.relationship,
                    e.target_key,
                    e.target_type,
                    e.valid_from,
                    e.valid_to,
                    e.change_id,
                ]
                for e in edges.opened
            ],
        )


def _insert_rows(
    conn: sqlite3.Connection,
    insert: str,
    rows: Sequence[Sequence[Any]],
    blobs: tuple[int, ...] = (),
) -> None:
    """``insert`` ("INSERT ... INTO table (columns)") of ``rows`` as multi-row ``VALUES``
    statements with bound parameters: one SQLite step per :data:`_INSERT_PARAMS` values,
    whatever the number of rows (see :func:`_json_query` on why steps count). The columns
    at ``blobs`` hold JSON documents (configuration, event, attribution), given as bytes or
    str and stored as UTF-8 BLOBs, bound as they are: passing them inside one JSON
    parameter made SQLite parse and render every document again (most of the write's CPU).
    """
    if not rows:
        return
    width = len(rows[0])
    group = "(" + ", ".join("?" * width) + ")"
    # A SQLite built with a lower limit than its default (32,766) is honoured.
    limit = min(_INSERT_PARAMS, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))
    per_statement = max(1, limit // width)
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        params: list[Any] = []
        for row in chunk:
            if blobs:
                row = list(row)
                for i in blobs:
                    if isinstance(row[i], str):
                        row[i] = row[i].encode()
            params += row
        conn.execute(f"{insert} VALUES {', '.join([group] * len(chunk))}", params)
