"""Running the warehouse's Athena DDL: each statement through StartQueryExecution, in order,
waiting for each to finish before the next (views need their tables).

Athena takes one statement per query and runs it asynchronously; a failed statement is
reported with Athena's reason and the rest still run (a view over a table that failed fails
too, and says so), so one run shows every problem. Nothing here retries a statement: DDL is
``IF NOT EXISTS`` / ``OR REPLACE``, so running the whole list again is safe.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

__all__ = ["StatementResult", "apply_statements", "split_statements"]

_DONE = {"SUCCEEDED", "FAILED", "CANCELLED"}


@dataclass(frozen=True)
class StatementResult:
    statement: str
    state: str
    """SUCCEEDED, FAILED, CANCELLED, or ERROR when Athena refused to start it."""
    reason: str | None = None
    query_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.state == "SUCCEEDED"

    @property
    def title(self) -> str:
        """The statement's first line, without its body: ``CREATE EXTERNAL TABLE ... (``."""
        return self.statement.splitlines()[0].rstrip(" (")


def split_statements(text: str) -> list[str]:
    """The statements of a DDL script (one per blank-line-separated block ending in ``;``),
    without their final semicolon."""
    blocks = re.split(r";\s*\n\s*\n", text.strip())
    return [b.strip().rstrip(";").strip() for b in blocks if b.strip()]


async def apply_statements(
    statements: Sequence[str],
    *,
    region: str,
    workgroup: str | None = None,
    output_location: str | None = None,
    endpoint_url: str | None = None,
    timeout_s: float = 300.0,
    concurrency: int = 8,
    on_result: Callable[[StatementResult], None] | None = None,
) -> list[StatementResult]:
    """Run ``statements``; each result also goes to ``on_result`` as it is known.

    Runs of statements of one kind (``CREATE EXTERNAL TABLE``, ``CREATE OR REPLACE VIEW``)
    do not depend on each other and run ``concurrency`` at a time (Athena allows 20 DDL
    queries at once per account by default); each run starts after the one before it has
    finished, so the database exists before its tables and the tables before their views.
    Results come back in the order of ``statements``."""
    config = AioConfig(
        retries={"mode": "standard", "max_attempts": 5},
        connect_timeout=10,
        max_pool_connections=max(10, concurrency),
    )
    results: list[StatementResult] = []
    async with get_session().create_client(
        "athena", region_name=region, endpoint_url=endpoint_url, config=config
    ) as athena:
        gate = asyncio.Semaphore(concurrency)

        async def run(statement: str) -> StatementResult:
            async with gate:
                result = await _run_one(athena, statement, workgroup, output_location, timeout_s)
            if on_result is not None:
                on_result(result)
            return result

        for _, group in itertools.groupby(statements, key=_kind):
            results += await asyncio.gather(*(run(statement) for statement in group))
    return results


def _kind(statement: str) -> str:
    """``CREATE EXTERNAL TABLE``, ``CREATE OR REPLACE VIEW``, ``CREATE DATABASE``, ..."""
    words = statement.split(None, 4)
    return " ".join(w for w in words[:4] if w.isupper() and w.isalpha())


async def _run_one(
    athena: Any,
    statement: str,
    workgroup: str | None,
    output_location: str | None,
    timeout_s: float,
) -> StatementResult:
    request: dict[str, Any] = {"QueryString": statement}
    if workgroup:
        request["WorkGroup"] = workgroup
    if output_location:
        request["ResultConfiguration"] = {"OutputLocation": output_location}
    try:
        started = await athena.start_query_execution(**request)
    except (ClientError, BotoCoreError) as exc:
        return StatementResult(statement, "ERROR", _reason(exc))
    query_id = started["QueryExecutionId"]
    deadline = time.monotonic() + timeout_s
    delay = 0.2
    while True:
        try:
            found = await athena.get_query_execution(QueryExecutionId=query_id)
        except (ClientError, BotoCoreError) as exc:
            return StatementResult(statement, "ERROR", _reason(exc), query_id)
        status = found["QueryExecution"]["Status"]
        if status["State"] in _DONE:
            return StatementResult(
                statement, status["State"], status.get("StateChangeReason"), query_id
            )
        if time.monotonic() > deadline:
            return StatementResult(
                statement, "TIMEOUT", f"still {status['State']} after {timeout_s:.0f} s", query_id
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


def _reason(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'Error')}: {error.get('Message', str(exc))}"
    return str(exc)
