"""The inventory store on DynamoDB: versions, changes and scan history (``storage.targets``
containing ``dynamodb``).

Every read is a ``Query`` or a ``GetItem``; nothing here ever calls ``Scan``. Calls go through
aiobotocore (never blocking the event loop), with botocore's standard retry mode for throttling
and errors, plus retries of our own for what botocore does not retry: unprocessed items of
``BatchWriteItem`` and throttled or conflicting transactions.

Tables (``<prefix>-versions``, ``-changes``, ``-scans``, ``-meta``, ``-relationships``; on-demand
billing; created by
:meth:`DynamoStore.open` when missing, checked when present). Times are integer microseconds
since the epoch, UTC; JSON documents are stored as binary (zlib-compressed above 32 KiB)::

    versions  PK key (S)  SK vf (N, valid_from)
              attributes: vt (N, valid_to; absent while current), acct, scope ("acct|type"),
              rt, rid, region, name, hash, cid (the opening change), cfg (B)
              oa, os: copies of acct and scope present only while the version is open
      GSI all_by_account   acct  / key   every version of an account, in key order
      GSI all_by_scope     scope / key   every version of a type in an account, in key order
      GSI open_by_account  oa    / key   sparse: open versions only
      GSI open_by_scope    os    / key   sparse: open versions only
    changes   PK pk (S, "YYYY-MM-DD#shard")  SK sk (S, "captured_us#commit_seq#change_id")
              attributes: key, acct, aday ("acct#YYYY-MM-DD"), rt, region, ct, ev (B)
      GSI by_key           key   / sk    one resource's changes in time order
      GSI by_account_day   aday  / sk    one account's changes of one day in time order
    scans     PK id (S, "scan_id|acct|region|type")
              attributes: acct, ord ("(BIG - finished_us)#scan_id#region#type"), status, ...
      GSI by_account       acct  / ord   an account's scans, most recently finished first
    relationships  PK src (S, the source key)  SK sk (S, "relationship|target key|vf 20 digits")
              attributes: rel, tgt, tt (target type), st (source type), vf (N), vt (N; absent
              while open), cid (the opening change)
      GSI by_target        tgt   / sk    what names a resource
    meta      PK kind (S)  SK value (S)   registries: kind "account" (every account with
              versions or scans), kind "day" (every day with changes); the change log
              (below): kind "seq" value "commit" (the counter, attribute n), kind
              "log#<seq // 1000>" value "<seq, 20 digits>" (one item per stored change)

Access patterns (all Query unless said):

- ``current(key)``, ``as_of(key, T)``: versions, ``key = K AND vf <= T``, newest first,
  ``Limit 1``, then ``vt > T`` checked on the one item. ``history``: versions ``key = K``.
  ``latest(keys)``: one such query per key, concurrently.
- ``list_as_of`` now: ``open_by_scope`` (type given) or ``open_by_account``, ``key > after``,
  region filtered server side. At a past T: ``all_by_scope`` / ``all_by_account`` filtered on
  ``vf <= T AND (vt absent OR vt > T)``. Without an account filter, one query per account of the
  ``meta`` registry, merged by key.
- ``changes``: ``by_key`` when a key is given; ``by_account_day`` per day when an account is;
  else the shards of each day of the ``meta`` day registry in the range, merged by ``sk``. The
  range and the cursor are conditions on ``sk``; other filters are filter expressions.
- ``scans``: ``by_account`` per account (the registry's when none is given), merged.
- ``current_keys_in_scope``: ``open_by_scope`` with a region filter, keys only.
- Relationships (:mod:`cloudinv.sinks.relationships`): ``relationships`` ``src = K`` (out) or
  ``by_target`` ``tgt = K`` (in), filtered on ``vf <= T AND (vt absent OR vt > T)``; a
  batch's open edges: ``src = K`` filtered on ``vt`` absent, one query per key, as its heads.
  Edges are written in the transaction of the change that opens or closes them (a change
  with more edge writes than a transaction holds spills them into the next ones of its key).

The change log (:class:`~cloudinv.sinks.store.ChangeLog`: commit order, for the live feed):

- Each transaction of ``put_changes`` reserves a block of sequence numbers for its changes
  just before it is sent (``UpdateItem ADD n :count``, ``ReturnValues UPDATED_NEW``: the block
  ends at the new ``n``) and holds, beside each change, a log item ``kind = "log#<seq //
  1000>", value = seq`` with the change's event, its filter fields and ``ra``, when the block
  was reserved. A log item exists exactly when its change is stored, and a replay is skipped
  before anything is numbered. Successive changes of one key get increasing numbers (they are
  committed in successive transactions, in order).
- ``change_log_after(seq)`` reads the log buckets from ``seq``'s on (``Query``, strongly
  consistent) up to the counter's bucket. Several writers commit out of order (11 before 10)
  and a failed transaction leaves its numbers unused forever, so a missing number (a gap) is
  waited for while it is young: the read stops before a gap unless the first item after it
  was reserved more than ``log_grace_s`` (30 s) ago. The missing number was reserved before
  that item's (one counter), and a writer never sends a transaction whose numbers are older
  than a third of the grace (it reserves new ones, leaving a gap) nor waits longer than that
  for one (it then plans the batch again from what is stored), so such a gap cannot fill any
  more and is skipped. This holds while clock skew between hosts, and the time DynamoDB takes
  to apply a request it received, stay well under the rest of the grace. A failed write thus
  delays the feed by the grace at most; it never makes it skip a change still to come.
- ``change_log_head()`` is where that read would stop: the newest log item reserved before
  the grace (read backwards from the counter's bucket), then forward through what follows.
- ``current_counts()``: ``open_by_account`` per account of the registry, projecting only
  key, vf, type and region (the open versions themselves: right whatever was replayed).
- The log is one partition at a time (a bucket), so its write rate is bounded by one
  partition's (about 1,000 items/s): a deliberate price for one total order. Log items copy
  the event (storage doubles for changes); they are not expired.

Tradeoffs, chosen deliberately:

- "Everything of type Y in account Z at T" reads every version of the scope's keys (not only
  those valid at T) and filters them server side: read cost grows with the number of versions
  per key, not with the age of T. The alternatives cost more where it matters: time-bucketed
  copies (one item per resource per day) multiply writes and storage by the retention in days;
  sort keys on valid_from cannot express "valid_from <= T < valid_to" as one range. The current
  state, the most frequent question, reads only open versions (sparse indexes).
- Index partitions are one account (or account and type): a single account with very heavy
  churn is bounded by one index partition's write rate (about 1,000 items/s). Changes are
  spread over ``change_shards`` partitions per day for the same reason.
- Each change is applied atomically with ``TransactWriteItems``: the previous version closed,
  the new one put and the change recorded, so a crash never leaves two open versions or a
  version without its change. Changes of different keys share transactions (up to 100 items,
  4 MB); successive changes of one key go in successive transactions, in order. Replays are
  skipped by the same state checks as the SQLite store (see :mod:`cloudinv.sinks.store`).
- Index reads are eventually consistent (DynamoDB's rule); reads by key use strongly
  consistent reads of the table.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import logging
import math
import re
import time
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import orjson
from botocore.exceptions import ClientError

from cloudinv.core.models import Attribution, ChangeEvent, ScanManifest
from cloudinv.sinks.dynamodb_client import (
    DynamoBacked,
    DynamoClient,
    FilterConditions,
    Item,
    retry_with_backoff,
)
from cloudinv.sinks.dynamodb_tables import CursorCodec, TableSpec
from cloudinv.sinks.relationships import EdgeReads, NodeInfo, StoredEdge
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
    change_pages,
    cut_page,
)
from cloudinv.sinks.versioning import (
    OBSERVED_LAG,
    EdgeBook,
    EdgeRow,
    EdgeStep,
    Head,
    StepKind,
    advance,
    best_attribution,
    change_refs,
    improves,
    inherit_in_batch,
    inheriting_keys,
    plan,
    rejoin,
    unattributed_refs,
)

if TYPE_CHECKING:
    from cloudinv.core.settings import Settings

__all__ = ["DynamoStats", "DynamoStore", "table_names"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_BIG = 10**19
_COMPRESS_ABOVE = 32 * 1024
_MAX_ITEM = 400 * 1024
_TX_ITEMS = 100
_TX_BYTES = 3_500_000
_BATCH_WRITE = 25
_CONFLICT_RETRIES = 5
_THROTTLE_RETRIES = 10
_CURSOR_RE = re.compile(r"\d{20}#\d{26}#.+")
_LOG_BUCKET = 1000
_SEQ_KIND, _SEQ_VALUE = "seq", "commit"
_RETRYABLE_REASONS = {"ThrottlingError", "ProvisionedThroughputExceeded", "TransactionConflict"}

VERSIONS, CHANGES, SCANS, META = "versions", "changes", "scans", "meta"
RELATIONSHIPS = "relationships"
_OBSERVED_LAG_US = int(OBSERVED_LAG.total_seconds() * 1_000_000)
_REF_KIND = "ref#"
"""meta items ``kind = "ref#<ref>", value = key``: the names events may give a stored resource."""
_WRITE_KIND = "we#"
"""meta items ``kind = "we#<ref>", value = "<event_time µs, 20 digits>#<event_id>"``, ``at``:
the attribution (JSON), ``expires``: recent write events naming the resource, for the
attribution join."""
EXPIRES = "expires"
"""The meta table's time-to-live attribute (epoch seconds): write events carry it, so
DynamoDB forgets them when the SQLite store would (``keep_since`` of ``record_write_events``:
the attribution window after the event)."""


def table_name(prefix: str, name: str) -> str:
    """The name of table ``name`` for a prefix (``cloudinv``, ``alerts`` ->
    ``cloudinv-alerts``; no dash after a prefix ending in ``-``, ``_`` or ``.``)."""
    sep = "" if not prefix or prefix[-1] in "-_." else "-"
    return f"{prefix}{sep}{name}"


def table_names(prefix: str) -> dict[str, str]:
    """The inventory store's table names for a prefix (``cloudinv`` -> ``cloudinv-versions``
    ...)."""
    return {
        name: table_name(prefix, name) for name in (VERSIONS, CHANGES, SCANS, META, RELATIONSHIPS)
    }


_SPECS: dict[str, TableSpec] = {
    VERSIONS: TableSpec(
        attributes={"key": "S", "vf": "N", "acct": "S", "scope": "S", "oa": "S", "os": "S"},
        key=("key", "vf"),
        indexes={
            "all_by_account": ("acct", "key"),
            "all_by_scope": ("scope", "key"),
            "open_by_account": ("oa", "key"),
            "open_by_scope": ("os", "key"),
        },
    ),
    CHANGES: TableSpec(
        attributes={"pk": "S", "sk": "S", "key": "S", "aday": "S"},
        key=("pk", "sk"),
        indexes={"by_key": ("key", "sk"), "by_account_day": ("aday", "sk")},
    ),
    SCANS: TableSpec(
        attributes={"id": "S", "acct": "S", "ord": "S"},
        key=("id", None),
        indexes={"by_account": ("acct", "ord")},
    ),
    META: TableSpec(
        attributes={"kind": "S", "value": "S"}, key=("kind", "value"), ttl_attribute=EXPIRES
    ),
    RELATIONSHIPS: TableSpec(
        attributes={"src": "S", "sk": "S", "tgt": "S"},
        key=("src", "sk"),
        indexes={"by_target": ("tgt", "sk")},
    ),
}


# -- values ----------------------------------------------------------------------------------


def to_us(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // _ONE_US


def from_us(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


def _day(us: int) -> str:
    return from_us(us).date().isoformat()


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}


def _pack(document: Any) -> bytes:
    raw = orjson.dumps(document)
    return zlib.compress(raw, 6) if len(raw) > _COMPRESS_ABOVE else raw


def _raw(data: bytes) -> bytes:
    """The JSON of a document stored by :func:`_pack`."""
    # JSON never starts with "x" (0x78), a zlib stream always does at the level used.
    return zlib.decompress(data) if data[:1] == b"x" else data


def _unpack(data: bytes) -> Any:
    return orjson.loads(_raw(data))


def _item_size(item: Item) -> int:
    size = 0
    for name, value in item.items():
        size += len(name)
        for kind, v in value.items():
            size += len(v) if kind in ("S", "B", "N") and isinstance(v, str | bytes) else 1
    return size


def _version(item: Item) -> ResourceVersion:
    return ResourceVersion(
        key=item["key"]["S"],
        resource_type=item["rt"]["S"],
        resource_id=item["rid"]["S"],
        account_id=item["acct"]["S"],
        region=item["region"]["S"],
        name=item["name"]["S"] if "name" in item else None,
        configuration=_unpack(item["cfg"]["B"]),
        config_hash=item["hash"]["S"],
        valid_from=from_us(int(item["vf"]["N"])),
        valid_to=from_us(int(item["vt"]["N"])) if "vt" in item else None,
        change_id=item["cid"]["S"],
    )


_CURSORS = CursorCodec(
    "c1",
    _CURSOR_RE,
    StoreError,
    "bad changes cursor {!r}: pass back next_cursor of a previous page",
)


# -- the store -------------------------------------------------------------------------------


@dataclass
class DynamoStats:
    """Counters of what the store did (retries are the interesting ones)."""

    calls: Counter[str] = field(default_factory=Counter)
    """Operations sent, by name (``Query``, ``TransactWriteItems``...), retries included."""
    unprocessed_retries: int = 0
    transaction_retries: int = 0
    conflict_reruns: int = 0
    log_renumbered: int = 0
    """Transactions whose change log numbers were reserved again (too old to write)."""
    oversize_skipped: int = 0


@dataclass
class _KeyChunk:
    """Operations of one key that must be applied together, and how many changes they hold."""

    key: str
    ops: list[Item] = field(default_factory=list)
    changes: int = 0
    size: int = 0
    logs: list[Item] = field(default_factory=list)
    """The log items of the chunk's changes, in order (numbered once the batch is planned)."""


