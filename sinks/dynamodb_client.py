"""One DynamoDB client as the DynamoDB stores use it: lifecycle, bounded calls, paging.

Every DynamoDB store (inventory, events, alerts) holds a :class:`DynamoClient`: an aiobotocore
client opened once (under a lock, so concurrent first calls share it) with one set of
timeouts and botocore's ``standard`` retry mode (throttling and transient errors, with
backoff), its tables made real by :func:`~cloudinv.sinks.dynamodb_tables.ensure_table`, every
call counted by operation, at most ``max_concurrency`` calls in flight and, under
:attr:`DynamoClient.writes`, at most ``write_concurrency`` writes. Retries botocore does not
do (unprocessed items, cancelled transactions) go through :func:`retry_with_backoff`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from cloudinv.core.retry import RetryHook, retry
from cloudinv.sinks.dynamodb_tables import TableSpec, ensure_table

__all__ = [
    "CONNECT_TIMEOUT_S",
    "READ_TIMEOUT_S",
    "RETRY_ATTEMPTS",
    "DynamoBacked",
    "DynamoClient",
    "FilterConditions",
    "Item",
    "retry_with_backoff",
]

Item = dict[str, Any]

CONNECT_TIMEOUT_S = 10
READ_TIMEOUT_S = 60
RETRY_ATTEMPTS = 10
BACKOFF_FIRST_S = 0.05
BACKOFF_MAX_S = 5.0


T = TypeVar("T")
E = TypeVar("E", bound=Exception)


async def retry_with_backoff(
    call: Callable[[], Awaitable[T]],
    *,
    attempts: int | None,
    retry_on: type[E],
    on_retry: RetryHook | None = None,
    gave_up: Callable[[E], Exception] | None = None,
) -> T:
    """:func:`cloudinv.core.retry.retry` with the stores' backoff for the retries botocore
    does not do (unprocessed items, cancelled transactions): full jitter, up to 50 ms,
    100 ms, ... capped at 5 s. ``call`` is tried again while it raises ``retry_on``, up to
    ``attempts`` in all (``None``: until it succeeds); the last ``retry_on`` is then turned
    into ``gave_up(exc)`` (the store's own error, saying what kept failing), or raised as it
    is without ``gave_up``. Any other failure is raised at once."""
    try:
        return await retry(
            call,
            attempts=attempts,
            first_delay_s=BACKOFF_FIRST_S,
            max_delay_s=BACKOFF_MAX_S,
            jitter=True,
            retry_if=lambda exc: isinstance(exc, retry_on),
            on_retry=on_retry,
        )
    except retry_on as exc:
        if gave_up is None:
            raise
        raise gave_up(exc) from None


@dataclass
class FilterConditions:
    """A query's filter on string attributes, built from equality and membership tests:
    ``#attr = :attr`` and ``#attr IN (:attr0, ...)``, with their names and values."""

    names: dict[str, str] = field(default_factory=dict)
    values: Item = field(default_factory=dict)
    terms: list[str] = field(default_factory=list)

    def equal(self, pairs: Iterable[tuple[str, str | None]]) -> None:
        """``attr = value`` for each pair whose value is given (``None`` means any)."""
        for attr, value in pairs:
            if value is not None:
                self.names[f"#{attr}"] = attr
                self.values[f":{attr}"] = {"S": value}
                self.terms.append(f"#{attr} = :{attr}")

    def one_of(self, attr: str, many: Sequence[str]) -> None:
        """``attr`` is one of ``many`` (not empty)."""
        self.names[f"#{attr}"] = attr
        slots = []
        for i, value in enumerate(many):
            self.values[f":{attr}{i}"] = {"S": value}
            slots.append(f":{attr}{i}")
        self.terms.append(f"#{attr} IN ({', '.join(slots)})")

    def expression(self) -> str | None:
        """The FilterExpression, ``None`` when nothing is filtered."""
        return " AND ".join(self.terms) or None


class DynamoClient:
    """See the module docstring. ``tables``: (table name, spec) pairs checked at open;
    ``create_tables``: create the missing ones (else a missing table is an error).
    Problems are raised as ``error``; ``what`` names the store in them."""

    def __init__(
        self,
        what: str,
        tables: Sequence[tuple[str, TableSpec]],
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        max_concurrency: int = 16,
        write_concurrency: int = 4,
        create_tables: bool = True,
        retry_attempts: int = RETRY_ATTEMPTS,
        error: type[Exception] = RuntimeError,
    ) -> None:
        if not 1 <= write_concurrency <= max_concurrency:
            raise ValueError(
                f"write_concurrency must be in [1, max_concurrency={max_concurrency}], "
                f"got {write_concurrency}"
            )
        self.what = what
        self.tables = list(tables)
        self.region = region
        self.endpoint_url = endpoint_url
        self.create_tables = create_tables
        self.calls: Counter[str] = Counter()
        """Calls made, by operation name (botocore's, e.g. ``Query``)."""
        self._error = error
        self._retry_attempts = retry_attempts
        self._max_concurrency = max_concurrency
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self.writes = asyncio.Semaphore(write_concurrency)
        """Held around each write (transactions, batch writes, puts). moto's server is not
        safe under concurrent writes (see tests/test_dynamodb_store.py): tests use 1."""
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None
        self._open_lock = asyncio.Lock()
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the client and check (or create) the tables; safe to call again."""
        async with self._open_lock:
            if self._closed:
                raise self._error(f"{self.what} is closed")
            if self._client is not None:
                return
            config = AioConfig(
                retries={"mode": "standard", "max_attempts": self._retry_attempts},
                max_pool_connections=self._max_concurrency,
                connect_timeout=CONNECT_TIMEOUT_S,
                read_timeout=READ_TIMEOUT_S,
            )
            stack = contextlib.AsyncExitStack()
            try:
                client = await stack.enter_async_context(
                    get_session().create_client(
                        "dynamodb",
                        region_name=self.region,
                        endpoint_url=self.endpoint_url,
                        config=config,
                    )
                )
                client.meta.events.register("before-call.dynamodb", self._count_call)
                for table, spec in self.tables:
                    await ensure_table(
                        client, table, spec, create=self.create_tables, error=self._error
                    )
            except BaseException:
                await stack.aclose()
                raise
            self._stack, self._client = stack, client

    def before_call(self, operation: str, handler: Callable[..., Any]) -> None:
        """Run ``handler`` before each ``operation`` call (botocore's name, e.g.
        ``TransactWriteItems``; may be a coroutine function); the client must be open."""
        if self._client is None:
            raise self._error(f"{self.what} is not open")
        self._client.meta.events.register(f"before-call.dynamodb.{operation}", handler)

    def _count_call(self, model: Any, **_: Any) -> None:
        self.calls[model.name] += 1

    async def close(self) -> None:
        """Close the client; final."""
        async with self._open_lock:
            if self._closed:
                return
            self._closed = True
            stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    # -- calls -----------------------------------------------------------------------------

    async def call(self, operation: str, **params: Any) -> Item:
        """One API call (``operation`` in botocore's snake case, e.g. ``query``)."""
        if self._client is None:
            await self.open()
        client = self._client
        if client is None:
            raise self._error(f"{self.what} is closed")
        async with self._semaphore:
            result: Item = await getattr(client, operation)(**params)
            return result

    async def responses(self, **params: Any) -> AsyncIterator[Item]:
        """The responses of a Query, page after page, following ``LastEvaluatedKey``."""
        while True:
            page = await self.call("query", **params)
            yield page
            last = page.get("LastEvaluatedKey")
            if not last:
                return
            params["ExclusiveStartKey"] = last

    async def pages(self, **params: Any) -> AsyncIterator[list[Item]]:
        """The items of a Query, page after page."""
        async for page in self.responses(**params):
            yield page.get("Items", [])

    async def query(self, *, want: int | None = None, **params: Any) -> list[Item]:
        """The items of a Query (filters applied): all of them, or until ``want``."""
        items: list[Item] = []
        if want is not None:
            params.setdefault("Limit", min(1000, max(want, 50)))
        async for page in self.pages(**params):
            items += page
            if want is not None and len(items) >= want:
                return items[:want]
        return items


class DynamoBacked:
    """The lifecycle of a store that talks to DynamoDB through one :class:`DynamoClient`
    (``self._dynamo``)."""

    _dynamo: DynamoClient

    async def open(self) -> None:
        """Open the client and check (or create) the tables; safe to call again."""
        await self._dynamo.open()

    async def close(self) -> None:
        await self._dynamo.close()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, operation: str, **params: Any) -> Item:
        return await self._dynamo.call(operation, **params)
