"""``cloudinv rules list|test``: the alert rules in force, and a rule file tried out before it
is deployed.

``rules test FILE`` checks every rule of FILE (a rejected rule is printed with the file, its
line, its id and the problem) and shows what each valid rule would fire on in the local data
directory: state rules over every current resource of their type, change rules over the
changes stored in the last ``--since-days`` days, event rules over the CloudTrail events
stored in that window. Exit status 0: every rule is valid; 1: some rule was rejected (the
valid ones were still tried).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from cloudinv.core import bounded
from cloudinv.core.models import utcnow
from cloudinv.core.settings import load_settings

MAX_SHOWN = 50
"""Matches listed per rule; the count covers all of them."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "rules",
        help="list the alert rules, or check a rule file against the current inventory",
        description="Alert rules: the built-in pack plus alerts.rules_dir.",
    )
    commands = parser.add_subparsers(dest="rules_command", metavar="COMMAND", required=True)

    listing = commands.add_parser(
        "list",
        help="the rules in force and any rejected rule",
        description="The alert rules in force: the built-in pack and alerts.rules_dir.",
    )
    listing.add_argument("--rules-dir", type=Path, help="rule directory (default alerts.rules_dir)")
    listing.set_defaults(handler=run_list)

    test = commands.add_parser(
        "test",
        help="check a rule file and show which current resources it would fire on",
        description=(__doc__ or "").replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    test.add_argument("file", type=Path, metavar="FILE", help="a YAML rule file")
    test.add_argument("--data-dir", type=Path, help="data directory (default storage.data_dir)")
    test.add_argument(
        "--since-days",
        type=float,
        default=7.0,
        help="window of stored changes and events for change and event rules (default 7)",
    )
    test.set_defaults(handler=run_test)


def run_list(args: argparse.Namespace) -> int:
    from cloudinv.streams.rules import describe_rule, load_rules

    settings = load_settings(args.config).alerts
    rules = load_rules(args.rules_dir or settings.rules_dir, builtin=settings.builtin_rules)
    width = max((len(r.id) for r in rules.rules), default=10)
    for rule in sorted(rules.rules, key=lambda r: r.id):
        state = " (disabled)" if rule.disabled else ""
        print(
            f"{rule.id:<{width}}  {rule.severity:<8}  {describe_rule(rule):<44}  "
            f"{rule.title}{state}"
        )
    print(f"{len(rules.active)} rule(s) active", file=sys.stderr)
    for problem in rules.problems:
        print(f"rejected: {problem}", file=sys.stderr)
    return 1 if rules.problems else 0


def run_test(args: argparse.Namespace) -> int:
    from cloudinv.sinks.events_store import events_store_path
    from cloudinv.sinks.sqlite_store import STORE_FILE
    from cloudinv.streams.rules import load_rule_file

    path: Path = args.file
    if not path.is_file():
        print(f"cloudinv: error: rule file {path} does not exist", file=sys.stderr)
        return 2
    rules, problems = load_rule_file(path)
    for problem in problems:
        print(f"rejected: {problem}", file=sys.stderr)
    print(f"{path}: {len(rules)} valid rule(s), {len(problems)} rejected")
    if rules:
        data_dir = Path(args.data_dir or load_settings(args.config).data_dir)
        inventory_path = data_dir / STORE_FILE
        events_path = events_store_path(data_dir)
        if not inventory_path.is_file():
            print(f"no inventory in {data_dir}: the rules are valid but were not tried")
        else:
            bounded.run(
                _try_rules(
                    rules,
                    inventory_path,
                    events_path if events_path.is_file() else None,
                    timedelta(days=args.since_days),
                )
            )
    return 1 if problems else 0


async def _try_rules(
    rules: Sequence[Any], inventory_path: Path, events_path: Path | None, window: timedelta
) -> None:
    from cloudinv.sinks.events_store import EventsStore
    from cloudinv.sinks.sqlite_store import SqliteStore

    data_dir = inventory_path.parent.parent
    since = utcnow() - window
    async with SqliteStore(inventory_path) as inventory:
        events = None if events_path is None else EventsStore(events_path, readonly=True)
        if events is not None:
            await events.open()
        try:
            for rule in rules:
                if rule.disabled:
                    print(f"\n{rule.id}: disabled")
                    continue
                if rule.kind == "state":
                    matches, seen = await _state_matches(rule, inventory)
                    what = f"current {rule.resource_type}"
                elif rule.kind == "change":
                    matches, seen = await _change_matches(rule, inventory, since)
                    what = f"changes of {rule.resource_type} since {since:%Y-%m-%d %H:%M}Z"
                elif events is None:
                    print(f"\n{rule.id}: no CloudTrail events in {data_dir}: not tried")
                    continue
                else:
                    matches, seen = await _event_matches(rule, events, since)
                    what = f"CloudTrail events since {since:%Y-%m-%d %H:%M}Z"
                print(f"\n{rule.id} [{rule.severity}] {rule.title}")
                print(f"  fires on {len(matches)} of {seen} {what}")
                for line in matches[:MAX_SHOWN]:
                    print(f"  - {line}")
                if len(matches) > MAX_SHOWN:
                    print(f"  ... and {len(matches) - MAX_SHOWN} more")
        finally:
            if events is not None:
                await events.close()


async def _state_matches(rule: Any, inventory: Any) -> tuple[list[str], int]:
    from cloudinv.sinks.store import VersionQuery, version_pages
    from cloudinv.streams.alerts import RelatedReads
    from cloudinv.streams.rules import fires_on_configuration

    related = RelatedReads(inventory) if rule.clauses else None
    matches: list[str] = []
    seen = 0
    query = VersionQuery(resource_type=rule.resource_type)
    async for page in version_pages(inventory.list_as_of, query):
        for version in page:
            seen += 1
            severity = ""
            try:
                fires, _ = fires_on_configuration(rule, version.configuration)
                if fires and related is not None:
                    # Clauses on related resources: read now, as the worker reads them.
                    neighbours = await related.neighbours(version.key) or []
                    fires = rule.related is None or rule.related.holds(neighbours)[0]
                    severity = f" [{rule.severity_of(neighbours)}]"
            except Exception as exc:
                matches.append(f"{version.key}: condition failed: {exc}")
                continue
            if fires:
                label = f" ({version.name})" if version.name else ""
                where = f"{version.account_id}/{version.region}"
                matches.append(f"{version.key}{label} {where}{severity}")
    return matches, seen


async def _change_matches(rule: Any, inventory: Any, since: Any) -> tuple[list[str], int]:
    from cloudinv.sinks.store import ChangeFilters, ChangeQuery, change_pages
    from cloudinv.streams.rules import change_document, fires_on_change

    matches: list[str] = []
    seen = 0
    filters = ChangeFilters(resource_type=rule.resource_type)
    query = ChangeQuery(since=since, filters=filters, limit=1000)
    async for page in change_pages(inventory, query):
        for change in page:
            seen += 1
            try:
                opens, _, _ = fires_on_change(rule, change_document(change))
            except Exception as exc:
                matches.append(f"{change.key}: condition failed: {exc}")
                continue
            if opens:
                matches.append(
                    f"{change.key} {change.change_type} at {change.captured_at:%Y-%m-%d %H:%M:%S}Z"
                )
    return matches, seen


async def _event_matches(rule: Any, events: Any, since: Any) -> tuple[list[str], int]:
    from cloudinv.streams.rules import evaluate_event, rule_set_of

    ruleset = rule_set_of([rule])
    names = rule.event.names if rule.event is not None else []
    matches: list[str] = []
    seen = 0
    for name in ["*"] if "*" in names else names:
        cursor: str | None = None
        while True:
            page = await events.events(
                event_name=None if name == "*" else name, since=since, limit=1000, cursor=cursor
            )
            for event in page.items:
                seen += 1
                evaluation = evaluate_event(ruleset, event.model_dump(mode="json"))
                for obs in evaluation.observations:
                    if obs.opens:
                        matches.append(
                            f"{obs.key} {event.event_name} by {event.principal.label} "
                            f"at {event.event_time:%Y-%m-%d %H:%M:%S}Z"
                        )
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
    return matches, seen
