"""What a CloudTrail events store offers: the :class:`CloudTrailStore` Protocol.

Two stores implement it, checked by mypy where the factory returns them and by the same
tests: :class:`~cloudinv.sinks.events_store.EventsStore` (SQLite, the embedded default) and
:class:`~cloudinv.sinks.dynamodb_events_store.DynamoEventsStore`. The activity stage writes
through it and the API reads through it; neither knows which store it has.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Protocol, Self

from cloudinv.core.models import CloudTrailEvent
from cloudinv.sinks.events_store import (
    ActivityBucket,
    EventFilters,
    EventPage,
    Granularity,
    PrincipalSummary,
    ServiceSummary,
    StoredEventPage,
    WriteResult,
)

__all__ = ["CloudTrailStore"]


class CloudTrailStore(Protocol):
    """CloudTrail events, each stored once, with their activity aggregates."""

    async def open(self) -> None:
        """Create or check the storage; safe to call again."""
        ...

    async def close(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc: object) -> None: ...

    async def write_batch(self, batch: Sequence[CloudTrailEvent | bytes]) -> WriteResult:
        """Store the events not stored yet and add exactly those to the aggregates; items
        are events or their wire encoding; what is not an event is left out, with why."""
        ...

    async def events(
        self, filters: EventFilters | None = None, *, limit: int = 100, cursor: str | None = None
    ) -> EventPage:
        """Matching events, newest first; ``limit`` 1-10,000."""
        ...

    async def stored_events(
        self, filters: EventFilters | None = None, *, limit: int = 100, cursor: str | None = None
    ) -> StoredEventPage:
        """As :meth:`events`, each event as its stored JSON (exactly the model's)."""
        ...

    async def events_json(
        self, filters: EventFilters | None = None, *, limit: int = 100, cursor: str | None = None
    ) -> tuple[bytes, str | None]:
        """As :meth:`stored_events`, the page as one JSON array of the events (each exactly
        the model's JSON), and the next cursor: what the API sends, built by the store."""
        ...

    async def count(self, filters: EventFilters | None = None) -> int:
        """How many events match."""
        ...

    async def event(self, event_id: str) -> CloudTrailEvent | None: ...

    async def principals(
        self, *, account_id: str | None = None, label: str | None = None
    ) -> list[PrincipalSummary]:
        """Every principal seen (per account), most active first; ``label``: that one only."""
        ...

    async def services(
        self,
        *,
        account_id: str | None = None,
        since: datetime | date | None = None,
        until: datetime | date | None = None,
    ) -> list[ServiceSummary]:
        """Event counts per service over whole days, busiest first."""
        ...

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
        """Per-bucket activity of one principal, one service or everything, oldest first."""
        ...

    async def parameter_paths(self, *, limit: int = 1000) -> list[str]:
        """Request-parameter paths that can be filtered on (``EventFilters.params``)."""
        ...
