"""The aiohttp application factory: ``create_app(settings, runtime)``.

State lives under :class:`web.AppKey`; setup and teardown in ``cleanup_ctx``. The query
endpoints of later stages register their routes here.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel

from api.auth import TokenTable, auth_middleware
from cloudinv import __version__
from cloudinv.connection import RunningComponent
from cloudinv.settings import Settings


class Health(BaseModel):
    status: str
    version: str
    uptime_s: float


class Status(BaseModel):
    version: str
    mode: str
    components: list[RunningComponent]


SETTINGS_KEY = web.AppKey("settings", Settings)
RUNTIME_KEY = web.AppKey("runtime", dict)
STARTED_KEY = web.AppKey("started", float)


def json_response(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(model.model_dump(mode="json")),
        content_type="application/json",
    )


async def healthz(request: web.Request) -> web.Response:
    started = request.app[STARTED_KEY]
    return json_response(
        Health(status="ok", version=__version__, uptime_s=round(time.monotonic() - started, 3))
    )


async def status(request: web.Request) -> web.Response:
    runtime: dict[str, Any] = request.app[RUNTIME_KEY]
    components = [
        c if isinstance(c, RunningComponent) else RunningComponent.model_validate(c)
        for c in runtime.get("components", [])
    ]
    return json_response(
        Status(version=__version__, mode=str(runtime.get("mode", "api")), components=components)
    )


def create_app(settings: Settings, runtime: dict[str, Any] | None = None) -> web.Application:
    """The API application. ``runtime`` describes the running stages (for /v1/status)."""
    app = web.Application(middlewares=[auth_middleware(TokenTable(settings.api.tokens))])
    app[SETTINGS_KEY] = settings
    app[RUNTIME_KEY] = runtime or {}
    app[STARTED_KEY] = time.monotonic()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/v1/status", status)
    return app
