"""The CloudTrail events store on DynamoDB: the interface of
:class:`cloudinv.sinks.events_store.EventsStore` (what ``cloudinv.streams.activity`` writes and
``cloudinv.api.routes_events`` reads), on two tables.

Reads are Queries, never Scans. Tables (on-demand, created by :meth:`open` when missing)::

    <prefix>-events     PK id (event_id)
                        attributes: acct, t (event time, epoch ms), svc, name, pr (principal
                        label), pn (principal name), pnl (pn in lower case: user names
                        match ignoring case, as IAM's do), ro (1 read-only / 0 write), err (error
                        code), prm (string set "path=value" of the request parameters),
                        body (B, the encoded event), ad ("acct#YYYY-MM-DD"), ord ("t#id")
      GSI by_account_day   ad / ord     an account's events of one day, in time order
    <prefix>-activity   PK p (S)  SK b (S); counters ev, er, wr added with ADD
      p = "hour|day#principal|service|all#<key>#<acct>",  b = "<bucket ms>#<event name>"
      p = "svcday#<acct>",                               b = "<day ms>#<service>"
      p = "principals#<acct>",                           b = <label>   (+ first/last seen)
      p = "days#<acct>",                                 b = YYYY-MM-DD (days with events)
      p = "accounts",                                    b = <account>
      p = "params",                                      b = request-parameter path

Events are listed newest first, per account and day (the registry's days in the range),
merged across accounts by (time, event id); the other filters (principal, service, event
name, region, errors, read-only, request parameters) are filter expressions on those
partitions, so their cost is that of reading the account's days in the range. Counts are the
same Queries with ``Select=COUNT``.

Counting once: a batch is written in transactions, each holding some events' puts (on the
condition that the event id is new) and the ADDs of exactly those events to the aggregates.
A transaction cancelled because some event ids exist is retried without them, so a replayed
batch adds nothing. Minimum first-seen / maximum last-seen times are set after the
transaction with conditional updates (idempotent by nature).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import re
from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Any

from botocore.exceptions import ClientError

from cloudinv.core.models import CloudTrailEvent
from cloudinv.sinks.dynamodb_client import DynamoBacked, DynamoClient, Item, retry_with_backoff
from cloudinv.sinks.dynamodb_store import _n, _s, table_name
from cloudinv.sinks.dynamodb_tables import CursorCodec, TableSpec
from cloudinv.sinks.events_store import (
    _BUCKET_MS,
    ActivityBucket,
    ActivityUpdate,
    EventFilters,
    EventPage,
    EventsStoreError,
    Granularity,
    PrincipalSummary,
    ServiceSummary,
    StoredEvent,
    StoredEventPage,
    WriteResult,
    _bound_ms,
    _bucket,
    _from_ms,
    _prepare,
    check_activity_query,
    check_events_limit,
    event_json,
)
from cloudinv.sinks.store import cut_page

__all__ = ["DynamoEventsStore"]

log = logging.getLogger(__name__)

_TX_ITEMS = 100
_RETRIES = 10


class _Cancelled(Exception):
    """A transaction cancelled for another reason than events already stored (throttling,
    a conflict): sent again after a backoff."""


_DAY_MS = _BUCKET_MS["day"]
_CURSOR_RE = re.compile(r"\d{13}#.+")


def _day(ms: int) -> str:
    return _from_ms(ms - ms % _DAY_MS).date().isoformat()


_CURSORS = CursorCodec("e1", _CURSOR_RE, EventsStoreError)


_EVENTS_SPEC = TableSpec(
    attributes={"id": "S", "ad": "S", "ord": "S"},
    key=("id", None),
    indexes={"by_account_day": ("ad", "ord")},
)
_ACTIVITY_SPEC = TableSpec(attributes={"p": "S", "b": "S"}, key=("p", "b"))


class DynamoEventsStore(DynamoBacked):
    """CloudTrail events and their aggregates on DynamoDB (see the module docstring)."""

    def __init__(
        self,
        table_prefix: str = "cloudinv",
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        max_concurrency: int = 16,
        write_concurrency: int = 4,
    ) -> None:
        self.table_prefix = table_prefix
        self.events_table = table_name(table_prefix, "events")
        self.activity_table = table_name(table_prefix, "activity")
        self.region = region
        self.endpoint_url = endpoint_url
        self._dynamo = DynamoClient(
            f"DynamoDB events store {table_prefix!r}",
            [(self.events_table, _EVENTS_SPEC), (self.activity_table, _ACTIVITY_SPEC)],
            region=region,
            endpoint_url=endpoint_url,
            max_concurrency=max_concurrency,
            write_concurrency=write_concurrency,
            error=EventsStoreError,
        )
        self._writes = self._dynamo.writes
        self._known: set[tuple[str, str]] = set()
        self.calls = self._dynamo.calls

    async def _query(self, **params: Any) -> list[Item]:
        return await self._dynamo.query(**params)

    # -- writes ----------------------------------------------------------------------------

    async def write_batch(self, batch: Sequence[CloudTrailEvent | bytes]) -> WriteResult:
        """Store new events and add them (only them) to the aggregates."""
        if not batch:
            return WriteResult(0, 0, [])
        prepared, rejected = _prepare(batch)
        rows = sorted(prepared.values(), key=lambda v: v[0][1])
        registry: set[tuple[str, str]] = set()
        for row, params in rows:
            registry.add(("accounts", row[2]))
            registry.add((f"days#{row[2]}", _day(row[1])))
            registry.update(("params", path) for path, _ in params)
        await self._register(registry)
        inserted: list[tuple[Any, ...]] = []
        for group in _groups(rows):
            inserted += await self._write_group(group)
        touched: dict[tuple[str, str, str, str, int], None] = {}
        for row in inserted:
            for granularity, size in _BUCKET_MS.items():
                bucket = row[1] - row[1] % size
                for kind, key in (("principal", row[6]), ("service", row[4])):
                    touched[(granularity, kind, key, row[2], bucket)] = None
        seen: dict[tuple[str, str], tuple[int, int]] = {}
        for row in inserted:
            first, last = seen.get((row[2], row[6]), (row[1], row[1]))
            seen[(row[2], row[6])] = (min(first, row[1]), max(last, row[1]))
        await asyncio.gather(*(self._seen_times(*k, *v) for k, v in seen.items()))
        updates = await asyncio.gather(*(self._update(*t) for t in touched))
        return WriteResult(
            received=len(batch), inserted=len(inserted), updates=list(updates), rejected=rejected
        )

    async def _register(self, entries: set[tuple[str, str]]) -> None:
        for p, b in sorted(entries - self._known):
            async with self._writes:
                await self._call(
                    "put_item", TableName=self.activity_table, Item={"p": _s(p), "b": _s(b)}
                )
            self._known.add((p, b))

    async def _write_group(
        self, group: list[tuple[tuple[Any, ...], list[tuple[str, str]]]]
    ) -> list[tuple[Any, ...]]:
        pending = list(group)

        async def send() -> None:
            nonlocal pending
            while pending:
                puts = [self._event_put(row, params) for row, params in pending]
                adds = _aggregate_updates(self.activity_table, [row for row, _ in pending])
                try:
                    async with self._writes:
                        await self._call("transact_write_items", TransactItems=puts + adds)
                    return
                except ClientError as exc:
                    if exc.response["Error"]["Code"] != "TransactionCanceledException":
                        raise EventsStoreError(
                            f"DynamoDB TransactWriteItems failed: {exc}"
                        ) from exc
                    reasons = [r.get("Code") for r in exc.response.get("CancellationReasons") or []]
                    stored = {
                        i
                        for i, code in enumerate(reasons[: len(puts)])
                        if code == "ConditionalCheckFailed"
                    }
                    if not stored:
                        raise _Cancelled(str(reasons)) from exc
                    # Events stored meanwhile (another writer, a replay) cancelled the rest
                    # with them: sent again at once without them (each pass drops at least
                    # one, so this ends), not counted against the retries.
                    pending = [p for i, p in enumerate(pending) if i not in stored]

        await retry_with_backoff(
            send,
            attempts=_RETRIES,
            retry_on=_Cancelled,
            gave_up=lambda exc: EventsStoreError("DynamoDB events: a transaction kept failing"),
        )
        return [row for row, _ in pending]

    def _event_put(self, row: tuple[Any, ...], params: list[tuple[str, str]]) -> Item:
        event_id, t, account, region, service, name, label, pname, ro, err, body = row[:11]
        item: Item = {
            "id": _s(event_id),
            "t": _n(t),
            "acct": _s(account),
            "region": _s(region),
            "svc": _s(service),
            "name": _s(name),
            "pr": _s(label),
            "body": {"B": bytes(body)},
            "ad": _s(f"{account}#{_day(t)}"),
            "ord": _s(f"{t:013d}#{event_id}"),
        }
        if pname is not None:
            item["pn"] = _s(pname)
            item["pnl"] = _s(pname.lower())
        if ro is not None:
            item["ro"] = _n(ro)
        if err is not None:
            item["err"] = _s(err)
        if params:
            item["prm"] = {"SS": sorted({f"{p}={v}" for p, v in params})}
        return {
            "Put": {
                "TableName": self.events_table,
                "Item": item,
                "ConditionExpression": "attribute_not_exists(id)",
            }
        }

    async def _seen_times(self, account: str, label: str, first: int, last: int) -> None:
        """Lower first_seen / raise last_seen of a principal (conditional, so idempotent)."""
        key = {"p": _s(f"principals#{account}"), "b": _s(label)}
        for attr, op, t in (("first_seen", ">", first), ("last_seen", "<", last)):
            try:
                async with self._writes:
                    await self._call(
                        "update_item",
                        TableName=self.activity_table,
                        Key=key,
                        UpdateExpression=f"SET {attr} = :t",
                        ConditionExpression=f"attribute_not_exists({attr}) OR {attr} {op} :t",
                        ExpressionAttributeValues={":t": _n(t)},
                    )
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                    raise EventsStoreError(f"DynamoDB events: {exc}") from exc

    async def _update(
        self, granularity: str, kind: str, key: str, account: str, bucket: int
    ) -> ActivityUpdate:
        items = await self._query(
            TableName=self.activity_table,
            KeyConditionExpression="p = :p AND begins_with(b, :b)",
            ExpressionAttributeValues={
                ":p": _s(f"{granularity}#{kind}#{key}#{account}"),
                ":b": _s(f"{bucket:013d}#"),
            },
            ConsistentRead=True,
        )
        return ActivityUpdate(
            granularity=granularity,
            kind=kind,
            key=key,
            account_id=account,
            bucket=_bucket(bucket, _names(items)),
        )

    # -- reads -----------------------------------------------------------------------------

    async def _registry(self, p: str) -> list[str]:
        items = await self._query(
            TableName=self.activity_table,
            KeyConditionExpression="p = :p",
            ExpressionAttributeValues={":p": _s(p)},
        )
        return [item["b"]["S"] for item in items]

    @staticmethod
    def _filter(f: EventFilters) -> tuple[list[str], dict[str, str], dict[str, Any]]:
        where: list[str] = []
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        if f.user_name is not None:
            # Items written before pnl existed match their exact name only.
            where.append("(#pnl = :pnl OR #pn = :pn)")
            names.update({"#pnl": "pnl", "#pn": "pn"})
            values.update({":pnl": _s(f.user_name.lower()), ":pn": _s(f.user_name)})
        for attr, value in (
            ("pr", f.principal),
            ("svc", f.service),
            ("name", f.event_name),
            ("region", f.region),
        ):
            if value is not None:
                where.append(f"#{attr} = :{attr}")
                names[f"#{attr}"] = attr
                values[f":{attr}"] = _s(value)
        if f.errors_only:
            where.append("attribute_exists(err)")
        if f.read_only is not None:
            where.append("ro = :ro")
            values[":ro"] = _n(int(f.read_only))
        for i, (path, value) in enumerate(f.params):
            where.append(f"contains(prm, :prm{i})")
            values[f":prm{i}"] = _s(f"{path}={value}")
        return where, names, values

    async def _partitions(
        self, f: EventFilters, low: int | None, high: int | None
    ) -> list[tuple[str, str]]:
        """(account, day) partitions of ``f``'s accounts with events in [low, high), newest
        day first."""
        accounts = [f.account_id] if f.account_id is not None else await self._registry("accounts")
        if f.accounts is not None:
            accounts = [a for a in accounts if a in f.accounts]
        first = _day(low) if low is not None else "0000"
        last = _day(high - 1) if high is not None else "9999"
        days = await asyncio.gather(*(self._registry(f"days#{a}") for a in accounts))
        out = [
            (a, d) for a, ds in zip(accounts, days, strict=True) for d in ds if first <= d <= last
        ]
        return sorted(out, key=lambda ad: ad[1], reverse=True)

    async def _select(
        self,
        f: EventFilters,
        *,
        want: int | None,
        after: str | None = None,
        count: bool = False,
    ) -> tuple[list[Item], int]:
        where, names, values = self._filter(f)
        low = _bound_ms(f.since, end=False)
        high = _bound_ms(f.until, end=True)
        lo = f"{low:013d}" if low is not None else "0"
        hi = f"{high - 1:013d}~" if high is not None else "~"
        if after is not None:
            hi = min(hi, after)  # inclusive: the cursor's own event is dropped below
        if lo > hi:
            return [], 0
        found: list[Item] = []
        total = 0
        by_day: dict[str, list[str]] = {}
        for account, day in await self._partitions(f, low, high):
            by_day.setdefault(day, []).append(account)
        for day in sorted(by_day, reverse=True):

            async def one(account: str, day: str = day) -> tuple[list[Item], int]:
                params: dict[str, Any] = {
                    "TableName": self.events_table,
                    "IndexName": "by_account_day",
                    "KeyConditionExpression": "ad = :ad AND ord BETWEEN :lo AND :hi",
                    "ExpressionAttributeValues": {
                        **values,
                        ":ad": _s(f"{account}#{day}"),
                        ":lo": _s(lo),
                        ":hi": _s(hi),
                    },
                    "ScanIndexForward": False,
                }
                if names:
                    params["ExpressionAttributeNames"] = names
                if where:
                    params["FilterExpression"] = " AND ".join(where)
                if count:
                    params["Select"] = "COUNT"
                items: list[Item] = []
                n = 0
                async for page in self._dynamo.responses(**params):
                    n += page.get("Count", 0)
                    items += [
                        i for i in page.get("Items", []) if after is None or i["ord"]["S"] < after
                    ]
                    if want is not None and len(items) >= want:
                        break
                return items, n

            results = await asyncio.gather(*(one(a) for a in by_day[day]))
            total += sum(n for _, n in results)
            if not count:
                merged = heapq.merge(
                    *(items for items, _ in results), key=lambda i: i["ord"]["S"], reverse=True
                )
                found += list(merged)
                if want is not None and len(found) >= want:
                    return found[:want], total
        return found, total

    async def events(
        self, filters: EventFilters | None = None, *, limit: int = 100, cursor: str | None = None
    ) -> EventPage:
        return (await self.stored_events(filters, limit=limit, cursor=cursor)).page()

    async def stored_events(
        self, filters: EventFilters | None = None, *, limit: int = 100, cursor: str | None = None
    ) -> StoredEventPage:
        check_events_limit(limit)
        f = filters or EventFilters()
        found, _ = await self._select(
            f, want=limit + 1, after=_CURSORS.decode(cursor) if cursor else None
        )
        page, next_cursor = cut_page(found, limit, lambda i: _CURSORS.encode(i["ord"]["S"]))
        items = [
            StoredEvent(i["id"]["S"], i["acct"]["S"], event_json(i["body"]["B"])) for i in page
        ]
        return StoredEventPage(items=items, next_cursor=next_cursor)

    async def events_json(
        self, filters: EventFilters | None = None, *, limit: int = 100, cursor: str | None = None
    ) -> tuple[bytes, str | None]:
        page = await self.stored_events(filters, limit=limit, cursor=cursor)
        return b"[" + b",".join(e.json for e in page.items) + b"]", page.next_cursor

    async def count(self, filters: EventFilters | None = None) -> int:
        _, total = await self._select(filters or EventFilters(), want=None, count=True)
        return total

    async def event(self, event_id: str) -> CloudTrailEvent | None:
        found = await self._call(
            "get_item", TableName=self.events_table, Key={"id": _s(event_id)}, ConsistentRead=True
        )
        item = found.get("Item")
        return CloudTrailEvent.model_validate_json(item["body"]["B"]) if item else None

    async def principals(
        self, *, account_id: str | None = None, label: str | None = None
    ) -> list[PrincipalSummary]:
        accounts = [account_id] if account_id is not None else await self._registry("accounts")
        condition = "p = :p" if label is None else "p = :p AND b = :b"
        extra = {} if label is None else {":b": _s(label)}
        lists = await asyncio.gather(
            *(
                self._query(
                    TableName=self.activity_table,
                    KeyConditionExpression=condition,
                    ExpressionAttributeValues={":p": _s(f"principals#{a}"), **extra},
                )
                for a in accounts
            )
        )
        out = [
            PrincipalSummary(
                label=item["b"]["S"],
                type=item["ty"]["S"] if "ty" in item else None,
                name=item["nm"]["S"] if "nm" in item else None,
                arn=item["arn"]["S"] if "arn" in item else None,
                account_id=account,
                events=int(item["ev"]["N"]),
                errors=int(item["er"]["N"]),
                writes=int(item["wr"]["N"]),
                first_seen=_from_ms(int(item["first_seen"]["N"])),
                last_seen=_from_ms(int(item["last_seen"]["N"])),
            )
            for account, items in zip(accounts, lists, strict=True)
            for item in items
            if "ev" in item and "first_seen" in item and "last_seen" in item
        ]
        return sorted(out, key=lambda p: (-p.events, p.label))

    async def _activity_items(
        self,
        partition: Callable[[str], str],
        account_id: str | None,
        buckets: tuple[str, str],
    ) -> list[list[Item]]:
        """The aggregate items of buckets ``lo`` to ``hi`` in each account's ``partition``
        (one account, or every one stored), queried at once."""
        accounts = [account_id] if account_id is not None else await self._registry("accounts")
        lo, hi = buckets
        return list(
            await asyncio.gather(
                *(
                    self._query(
                        TableName=self.activity_table,
                        KeyConditionExpression="p = :p AND b BETWEEN :lo AND :hi",
                        ExpressionAttributeValues={
                            ":p": _s(partition(a)),
                            ":lo": _s(lo),
                            ":hi": _s(hi),
                        },
                    )
                    for a in accounts
                )
            )
        )

    async def services(
        self,
        *,
        account_id: str | None = None,
        since: datetime | date | None = None,
        until: datetime | date | None = None,
    ) -> list[ServiceSummary]:
        lists = await self._activity_items(
            lambda a: f"svcday#{a}", account_id, _bucket_range(since, until, _DAY_MS)
        )
        sums: dict[str, list[int]] = {}
        for items in lists:
            for item in items:
                service = item["b"]["S"].split("#", 1)[1]
                counts = sums.setdefault(service, [0, 0, 0])
                counts[0] += int(item["ev"]["N"])
                counts[1] += int(item["er"]["N"])
                counts[2] += int(item["wr"]["N"])
        return [
            ServiceSummary(service=s, events=c[0], errors=c[1], writes=c[2])
            for s, c in sorted(sums.items(), key=lambda sc: (-sc[1][0], sc[0]))
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
        check_activity_query(principal, service, granularity)
        if principal is not None:
            kind, key = "principal", principal
        elif service is not None:
            kind, key = "service", service
        else:
            kind, key = "all", "*"
        lists = await self._activity_items(
            lambda a: f"{granularity}#{kind}#{key}#{a}",
            account_id,
            _bucket_range(since, until, _BUCKET_MS[granularity]),
        )
        grouped: dict[int, list[Item]] = {}
        for items in lists:
            for item in items:
                grouped.setdefault(int(item["b"]["S"][:13]), []).append(item)
        return [_bucket(b, _names(grouped[b])) for b in sorted(grouped)]

    async def parameter_paths(self, *, limit: int = 1000) -> list[str]:
        """Request-parameter paths that can be filtered on (``EventFilters.params``), from
        the registry every write adds its events' paths to."""
        return (await self._registry("params"))[:limit]


