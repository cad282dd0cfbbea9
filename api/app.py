"""The aiohttp application factory: ``create_app(settings, runtime, stores)``.

State lives under :class:`web.AppKey`. Routes come from the endpoint declarations in the
``api.routes_*`` modules (see :mod:`cloudinv.api.endpoints`): each is wrapped so that its query is
validated, its errors become ``application/problem+json``, and its result is serialized as
JSON or CSV. Request counts and latencies go to ``/metrics``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from pydantic import BaseModel, ValidationError

import cloudinv.api.routes  # noqa: F401  (registers the /v1 endpoints)
from cloudinv import __version__
from cloudinv.api.asyncapi import build_asyncapi
from cloudinv.api.auth import SCOPE_KEY, TokenTable, auth_middleware
from cloudinv.api.endpoints import (
    ENDPOINTS,
    BadRequest,
    Endpoint,
    NotFound,
    ServiceUnavailable,
    endpoint,
    json_bytes,
    parse_query,
    to_csv,
    validation_problem,
    wants_csv,
)
from cloudinv.api.openapi import build_openapi, render_docs
from cloudinv.api.problems import problem
from cloudinv.api.routes_reports import setup_reports
from cloudinv.api.sse import FEEDS_KEY, Feeds, close_feeds
from cloudinv.api.state import (
    METRICS_KEY,
    RUNTIME_KEY,
    SETTINGS_KEY,
    STARTED_KEY,
    STORES_KEY,
    Stores,
)
from cloudinv.api.ui import setup_ui
from cloudinv.core.connection import RunningComponent
from cloudinv.core.metrics import Metrics
from cloudinv.core.settings import Settings
from cloudinv.sinks.alerts_store import AlertsStore
from cloudinv.sinks.factory import alerts_store, events_store, inventory_store
from cloudinv.sinks.sqlite_store import SqliteStore
from cloudinv.sinks.store import AttributionJoin

log = logging.getLogger(__name__)


class Health(BaseModel):
    status: str
    version: str
    uptime_s: float


class AttributionStatus(BaseModel):
    """Changes of the last ``window_s`` that a stored write event explains (``matched``) and
    how many of those say who did it (``attributed``); ``ratio`` = attributed / matched.
    Apart from the ratio, ``inherited``: changes whose window holds no event that carry the
    event of the state transition they complete (an instance's ``terminated`` after
    TerminateInstances)."""

    window_s: float
    changes: int
    matched: int
    attributed: int
    ratio: float | None
    inherited: int = 0


class Status(BaseModel):
    version: str
    mode: str
    ready: bool = True
    """False while the pipeline cannot do its job (broker unreachable, a stage down)."""
    reasons: list[str] = []
    """Why it is not ready."""
    components: list[RunningComponent]
    stats: dict[str, Any] = {}
    attribution: AttributionStatus | None = None


_FIGURE_HELP = {
    "matched": "Changes of the last hour that a stored CloudTrail write event explains",
    "attributed": "Of those, the changes that carry their attribution",
    "inherited": "Changes of the last hour with no write event of their own that carry the "
    "event of the state transition they complete",
}
ATTRIBUTION_WINDOW = timedelta(hours=1)
"""The period /v1/status and /metrics report the attribution figure over."""


async def attribution_status(stores: Stores) -> AttributionStatus | None:
    """The attribution figure of the inventory store, if it keeps write events."""
    store = stores.inventory
    if not isinstance(store, AttributionJoin):
        return None
    figure = await store.attribution_figure(datetime.now(UTC) - ATTRIBUTION_WINDOW)
    return AttributionStatus(
        window_s=ATTRIBUTION_WINDOW.total_seconds(),
        changes=figure.changes,
        matched=figure.matched,
        attributed=figure.attributed,
        ratio=figure.ratio,
        inherited=figure.inherited,
    )


def _not_ready(runtime: dict[str, Any]) -> list[str]:
    """What the runtime (``cloudinv demo`` / ``up``) reports as down: its ``health``."""
    health: Callable[[], list[str]] | None = runtime.get("health")
    return list(health()) if health else []


@endpoint(
    "GET",
    "/healthz",
    summary="Liveness: the API process answers",
    response=Health,
    tags=["meta"],
    open=True,
)
async def healthz(request: web.Request, _: None) -> Health:
    started = request.app[STARTED_KEY]
    return Health(status="ok", version=__version__, uptime_s=round(time.monotonic() - started, 3))


@endpoint(
    "GET",
    "/v1/status",
    summary="What runs where, and pipeline counters",
    response=Status,
    tags=["meta"],
)
async def status(request: web.Request, _: None) -> Status:
    runtime: dict[str, Any] = request.app[RUNTIME_KEY]
    components = [
        c if isinstance(c, RunningComponent) else RunningComponent.model_validate(c)
        for c in runtime.get("components", [])
    ]
    stats_fn: Callable[[], dict[str, Any]] | None = runtime.get("stats")
    reasons = _not_ready(runtime)
    return Status(
        version=__version__,
        mode=str(runtime.get("mode", "api")),
        ready=not reasons,
        reasons=reasons,
        components=components,
        stats=stats_fn() if stats_fn else {},
        attribution=await attribution_status(request.app[STORES_KEY]),
    )


class RunningConfig(BaseModel):
    """The settings a running instance works with, secrets masked."""

    mode: str
    """``demo``, ``up`` or ``api``."""
    settings: dict[str, Any]
    """The effective settings: file, environment and defaults, with what the runtime chose
    over them (the demo's simulated accounts, regions and scan interval). Every secret is
    '********'; a token limited to some accounts sees only those accounts' roles."""


@endpoint(
    "GET",
    "/v1/config",
    summary="The running instance's effective settings, every secret masked",
    response=RunningConfig,
    tags=["meta"],
)
async def running_config(request: web.Request, _: None) -> RunningConfig:
    runtime: dict[str, Any] = request.app[RUNTIME_KEY]
    effective: Callable[[], Settings] | None = runtime.get("settings")
    settings = effective() if effective is not None else request.app[SETTINGS_KEY]
    shown = settings.masked()
    scope = request[SCOPE_KEY]
    if scope.accounts is not None:
        # Only the caller's accounts, and nothing about the other tokens.
        aws = shown["aws"]
        aws["accounts"] = [
            role for role in aws["accounts"] if scope.allows(_account_of(role["role_arn"]))
        ]
        for name in ("include_accounts", "exclude_accounts"):
            aws[name] = [a for a in aws[name] if scope.allows(a)]
        shown["api"]["tokens"] = []
    return RunningConfig(mode=str(runtime.get("mode", "api")), settings=shown)


def _account_of(role_arn: str) -> str:
    parts = role_arn.split(":")
    return parts[4] if len(parts) > 4 else ""


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(build_openapi())


async def asyncapi_json(request: web.Request) -> web.Response:
    """The topics' contract (AsyncAPI 3.0) with this deployment's topic names and brokers."""
    kafka = request.app[SETTINGS_KEY].kafka
    bootstrap = "embedded" if kafka.is_embedded else kafka.bootstrap
    return web.json_response(build_asyncapi(kafka.topic_prefix, bootstrap))


async def docs(request: web.Request) -> web.Response:
    return web.Response(text=render_docs(build_openapi()), content_type="text/html")


async def readyz(request: web.Request) -> web.Response:
    """Readiness: 200 once the store the endpoints read is open and, under ``cloudinv demo``
    / ``up``, while the broker answers and every stage runs; else 503 with the reason (open,
    no token: load balancers and orchestrators probe it)."""
    reasons = [] if request.app[STORES_KEY].inventory is not None else ["the store is not open"]
    reasons += _not_ready(request.app[RUNTIME_KEY])
    if reasons:
        return web.json_response(
            {"status": "not ready", "role": "api", "reason": "; ".join(reasons)}, status=503
        )
    return web.json_response({"status": "ready", "role": "api"})


async def metrics(request: web.Request) -> web.Response:
    registry = request.app[METRICS_KEY]
    figure = await attribution_status(request.app[STORES_KEY])
    if figure is not None:
        for name, value in (
            ("matched", figure.matched),
            ("attributed", figure.attributed),
            ("inherited", figure.inherited),
        ):
            registry.gauge(f"cloudinv_changes_{name}_last_hour", _FIGURE_HELP[name]).set(value)
        if figure.ratio is not None:
            registry.gauge(
                "cloudinv_attribution_ratio",
                "Attributed changes / changes with a matching write event, last hour",
            ).set(figure.ratio)
    return web.Response(
        text=registry.render(),
        content_type="text/plain",
        headers={"X-Content-Type-Options": "nosniff"},
        charset="utf-8",
    )


def _wrap(ep: Endpoint) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            query = parse_query(request, ep.query) if ep.query is not None else None
            if ep.query is None and request.query:
                name = next(iter(request.query))
                raise BadRequest(name, f"unknown query parameter {name!r}", "no parameters")
            result = await ep.handler(request, query)
        except ValidationError as exc:
            return validation_problem(exc)
        except BadRequest as exc:
            return problem(
                400, "Bad Request", exc.detail, parameter=exc.parameter, expected=exc.expected
            )
        except NotFound as exc:
            return problem(404, "Not Found", str(exc))
        except ServiceUnavailable as exc:
            return problem(503, "Service Unavailable", str(exc))
        if ep.raw or isinstance(result, web.StreamResponse):
            assert isinstance(result, web.StreamResponse)
            return result
        if ep.csv_items and wants_csv(request, query):
            return web.Response(text=to_csv(result.items), content_type="text/csv")
        return web.Response(body=json_bytes(result), content_type="application/json")

    handle.__name__ = ep.handler.__name__
    return handle


MAX_REQUEST_LINE = 8190
"""Longest request target served (as most servers: nginx and aiohttp default to 8 KiB)."""
PARSER_LINE_LIMIT = 65536


class _BadRequestsInOneLine(logging.Filter):
    """aiohttp logs a request it cannot parse (a request line over even the parser's limit,
    a malformed header) with a traceback; a client's mistake is one warning line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, BadHttpMessage):
            record.msg, record.args = "bad HTTP request: %s", (str(exc).splitlines()[0],)
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


_AIOHTTP_SERVER_LOG = logging.getLogger("aiohttp.server")
if not any(isinstance(f, _BadRequestsInOneLine) for f in _AIOHTTP_SERVER_LOG.filters):
    _AIOHTTP_SERVER_LOG.addFilter(_BadRequestsInOneLine())


@web.middleware
async def request_line_limit(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if len(request.raw_path) > MAX_REQUEST_LINE:
        return problem(
            414,
            "URI Too Long",
            f"the request target is {len(request.raw_path)} bytes; at most {MAX_REQUEST_LINE}"
            " are served: narrow the query or page through it with cursor",
        )
    return await handler(request)


@web.middleware
async def errors_and_metrics(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    started = time.perf_counter()
    route = request.match_info.route.resource
    path = route.canonical if route is not None else "unmatched"
    registry = request.app[METRICS_KEY]
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status == 404:
            response = problem(404, "Not Found", f"no endpoint {request.path}; see /docs")
        elif exc.status == 405:
            response = problem(405, "Method Not Allowed", f"{request.method} {request.path}")
            # RFC 9110: a 405 names the methods the resource has.
            if "Allow" in exc.headers:
                response.headers["Allow"] = exc.headers["Allow"]
        elif exc.status >= 400:
            response = problem(exc.status, exc.reason, exc.text or exc.reason)
        else:
            raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        response = problem(500, "Internal Server Error", "the server failed; see its log")
    registry.counter("cloudinv_api_requests_total", "API requests").inc(
        method=request.method, path=path, status=str(response.status)
    )
    registry.histogram("cloudinv_api_request_seconds", "API request latency").observe(
        time.perf_counter() - started, method=request.method, path=path
    )
    return response


async def _local_stores(app: web.Application) -> AsyncIterator[None]:
    """Open the local stores of the data directory for the app's lifetime."""

    data_dir = app[SETTINGS_KEY].data_dir
    # storage.targets with "dynamodb": the DynamoDB stores, else SQLite in the data directory.
    inventory = inventory_store(app[SETTINGS_KEY], data_dir)
    events = events_store(app[SETTINGS_KEY], data_dir)
    alerts = alerts_store(app[SETTINGS_KEY], data_dir)
    await inventory.open()
    try:
        await events.open()
        try:
            await alerts.open()
            app[STORES_KEY] = Stores(inventory=inventory, events=events, alerts=alerts)
            try:
                yield
            finally:
                await alerts.close()
        finally:
            await events.close()
    finally:
        await inventory.close()


def _with_alerts(app: web.Application, stores: Stores) -> Stores:
    """``stores`` with, when it has none, the alerts store of the SQLite inventory's data
    directory (``<data_dir>/store/alerts.sqlite3``; it opens on first use and closes with
    the app)."""
    inventory = stores.inventory
    if stores.alerts is not None or not isinstance(inventory, SqliteStore):
        return stores
    alerts = AlertsStore.in_data_dir(inventory.path.parent.parent)

    async def close_alerts(_: web.Application) -> None:
        await alerts.close()

    app.on_cleanup.append(close_alerts)
    return replace(stores, alerts=alerts)


def create_app(
    settings: Settings,
    runtime: dict[str, Any] | None = None,
    stores: Stores | None = None,
    metrics_registry: Metrics | None = None,
    *,
    open_local_stores: bool = False,
) -> web.Application:
    """The API application. ``runtime`` describes the running stages (for /v1/status).

    ``stores`` are what the endpoints read; with ``open_local_stores`` the app opens the
    data directory's SQLite stores at start-up and closes them on shutdown instead.
    """

    app = web.Application(
        middlewares=[
            errors_and_metrics,
            request_line_limit,
            auth_middleware(TokenTable(settings.api.tokens)),
        ],
        # aiohttp's parser answers a request line over its limit with a plain-text 400 (and
        # logs a traceback) before any middleware runs; parse up to PARSER_LINE_LIMIT and
        # answer over MAX_REQUEST_LINE with a problem in request_line_limit instead.
        handler_args={"max_line_size": PARSER_LINE_LIMIT},
    )
    app[SETTINGS_KEY] = settings
    app[RUNTIME_KEY] = runtime or {}
    app[STARTED_KEY] = time.monotonic()
    app[METRICS_KEY] = metrics_registry or Metrics()
    app[STORES_KEY] = _with_alerts(app, stores or Stores())
    app[FEEDS_KEY] = Feeds()
    if open_local_stores:
        app.cleanup_ctx.append(_local_stores)

    # Open SSE streams never end by themselves: end them so shutdown does not wait them out.
    app.on_shutdown.append(close_feeds)
    seen: set[tuple[str, str]] = set()
    for ep in ENDPOINTS:
        if (ep.method, ep.path) in seen:
            continue
        seen.add((ep.method, ep.path))
        app.router.add_route(ep.method, ep.path, _wrap(ep))
    app.router.add_get("/openapi.json", openapi_json)
    app.router.add_get("/asyncapi.json", asyncapi_json)
    app.router.add_get("/docs", docs)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/readyz", readyz)

    setup_reports(app, settings, app[RUNTIME_KEY])
    setup_ui(app)
    return app
