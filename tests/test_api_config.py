"""GET /v1/config and `cloudinv config show --api`: the settings a running instance works
with (the runtime's choices over the file's), and no secret in them, whatever its kind.

A real aiohttp server over empty stores; the command line asks it over HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from cloudinv.api.app import create_app
from cloudinv.api.auth import generate_token
from cloudinv.api.state import Stores
from cloudinv.cli import main
from cloudinv.core.settings import ApiToken, Settings
from cloudinv.sinks.events_store import EventsStore, events_store_path
from cloudinv.sinks.sqlite_store import SqliteStore

MINE, THEIRS = "111111111111", "222222222222"
SECRETS = (
    "sasl-pass-7",
    "key-pass-8",
    "ext-id-9",
    "hooks.slack.com/services/T0/B0/xyz",
    "url-pass-10",
)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[str, dict[str, str]]]:
    tokens: dict[str, str] = {}
    configured = []
    for name, accounts in (("admin", None), ("mine", [MINE])):
        token, digest = generate_token()
        tokens[name] = token
        configured.append(ApiToken(sha256=SecretStr(digest), name=name, accounts=accounts))
    settings = Settings(
        storage={"data_dir": tmp_path},
        api={"tokens": configured},
        kafka={
            "bootstrap": "broker:9092",
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "PLAIN",
            "sasl_username": "svc",
            "sasl_password": "sasl-pass-7",
            "ssl_key_password": "key-pass-8",
        },
        aws={
            "accounts": [
                {"role_arn": f"arn:aws:iam::{MINE}:role/r", "external_id": "ext-id-9"},
                {"role_arn": f"arn:aws:iam::{THEIRS}:role/r"},
            ],
            "endpoint_url": "http://user:url-pass-10@aws.internal:4566",
        },
        alerts={"webhooks": [{"url": "https://hooks.slack.com/services/T0/B0/xyz"}]},
    )
    # What the runtime chose over the file (as the demo does): these are what is shown.
    running = settings.model_copy(update={"scan_interval_s": 30})
    inventory = SqliteStore.in_data_dir(tmp_path)
    await inventory.open()
    events = EventsStore(events_store_path(tmp_path))
    await events.open()
    app = create_app(
        settings,
        {"mode": "demo", "settings": lambda: running},
        stores=Stores(inventory=inventory, events=events),
    )
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/"), tokens
    finally:
        await server.close()
        await events.close()
        await inventory.close()


async def _get(url: str, token: str | None) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with ClientSession() as http, http.get(f"{url}/v1/config", headers=headers) as r:
        return r.status, await r.read()


async def test_running_settings_with_every_secret_masked(
    api: tuple[str, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, tokens = api
    assert (await _get(url, None))[0] == 401

    status, body = await _get(url, tokens["admin"])
    assert status == 200
    shown = orjson.loads(body)
    assert shown["mode"] == "demo"
    assert shown["settings"]["scan_interval_s"] == 30  # the runtime's, not the file's 900
    kafka = shown["settings"]["kafka"]
    assert kafka["sasl_password"] == kafka["ssl_key_password"] == "********"
    assert kafka["sasl_username"] == "svc"
    assert shown["settings"]["aws"]["endpoint_url"] == "http://********@aws.internal:4566"
    assert shown["settings"]["alerts"]["webhooks"][0]["url"] == "********"
    assert [t["sha256"] for t in shown["settings"]["api"]["tokens"]] == ["********"] * 2
    for secret in (*SECRETS, *tokens.values()):
        assert secret not in body.decode()

    # A token limited to some accounts sees those accounts' roles only, no other token.
    status, body = await _get(url, tokens["mine"])
    mine = orjson.loads(body)["settings"]
    assert [a["role_arn"] for a in mine["aws"]["accounts"]] == [f"arn:aws:iam::{MINE}:role/r"]
    assert mine["api"]["tokens"] == []

    # The command line asks the same endpoint (a thread: it reads over blocking HTTP).
    code = await asyncio.to_thread(
        main, ["config", "show", "--api", url, "--token", tokens["admin"]]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert f"# settings of the running demo at {url} (secrets masked)" in out
    assert '"scan_interval_s": 30' in out
    assert not any(secret in out for secret in SECRETS)
    bad = await asyncio.to_thread(main, ["config", "show", "--api", url, "--token", "nope"])
    assert bad != 0
    assert "refused the token (401)" in capsys.readouterr().err
