"""``GET /v1/changes/stream``: the live change feed as Server-Sent Events.

The store's change log (:class:`~cloudinv.sinks.store.ChangeLog`, commit order) served by
:mod:`cloudinv.api.sse`: one poller per application, resume with ``Last-Event-ID`` without
gap or duplicate, a bounded buffer per client (a client that falls behind gets a ``resume``
event and reconnects), heartbeats. Each event's ``id`` is the store's sequence number of the
change; its data is the stored ChangeEvent JSON.
A change stored before its CloudTrail event was known comes again once the event is (the
store logs it again, attributed): same ``change_id``, a new ``id``; replace the one you have.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from aiohttp import web
from pydantic import Field

from cloudinv.api.endpoints import endpoint
from cloudinv.api.routes_changes import ChangeFilterQuery
from cloudinv.api.routes_common import (
    AccountView,
    LogRow,
    account_view,
    change_log,
    inventory_store,
)
from cloudinv.api.sse import EventLog, event_stream, last_event_id


class FeedQuery(ChangeFilterQuery):
    last_event_id: int | None = Field(
        default=None,
        ge=0,
        description="resume after this event id (as the Last-Event-ID header does)",
    )


@dataclass(frozen=True)
class FeedFilter:
    view: AccountView
    resource_type: str | None = None
    region: str | None = None
    key: str | None = None
    change_types: tuple[str, ...] | None = None
    principal: str | None = None

    def __call__(self, row: LogRow) -> bool:
        if not self.view.allows(row.account_id):
            return False
        if self.resource_type is not None and row.resource_type != self.resource_type:
            return False
        if self.region is not None and row.region != self.region:
            return False
        if self.key is not None and row.key != self.key:
            return False
        if self.change_types is not None and row.change_type not in self.change_types:
            return False
        if self.principal is not None:
            who = orjson.loads(row.event).get("attribution") or {}
            return self.principal in (who.get("principal_arn"), who.get("principal_name"))
        return True


@endpoint(
    "GET",
    "/v1/changes/stream",
    summary="Live changes as Server-Sent Events; reconnect with Last-Event-ID to resume",
    query=FeedQuery,
    tags=["changes"],
    raw=True,
)
async def change_stream(request: web.Request, query: FeedQuery) -> web.StreamResponse:
    last = last_event_id(request, query.last_event_id)
    reader = change_log(inventory_store(request))
    if reader is None:
        raise web.HTTPNotImplemented(reason="this inventory store cannot be tailed")
    match = FeedFilter(
        view=account_view(request, query.account),
        resource_type=query.type,
        region=query.region,
        key=query.key,
        change_types=query.change_type,
        principal=query.principal,
    )
    source = EventLog[LogRow](
        event="change",
        head=reader.change_log_head,
        after=reader.change_log_after,
        data=lambda row: row.event,
    )
    return await event_stream(request, source, match, last)
