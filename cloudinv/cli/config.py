"""``cloudinv config show``: the effective configuration, secrets masked."""

from __future__ import annotations

import argparse

import orjson

from cloudinv.core.settings import load_settings, resolve_config_path


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("config", help="show or check the configuration")
    sub = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = sub.add_parser(
        "show",
        help="print the effective configuration (file + environment + defaults), secrets masked",
    )
    show.set_defaults(handler=show_config)


def show_config(args: argparse.Namespace) -> int:
    path = resolve_config_path(args.config)
    settings = load_settings(args.config)
    print(f"# config file: {path if path else '(none: defaults and CLOUDINV_* environment)'}")
    print(orjson.dumps(settings.masked(), option=orjson.OPT_INDENT_2).decode())
    return 0
