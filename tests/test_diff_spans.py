"""``SqliteStore.change_spans_stored`` (what ``/v1/diff`` reads): per key in key order, its
first and last change in a window, picked by SQLite. Checked against the same spans computed
in Python from every change of the window (``SqliteStore.changes``), over a random estate
(keys changed back to an earlier state, created and deleted), with every filter, account set,
cursor and page size the diff uses."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from cloudinv.core.models import ChangeEvent
from cloudinv.sinks.sqlite_store import SqliteStore
from cloudinv.sinks.store import ChangeFilters, ChangeQuery

T0 = datetime(2026, 11, 2, tzinfo=UTC)
ACCOUNTS = ("111111111111", "222222222222", "333333333333")
TYPES = ("AWS::S3::Bucket", "AWS::EC2::SecurityGroup")
REGIONS = ("us-east-1", "eu-west-1")


def _estate(rng: random.Random) -> list[ChangeEvent]:
    changes: list[ChangeEvent] = []
    moments = iter(rng.sample(range(1, 10 * 3600 * 1000), 2000))  # unique capture times, ms
    for n in range(120):
        account, rtype, region = rng.choice(ACCOUNTS), rng.choice(TYPES), rng.choice(REGIONS)
        key = f"arn:{rtype}:{account}:{region}:r{n:03d}"
        hashes = [None, *(f"h{n}-{i}" for i in range(rng.randint(1, 5)))]
        if rng.random() < 0.2:
            hashes.append(hashes[1])  # changed back to its first state
        if rng.random() < 0.3:
            hashes.append(None)  # deleted
        times = sorted(next(moments) for _ in range(len(hashes) - 1))
        for i, at_ms in enumerate(times):
            before, after = hashes[i], hashes[i + 1]
            kind = "created" if before is None else "deleted" if after is None else "modified"
            at = T0 + timedelta(milliseconds=at_ms)
            configuration = None if after is None else {"state": after, "pad": "x" * 50}
            changes.append(
                ChangeEvent(
                    change_id=f"{key}:{i}",
                    key=key,
                    resource_type=rtype,
                    resource_id=f"r{n:03d}",
                    account_id=account,
                    region=region,
                    change_type=kind,
                    before_hash=before,
                    after_hash=after,
                    configuration=configuration,
                    prior_configuration=None if before is None else {"state": before},
                    captured_at=at,
                    detected_at=at,
                )
            )
    # Stored in capture order (per key, the store drops a change older than the last it has).
    return sorted(changes, key=lambda change: change.captured_at)


@pytest.fixture(scope="module")
async def store(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SqliteStore]:
    path: Path = tmp_path_factory.mktemp("spans") / "inventory.sqlite3"
    async with SqliteStore(path) as opened:
        changes = _estate(random.Random(7))
        for start in range(0, len(changes), 50):
            await opened.put_changes(changes[start : start + 50])
        assert len((await opened.changes(ChangeQuery(limit=1000))).items) > 0.9 * len(changes)
        yield opened


async def _expected(
    store: SqliteStore, query: ChangeQuery, accounts: tuple[str, ...] | None
) -> dict[str, tuple[str, str]]:
    """Key → (first, last) change ids, from every change of the window, in capture order."""
    spans: dict[str, tuple[str, str]] = {}
    cursor = None
    while True:
        page = await store.changes(
            ChangeQuery(
                since=query.since, until=query.until, filters=query.filters, limit=37, cursor=cursor
            )
        )
        for change in page.items:
            if accounts is not None and change.account_id not in accounts:
                continue
            first = spans.get(change.key, (change.change_id, change.change_id))[0]
            spans[change.key] = (first, change.change_id)
        cursor = page.next_cursor
        if cursor is None:
            return spans


async def _stored(
    store: SqliteStore, query: ChangeQuery, accounts: tuple[str, ...] | None
) -> tuple[dict[str, tuple[str, str]], list[dict[str, Any]]]:
    """The same, read a page of ``query.limit`` keys at a time through change_spans_stored."""
    spans: dict[str, tuple[str, str]] = {}
    seen: list[dict[str, Any]] = []
    after_key = None
    while True:
        pairs, last_key = await store.change_spans_stored(
            query, accounts=accounts, after_key=after_key
        )
        page = orjson.loads(pairs)
        assert len(page) <= query.limit
        keys = [first["key"] for first, _ in page]
        assert keys == sorted(keys) and (after_key is None or all(k > after_key for k in keys))
        for first, stored_last in page:
            # A key changed once comes with its one change, then null.
            last = stored_last or first
            assert stored_last is None or stored_last["change_id"] != first["change_id"]
            assert first["key"] == last["key"] and first["key"] not in spans
            for change in (first, last):  # without their configurations
                assert "configuration" not in change and "prior_configuration" not in change
            spans[first["key"]] = (first["change_id"], last["change_id"])
            seen += [first, last]
        if last_key is None:
            assert len(page) < query.limit
            return spans, seen
        assert last_key == keys[-1]
        after_key = last_key


@pytest.mark.parametrize("seed", range(12))
async def test_spans_are_the_first_and_last_change_of_each_key(
    store: SqliteStore, seed: int
) -> None:
    rng = random.Random(seed)
    since = T0 + timedelta(seconds=rng.randint(0, 6 * 3600))
    until = since + timedelta(seconds=rng.choice((600, 3600, 4 * 3600, 20 * 3600)))
    filters = ChangeFilters(
        resource_type=rng.choice((None, *TYPES)),
        account_id=rng.choice((None, None, *ACCOUNTS)),
        region=rng.choice((None, None, *REGIONS)),
    )
    accounts = None if filters.account_id else rng.choice((None, ACCOUNTS[:2], ACCOUNTS[1:]))
    query = ChangeQuery(
        since=since, until=until, filters=filters, limit=rng.choice((1, 3, 10, 500))
    )
    expected = await _expected(store, query, accounts)
    spans, seen = await _stored(store, query, accounts)
    assert spans == expected
    for change in seen:
        at = datetime.fromisoformat(change["captured_at"])
        assert since <= at < until
        assert accounts is None or change["account_id"] in accounts
        assert filters.resource_type in (None, change["resource_type"])
        assert filters.region in (None, change["region"])


async def test_an_empty_window_has_no_spans(store: SqliteStore) -> None:
    query = ChangeQuery(since=T0 - timedelta(days=2), until=T0 - timedelta(days=1), limit=5)
    assert await store.change_spans_stored(query) == (b"[]", None)
    assert await store.change_spans_stored(ChangeQuery(since=T0, limit=5), accounts=()) == (
        b"[]",
        None,
    )
