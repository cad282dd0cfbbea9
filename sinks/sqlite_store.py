"""The local inventory store: SQLite in WAL mode, the embedded default.

One file, ``<data_dir>/store/inventory.sqlite3``, holds versions, changes and scan history
(see :mod:`sinks.store` for the model). SQLite calls run on threads owned by the store, never
on the event loop: one writer thread with one connection (SQLite has one writer at a time
anyway), and a few reader threads, each with its own connection, which WAL lets read while
the writer writes. Other processes (the API) may open the same file.

Schema (``PRAGMA user_version`` = 1). Times are INTEGER microseconds since the Unix epoch,
UTC, so that comparisons and indexes are plain integer ones::

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

"As of T" is one seek on ``versions_by_key`` (the last version with ``valid_from <= T``,
then ``valid_to > T`` or NULL); "everything of type Y in account Z at T" walks
``versions_by_scope`` in key order, filtering on index entries, and stops after ``limit``.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import orjson

from cloudinv.models import ChangeEvent, ScanManifest
from sinks.store import (
    ChangeFilters,
    ChangePage,
    ResourceVersion,
    ScanRecord,
    StoreError,
)

__all__ = ["STORE_FILE", "SqliteStore", "from_us", "to_us"]

log = logging.getLogger(__name__)

STORE_FILE = Path("store") / "inventory.sqlite3"
"""Where the store lives, relative to the data directory."""

SCHEMA_VERSION = 1
MIN_SQLITE = (3, 33, 0)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_IN_CHUNK = 500
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
"""

_VERSION_COLUMNS = (
    "key, resource_type, resource_id, account_id, region, name, configuration, config_hash, "
    "valid_from, valid_to, change_id"
)


