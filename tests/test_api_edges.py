"""HTTP edge cases found by schemathesis and by hand, over a real aiohttp server: every
answer is a problem+json with the headers HTTP asks for, never a 500 or a traceback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from cloudinv.api.app import create_app
from cloudinv.api.auth import generate_token
from cloudinv.core.settings import ApiToken, Settings


@pytest.fixture
async def api() -> AsyncIterator[tuple[str, str, int]]:
    token, digest = generate_token()
    settings = Settings(api={"tokens": [ApiToken(sha256=SecretStr(digest), name="t")]})
    server = TestServer(create_app(settings, {"mode": "test"}), host="127.0.0.1")
    await server.start_server()
    try:
        assert server.port is not None
        yield str(server.make_url("")).rstrip("/"), token, server.port
    finally:
        await server.close()


async def _raw(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are (no client normalizes the path) and read the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)
        }
        length = int(headers.get("content-length", "0"))
        body = await reader.readexactly(length) if length else b""
        return status, headers, body
    finally:
        writer.close()


async def test_a_nul_in_a_ui_path_is_not_found_not_a_server_error(
    api: tuple[str, str, int], caplog: pytest.LogCaptureFixture
) -> None:
    base, _, _ = api
    async with aiohttp.ClientSession() as http:
        for path in ("/ui/js/%00.js", "/ui/%00", "/ui/js/a%00b.js"):
            async with http.get(f"{base}{path}") as resp:
                assert resp.status == 404, path
                assert resp.content_type == "application/problem+json"
    assert not [r for r in caplog.records if r.exc_info], "no traceback is logged"


async def test_a_ui_file_with_a_trailing_slash_is_not_served(api: tuple[str, str, int]) -> None:
    base, _, _ = api
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/ui/app.css") as resp:
            assert resp.status == 200
        async with http.get(f"{base}/ui/app.css/") as resp:
            assert resp.status == 404


async def test_favicon_is_served_without_a_token(api: tuple[str, str, int]) -> None:
    base, _, _ = api
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/favicon.ico") as resp:
            assert resp.status == 200
            assert resp.content_type == "image/svg+xml"
        async with http.get(f"{base}/docs") as resp:
            assert 'rel="icon"' in await resp.text()


async def test_a_method_not_allowed_names_the_allowed_ones(api: tuple[str, str, int]) -> None:
    base, token, _ = api
    auth = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=auth) as http:
        for method in ("TRACE", "DELETE", "PUT"):
            async with http.request(method, f"{base}/v1/status") as resp:
                assert resp.status == 405, method
                assert resp.content_type == "application/problem+json"
                assert "GET" in {m.strip() for m in resp.headers["Allow"].split(",")}


async def test_a_request_line_over_the_limit_is_a_problem_not_a_traceback(
    api: tuple[str, str, int], caplog: pytest.LogCaptureFixture
) -> None:
    _, token, port = api
    long_path = "/v1/resources?type=" + "A" * 9000
    status, headers, body = await _raw(
        port,
        f"GET {long_path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        "Connection: close\r\n\r\n".encode(),
    )
    assert status == 414
    assert headers["content-type"].startswith("application/problem+json")
    assert b"8190" in body
    assert not [r for r in caplog.records if r.exc_info], "no traceback is logged"


async def test_a_request_line_past_even_the_parser_limit_logs_one_line(
    api: tuple[str, str, int], caplog: pytest.LogCaptureFixture
) -> None:
    _, _, port = api
    caplog.set_level(logging.DEBUG, logger="aiohttp.server")
    status, _, _ = await _raw(port, b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 400
    records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert records and all(not r.exc_info for r in records)
    assert any("bad HTTP request" in r.getMessage() for r in records)
