"""A rule's JMESPath is checked against the shape of what it is evaluated over (the type's
configuration from botocore's output shapes, the change document, the normalized CloudTrail
event): a field the data never has rejects the rule at load and in ``rules test``, with the
nearest real names, instead of a rule that silently never fires. Pure: no I/O."""

from __future__ import annotations

import pytest

from cloudinv.streams.rules import load_rules, parse_rules


def _problem(rule_yaml: str) -> str:
    rules, problems = parse_rules(rule_yaml, "t.yaml")
    assert not rules and len(problems) == 1, (rules, problems)
    return str(problems[0])


def _state(resource_type: str, condition: str) -> str:
    return (
        f"- id: rule-under-test\n  title: a rule\n  severity: low\n  kind: state\n"
        f'  resource_type: {resource_type}\n  condition: "{condition}"\n'
    )


def test_every_built_in_rule_names_only_fields_its_data_has() -> None:
    rules = load_rules()
    assert not rules.problems, [str(p) for p in rules.problems]
    assert len(rules.active) >= 40


def test_a_state_condition_over_configuration_dot_is_told_to_drop_it() -> None:
    problem = _problem(_state("AWS::EC2::Instance", "configuration.State.Name == 'stopped'"))
    assert "configuration: no such field" in problem and "drop 'configuration.'" in problem


@pytest.mark.parametrize(
    ("resource_type", "condition", "expected"),
    [
        (
            "AWS::EC2::SecurityGroup",
            "IpPermission[?FromPort == `22`]",
            "did you mean IpPermissions",
        ),
        ("AWS::EC2::SecurityGroup", "IpPermissions.FromPort == `22`", "IpPermissions[].FromPort"),
        ("AWS::EC2::Instance", "State.Nam == 'stopped'", "did you mean Name"),
        ("AWS::EC2::Volume", "encrypted == `false`", "did you mean Encrypted"),
        ("AWS::EC2::SecurityGroup", "GroupName.Value == 'x'", "is a string"),
    ],
)
def test_a_field_the_configuration_never_has_is_a_problem_with_a_suggestion(
    resource_type: str, condition: str, expected: str
) -> None:
    problem = _problem(_state(resource_type, condition))
    assert "condition:" in problem and expected in problem, problem


@pytest.mark.parametrize(
    "condition",
    [
        "State.Name == 'stopped'",
        "length(BlockDeviceMappings[?Ebs.DeleteOnTermination == `false`]) > `0`",
        "Tags[?Key == 'env'] | [0].Value == 'prod'",
        "!(SecurityGroups[].GroupId | contains(@, 'sg-1'))",
        "NetworkInterfaces[].PrivateIpAddresses[].PrivateIpAddress",
    ],
)
def test_valid_paths_load(condition: str) -> None:
    rules, problems = parse_rules(_state("AWS::EC2::Instance", condition), "t.yaml")
    assert rules and not problems, problems


def test_what_cannot_be_known_is_not_guessed() -> None:
    # A policy held as a JSON string: below from_json nothing is checked.
    condition = "from_json(Policy).Statement[?Effect == 'Allow'] | length(@) > `0`"
    rules, problems = parse_rules(_state("AWS::S3::Bucket", condition), "t.yaml")
    assert rules and not problems, problems


def test_change_rules_check_the_change_document_and_open_while() -> None:
    base = (
        "- id: rule-under-test\n  title: a rule\n  severity: low\n  kind: change\n"
        "  resource_type: AWS::EC2::SecurityGroup\n"
    )
    ok, problems = parse_rules(
        base + "  condition: \"change_type == 'modified' && "
        "contains(changed_paths, '/IpPermissions')\"\n"
        '  open_while: "IpPermissions[?FromPort == `22`]"\n',
        "t.yaml",
    )
    assert ok and not problems, problems
    assert "changes: no such field" in _problem(base + '  condition: "changes[0]"\n')
    assert "did you mean IpPermissions" in _problem(
        base + '  condition: "configuration.IpPermision"\n'
    )
    assert "open_while:" in _problem(
        base + '  condition: "change_type == \'modified\'"\n  open_while: "Ingress"\n'
    )


def test_event_rules_check_the_event_fields() -> None:
    base = (
        "- id: rule-under-test\n  title: a rule\n  severity: low\n  kind: event\n"
        "  event: {names: [ConsoleLogin]}\n"
    )
    ok, problems = parse_rules(
        base + "  condition: \"principal.type == 'Root' && request_parameters.x == 'y'\"\n",
        "t.yaml",
    )
    assert ok and not problems, problems
    assert "did you mean type" in _problem(base + "  condition: \"principal.typ == 'Root'\"\n")
