"""Which inventoried resources a CloudTrail event touched, derived from the registered types.

No list of event names is kept here. For every registered :class:`ResourceSpec` the
identifier fields it already declares (``id_field``, ``name_field``, ``arn_field``) say how
CloudTrail names its resources: an EC2 instance's ``InstanceId`` is ``instanceId`` in
``requestParameters`` / ``responseElements``, an RDS instance's ``DBInstanceIdentifier`` is
``dBInstanceIdentifier``, an S3 bucket's ``Name`` is ``bucketName`` (the type's short name
before a generic field: ``id``, ``name``, ``arn``), and an EKS cluster's ``name`` is ``name``
inside an object called ``cluster``. Every value found under such a field, at any depth, in
an event of the type's service names one of its resources, as does an entry of the record's
``resources`` whose type is the spec's. A spec's ``event_resource_ids`` (event name →
JMESPath) adds ids the fields cannot find (``CreateTags`` names any EC2 resource as
``resourceId``).

How sure a named resource was touched (:class:`Touched` ``declared``): an event *acts on*
a resource when its type declares the event in ``event_resource_ids``, when the call created
it (its id only in the response), or when the event's name is a verb and the type's own
name (``ModifyVolume``, ``TerminateInstances``, ``PutBucketPolicy``: :func:`acted_type`);
otherwise the event only *references* it, as a parameter of an operation on another resource
(``CreateSnapshot`` names its volume, ``RunInstances`` its subnet). :func:`fits` says whether
an event's verb is the kind of change (``Create*`` of the type for a creation, ``Delete*`` /
``Terminate*`` for a deletion); the attribution join ranks by both
(:mod:`cloudinv.sinks.versioning`).

A touched resource is a :class:`ResourceRef`: type, account, region (``global`` for global
types) and the identifier as the event gave it, which may be the resource's id, its name or
its ARN. :func:`refs_of` gives the refs under which a stored resource may be named, so an
event and a change meet on any of them. Used by the re-describe reactor
(``cloudinv.producers.reactor``) and by the change stage's attribution join
(``cloudinv.streams.changes``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cloudinv.catalog.registry import Registry
from cloudinv.catalog.spec import ResourceSpec, search, strings_in
from cloudinv.core.models import GLOBAL_REGION, Attribution, AttributionMatch, CloudTrailEvent

__all__ = [
    "CREATE_VERBS",
    "DELETE_VERBS",
    "EventResourceIndex",
    "ResourceRef",
    "Touched",
    "acted_type",
    "attribution_of",
    "event_source_prefix",
    "fits",
    "raw_view",
    "refs_of",
    "short_name",
]

_EVENT_SOURCE_OF_SERVICE = {
    "elbv2": "elasticloadbalancing",
    "elb": "elasticloadbalancing",
    "stepfunctions": "states",
    "opensearch": "es",
    "efs": "elasticfilesystem",
    "apigatewayv2": "apigateway",
    "cloudwatch": "monitoring",
}
"""CloudTrail's eventSource prefix where it differs from the botocore client name."""

_GENERIC_FIELDS = frozenset({"id", "name", "arn", "identifier"})
"""Field names too common to name a type's resource without the type's short name."""
_IDENTIFIER_ENDINGS = ("id", "name", "arn", "identifier", "url")
"""A declared field counts only if its name says it identifies (a KMS key's name field is
its ``Description``: not unique, not how events name keys)."""


CREATE_VERBS = frozenset({"Create", "Run", "Put", "Allocate", "Register", "Import", "Copy"})
"""Verbs of calls that bring a resource of the named type into being."""
DELETE_VERBS = frozenset({"Delete", "Terminate", "Deregister", "Release"})
"""Verbs of calls that end a resource of the named type."""
_EVENT_NAME_RE = re.compile(r"([A-Z][a-z]+)([A-Za-z0-9]*?)(?:\d{8}(?:v\d+)?)?")
"""``Verb`` + ``Noun``, without the API version some services append
(``CreateFunction20150331`` is Lambda's CreateFunction)."""


def short_name(cfn_type: str) -> str:
    """``AWS::EC2::Instance`` → ``instance`` (lower case, as nouns are compared)."""
    return cfn_type.rsplit("::", 1)[-1].lower()


