"""The ``cloudinv`` command line.

Each sub-command lives in its own module under ``cloudinv/cli/`` and exposes
``register(subparsers)``, which adds its parser and sets ``handler`` to a function taking the
parsed arguments and returning an exit status (a coroutine function is run by
:func:`cloudinv.core.bounded.run`, whose exit ends on time).
Errors derived from :class:`~cloudinv.core.errors.CloudinvError` are printed as one line, never a
traceback.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import inspect
import sys
from collections.abc import Sequence

from cloudinv import __version__
from cloudinv.core import bounded
from cloudinv.core.errors import CloudinvError

COMMAND_MODULES: tuple[str, ...] = (
    "cloudinv.cli.demo",
    "cloudinv.cli.config",
    "cloudinv.cli.worker",
    "cloudinv.cli.api",
    "cloudinv.cli.producers",
    "cloudinv.cli.scan",
    "cloudinv.cli.cloudtrail",
    "cloudinv.cli.iam_policy",
    "cloudinv.cli.report",
    "cloudinv.cli.rules",
    "cloudinv.cli.baseline",
    "cloudinv.cli.athena",
    "cloudinv.cli.sql",
    "cloudinv.cli.asyncapi",
)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every command; with ``argv`` naming a command whose module is
    ``cloudinv.cli.<command>``, of that command only (its start-up is what short commands
    such as ``cloudtrail backfill`` wait for)."""
    parser = argparse.ArgumentParser(
        prog="cloudinv",
        description="Event-streaming inventory of AWS estates: every resource, every change, "
        "who made it.",
    )
    parser.add_argument("--version", action="version", version=f"cloudinv {__version__}")
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="TOML config file (default: ./cloudinv.toml if present, or $CLOUDINV_CONFIG)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in _modules_for(argv):
        importlib.import_module(module_name).register(subparsers)
    return parser


def _modules_for(argv: Sequence[str] | None) -> tuple[str, ...]:
    args = list(argv or ())
    i = 0
    while i < len(args) and args[i].startswith("-"):
        i += 2 if args[i] == "--config" else 1
    if i < len(args):
        module_name = f"cloudinv.cli.{args[i].replace('-', '_')}"
        if module_name in COMMAND_MODULES:
            return (module_name,)
    return COMMAND_MODULES


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    handler = args.handler
    try:
        if inspect.iscoroutinefunction(handler):
            status = bounded.run(handler(args))
        else:
            status = handler(args)
    except CloudinvError as exc:
        print(f"cloudinv: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("cloudinv: interrupted", file=sys.stderr)
        return 130
    finally:
        # The command is done. The interpreter's last collections would walk the whole heap
        # on the way out: seconds for `up` (the catalog, every botocore model) on a busy
        # machine, after everything had stopped. Frozen objects are left to the exit.
        gc.freeze()
    return int(status or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
