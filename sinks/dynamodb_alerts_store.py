"""The alerts store on DynamoDB (``storage.targets`` containing ``dynamodb``): alerts, their
notifications, the delivery outbox and baselines, shared by every worker and API of a
deployment, whatever host they run on. The interface is
:class:`~cloudinv.sinks.alerts_store.AlertsBackend`, as the SQLite :class:`AlertsStore` has it;
how an alert moves (marks, openings, resolutions) is the same function,
:func:`~cloudinv.sinks.alerts_store.advance`.

One table, ``<prefix>-alerts`` (on-demand, created by :meth:`open` when missing), partition
key ``p``, sort key ``s``; times are integer microseconds since the epoch, UTC::

    p = "pair#<rule_id>#<key>"     s = "pair"      the pair's mark (mat, mca), its open alert
                                                   (oid), openings so far (n), version (v)
    p = "alert#<alert_id>"         s = "alert"     the alert (body, JSON) and its filter
                                                   fields; lst = "alerts", ord = "<opened
                                                   us, 20 digits>#<alert_id>" (index by_time)
    p = "seq"                      s = "notes"     the notification counter (n)
    p = "notes#<seq // 1000>"      s = <seq, 20 digits>   one notification (body, kind, at,
                                                   ra: when its number was reserved)
    p = "outbox#<destination>"     s = <seq, 20 digits>   a pending delivery (attempts, nxt,
                                                   lease, err) with the notification
    p = "done#<destination>"       s = <seq, 20 digits>   a delivered or dead one (state, at)
    p = "destinations"             s = <destination>       destinations ever queued
    p = "pins"                     s = <pin_id>             a pinned scope
    p = "baseline#<account>"       s = <resource key>       one resource's approved version
    p = "baseline-accounts"        s = <account>            accounts with baselines
  GSI by_time  lst / ord   every alert, most recently opened first (filters are filter
                           expressions: alerts are few)

Applying observations. Each (rule, resource) pair is read (strongly consistent), moved by
:func:`advance` through the batch's observations of that pair, and written back in one
``TransactWriteItems`` on the condition that its version did not move meanwhile (another
worker during a rebalance): the alert puts, the notifications and their outbox rows go in
the same transaction, so a notification exists exactly when its alert moved, and a retried
batch is skipped by the marks as in SQLite. A conflict re-reads the pair and tries again.

Notification numbers. A transaction reserves its numbers from the counter (``ADD n``) just
before it is sent; writers commit out of order and a failed transaction leaves its numbers
unused, so :meth:`notifications_after` (the SSE stream) stops before a missing number while
the first one after it was reserved less than ``grace_s`` (30 s) ago, and skips it after
that: a stream neither repeats nor, while a transaction takes less than the grace, misses a
notification.

Outbox. Pending rows of a destination are one partition in number order, so its head is one
strongly consistent ``Query`` with ``Limit 1``; a dispatcher leases it with a conditional
update (free lease and due), and a delivered or refused row moves to the ``done``
partition in one transaction. Outbox item ids are valid in the process that claimed them
(the lease holder), which is the only one that reports on them.

Baselines. A pin writes the scope's versions, then deletes the scope's other baselines and
the pins it contains: not atomic as in SQLite (DynamoDB transactions hold 100 items), so an
interrupted pin is completed by pinning again.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

import orjson
from botocore.exceptions import ClientError

from cloudinv.core.models import utcnow
from cloudinv.sinks.alerts_store import (
    Alert,
    AlertFilters,
    AlertNotification,
    AlertPage,
    BaselineEntry,
    BaselineScope,
    NotificationKind,
    Observation,
    OutboxItem,
    OutboxWait,
    PairState,
    Pin,
    advance,
)
from cloudinv.sinks.dynamodb_client import (
    DynamoBacked,
    DynamoClient,
    FilterConditions,
    Item,
    retry_with_backoff,
)
from cloudinv.sinks.dynamodb_store import _n, _s, from_us, table_name, to_us
from cloudinv.sinks.dynamodb_tables import CursorCodec, TableSpec
from cloudinv.sinks.store import ResourceVersion, StoreError, check_limit, cut_page

__all__ = ["DynamoAlertsStore"]

log = logging.getLogger(__name__)


_SPEC = TableSpec(
    attributes={"p": "S", "s": "S", "lst": "S", "ord": "S"},
    key=("p", "s"),
    indexes={"by_time": ("lst", "ord")},
)
_BUCKET = 1000
_TX_ITEMS = 90
_CONFLICT_RETRIES = 20
_BATCH_WRITE = 25
_CURSORS = CursorCodec(
    "a1",
    re.compile(r"\d{20}#[0-9a-f]{32}"),
    StoreError,
    "bad alerts cursor {!r}: pass back next_cursor of a previous page",
)


def _seq_key(seq: int) -> str:
    return f"{seq:020d}"


def _alert_item(alert: Alert) -> Item:
    item: Item = {
        "p": _s(f"alert#{alert.alert_id}"),
        "s": _s("alert"),
        "lst": _s("alerts"),
        "ord": _s(f"{to_us(alert.opened_at):020d}#{alert.alert_id}"),
        "body": {"B": alert.model_dump_json().encode()},
        "st": _s(alert.status),
        "sev": _s(alert.severity),
        "rule": _s(alert.rule_id),
        "acct": _s(alert.account_id),
        "key": _s(alert.key),
    }
    if alert.resource_type is not None:
        item["rt"] = _s(alert.resource_type)
    return item


def _alert(item: Item) -> Alert:
    return Alert.model_validate_json(item["body"]["B"])


def _notification(item: Item) -> AlertNotification:
    return AlertNotification.model_validate_json(item["body"]["B"])


@dataclass
class _PairWrite:
    """A pair's moves not yet written: its state, the alerts and notifications made."""

    pair: PairState
    version: int | None
    openings: int
    alerts: dict[str, Alert]
    notes: list[tuple[NotificationKind, datetime, Alert]]
    dirty: bool = False

    def past_openings(self) -> int:
        return self.openings

    def items(self, destinations: int) -> int:
        return 1 + len(self.alerts) + len(self.notes) * (1 + destinations)