def _verb_noun(event_name: str) -> tuple[str, str]:
    match = _EVENT_NAME_RE.fullmatch(event_name)
    if match is None:
        return "", event_name.lower()
    return match.group(1), match.group(2).lower()


def _is_noun_of(noun: str, short: str) -> bool:
    return noun in (short, short + "s", short + "es")


def acted_type(event_name: str, shorts: Iterable[str]) -> str | None:
    """Of the types' short names ``shorts`` (one service's), the one ``event_name`` acts on:
    the longest its noun starts with (``ModifyVolumeAttribute`` → ``volume``;
    ``CreateVpcEndpoint`` → ``vpcendpoint``, not ``vpc``)."""
    _, noun = _verb_noun(event_name)
    best: str | None = None
    for short in shorts:
        if noun.startswith(short) and (best is None or len(short) > len(best)):
            best = short
    return best


def fits(change_type: str, event_name: str, cfn_type: str) -> bool:
    """Whether the event's verb is the change's kind: a creation by a ``Create``/``Run``/
    ``Put``... of the type itself (``CreateSnapshot`` for a snapshot, ``RunInstances`` for an
    instance), a deletion by a ``Delete``/``Terminate``... of it; any event fits a
    modification."""
    if change_type == "modified":
        return True
    verb, noun = _verb_noun(event_name)
    verbs = CREATE_VERBS if change_type == "created" else DELETE_VERBS
    return verb in verbs and _is_noun_of(noun, short_name(cfn_type))


def event_source_prefix(service: str) -> str:
    """``ec2`` → ``ec2``; ``elbv2`` → ``elasticloadbalancing`` (as in ``eventSource``)."""
    return _EVENT_SOURCE_OF_SERVICE.get(service, service)


def raw_view(event: CloudTrailEvent) -> dict[str, Any]:
    """The fields of the raw CloudTrail record that id expressions read."""
    return {
        "eventName": event.event_name,
        "eventSource": event.event_source,
        "awsRegion": event.region,
        "recipientAccountId": event.account_id,
        "requestParameters": event.request_parameters or {},
        "responseElements": event.response_elements or {},
        "resources": [r.model_dump(by_alias=True) for r in event.resources],
    }


def attribution_of(event: CloudTrailEvent, match: AttributionMatch | None = None) -> Attribution:
    """Who did it, as a change carries it: the event, its principal and source address, and
    how the event named the resource (``match``)."""
    return Attribution(
        event_id=event.event_id,
        event_name=event.event_name,
        event_time=event.event_time,
        principal_arn=event.principal.arn,
        principal_name=event.principal.name,
        source_ip=event.source_ip,
        match=match,
    )


@dataclass(frozen=True, slots=True)
class ResourceRef:
    """One name of one resource: its type, account, region and an id, name or ARN."""

    cfn_type: str
    account_id: str
    region: str
    ident: str

    @property
    def ref(self) -> str:
        """The join key: ``type|account|region|ident``."""
        return f"{self.cfn_type}|{self.account_id}|{self.region}|{self.ident}"


def refs_of(
    cfn_type: str,
    account_id: str,
    region: str,
    *,
    key: str,
    resource_id: str,
    name: str | None = None,
) -> list[str]:
    """The refs under which an event may name this stored resource (id, name, ARN)."""
    idents = dict.fromkeys(i for i in (resource_id, name, key) if i)
    return [ResourceRef(cfn_type, account_id, region, ident).ref for ident in idents]


@dataclass(frozen=True, slots=True)
class Touched:
    """The resources of one type that one event names."""

    spec: ResourceSpec
    account_id: str
    region: str
    ids: frozenset[str]
    created: frozenset[str] = frozenset()
    """Ids named only in the call's response: resources the call created (an id the caller
    did not know yet), whose configuration the response describes."""
    declared: frozenset[str] = frozenset()
    """The ids of resources the event acts on (see the module's docstring); the others it
    only references."""

    def refs(self) -> list[ResourceRef]:
        return [
            ResourceRef(self.spec.cfn_type, self.account_id, self.region, i)
            for i in sorted(self.ids)
        ]

    def match(self, ident: str) -> AttributionMatch:
        """How the event names the resource ``ident``."""
        return "declared" if ident in self.declared else "referenced"