class _Conflict(Exception):
    def __init__(self, applied: int) -> None:
        super().__init__("a conditional check failed: the store moved under the batch")
        self.applied = applied


class _Throttled(Exception):
    """A transaction cancelled for throttling or a transaction conflict: sent again."""


class _Unprocessed(Exception):
    """BatchWriteItem left items unprocessed (throttling): they are sent again."""

    def __init__(self, left: int) -> None:
        super().__init__(f"{left} items unprocessed")
        self.left = left


class DynamoStore(DynamoBacked, EdgeReads):
    """:class:`~cloudinv.sinks.store.InventoryStore` and
    :class:`~cloudinv.sinks.store.RelationshipReads` on five DynamoDB tables (see the module
    docstring)."""

    def __init__(
        self,
        table_prefix: str = "cloudinv",
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        change_shards: int = 4,
        max_concurrency: int = 16,
        write_concurrency: int = 4,
        create_tables: bool = True,
        retry_attempts: int = 10,
        log_grace_s: float = 30.0,
    ) -> None:
        if change_shards < 1:
            raise ValueError(f"change_shards must be at least 1, got {change_shards}")
        self.table_prefix = table_prefix
        self.tables = table_names(table_prefix)
        self.region = region
        self.endpoint_url = endpoint_url
        self.change_shards = change_shards
        self.write_concurrency = write_concurrency
        self.create_tables = create_tables
        self.stats = DynamoStats()
        if log_grace_s <= 0:
            raise ValueError(f"log_grace_s must be positive, got {log_grace_s}")
        self.log_grace_s = log_grace_s
        """How long a gap in the change log may still fill (see the module docstring)."""
        self._dynamo = DynamoClient(
            f"DynamoDB store {table_prefix!r}",
            [
                (self.tables[name], _SPECS[name])
                for name in (VERSIONS, CHANGES, SCANS, META, RELATIONSHIPS)
            ],
            region=region,
            endpoint_url=endpoint_url,
            max_concurrency=max_concurrency,
            write_concurrency=write_concurrency,
            create_tables=create_tables,
            retry_attempts=retry_attempts,
            error=StoreError,
        )
        self.stats.calls = self._dynamo.calls
        self._writes = self._dynamo.writes
        self._known: set[tuple[str, str]] = set()
        """Registry entries (kind, value) this process knows are stored."""

    @classmethod
    def from_settings(cls, settings: Settings) -> DynamoStore:
        storage = settings.storage
        return cls(
            storage.dynamodb_table_prefix,
            region=storage.dynamodb_region,
            endpoint_url=storage.dynamodb_endpoint_url or settings.aws.effective_endpoint(),
            write_concurrency=storage.dynamodb_write_concurrency,
        )

    # -- calls -----------------------------------------------------------------------------

    def _query(self, **params: Any) -> AsyncIterator[list[Item]]:
        """Pages of a Query, following LastEvaluatedKey."""
        return self._dynamo.pages(**params)

    async def _query_until(self, want: int, **params: Any) -> list[Item]:
        """Items of a Query (filters applied) until ``want`` of them or the end."""
        return await self._dynamo.query(want=want, **params)

    async def _gather(self, calls: Sequence[Awaitable[T]]) -> list[T]:
        return list(await asyncio.gather(*calls))

    # -- writes ----------------------------------------------------------------------------

    async def put_changes(self, batch: Sequence[ChangeEvent]) -> int:
        if not batch:
            return 0
        applied = 0

        async def apply() -> int:
            nonlocal applied
            try:
                return await self._apply(batch)
            except _Conflict as conflict:
                # Part of the batch is stored, and a condition failed: the store moved (a
                # second writer of the same keys). Planning again from what is stored now
                # skips what was applied, by the same checks as a replay.
                applied += conflict.applied
                raise

        def again(exc: BaseException, attempt: int, delay: float) -> None:
            self.stats.conflict_reruns += 1
            log.warning("DynamoDB store: conflicting write, planning the batch again")

        done = await retry_with_backoff(
            apply,
            attempts=_CONFLICT_RETRIES,
            retry_on=_Conflict,
            on_retry=again,
            gave_up=lambda exc: StoreError(
                f"DynamoDB store: a batch of {len(batch)} changes kept conflicting with another "
                f"writer ({_CONFLICT_RETRIES} attempts)"
            ),
        )
        return applied + done

    async def _apply(self, batch: Sequence[ChangeEvent]) -> int:
        keys = list(dict.fromkeys(change.key for change in batch))
        heads, open_edges = await asyncio.gather(self._heads(keys), self._open_edges(keys))
        edges = EdgeBook(open_edges)
        edge_puts: dict[int, tuple[Item, int]] = {}
        """id of an edge row this batch opened -> its put and the index of its chunk."""
        commit = time.time_ns() // 1000
        seen: set[str] = set()
        plans: dict[str, list[_KeyChunk]] = {}
        open_ops: dict[str, tuple[Item, int]] = {}
        """key -> the put of its in-batch open version (closed in place by a later change)
        and the index of that put's chunk."""
        registry: set[tuple[str, str]] = set()
        reattributions: dict[str, tuple[ChangeEvent, int]] = {}

        for index, change in enumerate(batch):
            if change.change_id in seen:
                continue
            key = change.key
            t = to_us(change.captured_at)
            head = heads.get(key)
            step = plan(change, t, head)
            if step.kind is StepKind.INVALID:
                continue
            if step.kind is StepKind.SKIP:
                if change.attribution is not None:
                    # Maybe stored already, and back with a better attribution (the join).
                    reattributions[change.change_id] = (change, t)
                continue
            current = step.closes
            version_op = self._version_put(change, t) if step.opens else None
            row = self._change_put(change, t, commit, index)
            log_op = self._log_put(change, row["Put"]["Item"]["ev"])
            ops = [op for op in (version_op, row, log_op) if op is not None]
            if any(_item_size(op["Put"]["Item"]) > _MAX_ITEM for op in ops):
                self.stats.oversize_skipped += 1
                log.error(
                    "change %s of %s is larger than a DynamoDB item (400 KB, compressed): "
                    "not stored",
                    change.change_id,
                    key,
                )
                continue
            chunks = plans.setdefault(key, [])
            step_size = sum(_item_size(op["Put"]["Item"]) for op in ops)
            edge_step = edges.apply(change, t, step)
            edge_room = len(edge_step.closed) + len(edge_step.opened)
            if (
                not chunks
                or len(chunks[-1].ops) + 4 + min(edge_room, _TX_ITEMS - 4) > _TX_ITEMS
                or (chunks[-1].size + step_size > _TX_BYTES)
            ):
                chunks.append(_KeyChunk(key))
            chunk = chunks[-1]
            # Close what is open: in place when this batch opened it in the same chunk, else
            # with an update (a stored version, or one put by an earlier chunk).
            if current is not None:
                pending = open_ops.pop(key, None)
                if pending is not None and pending[1] == len(chunks) - 1:
                    item = pending[0]["Put"]["Item"]
                    item["vt"] = _n(t)
                    item.pop("oa", None)
                    item.pop("os", None)
                else:
                    chunk.ops.append(self._version_close(key, current, t))
            chunk.ops += ops
            chunk.logs.append(log_op["Put"]["Item"])
            chunk.changes += 1
            chunk.size += step_size
            if version_op is not None:
                open_ops[key] = (version_op, len(chunks) - 1)
            self._plan_edges(edge_step, t, chunks, edge_puts)
            heads[key] = advance(change, t, step)
            seen.add(change.change_id)
            registry.add(("account", change.account_id))
            registry.add(("day", _day(t)))
            registry.update((_REF_KIND + ref, key) for ref in change_refs(change))

        if reattributions:
            for change_id in seen:
                reattributions.pop(change_id, None)
        if not plans:
            return await self._reattribute(list(reattributions.values()))
        await self._register(registry)
        rounds = max(len(chunks) for chunks in plans.values())
        applied = 0
        for r in range(rounds):
            chunks = [c[r] for c in plans.values() if len(c) > r]
            results = await asyncio.gather(
                *(self._transact(group) for group in _pack_transactions(chunks)),
                return_exceptions=True,
            )
            conflict = False
            for result in results:
                if isinstance(result, _Conflict):
                    conflict = True
                elif isinstance(result, BaseException):
                    raise result
                else:
                    applied += result
            if conflict:
                raise _Conflict(applied)
        return applied + await self._reattribute(list(reattributions.values()))

    def _plan_edges(
        self,
        step: EdgeStep,
        t: int,
        chunks: list[_KeyChunk],
        edge_puts: dict[int, tuple[Item, int]],
    ) -> None:
        """Add a change's edge writes to its key's last chunk, spilling into new chunks of
        the key when they do not fit one transaction. An edge this batch opened in the same
        chunk is closed in its put; any other with an update."""
        for row in step.closed:
            pending = edge_puts.pop(id(row), None)
            if pending is not None and pending[1] == len(chunks) - 1:
                pending[0]["Put"]["Item"]["vt"] = _n(t)
                continue
            self._add_edge_op(chunks, self._edge_close(row, t), 0)
        for row in step.opened:
            op = self._edge_put(row)
            size = _item_size(op["Put"]["Item"])
            self._add_edge_op(chunks, op, size)
            edge_puts[id(row)] = (op, len(chunks) - 1)

    def _add_edge_op(self, chunks: list[_KeyChunk], op: Item, size: int) -> None:
        chunk = chunks[-1]
        if len(chunk.ops) + 1 > _TX_ITEMS or chunk.size + size > _TX_BYTES:
            chunk = _KeyChunk(chunk.key)
            chunks.append(chunk)
        chunk.ops.append(op)
        chunk.size += size

    def _edge_put(self, row: EdgeRow) -> Item:
        item: Item = {
            "src": _s(row.source_key),
            "sk": _s(_edge_sk(row.relationship, row.target_key, row.valid_from)),
            "rel": _s(row.relationship),
            "tgt": _s(row.target_key),
            "tt": _s(row.target_type),
            "st": _s(row.source_type),
            "vf": _n(row.valid_from),
            "cid": _s(row.change_id),
        }
        return {
            "Put": {
                "TableName": self.tables[RELATIONSHIPS],
                "Item": item,
                "ConditionExpression": "attribute_not_exists(src)",
            }
        }

    def _edge_close(self, row: EdgeRow, t: int) -> Item:
        return {
            "Update": {
                "TableName": self.tables[RELATIONSHIPS],
                "Key": {
                    "src": _s(row.source_key),
                    "sk": _s(_edge_sk(row.relationship, row.target_key, row.valid_from)),
                },
                "UpdateExpression": "SET vt = :t",
                "ConditionExpression": "attribute_exists(src) AND attribute_not_exists(vt)",
                "ExpressionAttributeValues": {":t": _n(t)},
            }
        }

    async def _open_edges(self, keys: Sequence[str]) -> list[EdgeRow]:
        """The open edges of ``keys`` (the sources), strongly consistent, for EdgeBook."""

        async def one(key: str) -> list[EdgeRow]:
            rows: list[EdgeRow] = []
            async for page in self._query(
                TableName=self.tables[RELATIONSHIPS],
                KeyConditionExpression="src = :k",
                FilterExpression="attribute_not_exists(vt)",
                ExpressionAttributeValues={":k": _s(key)},
                ConsistentRead=True,
            ):
                rows += [_edge_row(item) for item in page]
            return rows

        return [row for rows in await self._gather([one(k) for k in keys]) for row in rows]

    async def _reattribute(self, changes: Sequence[tuple[ChangeEvent, int]]) -> int:
        """Update stored changes in place when they come back better attributed: the change
        item's event is replaced and a new change log item carries it to the live feed."""
        chunks: list[_KeyChunk] = []
        for change, t in changes:
            stored = await self._stored_change(change.key, change.change_id, t)
            if stored is None:
                continue
            previous = _unpack(stored["ev"]["B"]).get("attribution")
            if not improves(
                change,
                change.attribution,
                None if previous is None else Attribution.model_validate(previous),
            ):
                continue
            event = {"B": _pack(orjson.loads(change.model_dump_json(by_alias=True)))}
            log_op = self._log_put(change, event)
            update = {
                "Update": {
                    "TableName": self.tables[CHANGES],
                    "Key": {"pk": stored["pk"], "sk": stored["sk"]},
                    "UpdateExpression": "SET ev = :ev",
                    "ConditionExpression": "attribute_exists(pk)",
                    "ExpressionAttributeValues": {":ev": event},
                }
            }
            chunks.append(
                _KeyChunk(change.key, ops=[update, log_op], changes=1, logs=[log_op["Put"]["Item"]])
            )
        applied = 0
        for group in _pack_transactions(chunks):
            applied += await self._transact(group)
        return applied

    async def _stored_change(self, key: str, change_id: str, t: int) -> Item | None:
        """The stored item of one change (its key, capture time and id), or None."""
        params: dict[str, Any] = {
            "TableName": self.tables[CHANGES],
            "IndexName": "by_key",
            "KeyConditionExpression": "#k = :k AND begins_with(sk, :t)",
            "FilterExpression": "cid = :cid",
            "ExpressionAttributeNames": {"#k": "key"},
            "ExpressionAttributeValues": {
                ":k": _s(key),
                ":t": _s(f"{t:020d}#"),
                ":cid": _s(change_id),
            },
        }
        async for page in self._query(**params):
            if page:
                return page[0]
        return None

    async def _reserve(self, logs: Sequence[Item]) -> float:
        """Number log items (in order) with a block of the counter; returns when the block
        was asked for (``time.monotonic``)."""
        started = time.monotonic()
        if not logs:
            return started  # a transaction of spilled edge writes only: no change to number
        result = await self._call(
            "update_item",
            TableName=self.tables[META],
            Key={"kind": _s(_SEQ_KIND), "value": _s(_SEQ_VALUE)},
            UpdateExpression="ADD n :count",
            ExpressionAttributeValues={":count": _n(len(logs))},
            ReturnValues="UPDATED_NEW",
        )
        reserved_us = time.time_ns() // 1000
        last = int(result["Attributes"]["n"]["N"])
        for seq, item in enumerate(logs, start=last - len(logs) + 1):
            item["kind"] = _s(f"log#{seq // _LOG_BUCKET}")
            item["value"] = _s(f"{seq:020d}")
            item["ra"] = _n(reserved_us)
        return started

    def _log_put(self, change: ChangeEvent, event: dict[str, Any]) -> Item:
        """The change's log item, numbered by :meth:`_reserve`."""
        return {
            "Put": {
                "TableName": self.tables[META],
                "Item": {
                    "kind": _s("log#"),
                    "value": _s(""),
                    "key": _s(change.key),
                    "rt": _s(change.resource_type),
                    "acct": _s(change.account_id),
                    "region": _s(change.region),
                    "ct": _s(change.change_type),
                    "ev": event,
                },
                "ConditionExpression": "attribute_not_exists(kind)",
            }
        }

    def _version_put(self, change: ChangeEvent, t: int) -> Item:
        scope = f"{change.account_id}|{change.resource_type}"
        item: Item = {
            "key": _s(change.key),
            "vf": _n(t),
            "acct": _s(change.account_id),
            "scope": _s(scope),
            "oa": _s(change.account_id),
            "os": _s(scope),
            "rt": _s(change.resource_type),
            "rid": _s(change.resource_id),
            "region": _s(change.region),
            "hash": _s(change.after_hash or ""),
            "cid": _s(change.change_id),
            "cfg": {"B": _pack(change.configuration)},
        }
        if change.name is not None:
            item["name"] = _s(change.name)
        return {
            "Put": {
                "TableName": self.tables[VERSIONS],
                "Item": item,
                "ConditionExpression": "attribute_not_exists(#k)",
                "ExpressionAttributeNames": {"#k": "key"},
            }
        }

    def _version_close(self, key: str, current: Head, t: int) -> Item:
        return {
            "Update": {
                "TableName": self.tables[VERSIONS],
                "Key": {"key": _s(key), "vf": _n(current.valid_from)},
                "UpdateExpression": "SET vt = :t REMOVE oa, os",
                "ConditionExpression": "attribute_not_exists(vt) AND cid = :cid",
                "ExpressionAttributeValues": {":t": _n(t), ":cid": _s(current.change_id)},
            }
        }

    def _change_put(self, change: ChangeEvent, t: int, commit: int, index: int) -> Item:
        day = _day(t)
        shard = zlib.crc32(change.key.encode()) % self.change_shards
        return {
            "Put": {
                "TableName": self.tables[CHANGES],
                "Item": {
                    "pk": _s(f"{day}#{shard}"),
                    "sk": _s(f"{t:020d}#{commit:020d}{index:06d}#{change.change_id}"),
                    "key": _s(change.key),
                    "acct": _s(change.account_id),
                    "aday": _s(f"{change.account_id}#{day}"),
                    "rt": _s(change.resource_type),
                    "region": _s(change.region),
                    "ct": _s(change.change_type),
                    "cid": _s(change.change_id),
                    "ev": {"B": _pack(orjson.loads(change.model_dump_json(by_alias=True)))},
                },
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }

    async def _transact(self, chunks: Sequence[_KeyChunk]) -> int:
        """One TransactWriteItems of whole key chunks; returns the changes it applied.

        Its change log items are numbered just before it is sent, and numbered again (the old
        numbers left as a gap) when their block is older than a third of the log's grace:
        readers skip a gap once older than the grace (see the module docstring)."""
        ops = [op for chunk in chunks for op in chunk.ops]
        logs = [item for chunk in chunks for item in chunk.logs]
        deadline = self.log_grace_s / 3
        reserved: float | None = None
        token = ""

        async def send() -> int:
            nonlocal reserved, token
            try:
                async with self._writes:
                    for _ in range(_CONFLICT_RETRIES):
                        if reserved is not None and time.monotonic() - reserved <= deadline:
                            break
                        if reserved is not None:
                            self.stats.log_renumbered += 1
                            log.warning("DynamoDB store: numbers reserved too long ago, again")
                        reserved = await self._reserve(logs)
                        token = hashlib.sha256(orjson.dumps(ops, default=_bytes_hex)).hexdigest()[
                            :36
                        ]
                    else:
                        raise StoreError(
                            "DynamoDB store: reserving change log numbers keeps taking longer "
                            f"than a third of log_grace_s ({self.log_grace_s} s)"
                        )
                    try:
                        async with asyncio.timeout(deadline):
                            await self._call(
                                "transact_write_items", TransactItems=ops, ClientRequestToken=token
                            )
                    except TimeoutError:
                        # Applied or not, unknown: plan the batch again from what is stored
                        # (an applied change is skipped; the others get new numbers).
                        log.warning("DynamoDB store: a transaction took too long, planning again")
                        raise _Conflict(0) from None
                return sum(chunk.changes for chunk in chunks)
            except ClientError as exc:
                code = exc.response["Error"]["Code"]
                if code != "TransactionCanceledException":
                    raise StoreError(f"DynamoDB TransactWriteItems failed: {exc}") from exc
                reasons = {
                    r.get("Code") for r in exc.response.get("CancellationReasons", []) or []
                } - {"None", None}
                if "ConditionalCheckFailed" in reasons:
                    raise _Conflict(0) from exc
                if not reasons or reasons <= _RETRYABLE_REASONS:
                    raise _Throttled(str(sorted(reasons))) from exc
                raise StoreError(f"DynamoDB transaction cancelled: {sorted(reasons)}") from exc

        def again(exc: BaseException, attempt: int, delay: float) -> None:
            self.stats.transaction_retries += 1

        return await retry_with_backoff(
            send,
            attempts=_THROTTLE_RETRIES,
            retry_on=_Throttled,
            on_retry=again,
            gave_up=lambda exc: StoreError(
                f"DynamoDB TransactWriteItems still throttled after {_THROTTLE_RETRIES} attempts"
            ),
        )

    async def _batch_write(self, table: str, items: Sequence[Item]) -> None:
        """BatchWriteItem in requests of 25, retrying unprocessed items with backoff."""
        requests = [{"PutRequest": {"Item": item}} for item in items]
        for start in range(0, len(requests), _BATCH_WRITE):
            await self._batch_write_request(table, requests[start : start + _BATCH_WRITE])

    async def _batch_write_request(self, table: str, requests: list[Item]) -> None:
        pending: Item = {table: requests}

        async def send() -> None:
            nonlocal pending
            async with self._writes:
                result = await self._call("batch_write_item", RequestItems=pending)
            pending = result.get("UnprocessedItems") or {}
            if pending:
                raise _Unprocessed(sum(len(v) for v in pending.values()))

        def again(exc: BaseException, attempt: int, delay: float) -> None:
            self.stats.unprocessed_retries += 1

        await retry_with_backoff(
            send,
            attempts=_THROTTLE_RETRIES + 1,
            retry_on=_Unprocessed,
            on_retry=again,
            gave_up=lambda exc: StoreError(
                f"DynamoDB BatchWriteItem: {exc.left} items of {table} still unprocessed "
                f"after {_THROTTLE_RETRIES} retries"
            ),
        )

    async def _register(self, entries: set[tuple[str, str]]) -> None:
        new = sorted(entries - self._known)
        if not new:
            return
        await self._batch_write(
            self.tables[META], [{"kind": _s(kind), "value": _s(value)} for kind, value in new]
        )
        self._known.update(new)

    async def record_scans(self, batch: Sequence[ScanManifest]) -> int:
        if not batch:
            return 0
        items: dict[str, Item] = {}
        for m in batch:
            ident = f"{m.scan_id}|{m.account_id}|{m.region}|{m.resource_type}"
            finished = to_us(m.finished_at)
            items[ident] = {
                "id": _s(ident),
                "acct": _s(m.account_id),
                "ord": _s(f"{_BIG - finished:020d}#{m.scan_id}#{m.region}#{m.resource_type}"),
                "scan_id": _s(m.scan_id),
                "region": _s(m.region),
                "rt": _s(m.resource_type),
                "status": _s(m.status),
                "started": _n(to_us(m.started_at)),
                "finished": _n(finished),
                "count": _n(m.count),
                "errors": {"B": orjson.dumps([e.model_dump(mode="json") for e in m.errors])},
            }
        await self._register({("account", m.account_id) for m in batch})
        await self._batch_write(self.tables[SCANS], list(items.values()))
        return len(batch)

    # -- the attribution join (cloudinv.sinks.store.AttributionJoin) -------------------------

    async def record_write_events(
        self, events: Sequence[WriteEvent], *, keep_since: datetime | None = None
    ) -> list[ChangeEvent]:
        """Write events go to the meta table (``we#<ref>``). Each expires (DynamoDB's time to
        live, attribute ``expires``) as long after its event as ``keep_since`` is before now:
        when the SQLite store, given the same ``keep_since``, would delete it."""
        keep_for = None if keep_since is None else datetime.now(UTC) - keep_since
        items: dict[tuple[str, str], Item] = {}
        for e in events:
            a = e.attribution
            value = f"{to_us(a.event_time):020d}#{a.event_id}"
            item: Item = {"at": {"B": a.model_dump_json().encode()}}
            if keep_for is not None:
                item[EXPIRES] = _n(math.ceil((a.event_time + keep_for).timestamp()))
            for ref in e.refs:
                items[(ref, value)] = {
                    "kind": _s(_WRITE_KIND + ref),
                    "value": _s(value),
                    **item,
                }
        if not items:
            return []
        await self._batch_write(self.tables[META], list(items.values()))
        # Read after the write (strongly consistent): a change stored before is seen here.
        refs = sorted({ref for ref, _ in items})
        key_lists = await self._gather([self._meta_values(_REF_KIND + ref) for ref in refs])
        keys_by_ref = dict(zip(refs, key_lists, strict=True))
        candidates: dict[str, list[Attribution]] = {}
        for e in events:
            for key in {k for ref in e.refs for k in keys_by_ref.get(ref, ())}:
                candidates.setdefault(key, []).append(e.attribution)
        if not candidates:
            return []
        earliest = min(to_us(e.attribution.event_time) for e in events) - _OBSERVED_LAG_US
        stored = await self._gather([self._changes_of_key(k, earliest) for k in candidates])
        # by_key is in sk order: capture time, then commit order.
        return [
            update
            for key, history in zip(candidates, stored, strict=True)
            for update in rejoin(history, candidates[key])
        ]

    async def attribution_updates(self, changes: Sequence[ChangeEvent]) -> list[ChangeEvent]:
        refs = unattributed_refs(changes)
        updates: dict[str, ChangeEvent] = {}
        if refs:
            unique = sorted({ref for rs in refs.values() for ref in rs})
            found = await self._gather([self._write_events(ref) for ref in unique])
            by_ref = dict(zip(unique, found, strict=True))
            for change in changes:
                if change.change_id not in refs:
                    continue
                candidates = [a for ref in refs[change.change_id] for a in by_ref[ref]]
                best = best_attribution(change, candidates) if candidates else None
                if best is not None:
                    updates[change.change_id] = change.model_copy(update={"attribution": best})
        joined = [updates.get(c.change_id, c) for c in changes]
        keys = inheriting_keys(joined)
        if keys:
            firsts = list(keys.items())
            previous = await self._gather([self._change_before(k, to_us(t)) for k, t in firsts])
            found_previous = {
                key: change
                for (key, _), change in zip(firsts, previous, strict=True)
                if change is not None
            }
            for update in inherit_in_batch(joined, keys, found_previous):
                updates[update.change_id] = update
        return list(updates.values())

    async def _change_before(self, key: str, t: int) -> ChangeEvent | None:
        """The key's stored change captured last before ``t`` (µs)."""
        page = await self._call(
            "query",
            TableName=self.tables[CHANGES],
            IndexName="by_key",
            KeyConditionExpression="#k = :k AND sk < :t",
            ExpressionAttributeNames={"#k": "key"},
            ExpressionAttributeValues={":k": _s(key), ":t": _s(f"{max(t, 0):020d}")},
            ScanIndexForward=False,
            Limit=1,
        )
        items = page.get("Items", [])
        return ChangeEvent.model_validate_json(_raw(items[0]["ev"]["B"])) if items else None

    async def attribution_figure(self, since: datetime) -> AttributionFigure:
        query = ChangeQuery(since=since, limit=1000)
        changes = [c async for page in change_pages(self, query) for c in page]
        cache: dict[str, list[Attribution]] = {}
        matched = attributed = inherited = 0
        for change in changes:
            inh = change.attribution is not None and change.attribution.match == "inherited"
            inherited += inh
            refs = change_refs(change)
            for ref in refs:
                if ref not in cache:
                    cache[ref] = await self._write_events(ref)
            bare = change.model_copy(update={"attribution": None})
            if best_attribution(bare, [a for ref in refs for a in cache[ref]]) is not None:
                matched += 1
                attributed += change.attribution is not None and not inh
        return AttributionFigure(
            since=since,
            changes=len(changes),
            matched=matched,
            attributed=attributed,
            inherited=inherited,
        )

    async def _meta_values(self, kind: str) -> list[str]:
        out: list[str] = []
        async for page in self._query(
            TableName=self.tables[META],
            KeyConditionExpression="kind = :k",
            ExpressionAttributeValues={":k": _s(kind)},
            ConsistentRead=True,
        ):
            out += [item["value"]["S"] for item in page]
        return out

    async def _write_events(self, ref: str) -> list[Attribution]:
        out: list[Attribution] = []
        async for page in self._query(
            TableName=self.tables[META],
            KeyConditionExpression="kind = :k",
            ExpressionAttributeValues={":k": _s(_WRITE_KIND + ref)},
            ConsistentRead=True,
        ):
            out += [Attribution.model_validate_json(item["at"]["B"]) for item in page]
        return out

    async def _changes_of_key(self, key: str, since_us: int) -> list[ChangeEvent]:
        out: list[ChangeEvent] = []
        async for page in self._query(
            TableName=self.tables[CHANGES],
            IndexName="by_key",
            KeyConditionExpression="#k = :k AND sk >= :t",
            ExpressionAttributeNames={"#k": "key"},
            ExpressionAttributeValues={":k": _s(key), ":t": _s(f"{max(since_us, 0):020d}")},
        ):
            out += [ChangeEvent.model_validate_json(_raw(item["ev"]["B"])) for item in page]
        return out

    # -- reads -----------------------------------------------------------------------------

    async def _latest_item(
        self, key: str, at: int | None = None, *, full: bool = True
    ) -> Item | None:
        names = {"#k": "key"}
        values: dict[str, Any] = {":k": _s(key)}
        condition = "#k = :k"
        if at is not None:
            condition += " AND vf <= :t"
            values[":t"] = _n(at)
        params: dict[str, Any] = {
            "TableName": self.tables[VERSIONS],
            "KeyConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            "ScanIndexForward": False,
            "Limit": 1,
            "ConsistentRead": True,
        }
        if not full:
            params["ProjectionExpression"] = "vf, vt, #h, cid"
            names["#h"] = "hash"
        page = await self._call("query", **params)
        items = page.get("Items", [])
        return items[0] if items else None

    async def _heads(self, keys: Sequence[str]) -> dict[str, Head]:
        items = await self._gather([self._latest_item(k, full=False) for k in keys])
        return {
            key: Head(
                change_id=item["cid"]["S"],
                config_hash=item["hash"]["S"],
                valid_from=int(item["vf"]["N"]),
                valid_to=int(item["vt"]["N"]) if "vt" in item else None,
            )
            for key, item in zip(keys, items, strict=True)
            if item is not None
        }

    # -- relationships (cloudinv.sinks.store.RelationshipReads, cloudinv.sinks.relationships) ---

    async def edges_at(
        self, keys: Sequence[str], at: datetime | None, direction: Literal["out", "in"]
    ) -> list[StoredEdge]:
        values: dict[str, Any] = {}
        if at is None:
            valid = "attribute_not_exists(vt)"
        else:
            valid = "vf <= :t AND (attribute_not_exists(vt) OR vt > :t)"
            values[":t"] = _n(to_us(at))

        async def one(key: str) -> list[StoredEdge]:
            params: dict[str, Any] = {
                "TableName": self.tables[RELATIONSHIPS],
                "FilterExpression": valid,
                "ExpressionAttributeValues": {**values, ":k": _s(key)},
            }
            if direction == "out":
                params.update(KeyConditionExpression="src = :k", ConsistentRead=True)
            else:
                params.update(IndexName="by_target", KeyConditionExpression="tgt = :k")
            found: list[StoredEdge] = []
            async for page in self._query(**params):
                found += [
                    StoredEdge(
                        item["src"]["S"],
                        item["st"]["S"],
                        item["rel"]["S"],
                        item["tgt"]["S"],
                        item["tt"]["S"],
                    )
                    for item in page
                ]
            return found

        unique = list(dict.fromkeys(keys))
        return [edge for edges in await self._gather([one(k) for k in unique]) for edge in edges]

    async def nodes_at(self, keys: Sequence[str], at: datetime | None) -> dict[str, NodeInfo]:
        t = None if at is None else to_us(at)

        async def one(key: str) -> NodeInfo | None:
            values: dict[str, Any] = {":k": _s(key)}
            condition = "#k = :k"
            if t is not None:
                condition += " AND vf <= :t"
                values[":t"] = _n(t)
            page = await self._call(
                "query",
                TableName=self.tables[VERSIONS],
                KeyConditionExpression=condition,
                ExpressionAttributeNames={"#k": "key", "#n": "name", "#r": "region"},
                ExpressionAttributeValues=values,
                ProjectionExpression="vf, vt, rt, acct, #r, #n",
                ScanIndexForward=False,
                Limit=1,
                ConsistentRead=True,
            )
            items = page.get("Items", [])
            if not items:
                return None
            item = items[0]
            if "vt" in item and (t is None or int(item["vt"]["N"]) <= t):
                return None
            return NodeInfo(
                key=key,
                type=item["rt"]["S"],
                account_id=item["acct"]["S"],
                region=item["region"]["S"],
                name=item["name"]["S"] if "name" in item else None,
            )

        unique = list(dict.fromkeys(keys))
        found = await self._gather([one(k) for k in unique])
        return {node.key: node for node in found if node is not None}

    # -- versions ----------------------------------------------------------------------------

    async def current(self, key: str) -> ResourceVersion | None:
        item = await self._latest_item(key)
        return None if item is None or "vt" in item else _version(item)

    async def as_of(self, key: str, at: datetime) -> ResourceVersion | None:
        t = to_us(at)
        item = await self._latest_item(key, t)
        if item is None or ("vt" in item and int(item["vt"]["N"]) <= t):
            return None
        return _version(item)

    async def history(self, key: str) -> list[ResourceVersion]:
        out: list[ResourceVersion] = []
        async for page in self._query(
            TableName=self.tables[VERSIONS],
            KeyConditionExpression="#k = :k",
            ExpressionAttributeNames={"#k": "key"},
            ExpressionAttributeValues={":k": _s(key)},
            ConsistentRead=True,
        ):
            out += [_version(item) for item in page]
        return out

    async def latest(self, keys: Sequence[str]) -> dict[str, ResourceVersion]:
        unique = list(dict.fromkeys(keys))
        items = await self._gather([self._latest_item(k) for k in unique])
        return {k: _version(item) for k, item in zip(unique, items, strict=True) if item}

    async def _registry(self, kind: str, lo: str | None = None, hi: str | None = None) -> list[str]:
        """Values of one registry of the meta table, optionally within ``[lo, hi]``."""
        params: dict[str, Any] = {
            "TableName": self.tables[META],
            "KeyConditionExpression": "kind = :kind",
            "ExpressionAttributeValues": {":kind": _s(kind)},
            "ConsistentRead": True,
        }
        if lo is not None and hi is not None:
            params["KeyConditionExpression"] += " AND #v BETWEEN :lo AND :hi"
            params["ExpressionAttributeNames"] = {"#v": "value"}
            params["ExpressionAttributeValues"].update({":lo": _s(lo), ":hi": _s(hi)})
        out: list[str] = []
        async for page in self._query(**params):
            out += [item["value"]["S"] for item in page]
        return out

    async def list_as_of(self, query: VersionQuery) -> list[ResourceVersion]:
        q = query
        t = None if q.at is None else to_us(q.at)
        accounts = [q.account_id] if q.account_id is not None else await self._registry("account")
        lists = await self._gather(
            [
                self._list_account(a, q.resource_type, q.region, t, q.limit, q.after_key)
                for a in accounts
            ]
        )
        merged = heapq.merge(*lists, key=lambda item: item["key"]["S"])
        return [_version(item) for _, item in zip(range(q.limit), merged, strict=False)]

    async def _list_account(
        self,
        account: str,
        resource_type: str | None,
        region: str | None,
        t: int | None,
        limit: int,
        after_key: str | None,
    ) -> list[Item]:
        if resource_type is not None:
            index = "open_by_scope" if t is None else "all_by_scope"
            partition = ("os" if t is None else "scope", f"{account}|{resource_type}")
        else:
            index = "open_by_account" if t is None else "all_by_account"
            partition = ("oa" if t is None else "acct", account)
        names = {"#p": partition[0]}
        values: dict[str, Any] = {":p": _s(partition[1])}
        condition = "#p = :p"
        if after_key is not None:
            condition += " AND #k > :after"
            names["#k"] = "key"
            values[":after"] = _s(after_key)
        filters = []
        if region is not None:
            filters.append("#r = :r")
            names["#r"] = "region"
            values[":r"] = _s(region)
        if t is not None:
            filters.append("vf <= :t AND (attribute_not_exists(vt) OR vt > :t)")
            values[":t"] = _n(t)
        params: dict[str, Any] = {
            "TableName": self.tables[VERSIONS],
            "IndexName": index,
            "KeyConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
        if filters:
            params["FilterExpression"] = " AND ".join(filters)
        items = await self._query_until(limit + 1, **params)
        # An index is eventually consistent: while a close propagates, two versions of a key
        # may both look valid. Keep the newest, once.
        out: list[Item] = []
        for item in items:
            if out and out[-1]["key"]["S"] == item["key"]["S"]:
                if int(item["vf"]["N"]) > int(out[-1]["vf"]["N"]):
                    out[-1] = item
                continue
            out.append(item)
        return out[:limit]

    async def current_keys_in_scope(
        self, account_id: str, region: str, resource_type: str
    ) -> set[str]:
        keys: set[str] = set()
        async for page in self._query(
            TableName=self.tables[VERSIONS],
            IndexName="open_by_scope",
            KeyConditionExpression="os = :p",
            FilterExpression="#r = :r",
            ProjectionExpression="#k",
            ExpressionAttributeNames={"#r": "region", "#k": "key"},
            ExpressionAttributeValues={
                ":p": _s(f"{account_id}|{resource_type}"),
                ":r": _s(region),
            },
        ):
            keys.update(item["key"]["S"] for item in page)
        return keys

    async def changes(self, query: ChangeQuery) -> ChangePage:
        f, limit = query.filters, query.limit
        lo = f"{max(to_us(query.since), 0):020d}" if query.since is not None else "0"
        if query.cursor is not None:
            # sk holds only digits, "#" and the change id: a space sorts before all of them.
            lo = max(lo, _CURSORS.decode(query.cursor) + " ")
        hi = "~"
        if query.until is not None:
            end = to_us(query.until)
            if end <= 0:
                return ChangePage(items=[])
            hi = f"{end - 1:020d}~"
        if lo > hi:
            return ChangePage(items=[])
        conditions = FilterConditions()
        # The partition is the key, else the account's day, else the day's shards; the
        # account is a filter only when the key is the partition.
        conditions.equal(
            (
                ("rt", f.resource_type),
                ("region", f.region),
                ("acct", f.account_id if f.key is not None else None),
            )
        )
        if f.change_types is not None:
            if not f.change_types:
                return ChangePage(items=[])
            conditions.one_of("ct", f.change_types)
        names = conditions.names
        values: dict[str, Any] = {**conditions.values, ":lo": _s(lo), ":hi": _s(hi)}
        filter_expression = conditions.expression()
        need = limit + 1

        async def stream(index: str | None, attr: str, value: str, want: int) -> list[Item]:
            params: dict[str, Any] = {
                "TableName": self.tables[CHANGES],
                "KeyConditionExpression": "#pa = :pv AND sk BETWEEN :lo AND :hi",
                "ExpressionAttributeNames": {**names, "#pa": attr},
                "ExpressionAttributeValues": {**values, ":pv": _s(value)},
            }
            if index is not None:
                params["IndexName"] = index
            else:
                params["ConsistentRead"] = True
            if filter_expression is not None:
                params["FilterExpression"] = filter_expression
            return await self._query_until(want, **params)

        found: list[Item] = []
        if f.key is not None:
            found = await stream("by_key", "key", f.key, need)
        else:
            first_day = _day(int(lo[:20]))
            last_day = "9999-12-31" if hi == "~" else _day(int(hi[:20]))
            for day in await self._registry("day", first_day, last_day):
                want = need - len(found)
                if f.account_id is not None:
                    got = await stream("by_account_day", "aday", f"{f.account_id}#{day}", want)
                else:
                    shards = await self._gather(
                        [stream(None, "pk", f"{day}#{s}", want) for s in range(self.change_shards)]
                    )
                    got = list(heapq.merge(*shards, key=lambda item: item["sk"]["S"]))
                found += got[:want]
                if len(found) >= need:
                    break
        page, next_cursor = cut_page(found, limit, lambda item: _CURSORS.encode(item["sk"]["S"]))
        items = [ChangeEvent.model_validate(_unpack(item["ev"]["B"])) for item in page]
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
        accounts = [account_id] if account_id is not None else await self._registry("account")
        conditions = FilterConditions()
        conditions.equal((("region", region), ("rt", resource_type), ("scan_id", scan_id)))
        names, values = conditions.names, conditions.values
        filter_expression = conditions.expression()
        condition = "acct = :a"
        if since is not None:
            condition += " AND ord <= :since"
            values[":since"] = _s(f"{_BIG - to_us(since):020d}~")

        async def one(account: str) -> list[Item]:
            params: dict[str, Any] = {
                "TableName": self.tables[SCANS],
                "IndexName": "by_account",
                "KeyConditionExpression": condition,
                "ExpressionAttributeValues": {**values, ":a": _s(account)},
            }
            if names:
                params["ExpressionAttributeNames"] = names
            if filter_expression is not None:
                params["FilterExpression"] = filter_expression
            return await self._query_until(limit, **params)

        lists = await self._gather([one(a) for a in accounts])
        merged = heapq.merge(*lists, key=lambda item: item["ord"]["S"])
        return [
            ScanRecord(
                scan_id=item["scan_id"]["S"],
                account_id=item["acct"]["S"],
                region=item["region"]["S"],
                resource_type=item["rt"]["S"],
                status=item["status"]["S"],
                started_at=from_us(int(item["started"]["N"])),
                finished_at=from_us(int(item["finished"]["N"])),
                count=int(item["count"]["N"]),
                errors=orjson.loads(item["errors"]["B"]),
            )
            for _, item in zip(range(limit), merged, strict=False)
        ]

    # -- the change log (cloudinv.sinks.store.ChangeLog: the live feed, counts) ------------------

    async def _reserved(self) -> int:
        """The last sequence number reserved (0 before the first)."""
        result = await self._call(
            "get_item",
            TableName=self.tables[META],
            Key={"kind": _s(_SEQ_KIND), "value": _s(_SEQ_VALUE)},
            ConsistentRead=True,
        )
        item = result.get("Item")
        return int(item["n"]["N"]) if item else 0

    def _log_query(self, bucket: int, *, after: int | None = None, forward: bool = True) -> Item:
        params: dict[str, Any] = {
            "TableName": self.tables[META],
            "KeyConditionExpression": "kind = :b",
            "ExpressionAttributeValues": {":b": _s(f"log#{bucket}")},
            "ConsistentRead": True,
            "ScanIndexForward": forward,
        }
        if after is not None:
            params["KeyConditionExpression"] += " AND #v > :after"
            params["ExpressionAttributeNames"] = {"#v": "value"}
            params["ExpressionAttributeValues"][":after"] = _s(f"{after:020d}")
        return params

    async def change_log_head(self) -> int:
        # The newest item reserved before the grace: every number up to it is settled (stored
        # or lost for good); then forward from there, as a reader would go.
        reserved = await self._reserved()
        settled_before = time.time_ns() // 1000 - int(self.log_grace_s * 1e6)
        position = 0
        for bucket in range(reserved // _LOG_BUCKET, -1, -1):
            found = None
            params = self._log_query(bucket, forward=False)
            params["ProjectionExpression"] = "#v, ra"
            params["ExpressionAttributeNames"] = {"#v": "value"}
            params["Limit"] = 100
            async for page in self._query(**params):
                found = next((i for i in page if int(i["ra"]["N"]) < settled_before), None)
                if found is not None:
                    break
            if found is not None:
                position = int(found["value"]["S"])
                break
        while True:
            rows = await self.change_log_after(position, 1000)
            if not rows:
                return position
            position = rows[-1].seq

    async def change_log_after(self, seq: int, limit: int) -> list[LoggedChange]:
        if limit < 1:
            return []
        reserved = await self._reserved()
        settled_before = time.time_ns() // 1000 - int(self.log_grace_s * 1e6)
        out: list[LoggedChange] = []
        expected = seq + 1
        bucket = max(seq, 0) // _LOG_BUCKET
        while bucket <= reserved // _LOG_BUCKET:
            items = await self._query_until(
                limit - len(out), **self._log_query(bucket, after=expected - 1)
            )
            for item in items:
                number = int(item["value"]["S"])
                if number != expected and int(item["ra"]["N"]) >= settled_before:
                    return out  # a gap that may still fill: wait for it
                out.append(
                    LoggedChange(
                        number,
                        item["key"]["S"],
                        item["rt"]["S"],
                        item["acct"]["S"],
                        item["region"]["S"],
                        item["ct"]["S"],
                        _raw(item["ev"]["B"]),
                    )
                )
                expected = number + 1
            if len(out) >= limit:
                return out
            bucket += 1
        return out

    async def current_counts(self) -> dict[tuple[str, str, str], int]:
        async def one(account: str) -> Counter[tuple[str, str, str]]:
            counts: Counter[tuple[str, str, str]] = Counter()
            last: str | None = None
            async for page in self._query(
                TableName=self.tables[VERSIONS],
                IndexName="open_by_account",
                KeyConditionExpression="oa = :a",
                ProjectionExpression="#k, rt, #r",
                ExpressionAttributeNames={"#k": "key", "#r": "region"},
                ExpressionAttributeValues={":a": _s(account)},
            ):
                for item in page:
                    key = item["key"]["S"]
                    # An index is eventually consistent: a key's closed version may still
                    # show beside its new one for a moment. Count each key once.
                    if key == last:
                        continue
                    last = key
                    counts[(item["rt"]["S"], account, item["region"]["S"])] += 1
            return counts

        total: Counter[tuple[str, str, str]] = Counter()
        for counts in await self._gather([one(a) for a in await self._registry("account")]):
            total.update(counts)
        return dict(total)


# -- helpers ---------------------------------------------------------------------------------


def _bytes_hex(value: Any) -> str:
    if isinstance(value, bytes):
        return hashlib.sha256(value).hexdigest()
    raise TypeError(type(value).__name__)


def _edge_sk(relationship: str, target_key: str, valid_from: int) -> str:
    return f"{relationship}|{target_key}|{valid_from:020d}"


def _edge_row(item: Item) -> EdgeRow:
    return EdgeRow(
        source_key=item["src"]["S"],
        source_type=item["st"]["S"],
        relationship=item["rel"]["S"],
        target_key=item["tgt"]["S"],
        target_type=item["tt"]["S"],
        valid_from=int(item["vf"]["N"]),
        valid_to=int(item["vt"]["N"]) if "vt" in item else None,
        change_id=item["cid"]["S"],
    )


def _pack_transactions(chunks: Sequence[_KeyChunk]) -> list[list[_KeyChunk]]:
    """Whole key chunks grouped into transactions of at most 100 items and ~3.5 MB."""
    groups: list[list[_KeyChunk]] = []
    items = size = 0
    for chunk in chunks:
        if groups and (items + len(chunk.ops) > _TX_ITEMS or size + chunk.size > _TX_BYTES):
            groups.append([])
            items = size = 0
        if not groups:
            groups.append([])
        groups[-1].append(chunk)
        items += len(chunk.ops)
        size += chunk.size
    return groups
