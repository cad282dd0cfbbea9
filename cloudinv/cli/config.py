"""``cloudinv config show`` (the effective configuration, secrets masked) and
``cloudinv config check`` (is it usable)."""

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
    check = sub.add_parser(
        "check",
        help="validate the configuration (file + environment); exit 2 with one line per "
        "problem, 0 if it is usable",
    )
    check.set_defaults(handler=check_config)


def show_config(args: argparse.Namespace) -> int:
    path = resolve_config_path(args.config)
    settings = load_settings(args.config)
    print(f"# config file: {path if path else '(none: defaults and CLOUDINV_* environment)'}")
    print(orjson.dumps(settings.masked(), option=orjson.OPT_INDENT_2).decode())
    return 0


def check_config(args: argparse.Namespace) -> int:
    path = resolve_config_path(args.config)
    load_settings(args.config)  # a ConfigError names each bad key, value and source
    print(f"configuration OK ({path if path else 'defaults and CLOUDINV_* environment'})")
    return 0