# -- helpers -----------------------------------------------------------------------------------


def _names(items: Sequence[Item]) -> list[tuple[str, int, int, int]]:
    return [
        (
            item["b"]["S"].split("#", 1)[1],
            int(item["ev"]["N"]),
            int(item["er"]["N"]),
            int(item["wr"]["N"]),
        )
        for item in items
    ]


def _bucket_range(
    since: datetime | date | None, until: datetime | date | None, size: int
) -> tuple[str, str]:
    """Sort-key bounds of the buckets overlapping [since, until)."""
    low = _bound_ms(since, end=False)
    high = _bound_ms(until, end=True)
    lo = f"{max(low - size + 1, 0):013d}" if low is not None else "0"
    hi = f"{high - 1:013d}~" if high is not None else "~"
    return lo, hi


def _aggregate_keys(row: tuple[Any, ...]) -> list[tuple[str, str]]:
    """The aggregate items (p, b) one event adds to."""
    t, account, service, name, label = row[1], row[2], row[4], row[5], row[6]
    keys = []
    for granularity, size in _BUCKET_MS.items():
        bucket = t - t % size
        for kind, key in (("principal", label), ("service", service), ("all", "*")):
            keys.append((f"{granularity}#{kind}#{key}#{account}", f"{bucket:013d}#{name}"))
    keys.append((f"svcday#{account}", f"{t - t % _DAY_MS:013d}#{service}"))
    keys.append((f"principals#{account}", label))
    return keys