@dataclass(frozen=True, slots=True)
class _Fields:
    spec: ResourceSpec
    specific: frozenset[str]
    """Lower-cased field names that name this type wherever they appear."""
    generic: frozenset[str]
    """Lower-cased generic names that count inside an object named like the type."""
    parents: frozenset[str]
    """Lower-cased names of such objects (the type's short name)."""
    short: str


def _last(path: str | None) -> str | None:
    if not path:
        return None
    return path.replace("[]", "").rsplit(".", 1)[-1]


def _fields_of(spec: ResourceSpec) -> _Fields:
    short = short_name(spec.cfn_type)
    specific: set[str] = set()
    generic: set[str] = set()
    for path in (spec.id_field, spec.name_field, spec.arn_field):
        field = _last(path)
        if field is None:
            continue
        lowered = field.lower()
        if not lowered.endswith(_IDENTIFIER_ENDINGS):
            continue
        if lowered in _GENERIC_FIELDS:
            generic.add(lowered)
            specific.add(short + lowered)
        else:
            specific.add(lowered)
    return _Fields(spec, frozenset(specific), frozenset(generic), frozenset({short}), short)


def _walk(value: Any, fields: _Fields, parent: str, found: set[str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            lowered = k.lower() if isinstance(k, str) else ""
            if lowered in fields.specific or (
                lowered in fields.generic and parent in fields.parents
            ):
                found.update(strings_in(v))
            if isinstance(v, dict | list):
                _walk(v, fields, lowered, found)
    elif isinstance(value, list):
        for item in value:
            _walk(item, fields, parent, found)


class EventResourceIndex:
    """For a successful write event: the resources of every registered type it names."""

    def __init__(self, registry: Registry | Iterable[ResourceSpec]) -> None:
        self._by_source: dict[str, list[_Fields]] = {}
        for spec in registry:
            source = event_source_prefix(spec.service)
            self._by_source.setdefault(source, []).append(_fields_of(spec))
        self._shorts = {
            source: frozenset(f.short for f in fields) for source, fields in self._by_source.items()
        }

    @staticmethod
    def is_write(event: CloudTrailEvent) -> bool:
        """A successful call that may change something (not read-only, no error)."""
        return not event.read_only and not event.error_code

    def touched(self, event: CloudTrailEvent) -> list[Touched]:
        """Per type, the ids the event names; empty for reads and failed calls."""
        if not self.is_write(event):
            return []
        source = event.event_source.split(".", 1)[0]
        candidates = self._by_source.get(source, [])
        if not candidates:
            return []
        request = event.request_parameters or {}
        response = event.response_elements or {}
        raw: dict[str, Any] | None = None
        acted = acted_type(event.event_name, self._shorts[source])
        out: list[Touched] = []
        for fields in candidates:
            spec = fields.spec
            in_request: set[str] = set()
            in_response: set[str] = set()
            _walk(request, fields, "", in_request)
            _walk(response, fields, "", in_response)
            found = in_request | in_response
            for resource in event.resources:
                if resource.type == spec.cfn_type and resource.arn:
                    found.add(resource.arn)
            created = in_response - in_request
            declared = set(found) if fields.short == acted else set(created)
            expression = spec.event_resource_ids.get(event.event_name)
            if expression is not None:
                if raw is None:
                    raw = raw_view(event)
                named = set(strings_in(search(expression, raw)))
                found |= named
                declared |= named
            if not found:
                continue
            region = GLOBAL_REGION if spec.global_service else event.region
            out.append(
                Touched(
                    spec,
                    event.account_id,
                    region,
                    frozenset(found),
                    frozenset(created),
                    frozenset(declared),
                )
            )
        return out

    def refs(self, event: CloudTrailEvent) -> list[ResourceRef]:
        """Every resource the event names, one ref each."""
        return [ref for touched in self.touched(event) for ref in touched.refs()]

    def refs_by_match(self, event: CloudTrailEvent) -> dict[AttributionMatch, list[ResourceRef]]:
        """:meth:`refs`, split into the resources the event acts on (``declared``) and those
        it only references (``referenced``); a kind with none is left out."""
        out: dict[AttributionMatch, list[ResourceRef]] = {}
        for touched in self.touched(event):
            for ref in touched.refs():
                out.setdefault(touched.match(ref.ident), []).append(ref)
        return out
