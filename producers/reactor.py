"""Near-real-time changes: CloudTrail write events trigger a re-describe of what they touched.

Each resource type declares which CloudTrail events name its resources
(``ResourceSpec.event_resource_ids``: event name → JMESPath to the ids). The reactor reads
the CloudTrail topic, and for a successful write event that names resources of a registered
type it re-scans that (account, region, type) scope at once — without waiting for the next
scheduled scan — and publishes the snapshots. Snapshots of the named resources carry the
event's :class:`~cloudinv.core.models.Attribution` (principal, event id and name, source IP, event
time), which the change detector copies into the resulting ChangeEvent.

Events are gathered for ``debounce_s`` so a burst (a deployment touching twenty instances)
costs one re-scan per scope, not twenty.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer
from pydantic import ValidationError

from cloudinv.catalog.registry import Registry, default_registry
from cloudinv.catalog.spec import ResourceSpec, search
from cloudinv.core.codec import decode
from cloudinv.core.models import GLOBAL_REGION, Attribution, CloudTrailEvent, ResourceSnapshot
from cloudinv.core.settings import AwsSettings
from cloudinv.core.topics import Topic, topic_name
from cloudinv.producers.credentials import AccountTarget, AwsAccess
from cloudinv.producers.engine import ScanOptions, new_scan_id, scan_types
from cloudinv.producers.publisher import KafkaPublisher

log = logging.getLogger(__name__)

# CloudTrail's eventSource prefix where it differs from the botocore client name.
_EVENT_SOURCE_OF_SERVICE = {
    "elbv2": "elasticloadbalancing",
    "elb": "elasticloadbalancing",
    "stepfunctions": "states",
    "opensearch": "es",
    "efs": "elasticfilesystem",
    "apigatewayv2": "apigateway",
    "application-autoscaling": "application-autoscaling",
    "cloudwatch": "monitoring",
}


def event_source_prefix(service: str) -> str:
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


def attribution_of(event: CloudTrailEvent) -> Attribution:
    return Attribution(
        event_id=event.event_id,
        event_name=event.event_name,
        event_time=event.event_time,
        principal_arn=event.principal.arn,
        principal_name=event.principal.name,
        source_ip=event.source_ip,
    )


@dataclass(frozen=True)
class Trigger:
    spec: ResourceSpec
    account_id: str
    region: str
    ids: frozenset[str]
    attribution: Attribution


class EventIndex:
    """Event name → the types whose declarations say that event names their resources."""

    def __init__(self, registry: Registry) -> None:
        self._by_name: dict[str, list[ResourceSpec]] = {}
        for spec in registry.all():
            for name in spec.event_resource_ids:
                self._by_name.setdefault(name, []).append(spec)

    def triggers(self, event: CloudTrailEvent) -> list[Trigger]:
        if event.read_only or event.error_code:
            return []
        specs = self._by_name.get(event.event_name, [])
        source = event.event_source.split(".", 1)[0]
        raw = raw_view(event)
        found: list[Trigger] = []
        for spec in specs:
            if event_source_prefix(spec.service) != source:
                continue
            ids = _as_ids(search(spec.event_resource_ids[event.event_name], raw))
            if not ids:
                continue
            region = GLOBAL_REGION if spec.global_service else event.region
            found.append(
                Trigger(spec, event.account_id, region, frozenset(ids), attribution_of(event))
            )
        return found


def _as_ids(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list):
        return [str(v) for v in _flatten(value) if v]
    return [str(value)]


def _flatten(values: Iterable[Any]) -> Iterable[Any]:
    for v in values:
        if isinstance(v, list):
            yield from _flatten(v)
        else:
            yield v


def _attribution_for(
    snapshot: ResourceSnapshot, by_id: dict[str, Attribution]
) -> Attribution | None:
    """Events name resources by id, ARN or name (S3 buckets): match any of them."""
    for candidate in (snapshot.resource_id, snapshot.arn, snapshot.name):
        if candidate and candidate in by_id:
            return by_id[candidate]
    return None


@dataclass
class ReactorStats:
    events: int = 0
    triggers: int = 0
    rescans: int = 0
    attributed: int = 0
    failures: int = 0
    skipped_unknown_account: int = 0


@dataclass
class _Pending:
    spec: ResourceSpec
    account_id: str
    region: str
    attribution_by_id: dict[str, Attribution] = field(default_factory=dict)


class ChangeReactor:
    """Consumes CloudTrail events and publishes attributed snapshots of what they changed."""

    def __init__(
        self,
        aws: AwsSettings,
        publisher: KafkaPublisher,
        consumer_kwargs: dict[str, Any],
        topic_prefix: str,
        *,
        access: AwsAccess | None = None,
        registry: Registry | None = None,
        group_id: str = "cloudinv-reactor",
        debounce_s: float = 1.0,
        auto_offset_reset: str = "latest",
    ) -> None:
        self.aws = aws
        self.publisher = publisher
        self.access = access or AwsAccess.from_settings(aws)
        self.index = EventIndex(registry or default_registry())
        self.debounce_s = debounce_s
        self._consumer = AIOKafkaConsumer(
            topic_name(Topic.CLOUDTRAIL, topic_prefix),
            group_id=group_id,
            auto_offset_reset=auto_offset_reset,
            enable_auto_commit=False,
            **consumer_kwargs,
        )
        self._targets: dict[str, AccountTarget] | None = None
        self.stats = ReactorStats()

    async def _target(self, account_id: str) -> AccountTarget | None:
        if self._targets is None:
            targets = await self.access.discover_accounts(self.aws)
            self._targets = {t.account_id: t for t in targets}
        return self._targets.get(account_id)

    async def handle(self, events: Iterable[CloudTrailEvent]) -> int:
        """Re-describe what ``events`` touched; returns attributed snapshots published."""
        pending: dict[tuple[str, str, str], _Pending] = {}
        for event in events:
            self.stats.events += 1
            for trigger in self.index.triggers(event):
                self.stats.triggers += 1
                scope = (trigger.account_id, trigger.region, trigger.spec.cfn_type)
                entry = pending.setdefault(
                    scope, _Pending(trigger.spec, trigger.account_id, trigger.region)
                )
                for rid in trigger.ids:
                    previous = entry.attribution_by_id.get(rid)
                    # The latest event wins: it is the one that left the resource as it is.
                    if previous is None or previous.event_time <= trigger.attribution.event_time:
                        entry.attribution_by_id[rid] = trigger.attribution
        published = 0
        for entry in pending.values():
            try:
                published += await self._rescan(entry)
            except Exception as exc:
                self.stats.failures += 1
                log.warning(
                    "re-describe of %s in %s/%s failed: %s",
                    entry.spec.cfn_type,
                    entry.account_id,
                    entry.region,
                    exc,
                )
        await self.publisher.flush()
        return published

    async def _rescan(self, entry: _Pending) -> int:
        target = await self._target(entry.account_id)
        if target is None:
            self.stats.skipped_unknown_account += 1
            return 0
        self.stats.rescans += 1
        regions = [self.aws.regions[0] if isinstance(self.aws.regions, list) else "us-east-1"]
        if not entry.spec.global_service:
            regions = [entry.region]
        options = ScanOptions(scan_id=f"event-{new_scan_id()}", max_concurrency=4)
        attributed = 0
        async for item in scan_types(self.access, [target], regions, [entry.spec], options=options):
            if isinstance(item, ResourceSnapshot):
                attribution = entry.attribution_by_id.get(item.resource_id) or next(
                    (
                        a
                        for rid, a in entry.attribution_by_id.items()
                        if rid in (item.arn, item.name)
                    ),
                    None,
                )
                if attribution is not None:
                    item = item.model_copy(update={"attribution": attribution})
                    attributed += 1
            await self.publisher.publish(item)
        self.stats.attributed += attributed
        return attributed

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await self._consumer.start()
            while not stop.is_set():
                batch = await self._consumer.getmany(timeout_ms=int(self.debounce_s * 1000))
                events: list[CloudTrailEvent] = []
                for records in batch.values():
                    for record in records:
                        try:
                            events.append(decode(CloudTrailEvent, record.value))
                        except ValidationError as exc:
                            log.warning("skipping undecodable CloudTrail message: %s", exc)
                if events:
                    await self.handle(events)
                if batch:
                    await self._consumer.commit()
        finally:
            with contextlib.suppress(Exception):
                await self._consumer.stop()
