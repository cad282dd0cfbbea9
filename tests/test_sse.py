"""The one SSE mechanism (api/sse.py) as the alert stream uses it: every client of an
application shares one poller of the alerts store (the stream used to poll per client),
resumes after Last-Event-ID without gap or duplicate, and sees only its accounts. A real
API server over real SQLite stores."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from cloudinv.api import sse
from cloudinv.api.state import STORES_KEY
from cloudinv.sinks.alerts_store import AlertNotification, AlertsStore, Observation
from tests.api_helpers import read_sse, running_api

A, B = "111111111111", "222222222222"
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def opened(i: int, account: str) -> Observation:
    return Observation(
        rule_id="sg-ssh-open",
        title="SSH open",
        severity="high",
        kind="state",
        key=f"arn:aws:ec2:us-east-1:{account}:security-group/sg-{i}",
        account_id=account,
        region="us-east-1",
        opens=True,
        holds=True,
        at=T0 + timedelta(seconds=i),
        cause=f"change-{i}",
        resource_type="AWS::EC2::SecurityGroup",
    )


async def test_alert_streams_share_one_poller_and_resume(tmp_path: Path) -> None:
    async with running_api(tmp_path, {"admin": None, "a": [A]}) as api:
        store = api.app[STORES_KEY].alerts
        assert isinstance(store, AlertsStore)
        await store.apply([opened(1, A), opened(2, B)])
        readers: list[str] = []
        after = store.notifications_after

        async def counted(seq: int, limit: int = 500) -> list[AlertNotification]:
            task = asyncio.current_task()
            readers.append(task.get_name() if task is not None else "?")
            return await after(seq, limit)

        store.notifications_after = counted  # type: ignore[method-assign]
        async with aiohttp.ClientSession() as http:
            streams = [
                await http.get(
                    api.base + "/v1/alerts/stream",
                    headers={**api.auth("admin" if i % 2 else "a"), "Last-Event-ID": "0"},
                )
                for i in range(6)
            ]
            try:
                backlogs = [
                    await read_sse(r, until=lambda ev, n=(2 if i % 2 else 1): len(ev) >= n)
                    for i, r in enumerate(streams)
                ]
                async with asyncio.timeout(10):
                    while True:
                        if sse.feed_subscribers(api.app) == len(streams):
                            break
                        await asyncio.sleep(0.05)
                # The account scope: token "a" never sees account B's alert.
                for i, events in enumerate(backlogs):
                    accounts = [orjson.loads(e.data)["alert"]["account_id"] for e in events]
                    assert accounts == ([A, B] if i % 2 else [A])
                polls_before = len(readers)
                await store.apply([opened(3, A)])
                live = [await read_sse(r, until=lambda ev: len(ev) >= 1) for r in streams]
                assert all(
                    [orjson.loads(e.data)["alert"]["key"].endswith("sg-3") for e in ev] == [True]
                    for ev in live
                )
                # One poller for six clients: once they follow, the store is read by the
                # application's one alert poller only, never by a client's own loop.
                assert set(readers[polls_before:]) == {"alert-feed-poller"}, readers
                last = backlogs[1][-1].id
            finally:
                for r in streams:
                    r.close()
            # Resuming after the second notification gives the third only.
            async with http.get(
                api.base + "/v1/alerts/stream",
                headers={**api.auth(), "Last-Event-ID": str(last)},
            ) as resp:
                again: list[Any] = await read_sse(resp, until=lambda ev: len(ev) >= 1)
                assert [orjson.loads(e.data)["alert"]["key"][-4:] for e in again] == ["sg-3"]
