"""``cloudinv config show`` (the effective configuration, secrets masked) and
``cloudinv config check`` (is it usable).

``config show`` reads the file, the environment and the defaults, as a command started now
would. A running instance (``demo`` or ``up``) may work with other settings (the demo's
simulated accounts, regions and scan interval): ``config show --running`` asks it, through its
API (``GET /v1/config``, secrets masked there), found in ``<data dir>/demo.json`` or named with
``--api URL`` (token from ``--token`` or ``CLOUDINV_API_TOKEN``).
"""

from __future__ import annotations

import argparse
import os
import urllib.error
import urllib.request
from typing import Any

import orjson

from cloudinv.core.connection import CONNECTION_FILE, find_running_instance
from cloudinv.core.errors import CloudinvError, ConfigError
from cloudinv.core.settings import load_settings, resolve_config_path

TIMEOUT_S = 10.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("config", help="show or check the configuration")
    sub = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = sub.add_parser(
        "show",
        help="print the effective configuration (file + environment + defaults), secrets "
        "masked; with --running or --api, the settings a running instance works with",
    )
    show.add_argument(
        "--running",
        action="store_true",
        help=f"ask the instance running in the data directory ({CONNECTION_FILE}) instead",
    )
    show.add_argument(
        "--api", metavar="URL", help="ask the instance whose API is at URL instead (GET /v1/config)"
    )
    show.add_argument(
        "--token",
        help="API token for --api (default: $CLOUDINV_API_TOKEN; --running reads it from "
        f"{CONNECTION_FILE})",
    )
    show.set_defaults(handler=show_config)
    check = sub.add_parser(
        "check",
        help="validate the configuration (file + environment); exit 2 with one line per "
        "problem, 0 if it is usable",
    )
    check.set_defaults(handler=check_config)


def show_config(args: argparse.Namespace) -> int:
    if args.running or args.api:
        return _show_running(args)
    path = resolve_config_path(args.config)
    settings = load_settings(args.config)
    print(f"# config file: {path if path else '(none: defaults and CLOUDINV_* environment)'}")
    running = find_running_instance(settings.data_dir)
    if running is not None:
        print(
            f"# a cloudinv {running.mode} runs here (pid {running.pid}, {running.api_url}); "
            "this is the file/environment configuration, not necessarily its settings: "
            "`cloudinv config show --running` shows those"
        )
    print(orjson.dumps(settings.masked(), option=orjson.OPT_INDENT_2).decode())
    return 0


def _show_running(args: argparse.Namespace) -> int:
    if args.api:
        url = args.api.rstrip("/")
        token = args.token or os.environ.get("CLOUDINV_API_TOKEN", "")
        if not token:
            raise ConfigError("--api needs a token: pass --token or set CLOUDINV_API_TOKEN")
    else:
        settings = load_settings(args.config)
        info = find_running_instance(settings.data_dir)
        if info is None:
            raise ConfigError(
                f"--running: no running cloudinv instance in {settings.data_dir} (no live "
                f"{CONNECTION_FILE}); start one with `cloudinv demo` or `cloudinv up`, set "
                "CLOUDINV_STORAGE__DATA_DIR to its data directory, or name its API with --api URL"
            )
        url, token = info.api_url.rstrip("/"), args.token or info.api_token
    body = _get_config(url, token)
    print(f"# settings of the running {body.get('mode', 'instance')} at {url} (secrets masked)")
    print(orjson.dumps(body.get("settings", {}), option=orjson.OPT_INDENT_2).decode())
    return 0


def _get_config(url: str, token: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{url}/v1/config", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            body: dict[str, Any] = orjson.loads(response.read())
            return body
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            raise CloudinvError(
                f"{url} refused the token (401): pass the instance's API token with --token"
            ) from None
        raise CloudinvError(f"{url}/v1/config answered {exc.code}: {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CloudinvError(f"cannot reach the cloudinv API at {url}: {reason}") from None


def check_config(args: argparse.Namespace) -> int:
    path = resolve_config_path(args.config)
    load_settings(args.config)  # a ConfigError names each bad key, value and source
    print(f"configuration OK ({path if path else 'defaults and CLOUDINV_* environment'})")
    return 0