def to_us(value: datetime) -> int:
    """A timezone-aware datetime as integer microseconds since the epoch (naive = UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // _ONE_US


def from_us(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


def _version(row: sqlite3.Row | tuple[Any, ...]) -> ResourceVersion:
    return ResourceVersion(
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


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA temp_store = MEMORY")
    return conn


class SqliteStore:
    """:class:`~sinks.store.InventoryStore` on one SQLite file in WAL mode."""

    def __init__(self, path: Path, *, reader_threads: int = 2) -> None:
        self.path = Path(path)
        self._reader_threads = reader_threads
        self._writer: ThreadPoolExecutor | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._write_conn: sqlite3.Connection | None = None
        self._read_conns: list[sqlite3.Connection] = []
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open_lock = asyncio.Lock()
        self._closed = False

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> SqliteStore:
        """The store of a data directory: ``<data_dir>/store/inventory.sqlite3``."""
        return cls(Path(data_dir) / STORE_FILE)

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        async with self._open_lock:
            if self._closed:
                raise StoreError(f"store {self.path} is closed")
            if self._writer is not None:
                return
            writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-write")
            try:
                await asyncio.get_running_loop().run_in_executor(writer, self._open_writer)
            except BaseException:
                writer.shutdown(wait=False)
                raise
            self._writer = writer
            self._readers = ThreadPoolExecutor(
                max_workers=self._reader_threads, thread_name_prefix="store-read"
            )

    def _open_writer(self) -> None:
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise StoreError(
                f"the local store needs SQLite {'.'.join(map(str, MIN_SQLITE))} or newer "
                f"(UPDATE ... FROM, JSON functions); this Python has {sqlite3.sqlite_version}"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = _connect(self.path)
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{self.path}: SQLite refused WAL mode (got {mode!r})")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {version}, newer than this cloudinv "
                    f"({SCHEMA_VERSION}): upgrade cloudinv or use another data directory"
                )
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            conn.close()
            raise
        self._write_conn = conn

    async def close(self) -> None:
        async with self._open_lock:
            if self._closed:
                return
            self._closed = True
            writer, readers = self._writer, self._readers
            self._writer = self._readers = None
            if writer is None or readers is None:
                return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._shutdown, writer, readers)

    def _shutdown(self, writer: ThreadPoolExecutor, readers: ThreadPoolExecutor) -> None:
        writer.shutdown(wait=True)
        readers.shutdown(wait=True)
        with self._lock:
            conns = [*self._read_conns]
            self._read_conns.clear()
        if self._write_conn is not None:
            conns.append(self._write_conn)
            self._write_conn = None
        for conn in conns:
            conn.close()

    async def __aenter__(self) -> SqliteStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- thread plumbing -------------------------------------------------------------------

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._writer is None:
            await self.open()
        writer = self._writer
        if writer is None:
            raise StoreError(f"store {self.path} is closed")

        def run() -> T:
            conn = self._write_conn
            if conn is None:
                raise StoreError(f"store {self.path} is closed")
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        return await asyncio.get_running_loop().run_in_executor(writer, run)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._readers is None:
            await self.open()
        readers = self._readers
        if readers is None:
            raise StoreError(f"store {self.path} is closed")
        return await asyncio.get_running_loop().run_in_executor(readers, self._run_read, fn)

    def _run_read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path)
            conn.execute("PRAGMA query_only = 1")
            self._local.conn = conn
            with self._lock:
                self._read_conns.append(conn)
        # One read transaction per call: every query of fn sees the same snapshot.
        conn.execute("BEGIN")
        try:
            return fn(conn)
        finally:
            conn.execute("COMMIT")

    # -- writes ----------------------------------------------------------------------------

    async def put_changes(self, batch: Sequence[ChangeEvent]) -> int:
        if not batch:
            return 0
        rows = [(change, change.model_dump_json(by_alias=True)) for change in batch]
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

    # -- reads -----------------------------------------------------------------------------

    async def current(self, key: str) -> ResourceVersion | None:
        def run(conn: sqlite3.Connection) -> ResourceVersion | None:
            row = conn.execute(
                f"SELECT {_VERSION_COLUMNS} FROM versions WHERE key = ? AND valid_to IS NULL",
                (key,),
            ).fetchone()
            return None if row is None else _version(row)

        return await self._read(run)

    async def as_of(self, key: str, at: datetime) -> ResourceVersion | None:
        t = to_us(at)

        def run(conn: sqlite3.Connection) -> ResourceVersion | None:
            row = conn.execute(
                f"SELECT {_VERSION_COLUMNS} FROM versions "
                "WHERE key = ? AND valid_from <= ? ORDER BY valid_from DESC LIMIT 1",
                (key, t),
            ).fetchone()
            if row is None or (row[9] is not None and row[9] <= t):
                return None
            return _version(row)

        return await self._read(run)

    async def list_as_of(
        self,
        *,
        at: datetime | None = None,
        resource_type: str | None = None,
        account_id: str | None = None,
        region: str | None = None,
        limit: int = 1000,
        after_key: str | None = None,
    ) -> list[ResourceVersion]:
        sql, params = list_as_of_query(
            at=at,
            resource_type=resource_type,
            account_id=account_id,
            region=region,
            limit=limit,
            after_key=after_key,
        )

        def run(conn: sqlite3.Connection) -> list[ResourceVersion]:
            return [_version(row) for row in conn.execute(sql, params)]

        return await self._read(run)

    async def history(self, key: str) -> list[ResourceVersion]:
        def run(conn: sqlite3.Connection) -> list[ResourceVersion]:
            rows = conn.execute(
                f"SELECT {_VERSION_COLUMNS} FROM versions WHERE key = ? ORDER BY valid_from",
                (key,),
            )
            return [_version(row) for row in rows]

        return await self._read(run)

    async def changes(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        filters: ChangeFilters | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> ChangePage:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        where: list[str] = []
        params: list[Any] = []
        if since is not None:
            where.append("captured_at >= ?")
            params.append(to_us(since))
        if until is not None:
            where.append("captured_at < ?")
            params.append(to_us(until))
        if cursor is not None:
            at_us, seq = _parse_cursor(cursor)
            where.append("(captured_at, seq) > (?, ?)")
            params += [at_us, seq]
        f = filters or ChangeFilters()
        for column, value in (
            ("key", f.key),
            ("resource_type", f.resource_type),
            ("account_id", f.account_id),
            ("region", f.region),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if f.change_types is not None:
            where.append(f"change_type IN ({', '.join('?' * len(f.change_types))})")
            params += list(f.change_types)
        sql = (
            "SELECT captured_at, seq, event FROM changes"
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + " ORDER BY captured_at, seq LIMIT ?"
        )
        params.append(limit + 1)

        def run(conn: sqlite3.Connection) -> list[tuple[int, int, bytes]]:
            return list(conn.execute(sql, params))

        rows = await self._read(run)
        items = [ChangeEvent.model_validate_json(row[2]) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = rows[limit - 1]
            next_cursor = f"{last[0]}:{last[1]}"
        return ChangePage(items=items, next_cursor=next_cursor)

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
        where: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("account_id", account_id),
            ("region", region),
            ("resource_type", resource_type),
            ("scan_id", scan_id),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
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

    async def explain(self, sql: str, params: Sequence[Any] = ()) -> list[str]:
        """SQLite's query plan for ``sql`` (tests check that lookups use the indexes)."""

        def run(conn: sqlite3.Connection) -> list[str]:
            return [str(row[3]) for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]

        return await self._read(run)


