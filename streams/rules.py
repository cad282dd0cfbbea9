"""Alert rules as data: the rule model, loading and checking YAML rule files, and evaluating
rules against changes and CloudTrail events. Pure: no I/O but reading rule files.

A rule file is YAML holding ``rules:``, a list of rules (a bare list is accepted too)::

    rules:
      - id: ec2-sg-ssh-open-to-world
        title: Security group allows SSH (22) from the internet
        severity: high                      # info, low, medium, high, critical
        kind: state                         # state, change or event
        resource_type: AWS::EC2::SecurityGroup
        condition: IpPermissions[?...]      # JMESPath; truthy = the rule fires
        references: [CIS AWS Foundations 5.2]

Three kinds of rule, by what ``condition`` is evaluated over:

``state``
    The resource's new configuration (the AWS API output as collected, normalized). The
    alert is open while the condition holds; a later change where it does not, or the
    resource's deletion, resolves it.
``change``
    The change itself: ``{change_type, configuration, prior_configuration, patch,
    changed_paths, key, resource_type, account_id, region, name, attribution}`` (``patch``
    is the RFC 6902 list, each op ``{op, path, value}``). The alert stays open while
    ``open_while`` (over the configuration; optional) holds, and resolves when a later
    change makes it false or deletes the resource.
``event``
    A CloudTrail event as cloudinv normalizes it (``event_name``, ``event_source``,
    ``principal.type``, ``request_parameters``, ``response_elements``, ...), for events
    named in ``event.names``. ``resource`` (JMESPath over the event) names what the alert
    is about (default: the first resource ARN, else the principal ARN); ``resolve_on``
    names events that close it (``StartLogging`` after ``StopLogging``).

State and change rules may ask about the resources related to theirs (the relationships
declared in the catalog, :mod:`cloudinv.catalog.relationships`), as they were at the change's
time: ``related`` is one more condition (it must hold too), and ``severity_when`` raises or
lowers the severity by the first case whose ``related`` clause holds::

    severity: high
    severity_when:
      - severity: critical
        related: {relationship: is associated with, type: AWS::EC2::Instance,
                  where: "State.Name == 'running'"}
      - severity: low
        related: {direction: in, match: none}     # nothing uses the group

A clause picks the related resources by ``relationship`` (read from the rule's resource: a
security group ``is associated with`` its instances, a subnet ``contains`` them),
``type`` and ``direction`` (``out``: what the resource names, ``in``: what names it, or
``both``), keeps those for which ``where`` (JMESPath over the related resource's
configuration; checked against ``type``'s shape, so ``type`` is then required) is truthy, and
holds when ``match`` is ``any`` (one or more), ``none``, or ``count`` (between ``min`` and
``max``). Only resources that existed at that time count. A state rule with a clause is
evaluated again when a related resource changes or an edge to one appears or disappears
(:func:`reevaluate`), so the alert opens, resolves or changes severity then.

Besides the standard JMESPath functions, conditions may call ``from_json(s)``: a JSON
document held as a string (a bucket policy) parsed, ``null`` if it is not JSON, and any
other value as it is. ``event.names`` may be ``['*']``: every event.

A malformed rule is rejected alone, with its file, its id and the problem; the other rules of
the file and of the other files still load. Rules of ``rules_dir`` replace built-in rules of
the same id (``disabled: true`` turns one off).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache, partial
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import jmespath
import jmespath.exceptions
import jmespath.functions
import yaml
from jmespath.parser import ParsedResult
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cloudinv.catalog.registry import UnknownResourceType, default_registry
from cloudinv.catalog.spec import RELATIONSHIP_INVERSES
from cloudinv.core.models import ChangeEvent
from cloudinv.sinks.alerts_store import Observation, RuleKind, Severity
from cloudinv.streams.rule_paths import (
    PathProblem,
    check_change_expression,
    check_configuration_expression,
    check_event_expression,
)

__all__ = [
    "BUILTIN_PACK",
    "Evaluation",
    "EventMatch",
    "Neighbour",
    "RelatedClause",
    "RelatedResourceState",
    "Rule",
    "RuleProblem",
    "RuleSet",
    "SeverityCase",
    "change_document",
    "describe_rule",
    "evaluate_change",
    "evaluate_event",
    "fires_on_change",
    "fires_on_configuration",
    "fires_on_event",
    "load_rule_file",
    "load_rules",
    "parse_rules",
    "reevaluate",
    "rule_set_of",
    "search",
    "truthy",
]

log = logging.getLogger(__name__)

BUILTIN_PACK = "rulepack"
"""The built-in rules: ``streams/rulepack/*.yaml``, shipped as package data."""

_ID_RE = r"^[a-z0-9][a-z0-9._-]{1,79}$"
_DETAIL_LIMIT = 4000
"""Characters of a condition's result kept in an alert's detail."""


# ---------------------------------------------------------------------------------------------
# JMESPath


class _RuleFunctions(jmespath.functions.Functions):  # type: ignore[misc]
    @jmespath.functions.signature({"types": []})  # type: ignore[untyped-decorator]
    def _func_from_json(self, value: Any) -> Any:
        """A JSON document held as a string, parsed; anything else as it is."""
        if not isinstance(value, str):
            return value
        try:
            return json.loads(value)
        except ValueError:
            return None


_OPTIONS = jmespath.Options(custom_functions=_RuleFunctions())


@lru_cache(maxsize=4096)
def _compile(expression: str) -> ParsedResult:
    return jmespath.compile(expression)


def search(expression: str, data: Any) -> Any:
    """Evaluate a rule's JMESPath over ``data`` (``from_json`` available)."""
    return _compile(expression).search(data, options=_OPTIONS)


def truthy(value: Any) -> bool:
    """JMESPath truthiness: false, null, "", [] and {} are false; everything else (0 too)."""
    if value is None or value is False:
        return False
    if isinstance(value, str | list | dict):
        return len(value) > 0
    return True


def _check_expression(expression: str) -> str:
    try:
        parsed = _compile(expression)
    except jmespath.exceptions.JMESPathError as exc:
        message = " ".join(str(exc).split())
        raise ValueError(f"invalid JMESPath {expression!r}: {message}") from None
    _check_negations(parsed.parsed, expression)
    return expression


def _check_negations(node: Any, expression: str) -> None:
    """Reject ``!a.b``: JMESPath reads it as ``(!a).b`` (always null), never as ``!(a.b)``."""
    if not isinstance(node, dict):
        return
    children = node.get("children") or []
    if (
        node.get("type") in ("subexpression", "index_expression", "projection")
        and children
        and isinstance(children[0], dict)
        and children[0].get("type") == "not_expression"
    ):
        raise ValueError(
            f"in {expression!r}, '!' applies only to the name right after it ('!a.b' means "
            "'(!a).b', which is always null): write '!(a.b)'"
        )
    for child in children:
        _check_negations(child, expression)


# ---------------------------------------------------------------------------------------------
# The rule model


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EventMatch(_Model):
    """CloudTrail events by name (and optionally by source)."""

    names: list[str] = Field(
        min_length=1, description="eventName values, e.g. StopLogging; '*' for every event"
    )
    source: str | None = Field(
        default=None, description="eventSource, e.g. cloudtrail.amazonaws.com; any if unset"
    )

    def matches(self, event_name: Any, event_source: Any) -> bool:
        named = "*" in self.names or event_name in self.names
        return named and (self.source is None or self.source == event_source)


def _known_type(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return default_registry().get(value).cfn_type
    except UnknownResourceType as exc:
        raise ValueError(f"{exc} (not a type cloudinv collects)") from None


@dataclass(frozen=True, slots=True)
class Neighbour:
    """A resource related to the one a rule is evaluated on, as it was at that time
    (``configuration`` None: it did not exist then, and no clause counts it)."""

    direction: str
    """``out``: the resource names it; ``in``: it names the resource."""
    relationship: str
    """Read from the rule's resource (``is associated with``, ``contains``, ...)."""
    key: str
    type: str
    configuration: Mapping[str, Any] | None


class RelatedClause(_Model):
    """A condition on the resources related to the rule's resource (module docstring)."""

    relationship: str | None = Field(
        default=None, description="as read from the rule's resource, e.g. 'is associated with'"
    )
    type: str | None = Field(default=None, description="the related resource's type")
    direction: Literal["out", "in", "both"] = "both"
    where: str | None = Field(
        default=None, description="JMESPath over the related resource's configuration"
    )
    match: Literal["any", "none", "count"] = "any"
    min: int = Field(default=1, ge=0, description="count: at least this many")
    max: int | None = Field(default=None, ge=0, description="count: at most this many")

    @field_validator("type")
    @classmethod
    def _type(cls, value: str | None) -> str | None:
        return _known_type(value)

    @field_validator("relationship")
    @classmethod
    def _relationship(cls, value: str | None) -> str | None:
        if value is not None and value not in RELATIONSHIP_INVERSES:
            raise ValueError(
                f"unknown relationship {value!r}: expected one of "
                f"{', '.join(sorted(RELATIONSHIP_INVERSES))}"
            )
        return value

    @field_validator("where")
    @classmethod
    def _where(cls, value: str | None) -> str | None:
        return None if value is None else _check_expression(value)

    @model_validator(mode="after")
    def _consistent(self) -> RelatedClause:
        if self.where is not None:
            if self.type is None:
                raise ValueError(
                    "'where' needs 'type': the related resource's type, whose configuration "
                    "it is evaluated over (and checked against)"
                )
            try:
                check_configuration_expression(self.where, self.type)
            except PathProblem as exc:
                raise ValueError(f"where: {exc}") from None
        if self.match != "count" and ("min" in self.model_fields_set or self.max is not None):
            raise ValueError("'min' and 'max' are for match: count")
        if self.max is not None and self.max < self.min:
            raise ValueError(f"max ({self.max}) is below min ({self.min})")
        return self

    def watches(self, resource_type: str) -> bool:
        """A change of a resource of this type may change what the clause sees."""
        return self.type is None or self.type == resource_type

    def matching(self, neighbours: Sequence[Neighbour]) -> list[str]:
        """The keys of the related resources the clause counts (existing then, picked by
        relationship, type and direction, and ``where`` truthy)."""
        found: list[str] = []
        for n in neighbours:
            if n.configuration is None:
                continue
            if self.relationship is not None and n.relationship != self.relationship:
                continue
            if self.type is not None and n.type != self.type:
                continue
            if self.direction != "both" and n.direction != self.direction:
                continue
            if self.where is not None and not truthy(search(self.where, n.configuration)):
                continue
            found.append(n.key)
        return sorted(set(found))

    def holds(self, neighbours: Sequence[Neighbour]) -> tuple[bool, list[str]]:
        """Whether the clause holds over ``neighbours``, and the related keys it counted."""
        keys = self.matching(neighbours)
        if self.match == "any":
            return bool(keys), keys
        if self.match == "none":
            return not keys, keys
        return self.min <= len(keys) and (self.max is None or len(keys) <= self.max), keys


class SeverityCase(_Model):
    """``severity`` when ``related`` holds (the first case that holds wins)."""

    severity: Severity
    related: RelatedClause


class Rule(_Model):
    """One alert rule (see the module docstring)."""

    id: str = Field(pattern=_ID_RE, description="lowercase, digits, '-', '.', '_'")
    title: str = Field(min_length=3)
    severity: Severity
    kind: RuleKind
    condition: str = Field(min_length=1, description="JMESPath; truthy means the rule fires")
    description: str = ""
    references: list[str] = Field(default_factory=list)
    resource_type: str | None = Field(
        default=None, description="CloudFormation type (state and change rules)"
    )
    event: EventMatch | None = Field(default=None, description="Events matched (event rules)")
    open_while: str | None = Field(
        default=None, description="Change rules: JMESPath over the configuration"
    )
    resource: str | None = Field(
        default=None, description="Event rules: JMESPath naming the resource of the alert"
    )
    resolve_on: EventMatch | None = Field(
        default=None, description="Event rules: events that resolve the alert"
    )
    related: RelatedClause | None = Field(
        default=None, description="State and change rules: a condition on related resources"
    )
    severity_when: list[SeverityCase] = Field(
        default_factory=list,
        description="State and change rules: the severity when a clause on related "
        "resources holds (the first that holds); 'severity' otherwise",
    )
    disabled: bool = False
    source: str = Field(default="", description="The file the rule was read from")

    @field_validator("condition", "open_while", "resource")
    @classmethod
    def _expression(cls, value: str | None) -> str | None:
        return None if value is None else _check_expression(value)

    @field_validator("resource_type")
    @classmethod
    def _known_type(cls, value: str | None) -> str | None:
        return _known_type(value)

    @model_validator(mode="after")
    def _fields_of_kind(self) -> Rule:
        if self.kind == "event":
            if self.event is None:
                raise ValueError("an event rule needs 'event' (the CloudTrail event names)")
            if self.open_while is not None:
                raise ValueError("'open_while' is for change rules; event rules use 'resolve_on'")
            if self.resolve_on is not None and set(self.resolve_on.names) & set(self.event.names):
                raise ValueError("'resolve_on' names an event that also fires the rule")
            if self.related is not None or self.severity_when:
                raise ValueError(
                    "'related' and 'severity_when' are for state and change rules (an event "
                    "names no inventoried resource to relate)"
                )
        else:
            if self.resource_type is None:
                raise ValueError(f"a {self.kind} rule needs 'resource_type'")
            for name in ("event", "resource", "resolve_on"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name!r} is for event rules, not {self.kind} rules")
            if self.kind == "state" and self.open_while is not None:
                raise ValueError(
                    "'open_while' is for change rules: a state rule is open while its "
                    "condition holds"
                )
        self._check_paths()
        return self

    def _check_paths(self) -> None:
        """Every field the expressions reach exists in what they are evaluated over."""
        checks: list[tuple[str, str | None, Callable[[str], None]]] = []
        if self.kind == "event":
            checks = [
                ("condition", self.condition, check_event_expression),
                ("resource", self.resource, check_event_expression),
            ]
        else:
            assert self.resource_type is not None
            cfn_type = self.resource_type
            over_change = partial(check_change_expression, resource_type=cfn_type)
            over_configuration = partial(check_configuration_expression, resource_type=cfn_type)
            checks = [
                (
                    "condition",
                    self.condition,
                    over_configuration if self.kind == "state" else over_change,
                ),
                ("open_while", self.open_while, over_configuration),
            ]
        for name, expression, check in checks:
            if expression is None:
                continue
            try:
                check(expression)
            except PathProblem as exc:
                raise ValueError(f"{name}: {exc}") from None

    @property
    def clauses(self) -> list[RelatedClause]:
        """Every clause on related resources (``related``, then the severity cases')."""
        found = [] if self.related is None else [self.related]
        return found + [case.related for case in self.severity_when]

    def watches(self, resource_type: str) -> bool:
        """A state rule whose clauses a change of ``resource_type`` may affect."""
        return self.kind == "state" and any(c.watches(resource_type) for c in self.clauses)

    def severity_of(self, neighbours: Sequence[Neighbour]) -> Severity:
        for case in self.severity_when:
            if case.related.holds(neighbours)[0]:
                return case.severity
        return self.severity

    def event_names(self) -> set[str]:
        names: set[str] = set()
        if self.event is not None:
            names.update(self.event.names)
        if self.resolve_on is not None:
            names.update(self.resolve_on.names)
        return names


@dataclass(frozen=True)
class RuleProblem:
    """Why a rule (or a whole file) was rejected."""

    file: str
    rule_id: str | None
    problem: str
    line: int | None = None

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        what = "" if self.rule_id is None else f" rule {self.rule_id!r}:"
        return f"{where}:{what} {self.problem}"


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        elif err["type"] == "missing":
            message = "required field missing"
        parts.append(f"{loc}: {message}" if loc else message)
    return "; ".join(parts)


def _item_lines(text: str) -> list[int]:
    """The line of each rule of a file (best effort: [] if it cannot tell)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return []
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == "rules":
                node = value
                break
    if not isinstance(node, yaml.SequenceNode):
        return []
    return [item.start_mark.line + 1 for item in node.value]


def parse_rules(text: str, source: str) -> tuple[list[Rule], list[RuleProblem]]:
    """The valid rules of one file's text, and a problem for each rejected one."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return [], [RuleProblem(source, None, f"not valid YAML: {' '.join(str(exc).split())}")]
    if isinstance(data, dict) and set(data) == {"rules"}:
        data = data["rules"]
    if data is None:
        return [], []
    if not isinstance(data, list):
        return [], [RuleProblem(source, None, "expected 'rules:' followed by a list of rules")]
    lines = _item_lines(text)
    rules: list[Rule] = []
    problems: list[RuleProblem] = []
    seen: set[str] = set()
    for n, item in enumerate(data):
        line = lines[n] if n < len(lines) else None
        if not isinstance(item, dict):
            problems.append(
                RuleProblem(source, f"#{n + 1}", "expected a mapping (id, title, ...)", line)
            )
            continue
        rule_id = item.get("id") if isinstance(item.get("id"), str) else f"#{n + 1}"
        if "source" in item:
            problems.append(RuleProblem(source, rule_id, "source: set by cloudinv", line))
            continue
        try:
            rule = Rule.model_validate({**item, "source": source})
        except ValidationError as exc:
            problems.append(RuleProblem(source, rule_id, _describe(exc), line))
            continue
        if rule.id in seen:
            problems.append(RuleProblem(source, rule.id, "duplicate id in this file", line))
            continue
        seen.add(rule.id)
        rules.append(rule)
    return rules, problems


def load_rule_file(path: Path) -> tuple[list[Rule], list[RuleProblem]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [], [RuleProblem(str(path), None, f"cannot read: {exc}")]
    return parse_rules(text, str(path))


def _builtin_files() -> list[tuple[str, str]]:
    pack = resources.files("cloudinv.streams").joinpath(BUILTIN_PACK)
    files = sorted(
        (entry for entry in pack.iterdir() if entry.name.endswith((".yaml", ".yml"))),
        key=lambda entry: entry.name,
    )
    return [(f"builtin:{entry.name}", entry.read_text(encoding="utf-8")) for entry in files]


# ---------------------------------------------------------------------------------------------
# The rule set


@dataclass
class RuleSet:
    """The rules in force, indexed for evaluation, and the problems of the rejected ones."""

    rules: list[Rule]
    problems: list[RuleProblem] = field(default_factory=list)
    _by_type: dict[str, list[Rule]] = field(default_factory=dict, init=False, repr=False)
    _by_event: dict[str, list[Rule]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        for rule in self.rules:
            if rule.disabled:
                continue
            if rule.kind == "event":
                for name in rule.event_names():
                    self._by_event.setdefault(name, []).append(rule)
            elif rule.resource_type is not None:
                self._by_type.setdefault(rule.resource_type, []).append(rule)

    @property
    def active(self) -> list[Rule]:
        return [r for r in self.rules if not r.disabled]

    def get(self, rule_id: str) -> Rule | None:
        return next((r for r in self.rules if r.id == rule_id), None)

    def for_type(self, resource_type: str) -> list[Rule]:
        return self._by_type.get(resource_type, [])

    @property
    def needs_relationships(self) -> bool:
        """Some rule in force has a clause on related resources."""
        return any(rule.clauses for rule in self.active)

    def watched_by(self, changed_type: str) -> list[Rule]:
        """The state rules (of other types) whose clauses a change of ``changed_type`` may
        affect: evaluated again on each resource related to the changed one."""
        return [rule for rule in self.active if rule.watches(changed_type)]

    def for_event(self, event_name: str) -> list[Rule]:
        named = self._by_event.get(event_name, [])
        every = self._by_event.get("*", [])
        if not every:
            return named
        return named + [r for r in every if r not in named]

    @property
    def event_names(self) -> frozenset[str]:
        return frozenset(self._by_event)


def load_rules(rules_dir: Path | None = None, *, builtin: bool = True) -> RuleSet:
    """The built-in pack (unless ``builtin`` is false) and every ``*.yaml``/``*.yml`` file of
    ``rules_dir``. A rule of ``rules_dir`` replaces a built-in rule of the same id."""
    chosen: dict[str, Rule] = {}
    problems: list[RuleProblem] = []
    if builtin:
        for name, text in _builtin_files():
            rules, found = parse_rules(text, name)
            problems += found
            for rule in rules:
                if rule.id in chosen:
                    problems.append(
                        RuleProblem(
                            name, rule.id, f"duplicate id (also in {chosen[rule.id].source})"
                        )
                    )
                else:
                    chosen[rule.id] = rule
    if rules_dir is not None:
        directory = Path(rules_dir)
        if not directory.is_dir():
            problems.append(RuleProblem(str(directory), None, "rules_dir is not a directory"))
        else:
            user: dict[str, Rule] = {}
            paths = sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml"))
            for path in paths:
                rules, found = load_rule_file(path)
                problems += found
                for rule in rules:
                    if rule.id in user:
                        problems.append(
                            RuleProblem(
                                str(path), rule.id, f"duplicate id (also in {user[rule.id].source})"
                            )
                        )
                    else:
                        user[rule.id] = rule
            chosen.update(user)
    return RuleSet(rules=list(chosen.values()), problems=problems)


def rule_set_of(rules: Iterable[Rule], problems: Sequence[RuleProblem] = ()) -> RuleSet:
    return RuleSet(rules=list(rules), problems=list(problems))


# ---------------------------------------------------------------------------------------------
# Evaluation


@dataclass
class Evaluation:
    observations: list[Observation] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    """(rule id, message) of conditions that failed on this input (JMESPath type errors)."""


def change_document(change: ChangeEvent) -> dict[str, Any]:
    """What a change rule's condition sees: the ChangeEvent as on the wire."""
    return change.model_dump(mode="json", by_alias=True)


def _matched(value: Any) -> Any:
    """A condition's result as kept in an alert: ``True`` when a plain flag, else the
    (possibly truncated) value that matched."""
    if isinstance(value, bool):
        return value
    text = json.dumps(value, default=str)
    if len(text) <= _DETAIL_LIMIT:
        return value
    return {"truncated": text[:_DETAIL_LIMIT]}


def fires_on_configuration(rule: Rule, configuration: Any) -> tuple[bool, Any]:
    """A state rule over a configuration: (fires, what the condition returned)."""
    result = search(rule.condition, configuration)
    return truthy(result), result


def fires_on_change(
    rule: Rule, document: Mapping[str, Any], neighbours: Sequence[Neighbour] = ()
) -> tuple[bool, bool, Any]:
    """A state or change rule over a change document: (opens, holds, condition result).
    ``neighbours``: the resource's related resources then (for a ``related`` clause)."""
    configuration = document.get("configuration")
    if document.get("change_type") == "deleted" or configuration is None:
        return False, False, None
    related = rule.related is None or rule.related.holds(neighbours)[0]
    if rule.kind == "state":
        fires, result = fires_on_configuration(rule, configuration)
        fires = fires and related
        return fires, fires, result
    holds = True if rule.open_while is None else truthy(search(rule.open_while, configuration))
    holds = holds and related
    result = search(rule.condition, document)
    return holds and truthy(result), holds, result


def _related_detail(rule: Rule, neighbours: Sequence[Neighbour]) -> dict[str, Any]:
    """What an alert keeps of the clauses: the related keys each counted (up to 20)."""
    detail: dict[str, Any] = {}
    if rule.related is not None:
        detail["related"] = rule.related.matching(neighbours)[:20]
    for case in rule.severity_when:
        holds, keys = case.related.holds(neighbours)
        if holds:
            detail["severity_because"] = {"severity": case.severity, "related": keys[:20]}
            break
    return detail


def fires_on_event(rule: Rule, event: Mapping[str, Any]) -> tuple[bool, Any]:
    """An event rule over one event (already matched by name): (fires, condition result)."""
    result = search(rule.condition, event)
    return truthy(result), result


def evaluate_change(
    rules: RuleSet,
    change: ChangeEvent,
    neighbours: Sequence[Neighbour] | None = None,
    *,
    related_rules: bool | None = None,
) -> Evaluation:
    """Observations of every state and change rule of the change's resource type.

    ``neighbours``: the resource's related resources as of the change (what its rules'
    clauses read); ``None`` when they could not be read, and rules with clauses are then
    left out (counted as errors) rather than judged on nothing. ``related_rules``: only the
    rules with clauses on related resources (True), only the others (False), or all."""
    evaluation = Evaluation()
    applicable = rules.for_type(change.resource_type)
    if related_rules is not None:
        applicable = [r for r in applicable if bool(r.clauses) == related_rules]
    if not applicable:
        return evaluation
    document = change_document(change)
    for rule in applicable:
        if rule.clauses and neighbours is None:
            evaluation.errors.append((rule.id, "its related resources could not be read"))
            continue
        related = neighbours or ()
        try:
            opens, holds, result = fires_on_change(rule, document, related)
            severity = rule.severity_of(related)
        except (jmespath.exceptions.JMESPathError, TypeError, ValueError) as exc:
            evaluation.errors.append((rule.id, f"{type(exc).__name__}: {exc}"))
            continue
        detail: dict[str, Any] = {
            "change_id": change.change_id,
            "change_type": change.change_type,
            "changed_paths": change.changed_paths[:50],
        }
        if opens:
            detail["matched"] = _matched(result)
            detail.update(_related_detail(rule, related))
        if change.attribution is not None:
            detail["attribution"] = change.attribution.model_dump(mode="json")
        evaluation.observations.append(
            _observation(rule, severity, change, change, opens=opens, holds=holds, detail=detail)
        )
    return evaluation


@dataclass(frozen=True)
class RelatedResourceState:
    """A resource whose state rules are evaluated again because something related to it
    changed: its identity and its configuration at that time."""

    key: str
    resource_type: str
    account_id: str
    region: str
    name: str | None
    configuration: Mapping[str, Any]


def reevaluate(
    rules: RuleSet,
    resource: RelatedResourceState,
    neighbours: Sequence[Neighbour],
    cause: ChangeEvent,
) -> Evaluation:
    """Observations of ``resource``'s state rules with clauses that a change of
    ``cause.resource_type`` may affect, over its configuration and related resources as of
    ``cause`` (whose change id and time the observations carry)."""
    evaluation = Evaluation()
    for rule in rules.for_type(resource.resource_type):
        if not rule.watches(cause.resource_type):
            continue
        try:
            fires, result = fires_on_configuration(rule, resource.configuration)
            fires = fires and (rule.related is None or rule.related.holds(neighbours)[0])
            severity = rule.severity_of(neighbours)
        except (jmespath.exceptions.JMESPathError, TypeError, ValueError) as exc:
            evaluation.errors.append((rule.id, f"{type(exc).__name__}: {exc}"))
            continue
        detail: dict[str, Any] = {
            "change_id": cause.change_id,
            "because_of": {
                "key": cause.key,
                "resource_type": cause.resource_type,
                "change_type": cause.change_type,
            },
        }
        if fires:
            detail["matched"] = _matched(result)
            detail.update(_related_detail(rule, neighbours))
        evaluation.observations.append(
            _observation(rule, severity, resource, cause, opens=fires, holds=fires, detail=detail)
        )
    return evaluation


def _observation(
    rule: Rule,
    severity: Severity,
    subject: ChangeEvent | RelatedResourceState,
    cause: ChangeEvent,
    *,
    opens: bool,
    holds: bool,
    detail: dict[str, Any],
) -> Observation:
    """What ``rule`` says of ``subject`` (the changed resource, or one related to it), at
    the time of the change that caused the evaluation."""
    return Observation(
        rule_id=rule.id,
        title=rule.title,
        severity=severity,
        kind=rule.kind,
        key=subject.key,
        account_id=subject.account_id,
        region=subject.region,
        opens=opens,
        holds=holds,
        at=cause.captured_at,
        cause=cause.change_id,
        resource_type=subject.resource_type,
        name=subject.name,
        detail=detail,
    )


_DEFAULT_RESOURCE = "resources[0].arn || principal.arn || account_id"


def _event_key(rule: Rule, event: Mapping[str, Any]) -> str:
    value = search(rule.resource or _DEFAULT_RESOURCE, event)
    if isinstance(value, list):
        value = next((v for v in value if v), None)
    if value is None or value == "":
        value = search(_DEFAULT_RESOURCE, event)
    return str(value) if value is not None else "unknown"


def _event_time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def evaluate_event(rules: RuleSet, event: Mapping[str, Any]) -> Evaluation:
    """Observations of the event rules naming this CloudTrail event (``event`` is the
    CloudTrailEvent as JSON, as on the CloudTrail topic)."""
    evaluation = Evaluation()
    name, source = event.get("event_name"), event.get("event_source")
    if not isinstance(name, str):
        return evaluation
    for rule in rules.for_event(name):
        try:
            if rule.event is not None and rule.event.matches(name, source):
                fires, result = fires_on_event(rule, event)
                if not fires:
                    continue
                opens = holds = True
            elif rule.resolve_on is not None and rule.resolve_on.matches(name, source):
                opens = holds = False
                result = None
            else:
                continue
            key = _event_key(rule, event)
            at = _event_time(event["event_time"])
        except (jmespath.exceptions.JMESPathError, TypeError, ValueError, KeyError) as exc:
            evaluation.errors.append((rule.id, f"{type(exc).__name__}: {exc}"))
            continue
        principal = event.get("principal") or {}
        detail: dict[str, Any] = {
            "event_id": event.get("event_id"),
            "event_name": name,
            "event_source": source,
            "principal": principal,
            "source_ip": event.get("source_ip"),
        }
        if opens:
            detail["matched"] = _matched(result)
        evaluation.observations.append(
            Observation(
                rule_id=rule.id,
                title=rule.title,
                severity=rule.severity,
                kind="event",
                key=key,
                account_id=str(event.get("account_id") or ""),
                region=str(event.get("region") or ""),
                opens=opens,
                holds=holds,
                at=at,
                cause=str(event.get("event_id")),
                resource_type=rule.resource_type,
                name=None,
                detail=detail,
            )
        )
    return evaluation


def describe_rule(rule: Rule) -> str:
    """One line: what the rule looks at."""
    if rule.kind == "event" and rule.event is not None:
        return "event " + ", ".join(rule.event.names)
    return f"{rule.kind} of {rule.resource_type}"
