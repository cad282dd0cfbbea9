"""The alerts store: open and resolved alerts, their notifications, the delivery outbox, and
baselines, in one SQLite file in WAL mode (``<data_dir>/store/alerts.sqlite3``).

Alert state lives here, not in a Faust table, so that a restarted worker (or the embedded
demo, whose broker forgets every topic) knows which alerts are open.

How an alert moves. Rule evaluation (:mod:`cloudinv.streams.rules`) turns each change or CloudTrail
event into :class:`Observation` s, one per applicable rule; :meth:`AlertsStore.apply` applies
a batch in one transaction:

- ``opens`` and no open alert of (rule, resource): an alert opens (its ``opening`` counts the
  openings of that pair), with an ``opened`` notification;
- ``holds`` false and an open alert: it is resolved, with a ``resolved`` notification;
- ``opens`` and an open alert: only ``occurrences`` and ``last_seen_at`` move.

Replays and late data. Each (rule, resource) keeps a mark: the time and cause (change id or
CloudTrail event id) of the last observation that opened, touched or resolved its alert (an
observation that finds nothing open and opens nothing changes nothing and writes nothing).
An observation older than the mark, or
with the mark's own cause, is ignored, so a change replayed after a crash (at-least-once
delivery) never reopens a resolved alert and a late ``StopLogging`` older than the
``StartLogging`` already seen changes nothing.

Delivery (durable outbox). Every notification gets one outbox row per configured
destination in the same transaction. Dispatchers (:mod:`cloudinv.streams.alert_delivery`)
deliver each destination's rows in order, leasing the head row so two worker processes never send it
twice at once, and reschedule it with backoff when the destination is down. A row leaves the
outbox only once its destination acknowledged it.

Baselines. :func:`pin_baseline` records the current version of every resource of a scope
(type, account, region; any left out means all) as approved; :func:`compute_drift` lists
every resource of the pinned scopes whose configuration differs from its baseline, with the
JSON Patch from baseline to now, and created and deleted resources.

Schema (``PRAGMA user_version`` = 1); times are INTEGER microseconds since the epoch, UTC::

    alerts(alert_id PK, rule_id, key, account_id, resource_type, region, severity, status,
           opened_at, resolved_at, body)      -- body: the Alert, JSON
      alerts_open UNIQUE (rule_id, key) WHERE status = 'open'
    notifications(seq PK AUTOINCREMENT, notification_id UNIQUE, alert_id, kind, at,
                  account_id, rule_id, severity, body)   -- the alert as notified
    marks(rule_id, key, at, cause)           PK (rule_id, key)
    outbox(id PK AUTOINCREMENT, destination, seq, state pending|delivered|dead, attempts,
           next_attempt_at, lease_until, last_error, delivered_at)  UNIQUE (destination, seq)
    baselines(key PK, resource_type, account_id, region, name, config_hash, configuration,
              change_id, valid_from, pinned_at)
    pins(pin_id PK, resource_type, account_id, region, pinned_at, count)
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

import orjson
from pydantic import BaseModel, ConfigDict, Field

from cloudinv.catalog.diff import changed_paths, json_patch
from cloudinv.core.models import JsonPatchOp, UtcDatetime, utcnow
from cloudinv.sinks.sqlite_db import SqliteBacked, SqliteSchema, equal_to, one_of
from cloudinv.sinks.sqlite_store import from_us, to_us
from cloudinv.sinks.store import (
    InventoryStore,
    ResourceVersion,
    StoreError,
    VersionQuery,
    check_limit,
    cut_page,
    version_pages,
)

__all__ = [
    "ALERTS_FILE",
    "SEVERITIES",
    "Alert",
    "AlertFilters",
    "AlertNotification",
    "AlertPage",
    "AlertStatus",
    "AlertsBackend",
    "AlertsStore",
    "BaselineEntry",
    "BaselineScope",
    "DriftItem",
    "Observation",
    "OutboxItem",
    "OutboxWait",
    "PairState",
    "Pin",
    "RuleKind",
    "Severity",
    "Step",
    "advance",
    "alert_id",
    "compute_drift",
    "pin_baseline",
]

ALERTS_FILE = Path("store") / "alerts.sqlite3"
"""Where the alerts store lives, relative to the data directory."""

SCHEMA_VERSION = 1
T = TypeVar("T")

Severity = Literal["info", "low", "medium", "high", "critical"]
SEVERITIES: tuple[Severity, ...] = ("info", "low", "medium", "high", "critical")
AlertStatus = Literal["open", "resolved"]
RuleKind = Literal["state", "change", "event"]
NotificationKind = Literal["opened", "resolved"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    alert_id      TEXT PRIMARY KEY,
    rule_id       TEXT NOT NULL,
    key           TEXT NOT NULL,
    account_id    TEXT NOT NULL,
    resource_type TEXT,
    region        TEXT NOT NULL,
    severity      TEXT NOT NULL,
    status        TEXT NOT NULL,
    opened_at     INTEGER NOT NULL,
    resolved_at   INTEGER,
    body          BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS alerts_open ON alerts (rule_id, key) WHERE status = 'open';
CREATE INDEX IF NOT EXISTS alerts_by_pair ON alerts (rule_id, key);
CREATE INDEX IF NOT EXISTS alerts_by_time ON alerts (opened_at, alert_id);
CREATE INDEX IF NOT EXISTS alerts_by_account ON alerts (account_id, opened_at, alert_id);

CREATE TABLE IF NOT EXISTS notifications (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    notification_id TEXT NOT NULL UNIQUE,
    alert_id        TEXT NOT NULL,
    kind            TEXT NOT NULL,
    at              INTEGER NOT NULL,
    account_id      TEXT NOT NULL,
    rule_id         TEXT NOT NULL,
    severity        TEXT NOT NULL,
    body            BLOB NOT NULL
);

CREATE TABLE IF NOT EXISTS marks (
    rule_id TEXT NOT NULL,
    key     TEXT NOT NULL,
    at      INTEGER NOT NULL,
    cause   TEXT NOT NULL,
    PRIMARY KEY (rule_id, key)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    destination     TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_until     INTEGER,
    last_error      TEXT,
    delivered_at    INTEGER,
    UNIQUE (destination, seq)
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (destination, id) WHERE state = 'pending';

CREATE TABLE IF NOT EXISTS baselines (
    key           TEXT PRIMARY KEY,
    resource_type TEXT NOT NULL,
    account_id    TEXT NOT NULL,
    region        TEXT NOT NULL,
    name          TEXT,
    config_hash   TEXT NOT NULL,
    configuration BLOB NOT NULL,
    change_id     TEXT NOT NULL,
    valid_from    INTEGER NOT NULL,
    pinned_at     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS baselines_by_scope ON baselines (resource_type, account_id, region);
CREATE INDEX IF NOT EXISTS baselines_by_account ON baselines (account_id);

CREATE TABLE IF NOT EXISTS pins (
    pin_id        TEXT PRIMARY KEY,
    resource_type TEXT,
    account_id    TEXT,
    region        TEXT,
    pinned_at     INTEGER NOT NULL,
    count         INTEGER NOT NULL
);
"""


