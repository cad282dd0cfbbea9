"""A reverse proxy in front of the simulated AWS (moto), for tests that answer some requests
themselves (a denial, a recorded AWS answer, a check of how a request was signed) and let
moto answer the rest: :func:`moto_proxy`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp import web
from yarl import URL

Intercept = Callable[[web.Request], Awaitable[web.StreamResponse | None]]
"""Answers a request (a response) or lets it through to moto (``None``)."""

_HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection"}


@contextlib.asynccontextmanager
async def moto_proxy(moto_endpoint: str, intercept: Intercept) -> AsyncIterator[str]:
    """Serve the proxy on a free local port until the block ends; yields its URL. Requests
    go to ``intercept`` first; those it lets through are forwarded byte for byte (path
    encoding, body, headers but the hop-by-hop ones, no decompression or redirects)."""
    client = aiohttp.ClientSession(auto_decompress=False)

    async def forward(request: web.Request) -> web.StreamResponse:
        answer = await intercept(request)
        if answer is not None:
            return answer
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        async with client.request(
            request.method,
            URL(moto_endpoint + request.raw_path, encoded=True),
            headers=headers,
            data=await request.read(),
            allow_redirects=False,
        ) as upstream:
            body = await upstream.read()
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
            return web.Response(status=upstream.status, body=body, headers=out)

    app = web.Application(client_max_size=64 * 1024**2)
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
        await client.close()
