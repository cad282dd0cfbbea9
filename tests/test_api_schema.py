"""Schemathesis against ``/openapi.json`` of a live server over the stores the real pipeline
filled (see :mod:`tests.api_helpers`): generated requests, valid and invalid, never get a
500 and never get a response that breaks the declared schema, status codes or content types.

The server runs in a thread with its own event loop, since schemathesis calls it
synchronously. The live feed is left out (an endless stream; ``test_api_feed`` covers it).
The number of examples per operation is bounded so the run stays well under a minute.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from pydantic import SecretStr
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from cloudinv.api.app import create_app
from cloudinv.api.auth import generate_token
from cloudinv.api.endpoints import parse_time
from cloudinv.api.state import Stores
from cloudinv.core.settings import ApiToken, Settings
from cloudinv.sinks.events_store import EventsStore, events_store_path
from cloudinv.sinks.sqlite_store import SqliteStore
from tests.api_helpers import PipelineData, pipeline_data

POSITIVE_EXAMPLES = 40
NEGATIVE_EXAMPLES = 15
SKIPPED = {"/v1/changes/stream", "/v1/alerts/stream"}  # never-ending SSE streams
CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
]


@pytest.fixture(scope="module")
async def data(
    broker: str, moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> PipelineData:
    return await pipeline_data(broker, moto_endpoint, tmp_path_factory)


@contextmanager
def server_thread(data_dir: Path, digest: str, moto_endpoint: str) -> Iterator[str]:
    """The API on 127.0.0.1 in a thread of its own; its base URL. Its AWS access (for the
    S3 metrics report) is one account of the moto server."""
    from aiohttp import web

    loop = asyncio.new_event_loop()
    started = threading.Event()
    state: dict[str, Any] = {}

    async def start() -> None:
        inventory = SqliteStore.in_data_dir(data_dir)
        events = EventsStore(events_store_path(data_dir), readonly=True)
        await inventory.open()
        await events.open()
        settings = Settings(
            api={"tokens": [ApiToken(sha256=SecretStr(digest), name="t")]},
            aws={
                "endpoint_url": moto_endpoint,
                "accounts": [{"role_arn": "arn:aws:iam::765432109876:role/cloudinv-reader"}],
            },
        )
        app = create_app(settings, {"mode": "test"}, Stores(inventory=inventory, events=events))
        runner = web.AppRunner(app, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        state.update(runner=runner, inventory=inventory, events=events)
        state["port"] = runner.addresses[0][1]

    async def stop() -> None:
        await state["runner"].cleanup()
        await state["events"].close()
        await state["inventory"].close()

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(start())
        finally:
            started.set()
        loop.run_forever()
        loop.run_until_complete(stop())
        loop.close()

    thread = threading.Thread(target=run, name="api-under-test", daemon=True)
    thread.start()
    started.wait(30)
    assert "port" in state, "the API did not start"
    try:
        yield f"http://127.0.0.1:{state['port']}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)


RANGES = (("since", "until"), ("from", "to"))
"""Parameter pairs whose first must not come after the second (the server says 400 if it
does; OpenAPI cannot say so across two parameters, /docs and each description do)."""


def _valid_request(case: Any) -> Any:
    """What a positive example must also be, beyond each parameter's schema (the
    descriptions say so).

    A cursor is opaque: only a previous page's next_cursor is valid, and no generator can
    make one (the paging tests follow real cursors); invalid cursors stay in the negative
    phase, where a 400 is the right answer. A range is given in order.
    """
    if not case.query:
        return case
    query = {k: v for k, v in case.query.items() if k != "cursor"}
    for start, end in RANGES:
        if start not in query:
            continue
        low = _as_time(query[start], end=False)
        if end in query:
            high = _as_time(query[end], end=True)
            if low is not None and high is not None and low > high:
                query[start], query[end] = query[end], query[start]
        elif low is not None and low > datetime.now(UTC):
            # The end defaults to now: a start in the future is a reversed range too.
            query[end] = query[start]
            query[start] = "2000-01-01"
    month = query.get("month")
    if isinstance(month, str) and month > f"{datetime.now(UTC):%Y-%m}":
        query["month"] = f"{datetime.now(UTC):%Y-%m}"  # not after the current month
    case.query = query
    return case


def _auth(case: Any, headers: dict[str, str]) -> dict[str, str] | None:
    """The token to send, unless the case negates its headers (drops or spoils the bearer
    token): then it goes as generated and a 401 is the right answer. Adding the token back
    would undo the negation, and schemathesis would still count the request as invalid."""
    meta = case.meta
    component = None if meta is None else meta.components.get(ParameterLocation.HEADER)
    if component is not None and component.mode.is_negative:
        return None
    return headers


def _as_time(value: Any, *, end: bool) -> datetime | None:
    try:
        return parse_time(str(value), end=end)
    except (ValueError, OverflowError):
        return None


def test_no_500_and_every_response_matches_the_schema(
    data: PipelineData, moto_endpoint: str
) -> None:
    token, digest = generate_token()
    headers = {"Authorization": f"Bearer {token}"}
    with (
        server_thread(data.data_dir, digest, moto_endpoint) as base,
        requests.Session() as session,
    ):
        spec = session.get(f"{base}/openapi.json", timeout=10).json()
        schema = schemathesis.openapi.from_dict(spec)
        operations = [r.ok() for r in schema.get_all_operations()]
        tested = [op for op in operations if op.path not in SKIPPED]
        assert {"/v1/resources", "/v1/events", "/v1/diff", "/v1/scans"} <= {
            op.path for op in tested
        }
        failures: list[str] = []
        statuses: dict[int, int] = {}
        for operation in tested:
            for mode, examples in (
                (GenerationMode.POSITIVE, POSITIVE_EXAMPLES),
                (GenerationMode.NEGATIVE, NEGATIVE_EXAMPLES),
            ):
                strategy = operation.as_strategy(generation_mode=mode)
                if mode == GenerationMode.POSITIVE:
                    strategy = strategy.map(_valid_request)

                @settings(
                    max_examples=examples,
                    deadline=None,
                    database=None,
                    derandomize=True,
                    suppress_health_check=list(HealthCheck),
                )
                @given(case=strategy)
                def check(case: Any) -> None:
                    response = case.call(
                        base_url=base, session=session, headers=_auth(case, headers), timeout=30
                    )
                    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                    case.validate_response(response)

                try:
                    check()
                except Unsatisfiable:
                    # No parameter to make invalid (GET /healthz): nothing negative to send.
                    assert mode == GenerationMode.NEGATIVE, operation.path
                except Exception as exc:
                    failures.append(f"{operation.method.upper()} {operation.path} ({mode}): {exc}")
        assert not failures, "\n\n".join(failures)
        # Enough requests were made, and many got through validation to the stores.
        assert sum(statuses.values()) >= 10 * len(tested)
        assert statuses.get(200, 0) >= 5 * len(tested) and 500 not in statuses