# ---------------------------------------------------------------------------------------------
# Records


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Alert(_Record):
    """One opening of one rule on one resource, open until something clears it."""

    alert_id: str = Field(description="Deterministic: rule, resource key and opening cause")
    rule_id: str
    title: str
    severity: Severity
    kind: RuleKind = Field(description="state, change or event: what the rule looks at")
    status: AlertStatus
    key: str = Field(description="The resource key (ARN), or what the event rule names")
    resource_type: str | None = None
    account_id: str
    region: str
    name: str | None = None
    opening: int = Field(description="1 for the first opening of this (rule, resource), ...")
    opened_at: UtcDatetime
    opened_by: str = Field(description="The change id or CloudTrail event id that opened it")
    last_seen_at: UtcDatetime
    occurrences: int = Field(description="Observations that matched while it was open")
    resolved_at: UtcDatetime | None = None
    resolved_by: str | None = Field(
        default=None, description="The change id or event id that cleared it"
    )
    detail: dict[str, Any] = Field(
        default_factory=dict,
        description="What matched: the condition's result, and the change or event summary",
    )


class AlertNotification(_Record):
    """An alert opened or resolved: what the alerts topic, webhooks, SNS and the SSE stream
    carry. ``seq`` grows with every notification (the stream's event id)."""

    notification_id: str = Field(description="<alert_id>:<kind>; the idempotency key")
    seq: int
    kind: NotificationKind
    at: UtcDatetime
    alert: Alert


class AlertPage(_Record):
    items: list[Alert]
    next_cursor: str | None = None


@dataclass(frozen=True, slots=True)
class Observation:
    """What one rule saw in one change or event (see the module docstring)."""

    rule_id: str
    title: str
    severity: Severity
    kind: RuleKind
    key: str
    account_id: str
    region: str
    opens: bool
    """The rule fires: open an alert unless one is open."""
    holds: bool
    """The alerted condition still holds: ``False`` resolves an open alert."""
    at: datetime
    cause: str
    resource_type: str | None = None
    name: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    unless_severity: Severity | None = None
    """A severity change (with ``holds`` false): resolve the open alert only if it is open at
    another severity than this one. Decided by the store, in the transaction that applies it:
    two workers that saw the same new severity resolve the old alert once, not each other's."""


