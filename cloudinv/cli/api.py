"""``cloudinv api``: serve the query API and web UI on its own (scale by running more)."""

from __future__ import annotations

import argparse

from aiohttp import web

from cloudinv.core.errors import ConfigError
from cloudinv.core.settings import load_settings
from cloudinv.runtime.processes import ensure_port_free


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "api",
        help="serve the HTTP API and web UI over the configured store",
        description="Serve the API. Tokens come from api.tokens (SHA-256 hashes) in the config.",
    )
    parser.add_argument("--host", help="bind address (default from api.host)")
    parser.add_argument("--port", type=int, help="port (default from api.port)")
    parser.set_defaults(handler=run_api)


def run_api(args: argparse.Namespace) -> int:
    from cloudinv.api.app import create_app

    settings = load_settings(args.config)
    host = args.host or settings.api.host
    port = args.port if args.port is not None else settings.api.port
    if not settings.api.tokens:
        raise ConfigError(
            "api.tokens is empty, so nobody could call the API: add "
            '[[api.tokens]] sha256 = "<sha256 of your token>" to cloudinv.toml'
        )
    if port:
        ensure_port_free(host, port, "the API", "--port or CLOUDINV_API__PORT")
    web.run_app(
        create_app(settings, {"mode": "api"}, open_local_stores=True),
        host=host,
        port=port,
        print=print,
        # SIGTERM: open streams are ended and requests in flight get 5 s, so the role stops
        # within a container runtime's 10 s grace.
        shutdown_timeout=5.0,
    )
    return 0