class DynamoAlertsStore(DynamoBacked):
    """:class:`~cloudinv.sinks.alerts_store.AlertsBackend` on one DynamoDB table (see the
    module docstring)."""

    def __init__(
        self,
        table_prefix: str = "cloudinv",
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        max_concurrency: int = 16,
        write_concurrency: int = 4,
        grace_s: float = 30.0,
    ) -> None:
        self.table = table_name(table_prefix, "alerts")
        self.grace_s = grace_s
        self._dynamo = DynamoClient(
            f"DynamoDB alerts store {self.table}",
            [(self.table, _SPEC)],
            region=region,
            endpoint_url=endpoint_url,
            max_concurrency=max_concurrency,
            write_concurrency=write_concurrency,
            error=StoreError,
        )
        self._writes = self._dynamo.writes
        self._destinations: set[str] = set()
        self._claimed: dict[int, str] = {}
        """Outbox ids this process leased, with their destination."""

    async def _query(self, *, want: int | None = None, **params: Any) -> list[Item]:
        return await self._dynamo.query(TableName=self.table, want=want, **params)

    async def _get(self, p: str, s: str) -> Item | None:
        found = await self._call(
            "get_item", TableName=self.table, Key={"p": _s(p), "s": _s(s)}, ConsistentRead=True
        )
        item: Item | None = found.get("Item")
        return item

    # -- alerts ----------------------------------------------------------------------------

    async def apply(
        self, observations: Sequence[Observation], destinations: Sequence[str] = ()
    ) -> list[AlertNotification]:
        if not observations:
            return []
        await self._register_destinations(destinations)
        by_pair: dict[tuple[str, str], list[Observation]] = {}
        for obs in observations:
            by_pair.setdefault((obs.rule_id, obs.key), []).append(obs)
        done = await asyncio.gather(
            *(self._apply_pair(pair, obs, destinations) for pair, obs in by_pair.items())
        )
        notifications = [n for made in done for n in made]
        notifications.sort(key=lambda n: n.seq)
        return notifications

    async def _register_destinations(self, destinations: Sequence[str]) -> None:
        for name in sorted(set(destinations) - self._destinations):
            async with self._writes:
                await self._call(
                    "put_item",
                    TableName=self.table,
                    Item={"p": _s("destinations"), "s": _s(name)},
                )
            self._destinations.add(name)

    async def _read_pair(self, rule_id: str, key: str) -> _PairWrite:
        item = await self._get(f"pair#{rule_id}#{key}", "pair")
        if item is None:
            return _PairWrite(PairState(None, None), None, 0, {}, [])
        mark = (int(item["mat"]["N"]), item["mca"]["S"]) if "mat" in item else None
        open_alert = None
        if "oid" in item:
            found = await self._get(f"alert#{item['oid']['S']}", "alert")
            open_alert = _alert(found) if found is not None else None
        return _PairWrite(
            PairState(mark, open_alert), int(item["v"]["N"]), int(item["n"]["N"]), {}, []
        )

    async def _apply_pair(
        self, pair: tuple[str, str], observations: list[Observation], destinations: Sequence[str]
    ) -> list[AlertNotification]:
        made: list[AlertNotification] = []
        pending = list(observations)
        while pending:
            notes, taken = await retry_with_backoff(
                partial(self._apply_chunk, pair, pending, destinations),
                attempts=_CONFLICT_RETRIES,
                # Read the pair again and redo these observations.
                retry_on=_PairMoved,
                gave_up=lambda exc: StoreError(
                    f"alerts of rule {pair[0]} on {pair[1]}: the pair kept moving under "
                    f"{_CONFLICT_RETRIES} attempts (another writer?); the batch will be retried"
                ),
            )
            made += notes
            pending = pending[taken:]
        return made

    async def _apply_chunk(
        self, pair: tuple[str, str], pending: list[Observation], destinations: Sequence[str]
    ) -> tuple[list[AlertNotification], int]:
        """The first observations of ``pending`` that fit one transaction, applied to the
        pair as stored now: (notifications, observations taken). Raises _PairMoved when the
        pair changed since it was read."""
        state = await self._read_pair(*pair)
        taken = 0
        for obs in pending:
            taken += 1
            step = advance(state.pair, obs, state.past_openings)
            if step is None:
                continue
            state.dirty = True
            if step.alert is not None:
                state.alerts[step.alert.alert_id] = step.alert
                if step.notify == "opened":
                    state.openings += 1
                if step.notify is not None:
                    state.notes.append((step.notify, obs.at, step.alert))
            if state.items(len(destinations)) >= _TX_ITEMS:
                break  # the rest in the next transaction
        if not state.dirty:
            return [], taken
        return await self._write_pair(pair, state, destinations), taken

    async def _write_pair(
        self, pair: tuple[str, str], state: _PairWrite, destinations: Sequence[str]
    ) -> list[AlertNotification]:
        rule_id, key = pair
        assert state.pair.mark is not None
        pair_item: Item = {
            "p": _s(f"pair#{rule_id}#{key}"),
            "s": _s("pair"),
            "mat": _n(state.pair.mark[0]),
            "mca": _s(state.pair.mark[1]),
            "n": _n(state.openings),
            "v": _n((state.version or 0) + 1),
        }
        if state.pair.open_alert is not None:
            pair_item["oid"] = _s(state.pair.open_alert.alert_id)
        put_pair: Item = {"TableName": self.table, "Item": pair_item}
        if state.version is None:
            put_pair["ConditionExpression"] = "attribute_not_exists(p)"
        else:
            put_pair["ConditionExpression"] = "v = :v"
            put_pair["ExpressionAttributeValues"] = {":v": _n(state.version)}
        ops: list[Item] = [{"Put": put_pair}]
        ops += [
            {"Put": {"TableName": self.table, "Item": _alert_item(a)}}
            for a in state.alerts.values()
        ]
        notifications: list[AlertNotification] = []
        async with self._writes:
            if state.notes:
                last = await self._reserve(len(state.notes))
                reserved = to_us(utcnow())
                for number, (kind, at, alert) in enumerate(
                    state.notes, last - len(state.notes) + 1
                ):
                    notification = AlertNotification(
                        notification_id=f"{alert.alert_id}:{kind}",
                        seq=number,
                        kind=kind,
                        at=at,
                        alert=alert,
                    )
                    notifications.append(notification)
                    ops += self._notification_ops(notification, reserved, destinations)
            try:
                # Answered within a third of the grace, or planned again from what is
                # stored (see the module docstring).
                async with asyncio.timeout(self.grace_s / 3):
                    await self._call("transact_write_items", TransactItems=ops)
            except TimeoutError:
                raise _PairMoved from None
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "TransactionCanceledException":
                    raise
                reasons = [r.get("Code") for r in exc.response.get("CancellationReasons") or []]
                if reasons and reasons[0] == "ConditionalCheckFailed":
                    raise _PairMoved from None
                raise StoreError(f"DynamoDB alerts transaction cancelled: {reasons}") from exc
        return notifications

    async def _reserve(self, count: int) -> int:
        """Reserve ``count`` notification numbers; returns the last one."""
        answer = await self._call(
            "update_item",
            TableName=self.table,
            Key={"p": _s("seq"), "s": _s("notes")},
            UpdateExpression="ADD n :c",
            ExpressionAttributeValues={":c": _n(count)},
            ReturnValues="UPDATED_NEW",
        )
        return int(answer["Attributes"]["n"]["N"])

    def _notification_ops(
        self, notification: AlertNotification, reserved: int, destinations: Sequence[str]
    ) -> list[Item]:
        body = {"B": notification.model_dump_json().encode()}
        seq = notification.seq
        ops: list[Item] = [
            {
                "Put": {
                    "TableName": self.table,
                    "Item": {
                        "p": _s(f"notes#{seq // _BUCKET}"),
                        "s": _s(_seq_key(seq)),
                        "body": body,
                        "ra": _n(reserved),
                    },
                }
            }
        ]
        now = to_us(utcnow())
        for destination in destinations:
            ops.append(
                {
                    "Put": {
                        "TableName": self.table,
                        "Item": {
                            "p": _s(f"outbox#{destination}"),
                            "s": _s(_seq_key(seq)),
                            "body": body,
                            "att": _n(0),
                            "nxt": _n(now),
                        },
                    }
                }
            )
        return ops

    async def alerts(
        self, filters: AlertFilters | None = None, *, limit: int = 100, cursor: str | None = None
    ) -> AlertPage:
        """Alerts, most recently opened first."""
        check_limit(limit)
        f = filters or AlertFilters()
        if f.selects_nothing:
            return AlertPage(items=[])
        conditions = FilterConditions()
        conditions.equal(
            (("st", f.status), ("rule", f.rule_id), ("rt", f.resource_type), ("key", f.key))
        )
        for attr, many in (("sev", f.severities), ("acct", f.account_ids)):
            if many is not None:
                conditions.one_of(attr, many)
        values: Item = {**conditions.values, ":l": _s("alerts")}
        key_condition = "lst = :l"
        if cursor is not None:
            key_condition += " AND ord < :after"
            values[":after"] = _s(_CURSORS.decode(cursor))
        params: Item = {
            "IndexName": "by_time",
            "KeyConditionExpression": key_condition,
            "ExpressionAttributeValues": values,
            "ScanIndexForward": False,
        }
        expression = conditions.expression()
        if expression is not None:
            params["FilterExpression"] = expression
            params["ExpressionAttributeNames"] = conditions.names
        items, next_cursor = cut_page(
            await self._query(want=limit + 1, **params),
            limit,
            lambda i: _CURSORS.encode(i["ord"]["S"]),
        )
        return AlertPage(items=[_alert(i) for i in items], next_cursor=next_cursor)

    async def alert(self, alert_id: str) -> Alert | None:
        item = await self._get(f"alert#{alert_id}", "alert")
        return None if item is None else _alert(item)

    async def open_alerts(self, rule_id: str | None = None) -> list[Alert]:
        page = await self.alerts(AlertFilters(status="open", rule_id=rule_id), limit=1_000_000)
        return page.items

    # -- notifications (the SSE stream) ------------------------------------------------------

    async def _counter(self) -> int:
        item = await self._get("seq", "notes")
        return 0 if item is None else int(item["n"]["N"])

    async def head(self) -> int:
        """The newest committed notification's number (0 when there is none)."""
        counter = await self._counter()
        bucket = counter // _BUCKET
        while bucket >= 0:
            items = await self._query(
                KeyConditionExpression="p = :p",
                ExpressionAttributeValues={":p": _s(f"notes#{bucket}")},
                ScanIndexForward=False,
                ConsistentRead=True,
                Limit=1,
                want=1,
            )
            if items:
                return int(items[0]["s"]["S"])
            bucket -= 1
        return 0

    async def notifications_after(self, seq: int, limit: int = 500) -> list[AlertNotification]:
        """Up to ``limit`` notifications after ``seq``, in order (see the module docstring
        for missing numbers)."""
        counter = await self._counter()
        out: list[AlertNotification] = []
        expected = seq + 1
        young = to_us(utcnow()) - int(self.grace_s * 1_000_000)
        bucket = (seq + 1) // _BUCKET
        while bucket <= counter // _BUCKET and len(out) < limit:
            items = await self._query(
                KeyConditionExpression="p = :p AND s > :s",
                ExpressionAttributeValues={
                    ":p": _s(f"notes#{bucket}"),
                    ":s": _s(_seq_key(expected - 1)),
                },
                ConsistentRead=True,
                want=limit - len(out),
            )
            for item in items[: limit - len(out)]:
                number = int(item["s"]["S"])
                if number != expected and int(item["ra"]["N"]) > young:
                    return out  # a number before it may still be committed
                out.append(_notification(item))
                expected = number + 1
            bucket += 1
        return out

    # -- outbox ------------------------------------------------------------------------------

    async def claim(self, destination: str, lease_s: float) -> OutboxItem | OutboxWait | None:
        """Lease the oldest undelivered notification of ``destination``."""
        items = await self._query(
            KeyConditionExpression="p = :p",
            ExpressionAttributeValues={":p": _s(f"outbox#{destination}")},
            ConsistentRead=True,
            Limit=1,
            want=1,
        )
        if not items:
            return None
        item = items[0]
        now = to_us(utcnow())
        due = int(item["nxt"]["N"])
        if due > now:
            return OutboxWait(from_us(due))
        lease = int(item["lease"]["N"]) if "lease" in item else None
        if lease is not None and lease > now:
            return OutboxWait(from_us(lease))
        try:
            async with self._writes:
                await self._call(
                    "update_item",
                    TableName=self.table,
                    Key={"p": item["p"], "s": item["s"]},
                    UpdateExpression="SET lease = :until",
                    ConditionExpression="attribute_exists(p) AND nxt <= :now AND "
                    "(attribute_not_exists(lease) OR lease <= :now)",
                    ExpressionAttributeValues={
                        ":until": _n(now + int(lease_s * 1_000_000)),
                        ":now": _n(now),
                    },
                )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            return OutboxWait(from_us(now + 10_000))  # someone else took it: look again soon
        seq = int(item["s"]["S"])
        self._claimed[seq] = destination
        return OutboxItem(seq, destination, int(item["att"]["N"]), _notification(item))

    def _claimed_row(self, item_id: int) -> Item:
        destination = self._claimed.get(item_id)
        if destination is None:
            raise StoreError(f"outbox item {item_id} was not claimed by this process")
        return {"p": _s(f"outbox#{destination}"), "s": _s(_seq_key(item_id))}

    async def _finish(self, item_id: int, state: str, error: str | None) -> None:
        key = self._claimed_row(item_id)
        destination = self._claimed[item_id]
        row = await self._call("get_item", TableName=self.table, Key=key, ConsistentRead=True)
        item = row.get("Item")
        if item is None:
            self._claimed.pop(item_id, None)
            return  # already finished (a lease that expired and was taken over)
        done: Item = {
            "p": _s(f"done#{destination}"),
            "s": key["s"],
            "state": _s(state),
            "at": _n(to_us(utcnow())),
            "att": _n(int(item["att"]["N"]) + 1),
        }
        if error is not None:
            done["err"] = _s(error[:1000])
        async with self._writes:
            await self._call(
                "transact_write_items",
                TransactItems=[
                    {"Delete": {"TableName": self.table, "Key": key}},
                    {"Put": {"TableName": self.table, "Item": done}},
                ],
            )
        self._claimed.pop(item_id, None)

    async def delivered(self, item_id: int) -> None:
        await self._finish(item_id, "delivered", None)

    async def give_up(self, item_id: int, error: str) -> None:
        await self._finish(item_id, "dead", error)

    async def retry_later(self, item_id: int, error: str, at: datetime) -> None:
        key = self._claimed_row(item_id)
        async with self._writes:
            try:
                await self._call(
                    "update_item",
                    TableName=self.table,
                    Key=key,
                    UpdateExpression="SET nxt = :at, err = :err ADD att :one REMOVE lease",
                    ConditionExpression="attribute_exists(p)",
                    ExpressionAttributeValues={
                        ":at": _n(to_us(at)),
                        ":err": _s(error[:1000]),
                        ":one": _n(1),
                    },
                )
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                    raise
        self._claimed.pop(item_id, None)

    async def _known_destinations(self) -> list[str]:
        items = await self._query(
            KeyConditionExpression="p = :p", ExpressionAttributeValues={":p": _s("destinations")}
        )
        return [i["s"]["S"] for i in items]

    async def prune_delivered(self, before: datetime) -> int:
        """Forget outbox rows delivered before ``before`` (the notifications stay)."""
        cutoff = to_us(before)
        keys: list[Item] = []
        for destination in await self._known_destinations():
            items = await self._query(
                KeyConditionExpression="p = :p",
                FilterExpression="#st = :d AND #at < :cut",
                ExpressionAttributeNames={"#st": "state", "#at": "at"},
                ExpressionAttributeValues={
                    ":p": _s(f"done#{destination}"),
                    ":d": _s("delivered"),
                    ":cut": _n(cutoff),
                },
                ProjectionExpression="p, s",
            )
            keys += [{"p": i["p"], "s": i["s"]} for i in items]
        await self._delete(keys)
        return len(keys)

    async def _delete(self, keys: list[Item]) -> None:
        for start in range(0, len(keys), _BATCH_WRITE):
            requests = [{"DeleteRequest": {"Key": k}} for k in keys[start : start + _BATCH_WRITE]]
            await self._batch_write(requests)

    async def _batch_write(self, requests: list[Item]) -> None:
        """BatchWriteItem, sending unprocessed items again with backoff until none is left."""
        pending = requests

        async def send() -> None:
            nonlocal pending
            async with self._writes:
                answer = await self._call("batch_write_item", RequestItems={self.table: pending})
            pending = answer.get("UnprocessedItems", {}).get(self.table, [])
            if pending:
                raise _Unprocessed()

        await retry_with_backoff(send, attempts=None, retry_on=_Unprocessed)

    async def outbox_counts(self) -> dict[tuple[str, str], int]:
        """(destination, state) -> rows."""
        counts: dict[tuple[str, str], int] = {}
        for destination in await self._known_destinations():
            pending = await self._query(
                KeyConditionExpression="p = :p",
                ExpressionAttributeValues={":p": _s(f"outbox#{destination}")},
                ProjectionExpression="s",
            )
            if pending:
                counts[(destination, "pending")] = len(pending)
            for item in await self._query(
                KeyConditionExpression="p = :p",
                ExpressionAttributeValues={":p": _s(f"done#{destination}")},
                ProjectionExpression="#st",
                ExpressionAttributeNames={"#st": "state"},
            ):
                state = (destination, item["state"]["S"])
                counts[state] = counts.get(state, 0) + 1
        return counts

    # -- baselines ---------------------------------------------------------------------------

    async def pin(
        self, scope: BaselineScope, versions: Sequence[ResourceVersion], pinned_at: datetime
    ) -> Pin:
        """Replace the baselines of ``scope`` by ``versions`` (its current resources)."""
        at = to_us(pinned_at)
        pin_id = scope.pin_id(versions, at)
        accounts = sorted({v.account_id for v in versions})
        for account in accounts:
            async with self._writes:
                await self._call(
                    "put_item",
                    TableName=self.table,
                    Item={"p": _s("baseline-accounts"), "s": _s(account)},
                )
        puts = [{"PutRequest": {"Item": self._baseline_item(v, at)}} for v in versions]
        for start in range(0, len(puts), _BATCH_WRITE):
            await self._batch_write(puts[start : start + _BATCH_WRITE])
        # Then the scope's baselines of an earlier pin that are not current any more.
        kept = {v.key for v in versions}
        old = await self._baseline_items(
            resource_type=scope.resource_type,
            account_ids=None if scope.account_id is None else [scope.account_id],
        )
        stale = [
            {"p": i["p"], "s": i["s"]}
            for i in old
            if i["s"]["S"] not in kept
            and scope.matches(i["rt"]["S"], i["acct"]["S"], i["region"]["S"])
        ]
        await self._delete(stale)
        for previous in await self.pins():
            if scope.contains(previous.scope):
                async with self._writes:
                    await self._call(
                        "delete_item",
                        TableName=self.table,
                        Key={"p": _s("pins"), "s": _s(previous.pin_id)},
                    )
        pin = Pin(
            pin_id=pin_id,
            resource_type=scope.resource_type,
            account_id=scope.account_id,
            region=scope.region,
            pinned_at=pinned_at,
            count=len(versions),
        )
        async with self._writes:
            await self._call(
                "put_item",
                TableName=self.table,
                Item={
                    "p": _s("pins"),
                    "s": _s(pin_id),
                    "body": {"B": pin.model_dump_json().encode()},
                },
            )
        return pin

    @staticmethod
    def _baseline_item(version: ResourceVersion, pinned_at: int) -> Item:
        entry = BaselineEntry(
            key=version.key,
            resource_type=version.resource_type,
            account_id=version.account_id,
            region=version.region,
            name=version.name,
            config_hash=version.config_hash,
            configuration=version.configuration,
            change_id=version.change_id,
            valid_from=version.valid_from,
            pinned_at=from_us(pinned_at),
        )
        return {
            "p": _s(f"baseline#{version.account_id}"),
            "s": _s(version.key),
            "rt": _s(version.resource_type),
            "acct": _s(version.account_id),
            "region": _s(version.region),
            "body": {"B": orjson.dumps(entry.model_dump(mode="json"))},
        }

    async def pins(self) -> list[Pin]:
        items = await self._query(
            KeyConditionExpression="p = :p", ExpressionAttributeValues={":p": _s("pins")}
        )
        found = [Pin.model_validate_json(i["body"]["B"]) for i in items]
        return sorted(found, key=lambda pin: pin.pinned_at)

    async def _baseline_items(
        self, *, resource_type: str | None, account_ids: Sequence[str] | None
    ) -> list[Item]:
        if account_ids is None:
            registry = await self._query(
                KeyConditionExpression="p = :p",
                ExpressionAttributeValues={":p": _s("baseline-accounts")},
            )
            account_ids = [i["s"]["S"] for i in registry]
        items: list[Item] = []
        for account in account_ids:
            params: Item = {
                "KeyConditionExpression": "p = :p",
                "ExpressionAttributeValues": {":p": _s(f"baseline#{account}")},
            }
            if resource_type is not None:
                params["FilterExpression"] = "rt = :rt"
                params["ExpressionAttributeValues"][":rt"] = _s(resource_type)
            items += await self._query(**params)
        return items

    async def baselines(
        self, *, resource_type: str | None = None, account_ids: Sequence[str] | None = None
    ) -> list[BaselineEntry]:
        if account_ids is not None and not account_ids:
            return []
        items = await self._baseline_items(resource_type=resource_type, account_ids=account_ids)
        entries = [BaselineEntry.model_validate_json(i["body"]["B"]) for i in items]
        return sorted(entries, key=lambda e: e.key)


class _Unprocessed(Exception):
    """BatchWriteItem left items unprocessed (throttling)."""


class _PairMoved(Exception):
    """The pair's version moved between its read and the transaction: read it again."""