def alert_id(rule_id: str, key: str, cause: str) -> str:
    return hashlib.sha256(f"{rule_id}\n{key}\n{cause}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class AlertFilters:
    status: AlertStatus | None = None
    severities: tuple[str, ...] | None = None
    rule_id: str | None = None
    account_ids: tuple[str, ...] | None = None
    resource_type: str | None = None
    key: str | None = None

    @property
    def selects_nothing(self) -> bool:
        """An empty list of severities or accounts: no alert can match."""
        return self.severities == () or self.account_ids == ()


@dataclass(frozen=True)
class OutboxItem:
    """A leased outbox row: deliver ``notification`` to ``destination``, then report."""

    id: int
    destination: str
    attempts: int
    notification: AlertNotification


@dataclass(frozen=True)
class OutboxWait:
    """The destination's head row is not due yet (backing off, or leased elsewhere)."""

    until: datetime


@dataclass
class PairState:
    """What one (rule, resource) pair holds: its mark (time in microseconds, cause) and its
    open alert. Every alerts store reads it, moves it with :func:`advance`, writes it back."""

    mark: tuple[int, str] | None
    open_alert: Alert | None


@dataclass(frozen=True)
class Step:
    """What :func:`advance` did to a pair: the new mark; the alert to store (``None``: only
    the mark moves); the notification to make (``opened`` means a new alert)."""

    mark: tuple[int, str]
    alert: Alert | None
    notify: NotificationKind | None


def advance(pair: PairState, obs: Observation, openings: Callable[[], int]) -> Step | None:
    """Apply one observation to its pair (see the module docstring); ``None`` when it changes
    nothing (a replay, older than the mark, or nothing open and nothing to open). ``pair`` is
    updated in place; ``openings`` counts the pair's past openings (called only to open)."""
    at = to_us(obs.at)
    if pair.mark is not None and (at < pair.mark[0] or pair.mark[1] == obs.cause):
        return None  # a replay, or older than what was already applied
    alert = pair.open_alert
    if obs.unless_severity is not None and (alert is None or alert.severity == obs.unless_severity):
        return None  # the severity is already right (or nothing is open): nothing to resolve
    if alert is None and not (obs.opens and obs.holds):
        # Nothing open and nothing to open: the mark left by the last alert's opening or
        # resolution already guards against replays, so the common case writes nothing.
        return None
    pair.mark = (at, obs.cause)
    if alert is not None:
        if not obs.holds:
            resolved = alert.model_copy(
                update={"status": "resolved", "resolved_at": obs.at, "resolved_by": obs.cause}
            )
            pair.open_alert = None
            return Step(pair.mark, resolved, "resolved")
        if obs.opens:
            seen = alert.model_copy(
                update={
                    "occurrences": alert.occurrences + 1,
                    "last_seen_at": max(alert.last_seen_at, obs.at),
                }
            )
            pair.open_alert = seen
            return Step(pair.mark, seen, None)
        return Step(pair.mark, None, None)
    opened = Alert(
        alert_id=alert_id(obs.rule_id, obs.key, obs.cause),
        rule_id=obs.rule_id,
        title=obs.title,
        severity=obs.severity,
        kind=obs.kind,
        status="open",
        key=obs.key,
        resource_type=obs.resource_type,
        account_id=obs.account_id,
        region=obs.region,
        name=obs.name,
        opening=openings() + 1,
        opened_at=obs.at,
        opened_by=obs.cause,
        last_seen_at=obs.at,
        occurrences=1,
        detail=obs.detail,
    )
    pair.open_alert = opened
    return Step(pair.mark, opened, "opened")


# ---------------------------------------------------------------------------------------------
# Baselines


@dataclass(frozen=True)
class BaselineScope:
    """Which resources a pin covers: a filter left ``None`` means any."""

    resource_type: str | None = None
    account_id: str | None = None
    region: str | None = None

    def matches(self, resource_type: str, account_id: str, region: str) -> bool:
        return (
            (self.resource_type is None or self.resource_type == resource_type)
            and (self.account_id is None or self.account_id == account_id)
            and (self.region is None or self.region == region)
        )

    def contains(self, other: BaselineScope) -> bool:
        """Every resource ``other`` covers, this covers too."""
        return all(
            mine is None or mine == theirs
            for mine, theirs in (
                (self.resource_type, other.resource_type),
                (self.account_id, other.account_id),
                (self.region, other.region),
            )
        )

    def where(self) -> tuple[str, list[Any]]:
        clauses, params = equal_to(
            (
                ("resource_type", self.resource_type),
                ("account_id", self.account_id),
                ("region", self.region),
            )
        )
        return (" AND ".join(clauses) or "1"), params

    def pin_id(self, versions: Sequence[ResourceVersion], at: int) -> str:
        """The id of a pin of ``versions`` at ``at`` (µs) on this scope; a version outside
        the scope is refused (:class:`ValueError`)."""
        stray = [
            v.key for v in versions if not self.matches(v.resource_type, v.account_id, v.region)
        ]
        if stray:
            raise ValueError(f"{len(stray)} version(s) outside the pinned scope, e.g. {stray[0]}")
        return hashlib.sha256(f"{self.label()}\n{at}".encode()).hexdigest()[:16]

    def label(self) -> str:
        return (
            ", ".join(
                f"{name}={value}"
                for name, value in (
                    ("type", self.resource_type),
                    ("account", self.account_id),
                    ("region", self.region),
                )
                if value is not None
            )
            or "everything"
        )


class Pin(_Record):
    pin_id: str
    resource_type: str | None = None
    account_id: str | None = None
    region: str | None = None
    pinned_at: UtcDatetime
    count: int = Field(description="Resources recorded as the approved state")

    @property
    def scope(self) -> BaselineScope:
        return BaselineScope(self.resource_type, self.account_id, self.region)


class BaselineEntry(_Record):
    key: str
    resource_type: str
    account_id: str
    region: str
    name: str | None = None
    config_hash: str
    configuration: dict[str, Any]
    change_id: str
    valid_from: UtcDatetime
    pinned_at: UtcDatetime


DriftKind = Literal["created", "modified", "deleted"]


class DriftItem(_Record):
    """One resource whose configuration is not its pinned baseline."""

    key: str
    resource_type: str
    account_id: str
    region: str
    name: str | None = None
    drift: DriftKind = Field(description="created (no baseline), modified, or deleted since")
    pinned_at: UtcDatetime | None = Field(default=None, description="When the baseline was pinned")
    baseline_hash: str | None = None
    current_hash: str | None = None
    current_since: UtcDatetime | None = Field(
        default=None, description="Start of the current version"
    )
    changed_paths: list[str] = Field(default_factory=list)
    patch: list[JsonPatchOp] = Field(
        default_factory=list, description="RFC 6902 from the baseline to the current version"
    )


# ---------------------------------------------------------------------------------------------
# What every alerts store offers


@runtime_checkable
class AlertsBackend(Protocol):
    """Alerts, notifications, the delivery outbox and baselines: what the alert agents, the
    dispatchers, the API and ``cloudinv baseline`` use. :class:`AlertsStore` (SQLite, one
    host) and :class:`~cloudinv.sinks.dynamodb_alerts_store.DynamoAlertsStore` (shared by
    every host) implement it; ``cloudinv.sinks.factory.alerts_store`` picks one."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def apply(
        self, observations: Sequence[Observation], destinations: Sequence[str] = ()
    ) -> list[AlertNotification]: ...

    async def alerts(
        self, filters: AlertFilters | None = None, *, limit: int = 100, cursor: str | None = None
    ) -> AlertPage: ...

    async def alert(self, alert_id: str) -> Alert | None: ...

    async def open_alerts(self, rule_id: str | None = None) -> list[Alert]: ...

    async def head(self) -> int: ...

    async def notifications_after(self, seq: int, limit: int = 500) -> list[AlertNotification]: ...

    async def claim(self, destination: str, lease_s: float) -> OutboxItem | OutboxWait | None: ...

    async def delivered(self, item_id: int) -> None: ...

    async def retry_later(self, item_id: int, error: str, at: datetime) -> None: ...

    async def give_up(self, item_id: int, error: str) -> None: ...

    async def prune_delivered(self, before: datetime) -> int: ...

    async def outbox_counts(self) -> dict[tuple[str, str], int]: ...

    async def pin(
        self, scope: BaselineScope, versions: Sequence[ResourceVersion], pinned_at: datetime
    ) -> Pin: ...

    async def pins(self) -> list[Pin]: ...

    async def baselines(
        self, *, resource_type: str | None = None, account_ids: Sequence[str] | None = None
    ) -> list[BaselineEntry]: ...


# ---------------------------------------------------------------------------------------------
# The store


_SQLITE_SCHEMA = SqliteSchema(what="the alerts store", version=SCHEMA_VERSION, ddl=_SCHEMA)


class AlertsStore(SqliteBacked):
    """Alerts, notifications, outbox and baselines on one SQLite file (WAL), through
    :class:`~cloudinv.sinks.sqlite_db.SqliteDatabase`: one writer thread, reader threads,
    other processes (the API, the CLI, more workers) opening the same file."""

    SCHEMA = _SQLITE_SCHEMA
    FILE = ALERTS_FILE
    ERROR = StoreError
    THREADS = "alerts"

    # -- alerts ----------------------------------------------------------------------------

    async def apply(
        self, observations: Sequence[Observation], destinations: Sequence[str] = ()
    ) -> list[AlertNotification]:
        """Apply observations in order in one transaction; returns the notifications made
        (each already queued in the outbox for every destination)."""
        if not observations:
            return []
        now = to_us(utcnow())
        return await self._write(lambda conn: _apply(conn, observations, destinations, now))

    async def alerts(
        self, filters: AlertFilters | None = None, *, limit: int = 100, cursor: str | None = None
    ) -> AlertPage:
        """Alerts, most recently opened first."""
        check_limit(limit)
        f = filters or AlertFilters()
        if f.selects_nothing:
            return AlertPage(items=[])
        where, params = equal_to(
            (
                ("status", f.status),
                ("rule_id", f.rule_id),
                ("resource_type", f.resource_type),
                ("key", f.key),
            )
        )
        for column, values in (("severity", f.severities), ("account_id", f.account_ids)):
            if values is not None:
                clause, more = one_of(column, values)
                where.append(clause)
                params += more
        if cursor is not None:
            opened, ident = _parse_cursor(cursor)
            where.append("(opened_at, alert_id) < (?, ?)")
            params += [opened, ident]
        sql = (
            "SELECT opened_at, alert_id, body FROM alerts"
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + " ORDER BY opened_at DESC, alert_id DESC LIMIT ?"
        )
        params.append(limit + 1)

        def run(conn: sqlite3.Connection) -> list[tuple[int, str, bytes]]:
            return list(conn.execute(sql, params))

        rows, next_cursor = cut_page(await self._read(run), limit, lambda r: f"{r[0]}:{r[1]}")
        return AlertPage(
            items=[Alert.model_validate_json(row[2]) for row in rows], next_cursor=next_cursor
        )

    async def alert(self, alert_id: str) -> Alert | None:
        def run(conn: sqlite3.Connection) -> Alert | None:
            row = conn.execute("SELECT body FROM alerts WHERE alert_id = ?", (alert_id,)).fetchone()
            return None if row is None else Alert.model_validate_json(row[0])

        return await self._read(run)

    async def open_alerts(self, rule_id: str | None = None) -> list[Alert]:
        def run(conn: sqlite3.Connection) -> list[Alert]:
            if rule_id is None:
                rows = conn.execute("SELECT body FROM alerts WHERE status = 'open'")
            else:
                rows = conn.execute(
                    "SELECT body FROM alerts WHERE status = 'open' AND rule_id = ?", (rule_id,)
                )
            return [Alert.model_validate_json(r[0]) for r in rows]

        return await self._read(run)

    # -- notifications (the SSE stream) ------------------------------------------------------

    async def head(self) -> int:
        """The newest notification's sequence number (0 when there is none)."""

        def run(conn: sqlite3.Connection) -> int:
            return int(conn.execute("SELECT max(seq) FROM notifications").fetchone()[0] or 0)

        return await self._read(run)

    async def notifications_after(self, seq: int, limit: int = 500) -> list[AlertNotification]:
        """Up to ``limit`` notifications after ``seq``, in order."""

        def run(conn: sqlite3.Connection) -> list[AlertNotification]:
            rows = conn.execute(
                f"SELECT {_NOTIFICATION_COLUMNS} FROM notifications WHERE seq > ? "
                "ORDER BY seq LIMIT ?",
                (seq, limit),
            )
            return [_notification(row) for row in rows]

        return await self._read(run)

    # -- outbox ------------------------------------------------------------------------------

    async def claim(self, destination: str, lease_s: float) -> OutboxItem | OutboxWait | None:
        """Lease the oldest undelivered notification of ``destination``.

        ``None``: nothing pending. :class:`OutboxWait`: the head row is backing off or leased
        by another dispatcher; try again at ``until``.
        """
        lease_us = int(lease_s * 1_000_000)

        def run(conn: sqlite3.Connection) -> OutboxItem | OutboxWait | None:
            now = to_us(utcnow())
            row = conn.execute(
                "SELECT id, seq, attempts, next_attempt_at, lease_until FROM outbox "
                "WHERE destination = ? AND state = 'pending' ORDER BY id LIMIT 1",
                (destination,),
            ).fetchone()
            if row is None:
                return None
            item_id, seq, attempts, next_at, lease_until = row
            if next_at > now:
                return OutboxWait(from_us(next_at))
            if lease_until is not None and lease_until > now:
                return OutboxWait(from_us(lease_until))
            conn.execute(
                "UPDATE outbox SET lease_until = ? WHERE id = ?", (now + lease_us, item_id)
            )
            found = conn.execute(
                f"SELECT {_NOTIFICATION_COLUMNS} FROM notifications WHERE seq = ?", (seq,)
            ).fetchone()
            if found is None:  # cannot happen: both are written in one transaction
                conn.execute("UPDATE outbox SET state = 'dead' WHERE id = ?", (item_id,))
                return OutboxWait(from_us(now))
            return OutboxItem(item_id, destination, attempts, _notification(found))

        return await self._write(run)

    async def delivered(self, item_id: int) -> None:
        now = to_us(utcnow())
        await self._write(
            lambda conn: conn.execute(
                "UPDATE outbox SET state = 'delivered', delivered_at = ?, lease_until = NULL, "
                "attempts = attempts + 1 WHERE id = ?",
                (now, item_id),
            )
        )

    async def retry_later(self, item_id: int, error: str, at: datetime) -> None:
        await self._write(
            lambda conn: conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, "
                "lease_until = NULL, last_error = ? WHERE id = ?",
                (to_us(at), error[:1000], item_id),
            )
        )

    async def give_up(self, item_id: int, error: str) -> None:
        """The destination refused the notification for good (e.g. HTTP 400): keep the row
        as ``dead`` so the refusal stays visible, and move on."""
        await self._write(
            lambda conn: conn.execute(
                "UPDATE outbox SET state = 'dead', attempts = attempts + 1, lease_until = NULL, "
                "last_error = ? WHERE id = ?",
                (error[:1000], item_id),
            )
        )

    async def prune_delivered(self, before: datetime) -> int:
        """Forget outbox rows delivered before ``before`` (the notifications stay)."""
        cutoff = to_us(before)

        def run(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "DELETE FROM outbox WHERE state = 'delivered' AND delivered_at < ?", (cutoff,)
            )
            return int(cursor.rowcount)

        return await self._write(run)

    async def outbox_counts(self) -> dict[tuple[str, str], int]:
        """(destination, state) → rows."""

        def run(conn: sqlite3.Connection) -> dict[tuple[str, str], int]:
            rows = conn.execute(
                "SELECT destination, state, count(*) FROM outbox GROUP BY destination, state"
            )
            return {(r[0], r[1]): int(r[2]) for r in rows}

        return await self._read(run)

    # -- baselines ---------------------------------------------------------------------------

    async def pin(
        self, scope: BaselineScope, versions: Sequence[ResourceVersion], pinned_at: datetime
    ) -> Pin:
        """Replace the baselines of ``scope`` by ``versions`` (its current resources)."""
        at = to_us(pinned_at)
        pin_id = scope.pin_id(versions, at)
        rows = [
            (
                v.key,
                v.resource_type,
                v.account_id,
                v.region,
                v.name,
                v.config_hash,
                orjson.dumps(v.configuration),
                v.change_id,
                to_us(v.valid_from),
                at,
            )
            for v in versions
        ]

        def run(conn: sqlite3.Connection) -> Pin:
            where, params = scope.where()
            conn.execute(f"DELETE FROM baselines WHERE {where}", params)
            conn.executemany(
                "INSERT OR REPLACE INTO baselines (key, resource_type, account_id, region, name, "
                "config_hash, configuration, change_id, valid_from, pinned_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            for old in _pins(conn):
                if scope.contains(old.scope):
                    conn.execute("DELETE FROM pins WHERE pin_id = ?", (old.pin_id,))
            conn.execute(
                "INSERT INTO pins (pin_id, resource_type, account_id, region, pinned_at, count) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (pin_id, scope.resource_type, scope.account_id, scope.region, at, len(rows)),
            )
            return Pin(
                pin_id=pin_id,
                resource_type=scope.resource_type,
                account_id=scope.account_id,
                region=scope.region,
                pinned_at=pinned_at,
                count=len(rows),
            )

        return await self._write(run)

    async def pins(self) -> list[Pin]:
        return await self._read(_pins)

    async def baselines(
        self, *, resource_type: str | None = None, account_ids: Sequence[str] | None = None
    ) -> list[BaselineEntry]:
        where, params = equal_to((("resource_type", resource_type),))
        if account_ids is not None:
            if not account_ids:
                return []
            clause, values = one_of("account_id", account_ids)
            where.append(clause)
            params += values
        sql = (
            "SELECT key, resource_type, account_id, region, name, config_hash, configuration, "
            "change_id, valid_from, pinned_at FROM baselines"
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + " ORDER BY key"
        )

        def run(conn: sqlite3.Connection) -> list[BaselineEntry]:
            return [
                BaselineEntry(
                    key=r[0],
                    resource_type=r[1],
                    account_id=r[2],
                    region=r[3],
                    name=r[4],
                    config_hash=r[5],
                    configuration=orjson.loads(r[6]),
                    change_id=r[7],
                    valid_from=from_us(r[8]),
                    pinned_at=from_us(r[9]),
                )
                for r in conn.execute(sql, params)
            ]

        return await self._read(run)


_NOTIFICATION_COLUMNS = "seq, notification_id, kind, at, body"


def _notification(row: Sequence[Any]) -> AlertNotification:
    return AlertNotification(
        seq=row[0],
        notification_id=row[1],
        kind=row[2],
        at=from_us(row[3]),
        alert=Alert.model_validate_json(row[4]),
    )


def _pins(conn: sqlite3.Connection) -> list[Pin]:
    return [
        Pin(
            pin_id=r[0],
            resource_type=r[1],
            account_id=r[2],
            region=r[3],
            pinned_at=from_us(r[4]),
            count=r[5],
        )
        for r in conn.execute(
            "SELECT pin_id, resource_type, account_id, region, pinned_at, count FROM pins "
            "ORDER BY pinned_at"
        )
    ]


def _parse_cursor(cursor: str) -> tuple[int, str]:
    try:
        opened, ident = cursor.split(":", 1)
        return int(opened), ident
    except ValueError:
        raise StoreError(
            f"bad alerts cursor {cursor!r}: pass back next_cursor of a previous page"
        ) from None


def _apply(
    conn: sqlite3.Connection,
    observations: Sequence[Observation],
    destinations: Sequence[str],
    now: int,
) -> list[AlertNotification]:
    notifications: list[AlertNotification] = []
    for obs in observations:
        mark = conn.execute(
            "SELECT at, cause FROM marks WHERE rule_id = ? AND key = ?", (obs.rule_id, obs.key)
        ).fetchone()
        row = conn.execute(
            "SELECT body FROM alerts WHERE rule_id = ? AND key = ? AND status = 'open'",
            (obs.rule_id, obs.key),
        ).fetchone()
        pair = PairState(
            mark=None if mark is None else (int(mark[0]), str(mark[1])),
            open_alert=None if row is None else Alert.model_validate_json(row[0]),
        )

        def openings(obs: Observation = obs) -> int:
            return int(
                conn.execute(
                    "SELECT count(*) FROM alerts WHERE rule_id = ? AND key = ?",
                    (obs.rule_id, obs.key),
                ).fetchone()[0]
            )

        step = advance(pair, obs, openings)
        if step is None:
            continue
        conn.execute(
            "INSERT OR REPLACE INTO marks (rule_id, key, at, cause) VALUES (?, ?, ?, ?)",
            (obs.rule_id, obs.key, *step.mark),
        )
        alert = step.alert
        if alert is None:
            continue
        if step.notify == "opened":
            conn.execute(
                "INSERT OR IGNORE INTO alerts (alert_id, rule_id, key, account_id, resource_type, "
                "region, severity, status, opened_at, resolved_at, body) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 'open', ?, NULL, ?)",
                (
                    alert.alert_id,
                    alert.rule_id,
                    alert.key,
                    alert.account_id,
                    alert.resource_type,
                    alert.region,
                    alert.severity,
                    to_us(alert.opened_at),
                    alert.model_dump_json().encode(),
                ),
            )
        else:
            _save(conn, alert)
        if step.notify is not None:
            notifications.append(_notify(conn, alert, step.notify, obs.at, destinations, now))
    return notifications


def _save(conn: sqlite3.Connection, alert: Alert) -> None:
    conn.execute(
        "UPDATE alerts SET status = ?, resolved_at = ?, body = ? WHERE alert_id = ?",
        (
            alert.status,
            None if alert.resolved_at is None else to_us(alert.resolved_at),
            alert.model_dump_json().encode(),
            alert.alert_id,
        ),
    )


def _notify(
    conn: sqlite3.Connection,
    alert: Alert,
    kind: NotificationKind,
    at: datetime,
    destinations: Sequence[str],
    now: int,
) -> AlertNotification:
    notification_id = f"{alert.alert_id}:{kind}"
    cursor = conn.execute(
        "INSERT INTO notifications (notification_id, alert_id, kind, at, account_id, rule_id, "
        "severity, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            notification_id,
            alert.alert_id,
            kind,
            to_us(at),
            alert.account_id,
            alert.rule_id,
            alert.severity,
            alert.model_dump_json().encode(),
        ),
    )
    seq = int(cursor.lastrowid or 0)
    conn.executemany(
        "INSERT OR IGNORE INTO outbox (destination, seq, state, attempts, next_attempt_at) "
        "VALUES (?, ?, 'pending', 0, ?)",
        [(destination, seq, now) for destination in destinations],
    )
    return AlertNotification(
        notification_id=notification_id, seq=seq, kind=kind, at=at, alert=alert
    )


