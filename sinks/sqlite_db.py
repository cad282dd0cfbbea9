"""One SQLite database file as the stores use it: WAL mode, one writer thread, a reader pool.

Every SQLite store (inventory, events, alerts) is a :class:`SqliteDatabase` plus its own SQL.
SQLite calls run on threads the database owns, never on the event loop: one writer thread
with one connection (SQLite has one writer at a time anyway) and a few reader threads, each
with its own read-only connection, which WAL lets read while the writer writes. Other
processes (a second worker, the API, the CLI) may open the same file.

Opening (once, under a lock, so concurrent first calls share it) creates the directory and
the schema, switches the file to WAL and checks ``PRAGMA user_version``: a file written by a
newer cloudinv is refused with an error saying what to do, never read or written; an older
one is migrated (the schema's ``migrate``) and stamped in one write transaction. Switching
a new file to WAL takes an exclusive lock, and SQLite can answer "database is locked" right
away there instead of waiting its busy timeout (two workers starting together,
tests/test_scaleout.py): the open is retried on that error only, about 10 s in all.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

from cloudinv.core.retry import retry_sync

__all__ = ["SqliteBacked", "SqliteDatabase", "SqliteSchema", "equal_to", "immediate", "one_of"]

log = logging.getLogger(__name__)

T = TypeVar("T")

OPEN_ATTEMPTS = 40
OPEN_DELAY_S = 0.25
BUSY_TIMEOUT_MS = 30_000


def equal_to(pairs: Iterable[tuple[str, object]]) -> tuple[list[str], list[Any]]:
    """The ``column = ?`` clauses of a query's equality filters and their parameters, for
    the (column, value) pairs whose value is given (``None`` means any)."""
    given = [(column, value) for column, value in pairs if value is not None]
    return [f"{column} = ?" for column, _ in given], [value for _, value in given]


def one_of(column: str, values: Sequence[object]) -> tuple[str, list[Any]]:
    """``column IN (?, ...)`` and its parameters (``values`` not empty)."""
    return f"{column} IN ({', '.join('?' * len(values))})", list(values)


@dataclass(frozen=True, slots=True)
class SqliteSchema:
    """What a store's file holds and how its connections are set up."""

    what: str
    """How errors name the database, e.g. ``"the local store"``."""
    version: int
    """``PRAGMA user_version`` this code writes; a file with a higher one is refused."""
    ddl: str
    """Idempotent (``IF NOT EXISTS``) statements run at every open."""
    page_size: int | None = None
    """Takes effect only while the file is new (before WAL mode)."""
    writer_pragmas: tuple[str, ...] = ()
    """Extra ``PRAGMA`` statements for the writer connection (e.g. a larger cache)."""
    reader_pragmas: tuple[str, ...] = ()
    """Extra ``PRAGMA`` statements for each reader connection (e.g. ``mmap_size``)."""
    min_sqlite: tuple[int, int, int] | None = None
    """The oldest SQLite library the SQL needs."""
    migrate: Callable[[sqlite3.Connection, int], None] | None = None
    """Brings the rows of a file stamped with an older version (the argument; 0 for a new
    file) up to this one, after ``ddl`` and inside the write transaction that stamps it."""


@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on error)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
    )
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA temp_store = MEMORY")
    return conn


