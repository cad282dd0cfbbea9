"""The web UI's static files: ``GET /`` (the page) and ``GET /ui/<file>`` (its modules, styles).

The UI is plain HTML, CSS and ES modules shipped as package data under ``api/ui/``; nothing
is built and nothing is loaded from elsewhere, so it works without an internet connection.
The files are open (no token): they hold no data. Every datum the page shows comes from the
``/v1`` API with the same bearer token scripts use, which the page asks for once and keeps in
``sessionStorage`` (or reads from a ``#token=`` URL fragment, which never reaches a server).

:func:`setup_ui` registers the routes and a middleware, placed before authentication, that
lets requests for these routes through without a token. Only routes this module registered
are let through, so a mistake elsewhere cannot open a data endpoint.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

__all__ = ["UI_DIR", "setup_ui"]

UI_DIR = (Path(__file__).resolve().parent / "ui").resolve()

_CONTENT_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".png": "image/png",
    ".ico": "image/x-icon",
}

# The page talks only to its own origin; inline SVG is built through the DOM, not markup.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # Revalidate every time: a new release must never run with an old module next to it.
    "Cache-Control": "no-cache",
}

_UI_RESOURCES = web.AppKey("ui_resources", frozenset)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _load(path: Path) -> tuple[str, bytes] | None:
    """ETag and bytes of a UI file, or None if there is no such file (runs in a thread)."""
    if not path.is_file():
        return None
    stat = path.stat()
    return f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"', path.read_bytes()


async def _file_response(request: web.Request, path: Path) -> web.StreamResponse:
    content_type = _CONTENT_TYPES.get(path.suffix.lower())
    # File access happens in a thread: nothing blocks the event loop the API shares with feeds.
    loaded = await asyncio.to_thread(_load, path) if content_type is not None else None
    if content_type is None or loaded is None:
        raise web.HTTPNotFound()
    etag, body = loaded
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers={**_HEADERS, "ETag": etag})
    text = content_type.startswith("text/") or content_type.endswith(("+xml", "/json"))
    return web.Response(
        body=body,
        content_type=content_type,
        charset="utf-8" if text else None,
        headers={**_HEADERS, "ETag": etag},
    )


async def index(request: web.Request) -> web.StreamResponse:
    return await _file_response(request, UI_DIR / "index.html")


def _ui_path(relative: str) -> Path | None:
    """The file under :data:`UI_DIR` that ``relative`` names, or None if it names none.

    A NUL or control character, a trailing slash (``app.css/`` is not a file), a hidden
    segment, or a path that leaves the directory through ``..`` or a link names nothing.
    """
    if not relative or relative.endswith("/"):
        return None
    if any(ord(c) < 0x20 or c == "\x7f" for c in relative):
        return None
    if any(part.startswith(".") for part in Path(relative).parts):
        return None
    target = (UI_DIR / relative).resolve()
    return target if target.is_relative_to(UI_DIR) else None


async def ui_file(request: web.Request) -> web.StreamResponse:
    target = _ui_path(request.match_info["path"])
    if target is None:
        raise web.HTTPNotFound()
    return await _file_response(request, target)


async def favicon(request: web.Request) -> web.StreamResponse:
    """Browsers ask for ``/favicon.ico`` whatever the page links; answer with the UI's icon."""
    return await _file_response(request, UI_DIR / "favicon.svg")


@web.middleware
async def _ui_is_open(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Serve the UI's own routes without the authentication that follows in the chain."""
    route = request.match_info.route
    if route.resource is not None and route.resource in request.app[_UI_RESOURCES]:
        return await request.match_info.handler(request)
    return await handler(request)


def setup_ui(app: web.Application) -> None:
    """Register ``/``, ``/ui/``, ``/ui/<file>`` and ``/favicon.ico`` as open routes of ``app``.

    Call it after the app's middlewares are set: the opening middleware goes just before
    the authentication middleware (the last one), after error handling and metrics.
    """
    routes = [
        app.router.add_get("/", index, name="ui-index"),
        app.router.add_get("/ui", index, name="ui-index-bare"),
        app.router.add_get("/ui/", index, name="ui-index-slash"),
        app.router.add_get("/ui/{path:.+}", ui_file, name="ui-file"),
        app.router.add_get("/favicon.ico", favicon, name="favicon"),
    ]
    app[_UI_RESOURCES] = frozenset(r.resource for r in routes)
    position = max(len(app.middlewares) - 1, 0)
    app.middlewares.insert(position, _ui_is_open)