# ---------------------------------------------------------------------------------------------
# Baselines and drift over the inventory store


async def _current(inventory: InventoryStore, scope: BaselineScope) -> list[ResourceVersion]:
    query = VersionQuery(
        resource_type=scope.resource_type, account_id=scope.account_id, region=scope.region
    )
    return [v async for page in version_pages(inventory.list_as_of, query) for v in page]


async def pin_baseline(
    alerts: AlertsBackend,
    inventory: InventoryStore,
    scope: BaselineScope,
    *,
    pinned_at: datetime | None = None,
) -> Pin:
    """Record the current versions of ``scope`` as its approved state."""
    versions = await _current(inventory, scope)
    return await alerts.pin(scope, versions, pinned_at or utcnow())


def _narrow(
    pin: BaselineScope, resource_type: str | None, account_ids: Sequence[str] | None
) -> list[BaselineScope]:
    """The parts of a pinned scope a drift query reads (none if they do not overlap)."""
    if resource_type is not None and pin.resource_type not in (None, resource_type):
        return []
    rtype = resource_type or pin.resource_type
    if account_ids is None:
        return [BaselineScope(rtype, pin.account_id, pin.region)]
    if pin.account_id is not None:
        return [pin] if pin.account_id in account_ids else []
    return [BaselineScope(rtype, account, pin.region) for account in account_ids]