class SqliteDatabase:
    """One SQLite file in WAL mode with a writer thread and a pool of reader threads.

    ``readonly``: no writer thread (the API's copy of a store a worker writes); the file and
    schema are still created when missing, so reads of a new data directory answer empty.
    ``error`` is the exception type raised for "closed", "read-only" and a refused file.
    """

    def __init__(
        self,
        path: Path,
        schema: SqliteSchema,
        *,
        readers: int = 2,
        readonly: bool = False,
        error: type[Exception] = RuntimeError,
        thread_prefix: str = "sqlite",
    ) -> None:
        self.path = Path(path)
        self.schema = schema
        self.readonly = readonly
        self._error = error
        self._reader_count = readers
        self._prefix = thread_prefix
        self._writer: ThreadPoolExecutor | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._write_conn: sqlite3.Connection | None = None
        self._read_conns: list[sqlite3.Connection] = []
        self._local = threading.local()
        self._conns_lock = threading.Lock()
        self._open_lock = asyncio.Lock()
        self._closed = False

    @property
    def is_open(self) -> bool:
        return self._readers is not None

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Create or check the file; safe to call again and from concurrent tasks."""
        async with self._open_lock:
            if self._closed:
                raise self._error(f"{self.schema.what} {self.path} is closed")
            if self._readers is not None:
                return
            writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self._prefix}-write")
            try:
                conn = await asyncio.get_running_loop().run_in_executor(writer, self._open_retrying)
            except BaseException:
                writer.shutdown(wait=False)
                raise
            if self.readonly:
                conn.close()
                writer.shutdown(wait=False)
            else:
                for pragma in self.schema.writer_pragmas:
                    conn.execute(f"PRAGMA {pragma}")
                self._write_conn, self._writer = conn, writer
            self._readers = ThreadPoolExecutor(
                max_workers=self._reader_count, thread_name_prefix=f"{self._prefix}-read"
            )

    def _open_retrying(self) -> sqlite3.Connection:
        first = True

        def on_retry(exc: BaseException, attempt: int, delay: float) -> None:
            nonlocal first
            if first:
                log.info("%s is being opened by another process; waiting", self.path)
                first = False

        return retry_sync(
            self._open_file,
            attempts=OPEN_ATTEMPTS,
            first_delay_s=OPEN_DELAY_S,
            max_delay_s=OPEN_DELAY_S,
            retry_if=lambda exc: isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc),
            on_retry=on_retry,
        )

    def _open_file(self) -> sqlite3.Connection:
        schema = self.schema
        if schema.min_sqlite is not None and sqlite3.sqlite_version_info < schema.min_sqlite:
            raise self._error(
                f"{schema.what} needs SQLite {'.'.join(map(str, schema.min_sqlite))} or newer; "
                f"this Python has {sqlite3.sqlite_version}"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = _connect(self.path)
        try:
            if schema.page_size is not None:
                conn.execute(f"PRAGMA page_size = {schema.page_size}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise self._error(f"{self.path}: SQLite refused WAL mode (got {mode!r})")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > schema.version:
                raise self._error(
                    f"{self.path} has schema version {version}, newer than this cloudinv "
                    f"({schema.version}): upgrade cloudinv or use another data directory"
                )
            conn.executescript(schema.ddl)
            if version != schema.version:
                self._stamp(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _stamp(self, conn: sqlite3.Connection) -> None:
        """Migrate and stamp an older file once, whichever process opens it first."""
        with immediate(conn):
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version < self.schema.version:
                if self.schema.migrate is not None:
                    self.schema.migrate(conn, version)
                conn.execute(f"PRAGMA user_version = {self.schema.version}")

    async def close(self) -> None:
        """Wait for calls in flight, then close every connection; final."""
        async with self._open_lock:
            if self._closed:
                return
            self._closed = True
            writer, readers = self._writer, self._readers
            self._writer = self._readers = None
        await asyncio.get_running_loop().run_in_executor(None, self._shutdown, writer, readers)

    def _shutdown(
        self, writer: ThreadPoolExecutor | None, readers: ThreadPoolExecutor | None
    ) -> None:
        for pool in (writer, readers):
            if pool is not None:
                pool.shutdown(wait=True)
        with self._conns_lock:
            conns = [*self._read_conns]
            self._read_conns.clear()
        if self._write_conn is not None:
            conns.append(self._write_conn)
            self._write_conn = None
        for conn in conns:
            conn.close()

    # -- calls -----------------------------------------------------------------------------

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the writer thread inside one ``BEGIN IMMEDIATE`` transaction."""

        def run(conn: sqlite3.Connection) -> T:
            with immediate(conn):
                return fn(conn)

        return await self.on_writer(run)

    async def on_writer(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the writer thread with no transaction around it (``fn`` opens its
        own with :func:`immediate`, e.g. after parsing outside the write lock)."""
        if self._readers is None:
            await self.open()
        writer = self._writer
        if writer is None:
            state = "read-only" if self.readonly and not self._closed else "closed"
            raise self._error(f"{self.schema.what} {self.path} is {state}")

        def run() -> T:
            conn = self._write_conn
            if conn is None:
                raise self._error(f"{self.schema.what} {self.path} is closed")
            return fn(conn)

        return await asyncio.get_running_loop().run_in_executor(writer, run)

    async def read(self, fn: Callable[[sqlite3.Connection], T], *, snapshot: bool = True) -> T:
        """Run ``fn`` on a reader thread. ``snapshot``: inside one read transaction, so every
        query of ``fn`` sees the same state; pass False when ``fn`` runs one statement (a
        transaction of its own), which saves two SQLite steps, each of which gives up the GIL
        and may wait to take it back."""
        if self._readers is None:
            await self.open()
        readers = self._readers
        if readers is None:
            raise self._error(f"{self.schema.what} {self.path} is closed")
        run = self._run_snapshot if snapshot else self._run_single
        return await asyncio.get_running_loop().run_in_executor(readers, run, fn)

    def _reader_conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path)
            conn.execute("PRAGMA query_only = 1")
            for pragma in self.schema.reader_pragmas:
                conn.execute(f"PRAGMA {pragma}")
            self._local.conn = conn
            with self._conns_lock:
                self._read_conns.append(conn)
        return conn

    def _run_snapshot(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._reader_conn()
        conn.execute("BEGIN")
        try:
            return fn(conn)
        finally:
            conn.execute("COMMIT")

    def _run_single(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return fn(self._reader_conn())


class SqliteBacked:
    """A store kept in one :class:`SqliteDatabase`: its construction, lifecycle and calls.

    A store class names its ``SCHEMA``, its ``FILE`` under a data directory, the ``ERROR`` it
    raises and its threads' name prefix (``THREADS``), and runs its SQL through
    :meth:`_write` and :meth:`_read`."""

    SCHEMA: ClassVar[SqliteSchema]
    FILE: ClassVar[Path]
    ERROR: ClassVar[type[Exception]]
    THREADS: ClassVar[str]

    def __init__(self, path: Path, *, reader_threads: int = 2, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._db = SqliteDatabase(
            self.path,
            self.SCHEMA,
            readers=reader_threads,
            readonly=readonly,
            error=self.ERROR,
            thread_prefix=self.THREADS,
        )

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> Self:
        """The store of a data directory: ``<data_dir>/<FILE>``."""
        return cls(Path(data_dir) / cls.FILE)

    async def open(self) -> None:
        """Create or check the file; safe to call again."""
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._db.write(fn)

    async def _read(self, fn: Callable[[sqlite3.Connection], T], *, snapshot: bool = True) -> T:
        return await self._db.read(fn, snapshot=snapshot)