def list_as_of_query(
    *,
    at: datetime | None,
    resource_type: str | None,
    account_id: str | None,
    region: str | None,
    limit: int,
    after_key: str | None,
) -> tuple[str, list[Any]]:
    """The SQL of :meth:`SqliteStore.list_as_of` (exposed so tests can check its plan)."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    where: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("resource_type", resource_type),
        ("account_id", account_id),
        ("region", region),
    ):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if at is None:
        where.append("valid_to IS NULL")
    else:
        t = to_us(at)
        where.append("valid_from <= ? AND (valid_to IS NULL OR valid_to > ?)")
        params += [t, t]
    if after_key is not None:
        where.append("key > ?")
        params.append(after_key)
    sql = (
        f"SELECT {_VERSION_COLUMNS} FROM versions WHERE {' AND '.join(where)} ORDER BY key LIMIT ?"
    )
    params.append(limit)
    return sql, params


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


@dataclass
class _Open:
    """A key's open version while a batch is being applied."""

    change_id: str
    config_hash: str
    valid_from: int
    stored: bool
    """Already in the table (closed with an UPDATE) or opened by this batch."""


def _apply_changes(conn: sqlite3.Connection, rows: Sequence[tuple[ChangeEvent, str]]) -> int:
    """Apply changes in order inside the caller's transaction; returns how many applied.

    The batch is decided in Python from what the store holds (three queries), then written
    with three statements, whatever its size.
    """
    keys = sorted({change.key for change, _ in rows})
    seen: set[str] = set(
        _json_query(
            conn,
            "SELECT json_group_array(change_id) FROM changes "
            "WHERE change_id IN (SELECT value FROM json_each(?))",
            [change.change_id for change, _ in rows],
        )
        or ()
    )
    open_by_key = {
        key: _Open(change_id, config_hash, valid_from, stored=True)
        for key, change_id, config_hash, valid_from in _json_query(
            conn,
            "SELECT json_group_array(json_array(key, change_id, config_hash, valid_from)) "
            "FROM versions WHERE valid_to IS NULL AND key IN (SELECT value FROM json_each(?))",
            keys,
        )
        or ()
    }
    last_end: dict[str, int | None] = (
        _json_query(
            conn,
            "SELECT json_group_object(key, ended) FROM (SELECT key, MAX(valid_to) AS ended "
            "FROM versions WHERE key IN (SELECT value FROM json_each(?)) GROUP BY key)",
            keys,
        )
        or {}
    )
    closes: dict[str, int] = {}
    new_versions: dict[str, list[Any]] = {}
    new_changes: list[list[Any]] = []

    def close(version: _Open, at: int) -> None:
        if version.stored:
            closes[version.change_id] = at
        else:
            new_versions[version.change_id][10] = at

    for change, event in rows:
        if change.change_id in seen:
            continue
        key = change.key
        t = to_us(change.captured_at)
        current = open_by_key.get(key)
        if change.change_type == "deleted":
            if current is None or t <= current.valid_from:
                continue  # nothing open to delete, or older than what is open
            close(current, t)
            del open_by_key[key]
            last_end[key] = t
        else:
            if change.after_hash is None or change.configuration is None:
                log.warning(
                    "change %s (%s of %s) has no configuration or after_hash: not stored",
                    change.change_id,
                    change.change_type,
                    key,
                )
                continue
            if current is not None:
                if current.config_hash == change.after_hash or t <= current.valid_from:
                    continue  # already in that state, or older than what is open
                close(current, t)
            else:
                ended = last_end.get(key)
                if ended is not None and t < ended:
                    continue  # a re-creation older than the deletion already stored
            new_versions[change.change_id] = [
                change.change_id,
                key,
                change.resource_type,
                change.resource_id,
                change.account_id,
                change.region,
                change.name,
                change.after_hash,
                change.configuration,
                t,
                None,
            ]
            open_by_key[key] = _Open(change.change_id, change.after_hash, t, stored=False)
        seen.add(change.change_id)
        new_changes.append(
            [
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
        )
    if closes:
        conn.execute(
            "UPDATE versions SET valid_to = json_extract(j.value, '$[1]') "
            "FROM json_each(?) AS j WHERE versions.change_id = json_extract(j.value, '$[0]')",
            (orjson.dumps(list(closes.items())).decode(),),
        )
    if new_versions:
        conn.execute(
            "INSERT INTO versions (change_id, key, resource_type, resource_id, account_id, "
            "region, name, config_hash, configuration, valid_from, valid_to) "
            + _select_columns(11, blobs=(8,))
            + " FROM json_each(?)",
            (orjson.dumps(list(new_versions.values())).decode(),),
        )
    if new_changes:
        conn.execute(
            "INSERT INTO changes (change_id, key, resource_type, account_id, region, "
            "change_type, captured_at, detected_at, event) "
            + _select_columns(9, blobs=(8,))
            + " FROM json_each(?)",
            (orjson.dumps(new_changes).decode(),),
        )
    return len(new_changes)


def _select_columns(n: int, blobs: tuple[int, ...]) -> str:
    # json_extract of an object gives its JSON text, of a string the string; the JSON
    # documents (configuration, event) are stored as UTF-8 BLOBs.
    columns = (
        f"CAST(json_extract(value, '$[{i}]') AS BLOB)"
        if i in blobs
        else f"json_extract(value, '$[{i}]')"
        for i in range(n)
    )
    return "SELECT " + ", ".join(columns)