async def compute_drift(
    alerts: AlertsBackend,
    inventory: InventoryStore,
    *,
    resource_type: str | None = None,
    account_ids: Sequence[str] | None = None,
) -> list[DriftItem]:
    """Every resource of the pinned scopes (narrowed by type and accounts) that differs from
    its baseline: modified (with the patch), deleted, or created since; ordered by key."""

    current: dict[str, ResourceVersion] = {}
    for pin in await alerts.pins():
        for scope in _narrow(pin.scope, resource_type, account_ids):
            for version in await _current(inventory, scope):
                current[version.key] = version
    baselines = {
        b.key: b
        for b in await alerts.baselines(resource_type=resource_type, account_ids=account_ids)
    }
    items: list[DriftItem] = []
    for key in sorted(current.keys() | baselines.keys()):
        base, now = baselines.get(key), current.get(key)
        if base is not None and now is not None:
            if base.config_hash == now.config_hash:
                continue
            patch = json_patch(base.configuration, now.configuration)
            items.append(_drift_item(now, "modified", base, patch, changed_paths(patch)))
        elif base is not None:
            patch = json_patch(base.configuration, None)
            items.append(
                DriftItem(
                    key=key,
                    resource_type=base.resource_type,
                    account_id=base.account_id,
                    region=base.region,
                    name=base.name,
                    drift="deleted",
                    pinned_at=base.pinned_at,
                    baseline_hash=base.config_hash,
                    changed_paths=changed_paths(patch),
                    patch=patch,
                )
            )
        elif now is not None:
            patch = json_patch(None, now.configuration)
            items.append(_drift_item(now, "created", None, patch, changed_paths(patch)))
    return items


def _drift_item(
    now: ResourceVersion,
    kind: DriftKind,
    base: BaselineEntry | None,
    patch: list[JsonPatchOp],
    paths: list[str],
) -> DriftItem:
    return DriftItem(
        key=now.key,
        resource_type=now.resource_type,
        account_id=now.account_id,
        region=now.region,
        name=now.name,
        drift=kind,
        pinned_at=None if base is None else base.pinned_at,
        baseline_hash=None if base is None else base.config_hash,
        current_hash=now.config_hash,
        current_since=now.valid_from,
        changed_paths=paths,
        patch=patch,
    )
