"""``cloudinv asyncapi``: the topics' contract for subscribers, as an AsyncAPI 3.0 document.

Topic names use ``kafka.topic_prefix`` and the server is ``kafka.bootstrap`` (or the values
given). The running API serves the same document at ``/asyncapi.json``; the repository keeps
it as ``asyncapi.json`` (default prefix), regenerated with ``cloudinv asyncapi --example``.
"""

from __future__ import annotations

import argparse

import orjson

from cloudinv.api.asyncapi import build_asyncapi
from cloudinv.core.settings import load_settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "asyncapi",
        help="print the topics' contract (AsyncAPI 3.0: keys, JSON Schemas, delivery)",
        description=(__doc__ or "").replace("``", "").strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--prefix", help="topic prefix (default kafka.topic_prefix)")
    parser.add_argument("--bootstrap", help="Kafka servers (default kafka.bootstrap)")
    parser.add_argument(
        "--example",
        action="store_true",
        help="the repository's copy: default prefix, an example server, no settings read",
    )
    parser.set_defaults(handler=print_asyncapi)


def print_asyncapi(args: argparse.Namespace) -> int:
    if args.example:
        document = build_asyncapi()
    else:
        kafka = load_settings(args.config).kafka
        prefix = args.prefix if args.prefix is not None else kafka.topic_prefix
        bootstrap = args.bootstrap or ("embedded" if kafka.is_embedded else kafka.bootstrap)
        document = build_asyncapi(prefix, bootstrap)
    print(orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())
    return 0