def _groups(
    rows: list[tuple[tuple[Any, ...], list[tuple[str, str]]]],
) -> list[list[tuple[tuple[Any, ...], list[tuple[str, str]]]]]:
    """Events grouped so that puts plus distinct aggregate items fit one transaction."""
    groups: list[list[tuple[tuple[Any, ...], list[tuple[str, str]]]]] = []
    keys: set[tuple[str, str]] = set()
    for entry in rows:
        mine = set(_aggregate_keys(entry[0]))
        if not groups or len(groups[-1]) + 1 + len(keys | mine) > _TX_ITEMS:
            groups.append([])
            keys = set()
        groups[-1].append(entry)
        keys |= mine
    return groups


def _aggregate_updates(table: str, rows: list[tuple[Any, ...]]) -> list[Item]:
    sums: dict[tuple[str, str], list[int]] = {}
    principal_info: dict[tuple[str, str], tuple[Any, Any, Any]] = {}
    for row in rows:
        error, write = int(row[9] is not None), int(row[8] == 0)
        for key in _aggregate_keys(row):
            counts = sums.setdefault(key, [0, 0, 0])
            counts[0] += 1
            counts[1] += error
            counts[2] += write
        principal_info.setdefault((f"principals#{row[2]}", row[6]), (row[11], row[7], row[12]))
    updates = []
    for (p, b), (ev, er, wr) in sums.items():
        expression = "ADD ev :ev, er :er, wr :wr"
        values: dict[str, Any] = {":ev": _n(ev), ":er": _n(er), ":wr": _n(wr)}
        info = principal_info.get((p, b))
        if info is not None:
            sets = []
            for attr, value in zip(("ty", "nm", "arn"), info, strict=True):
                if value is not None:
                    sets.append(f"{attr} = if_not_exists({attr}, :{attr})")
                    values[f":{attr}"] = _s(value)
            if sets:
                expression += " SET " + ", ".join(sets)
        updates.append(
            {
                "Update": {
                    "TableName": table,
                    "Key": {"p": _s(p), "b": _s(b)},
                    "UpdateExpression": expression,
                    "ExpressionAttributeValues": values,
                }
            }
        )
    return updates
