"""Rules that ask about related resources: the ``related`` and ``severity_when`` clauses,
their checks at load, and the alert stage re-rating a security group's alert as the
instances that use it start, stop and go away.

The stage is driven batch by batch (the function the changes agent calls for each batch)
over a real SQLite inventory store (with its relationships) and a real SQLite alerts store;
the changes come from the real change detector. Kafka adds nothing here: the end-to-end path
through the broker is tests/test_alerts.py's, and the demo's is tests/test_ui.py's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cloudinv.core.models import ChangeEvent, ResourceSnapshot
from cloudinv.sinks.alerts_store import AlertFilters, AlertsStore
from cloudinv.sinks.sqlite_store import SqliteStore
from cloudinv.streams.alert_delivery import Dispatcher
from cloudinv.streams.alerts import AlertStage, RelatedReads, evaluate_changes_batch
from cloudinv.streams.changes import ChangeDetector
from cloudinv.streams.rules import Neighbour, RelatedClause, load_rules, parse_rules

RULE = "ec2-sg-ssh-open-to-world-in-use"
ACCOUNT = "123456789012"
REGION = "eu-west-1"
SG = f"arn:aws:ec2:{REGION}:{ACCOUNT}:security-group/sg-1"
INSTANCE = f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-1"
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)

SSH_WORLD = {
    "IpProtocol": "tcp",
    "FromPort": 22,
    "ToPort": 22,
    "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
}


def _rule(**fields: Any) -> str:
    lines = [
        "rules:",
        "  - id: t-related",
        "    title: a rule on related resources",
        "    severity: low",
        "    kind: state",
        "    resource_type: AWS::EC2::SecurityGroup",
        "    condition: GroupId",
    ]
    lines += [f"    {name}: {value}" for name, value in fields.items()]
    return "\n".join(lines) + "\n"


# -- the clauses ------------------------------------------------------------------------------


def test_paths_into_the_related_type_are_checked_at_load() -> None:
    cases = {
        "related: {type: AWS::EC2::Instance, where: \"State.Nam == 'running'\"}": (
            "related: where: State.Nam: no such field in InstanceState (structure); did you "
            "mean Name?"
        ),
        "related: {where: \"State.Name == 'running'\"}": "'where' needs 'type'",
        "related: {relationship: is used}": "unknown relationship 'is used'",
        "related: {match: any, max: 3}": "'min' and 'max' are for match: count",
        "related: {match: count, min: 3, max: 1}": "max (1) is below min (3)",
        "related: {type: AWS::EC2::Instanse}": "AWS::EC2::Instanse",
        "severity_when: [{severity: urgent, related: {match: none}}]": "severity_when.0.severity",
    }
    for clause, expected in cases.items():
        key, _, value = clause.partition(": ")
        rules, problems = parse_rules(_rule(**{key: value}), "t.yaml")
        assert rules == [] and len(problems) == 1, clause
        assert expected in problems[0].problem, (clause, problems[0].problem)
    event_rule = (
        "rules:\n  - id: t-event\n    title: an event rule\n    severity: low\n"
        "    kind: event\n    event: {names: [StopLogging]}\n    condition: event_name\n"
        "    related: {match: none}\n"
    )
    rules, problems = parse_rules(event_rule, "t.yaml")
    assert rules == [] and "for state and change rules" in problems[0].problem
    good = "{type: AWS::EC2::Instance, direction: in, where: \"State.Name == 'running'\"}"
    rules, problems = parse_rules(_rule(related=good), "t.yaml")
    assert problems == [] and rules[0].clauses[0].type == "AWS::EC2::Instance"


def test_the_rulepack_rule_on_relationships_loads_and_watches_instances() -> None:
    rules = load_rules()
    assert rules.problems == []
    rule = rules.get(RULE)
    assert rule is not None and [c.severity for c in rule.severity_when] == ["critical", "low"]
    assert rule in rules.watched_by("AWS::EC2::Instance")
    assert rule in rules.watched_by("AWS::EC2::NetworkInterface")  # 'nothing uses it' watches all
    assert rules.needs_relationships


def _n(key: str, state: str | None, direction: str = "in") -> Neighbour:
    configuration = None if state is None else {"State": {"Name": state}}
    return Neighbour(direction, "is associated with", key, "AWS::EC2::Instance", configuration)


def test_any_none_and_count_over_the_related_resources() -> None:
    running = RelatedClause(type="AWS::EC2::Instance", where="State.Name == 'running'")
    nothing = RelatedClause(direction="in", match="none")
    two_or_three = RelatedClause(type="AWS::EC2::Instance", match="count", min=2, max=3)
    out_only = RelatedClause(direction="out")
    neighbours = [_n("i-1", "running"), _n("i-2", "stopped"), _n("i-3", None)]
    assert running.holds(neighbours) == (True, ["i-1"])
    assert running.holds(neighbours[1:]) == (False, [])
    assert nothing.holds(neighbours) == (False, ["i-1", "i-2"])  # i-3 did not exist then
    assert nothing.holds([_n("i-3", None)]) == (True, [])
    assert two_or_three.holds(neighbours) == (True, ["i-1", "i-2"])
    assert two_or_three.holds(neighbours[:1]) == (False, ["i-1"])
    assert out_only.holds(neighbours) == (False, [])


# -- the stage --------------------------------------------------------------------------------


@pytest.fixture
async def stage(tmp_path: Path) -> AsyncIterator[AlertStage]:
    related = RelatedReads(SqliteStore.in_data_dir(tmp_path))
    alerts = AlertsStore.in_data_dir(tmp_path)
    await alerts.open()
    await related.open()
    running = AlertStage(
        rules=load_rules(), store=alerts, dispatcher=Dispatcher(alerts, []), related=related
    )
    try:
        yield running
    finally:
        await related.close()
        await alerts.close()


class Estate:
    """Snapshots of one group and one instance, through the real change detector."""

    def __init__(self) -> None:
        self.detector = ChangeDetector()
        self.clock = T0

    def tick(self) -> datetime:
        self.clock += timedelta(minutes=1)
        return self.clock

    def _observe(self, rtype: str, rid: str, arn: str, config: dict[str, Any]) -> ChangeEvent:
        snapshot = ResourceSnapshot.build(
            account_id=ACCOUNT,
            region=REGION,
            resource_type=rtype,
            resource_id=rid,
            arn=arn,
            configuration=config,
            scan_id="s",
            captured_at=self.tick(),
        )
        change = self.detector.observe(snapshot)
        assert change is not None
        return change

    def group(self, *, ssh: bool) -> ChangeEvent:
        perms = [SSH_WORLD] if ssh else []
        config = {"GroupId": "sg-1", "GroupName": "web", "VpcId": "vpc-1", "IpPermissions": perms}
        return self._observe("AWS::EC2::SecurityGroup", "sg-1", SG, config)

    def instance(self, state: str) -> ChangeEvent:
        config = {
            "InstanceId": "i-1",
            "State": {"Name": state, "Code": 16},
            "SubnetId": "subnet-1",
            "SecurityGroups": [{"GroupId": "sg-1", "GroupName": "web"}],
        }
        return self._observe("AWS::EC2::Instance", "i-1", INSTANCE, config)


async def _open(stage: AlertStage) -> list[tuple[str, str]]:
    page = await stage.store.alerts(AlertFilters(status="open", rule_id=RULE))
    return [(a.key, a.severity) for a in page.items]


async def _run(stage: AlertStage, change: ChangeEvent, *, stored_first: bool = True) -> None:
    """The store sink and the alert agent read the same topic: either may be first."""
    assert stage.related is not None
    if stored_first:
        await stage.related.store.put_changes([change])
    await evaluate_changes_batch(stage, [change.model_dump_json().encode()])
    if not stored_first:
        await stage.related.store.put_changes([change])


async def test_a_groups_alert_follows_the_instances_that_use_it(stage: AlertStage) -> None:
    estate = Estate()
    # Open to the world and used by nothing: low.
    await _run(stage, estate.group(ssh=True))
    assert await _open(stage) == [(SG, "low")]
    # An instance starts using it (evaluated before the store has the instance: the change
    # itself says what it is attached to): critical, the low alert resolved.
    launched = estate.instance("running")
    await _run(stage, launched, stored_first=False)
    assert await _open(stage) == [(SG, "critical")]
    (alert,) = (await stage.store.alerts(AlertFilters(status="open", rule_id=RULE))).items
    assert alert.detail["severity_because"] == {"severity": "critical", "related": [INSTANCE]}
    assert alert.detail["because_of"]["key"] == INSTANCE
    resolved = (await stage.store.alerts(AlertFilters(status="resolved", rule_id=RULE))).items
    assert [(a.severity, a.resolved_by) for a in resolved] == [
        ("low", f"{launched.change_id}#severity")
    ]
    # Replaying that batch changes nothing.
    await evaluate_changes_batch(stage, [launched.model_dump_json().encode()])
    assert await _open(stage) == [(SG, "critical")]
    assert len((await stage.store.alerts(AlertFilters(rule_id=RULE))).items) == 2
    # Stopped: still used, not running: the rule's own severity.
    await _run(stage, estate.instance("stopped"))
    assert await _open(stage) == [(SG, "medium")]
    await _run(stage, estate.instance("running"))
    assert await _open(stage) == [(SG, "critical")]
    # The instance moves to another group: the edge disappears, nothing uses sg-1.
    moved = estate._observe(
        "AWS::EC2::Instance",
        "i-1",
        INSTANCE,
        {
            "InstanceId": "i-1",
            "State": {"Name": "running", "Code": 16},
            "SubnetId": "subnet-1",
            "SecurityGroups": [{"GroupId": "sg-2", "GroupName": "other"}],
        },
    )
    assert [e.target_key for e in moved.relationships_removed if "security-group" in e.target_key]
    await _run(stage, moved)
    assert await _open(stage) == [(SG, "low")]
    # SSH closed: resolved whatever uses it.
    await _run(stage, estate.group(ssh=False))
    assert await _open(stage) == []
    assert stage.stats.reevaluated >= 4 and stage.stats.rule_errors == 0


async def test_the_observations_statistic_counts_what_the_rules_observed(
    stage: AlertStage,
) -> None:
    """One observation per rule evaluated: the conditional resolution put before an opening
    of a ``severity_when`` rule (which the store drops when nothing was open) is not one."""
    estate = Estate()
    rules = stage.rules.for_type("AWS::EC2::SecurityGroup")
    assert any(rule.severity_when for rule in rules)
    await _run(stage, estate.group(ssh=True))
    assert await _open(stage) == [(SG, "low")]
    assert (stage.stats.rule_errors, stage.stats.reevaluated) == (0, 0)
    assert stage.stats.observations == len(rules)
    # A change of severity: the instance's own rules and the group's rule evaluated again;
    # the store resolves the low alert and opens a critical one (two notifications).
    before = stage.stats.notifications
    await _run(stage, estate.instance("running"))
    assert await _open(stage) == [(SG, "critical")]
    watching = [r for r in rules if r.watches("AWS::EC2::Instance")]
    assert stage.stats.reevaluated == 1
    assert stage.stats.observations == (
        len(rules) + len(stage.rules.for_type("AWS::EC2::Instance")) + len(watching)
    )
    assert stage.stats.notifications - before >= 2


async def test_an_instance_going_away_lowers_its_groups_alert(stage: AlertStage) -> None:
    estate = Estate()
    await _run(stage, estate.instance("running"))
    await _run(stage, estate.group(ssh=True))  # opened while a running instance uses it
    assert await _open(stage) == [(SG, "critical")]
    gone = estate.instance("terminated")
    assert gone.change_type == "deleted"
    await _run(stage, gone)
    assert await _open(stage) == [(SG, "low")]


async def test_without_relationship_reads_the_rules_on_them_are_skipped_and_counted(
    stage: AlertStage,
) -> None:
    estate = Estate()
    stage.related = None
    await evaluate_changes_batch(stage, [estate.group(ssh=True).model_dump_json().encode()])
    assert await _open(stage) == []
    assert stage.stats.rule_errors >= 1
    # The rules without clauses still ran: the unconditional SSH rule is open.
    page = await stage.store.alerts(AlertFilters(status="open", rule_id="ec2-sg-ssh-open-to-world"))
    assert [a.key for a in page.items] == [SG]
