"""Alerts, drift and rules: ``GET /v1/alerts``, ``GET /v1/alerts/stream`` (Server-Sent
Events), ``GET /v1/alerts/{id}``, ``GET /v1/drift`` and ``GET /v1/rules``.

Every read goes through the caller's account scope: a token limited to some accounts never
sees another account's alert, drift item or notification.

The alert stream tails the alerts store's notifications (each opening and resolution) in
order; each event's ``id`` is the notification's sequence number. A client reconnecting with
``Last-Event-ID`` (or ``last_event_id``) first receives what it missed, then the live ones,
without gap or duplicate. It is served by :mod:`cloudinv.api.sse`, as the change feed is:
one poller per application, whatever the number of clients.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, BeforeValidator, Field, WithJsonSchema

from cloudinv.api.endpoints import BadRequest, NotFound, Page, PageQuery, Query, endpoint
from cloudinv.api.routes_common import (
    AccountId,
    AccountView,
    ResourceTypeName,
    account_view,
    decode_cursor,
    encode_cursor,
    inventory_store,
    store_cursor_errors,
    stores,
)
from cloudinv.api.sse import EventLog, event_stream, last_event_id
from cloudinv.api.state import SETTINGS_KEY
from cloudinv.sinks.alerts_store import (
    SEVERITIES,
    Alert,
    AlertFilters,
    AlertNotification,
    AlertsBackend,
    AlertStatus,
    DriftItem,
    compute_drift,
)
from cloudinv.streams.rules import Rule, load_rules

log = logging.getLogger(__name__)

TAGS = ["alerts"]


# -- parameters -------------------------------------------------------------------------------


def _severities(value: Any) -> Any:
    parts = value if isinstance(value, list) else [value]
    names: list[str] = []
    for part in parts:
        if not isinstance(part, str):
            raise ValueError("expected severities, comma-separated")
        for name in part.split(","):
            if name.strip() not in SEVERITIES:
                raise ValueError(
                    f"{name.strip()!r} is not a severity: expected {', '.join(SEVERITIES)}, "
                    "comma-separated"
                )
            names.append(name.strip())
    return tuple(dict.fromkeys(names))


_SEVERITY_PATTERN = "(" + "|".join(SEVERITIES) + ")"
Severities = Annotated[
    tuple[str, ...],
    BeforeValidator(_severities),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": f"^{_SEVERITY_PATTERN}(,{_SEVERITY_PATTERN})*$",
            "description": "info, low, medium, high or critical; several comma-separated",
        }
    ),
]
RuleId = Annotated[
    str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{1,79}$", description="a rule id (GET /v1/rules)")
]


class AlertFilterQuery(Query):
    severity: Severities | None = None
    rule: RuleId | None = None
    account: AccountId | None = None


class AlertsQuery(AlertFilterQuery, PageQuery):
    status: AlertStatus | None = Field(default=None, description="open or resolved")
    type: ResourceTypeName | None = None
    key: str | None = Field(default=None, min_length=1, description="one resource key (ARN)")


class AlertStreamQuery(AlertFilterQuery):
    last_event_id: int | None = Field(
        default=None, ge=0, description="resume after this event id (as Last-Event-ID does)"
    )


class DriftQuery(PageQuery):
    type: ResourceTypeName | None = None
    account: AccountId | None = None


class RuleProblemInfo(BaseModel):
    file: str
    rule_id: str | None = None
    line: int | None = None
    problem: str


class RuleCatalog(BaseModel):
    items: list[Rule]
    problems: list[RuleProblemInfo] = Field(
        default_factory=list, description="Rules rejected: file, rule id and what is wrong"
    )


# -- the store --------------------------------------------------------------------------------


def alerts_store(request: web.Request) -> AlertsBackend:
    store = stores(request).alerts
    if store is None:
        raise web.HTTPServiceUnavailable(reason="no alerts store is configured")
    return store


def _filters(view: AccountView, query: AlertFilterQuery, **more: Any) -> AlertFilters:
    return AlertFilters(
        severities=query.severity,
        rule_id=query.rule,
        account_ids=view.accounts,
        **more,
    )


# -- alerts -----------------------------------------------------------------------------------


@endpoint(
    "GET",
    "/v1/alerts",
    summary="Alerts raised by the rules, most recently opened first",
    query=AlertsQuery,
    response=Page[Alert],
    tags=TAGS,
    csv_items=True,
)
async def list_alerts(request: web.Request, query: AlertsQuery) -> Page[Alert]:
    view = account_view(request, query.account)
    state = decode_cursor(query.cursor, "alerts")
    if view.empty:
        return Page[Alert](items=[])
    cursor = state.get("s") if state else None
    if cursor is not None and not isinstance(cursor, str):
        raise BadRequest("cursor", "cursor is damaged", "the next_cursor of a previous page")
    filters = _filters(view, query, status=query.status, resource_type=query.type, key=query.key)
    with store_cursor_errors():
        page = await alerts_store(request).alerts(filters, limit=query.limit, cursor=cursor)
    next_cursor = encode_cursor("alerts", s=page.next_cursor) if page.next_cursor else None
    return Page[Alert](items=page.items, next_cursor=next_cursor)


@endpoint(
    "GET",
    "/v1/alerts/stream",
    summary="Alert openings and resolutions as Server-Sent Events; resume with Last-Event-ID",
    query=AlertStreamQuery,
    tags=TAGS,
    raw=True,
)
async def alert_stream(request: web.Request, query: AlertStreamQuery) -> web.StreamResponse:
    last = last_event_id(request, query.last_event_id)
    view = account_view(request, query.account)
    store = alerts_store(request)
    severities, rule = query.severity, query.rule

    def wanted(n: AlertNotification) -> bool:
        alert = n.alert
        return (
            view.allows(alert.account_id)
            and (severities is None or alert.severity in severities)
            and (rule is None or alert.rule_id == rule)
        )

    source = EventLog[AlertNotification](
        event="alert",
        head=store.head,
        after=store.notifications_after,
        data=lambda n: n.__pydantic_serializer__.to_json(n),
    )
    return await event_stream(request, source, wanted, last)


@endpoint(
    "GET",
    "/v1/alerts/{alert_id:[0-9a-f]{32}}",
    summary="One alert",
    response=Alert,
    tags=TAGS,
    path_params={"alert_id": "the alert's id (32 hex characters)"},
)
async def get_alert(request: web.Request, _: None) -> Alert:
    alert = await alerts_store(request).alert(request.match_info["alert_id"])
    if alert is None or not account_view(request).allows(alert.account_id):
        raise NotFound(f"no alert {request.match_info['alert_id']}")
    return alert


# -- drift ------------------------------------------------------------------------------------


@endpoint(
    "GET",
    "/v1/drift",
    summary="Resources that differ from their pinned baseline (cloudinv baseline pin), by key",
    query=DriftQuery,
    response=Page[DriftItem],
    tags=TAGS,
    csv_items=True,
)
async def list_drift(request: web.Request, query: DriftQuery) -> Page[DriftItem]:
    view = account_view(request, query.account)
    state = decode_cursor(query.cursor, "drift")
    after = state.get("a") if state else None
    if after is not None and not isinstance(after, str):
        raise BadRequest("cursor", "cursor is damaged", "the next_cursor of a previous page")
    if view.empty:
        return Page[DriftItem](items=[])
    items = await compute_drift(
        alerts_store(request),
        inventory_store(request),
        resource_type=query.type,
        account_ids=view.accounts,
    )
    if after is not None:
        items = [item for item in items if item.key > after]
    page = items[: query.limit]
    more = len(items) > query.limit
    next_cursor = encode_cursor("drift", a=page[-1].key) if more and page else None
    return Page[DriftItem](items=page, next_cursor=next_cursor)


# -- rules ------------------------------------------------------------------------------------


@endpoint(
    "GET",
    "/v1/rules",
    summary="The alert rules in force (built-in pack and rules_dir), and any rejected ones",
    response=RuleCatalog,
    tags=TAGS,
)
async def list_rules(request: web.Request, _: None) -> RuleCatalog:
    settings = request.app[SETTINGS_KEY].alerts
    rules = await asyncio.to_thread(load_rules, settings.rules_dir, builtin=settings.builtin_rules)
    return RuleCatalog(
        items=rules.rules,
        problems=[
            RuleProblemInfo(file=p.file, rule_id=p.rule_id, line=p.line, problem=p.problem)
            for p in rules.problems
        ],
    )
