"""The API's contract, over a real aiohttp server: auth, problem responses, OpenAPI, metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from cloudinv.api.app import create_app
from cloudinv.api.auth import generate_token
from cloudinv.core.settings import ApiToken, Settings


@pytest.fixture
async def api() -> AsyncIterator[tuple[str, str]]:
    token, digest = generate_token()
    settings = Settings(api={"tokens": [ApiToken(sha256=SecretStr(digest), name="t")]})
    server = TestServer(create_app(settings, {"mode": "test"}), host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/"), token
    finally:
        await server.close()


async def test_healthz_is_open_and_everything_else_needs_a_token(api: tuple[str, str]) -> None:
    base, token = api
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/healthz") as resp:
            assert resp.status == 200
            assert (await resp.json())["status"] == "ok"
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token}):
            async with http.get(f"{base}/v1/status", headers=headers) as resp:
                assert resp.status == 401
                assert resp.content_type == "application/problem+json"
                assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        async with http.get(
            f"{base}/v1/status", headers={"Authorization": f"Bearer {token}"}
        ) as resp:
            assert resp.status == 200
            assert (await resp.json())["mode"] == "test"


async def test_unknown_parameter_and_unknown_path_are_problems(api: tuple[str, str]) -> None:
    base, token = api
    auth = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=auth) as http:
        async with http.get(f"{base}/v1/status?verbose=1") as resp:
            assert resp.status == 400
            body = await resp.json(content_type="application/problem+json")
            assert body["parameter"] == "verbose"
            assert "unknown query parameter" in body["detail"]
        async with http.get(f"{base}/v1/nothing-here") as resp:
            assert resp.status == 404
            assert resp.content_type == "application/problem+json"


async def test_openapi_is_3_1_and_generated_from_the_models(api: tuple[str, str]) -> None:
    base, _ = api
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/openapi.json") as resp:
            spec = await resp.json()
        async with http.get(f"{base}/docs") as resp:
            page = await resp.text()
    assert spec["openapi"] == "3.1.0"
    assert "/v1/status" in spec["paths"]
    status = spec["paths"]["/v1/status"]["get"]
    assert status["security"] == [{"bearer": []}]
    assert status["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/Status"
    )
    assert "Status" in spec["components"]["schemas"]
    assert "/v1/status" in page and "<script src=" not in page


async def test_metrics_count_requests(api: tuple[str, str]) -> None:
    base, token = api
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        for _ in range(3):
            async with http.get(f"{base}/healthz"):
                pass
        async with http.get(f"{base}/metrics") as resp:
            text = await resp.text()
    assert 'cloudinv_api_requests_total{method="GET",path="/healthz",status="200"} 3' in text
    assert "cloudinv_api_request_seconds_bucket" in text
