"""Near-real-time changes: CloudTrail write events trigger a re-describe of what they touched.

Which resources an event names is derived from the registered types themselves
(:mod:`cloudinv.catalog.event_resources`: their identifier fields in the event's request,
response and resources). The reactor reads the CloudTrail topic, and for a successful write
event that names resources of a registered type it re-scans that (account, region, type)
scope at once — without waiting for the next scheduled scan — and publishes the snapshots.
Snapshots of the named resources carry the event's
:class:`~cloudinv.core.models.Attribution` (principal, event id and name, source IP, event
time), which the change detector copies into the resulting ChangeEvent. Whatever this race
misses (a scheduled scan that saw the change first, a deletion) the change stage's
attribution join catches (``cloudinv.streams.changes``).

Events are gathered for ``debounce_s`` so a burst (a deployment touching twenty instances)
costs one re-scan per scope, not twenty.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from pydantic import ValidationError

from cloudinv.catalog.event_resources import EventResourceIndex, attribution_of
from cloudinv.catalog.registry import Registry, default_registry
from cloudinv.catalog.spec import ResourceSpec
from cloudinv.catalog.transform import MalformedResource, resource_identity
from cloudinv.core import kafka_holes
from cloudinv.core.bounded import finish_within
from cloudinv.core.codec import decode
from cloudinv.core.kafka import cluster_id
from cloudinv.core.models import (
    Attribution,
    AttributionMatch,
    CloudTrailEvent,
    ResourceSnapshot,
    ScanManifest,
)
from cloudinv.core.settings import FETCH_MAX_WAIT_MS, AwsSettings, KafkaSettings
from cloudinv.core.topics import Topic, topic_name
from cloudinv.producers.cloudtrail.normalize import partition_of
from cloudinv.producers.credentials import AccountTarget, AwsAccess
from cloudinv.producers.engine import ScanOptions, new_scan_id, scan_types
from cloudinv.producers.publisher import KafkaPublisher

log = logging.getLogger(__name__)

_STOP_GRACE_S = 3.0
"""How long a stop waits for the batch in hand, and then for the consumer to leave its group."""


class _ReadWhatANewLogHolds(ConsumerRebalanceListener):  # type: ignore[misc]
    """Where the reactor starts reading a partition it is given.

    ``auto_offset_reset`` (``latest``) decides only at the group's first join in this process:
    a new deployment does not re-describe the topic's history. At any later assignment, a
    partition with no committed offset, or with one past the log's end, belongs to a log that
    was replaced (a restarted embedded broker keeps nothing, a recreated cluster) or grown: it
    is read from its start. Otherwise the events the sources publish again into the new log
    before the reactor rejoins its group there would never be re-described (their changes
    would wait for the next scheduled scan, and lose who made them). A replacement seen while
    partitions are assigned is handled by :meth:`ChangeReactor._broker_replaced`."""

    def __init__(self, consumer: AIOKafkaConsumer, stats: ReactorStats) -> None:
        self._consumer = consumer
        self._stats = stats
        self._joined = False

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        first, self._joined = not self._joined, True
        if not assigned:
            return
        ends = await self._consumer.end_offsets(list(assigned))
        rewind = []
        for tp in assigned:
            committed = await self._consumer.committed(tp)
            if (committed is None and not first) or (
                committed is not None and committed > ends[tp]
            ):
                rewind.append(tp)
        if rewind:
            self._stats.partitions_rewound += len(rewind)
            log.warning(
                "reactor: %d CloudTrail partition(s) have no committed offset in this log, or "
                "one past its end (the broker was replaced): reading them from their start",
                len(rewind),
            )
            await _rewind(self._consumer, rewind)


async def _rewind(consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition]) -> None:
    """Read ``partitions`` again from the first offset their logs still hold. A plain seek to
    a position asked for: ``seek_to_beginning`` waits on the fetcher, which a rebalance
    listener holds up (aiokafka then waits for its request timeout)."""
    wanted = list(partitions)
    firsts = await consumer.beginning_offsets(wanted)
    for tp in wanted:
        # One no longer assigned: its next owner decides where it starts.
        with contextlib.suppress(IllegalStateError):
            consumer.seek(tp, firsts[tp])


@dataclass(frozen=True)
class Trigger:
    spec: ResourceSpec
    account_id: str
    region: str
    ids: frozenset[str]
    attribution: Attribution
    created: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    """Ids the event created → the event's response (their configuration as AWS gave it)."""


class EventIndex:
    """The re-describe triggers of an event: per registered type, the ids it names
    (:class:`~cloudinv.catalog.event_resources.EventResourceIndex`, derived from the specs)."""

    def __init__(self, registry: Registry) -> None:
        self._resources = EventResourceIndex(registry)

    def triggers(self, event: CloudTrailEvent) -> list[Trigger]:
        """One trigger per type and kind of naming: the resources the event acts on, and
        those it only references (each attribution says which, as the join ranks them)."""
        found: list[Trigger] = []
        response = event.response_elements or {}
        for touched in self._resources.touched(event):
            kinds: tuple[tuple[frozenset[str], AttributionMatch], ...] = (
                (touched.declared, "declared"),
                (touched.ids - touched.declared, "referenced"),
            )
            for ids, match in kinds:
                if not ids:
                    continue
                found.append(
                    Trigger(
                        touched.spec,
                        touched.account_id,
                        touched.region,
                        ids,
                        attribution_of(event, match),
                        {rid: response for rid in touched.created if rid in ids},
                    )
                )
        return found


def _surety(attribution: Attribution) -> tuple[bool, datetime]:
    return (attribution.match != "referenced", attribution.event_time)


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
    built_from_events: int = 0
    """Resources gone before their re-describe, recorded from their creation events."""
    skipped_unbuildable: int = 0
    partitions_rewound: int = 0
    """Partitions assigned with no committed offset, or one past the log's end: read from the
    start (see _ReadWhatANewLogHolds)."""
    brokers_replaced: int = 0
    """Times the broker answered with another cluster id: its log was read from the start."""
    commits_refused: int = 0
    """Batches whose commit the group refused (a rebalance): read again by their new owner."""


@dataclass
class _Pending:
    spec: ResourceSpec
    account_id: str
    region: str
    attribution_by_id: dict[str, Attribution] = field(default_factory=dict)
    created_by_id: dict[str, tuple[Attribution, dict[str, Any]]] = field(default_factory=dict)


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
        group_id: str | None = None,
        debounce_s: float = 1.0,
        auto_offset_reset: str = "latest",
        fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS,
    ) -> None:
        self.aws = aws
        self.publisher = publisher
        self.access = access or AwsAccess.from_settings(aws)
        self.index = EventIndex(registry or default_registry())
        self.debounce_s = debounce_s
        kafka_holes.install()  # never read past a batch not readable yet (the embedded broker)
        self._consumer = AIOKafkaConsumer(
            # Derived from kafka.consumer_group (KafkaSettings.group_for): two deployments
            # on one cluster never share it. Unset only in tests of the default settings.
            group_id=group_id or KafkaSettings().group_for("reactor"),
            auto_offset_reset=auto_offset_reset,
            enable_auto_commit=False,
            # The embedded broker answers a fetch only when this runs out (kafka.fetch_max_wait_ms).
            fetch_max_wait_ms=fetch_max_wait_ms,
            **consumer_kwargs,
        )
        self._targets: dict[str, AccountTarget] | None = None
        self.stats = ReactorStats()
        self._consumer.subscribe(
            [topic_name(Topic.CLOUDTRAIL, topic_prefix)],
            listener=_ReadWhatANewLogHolds(self._consumer, self.stats),
        )
        self._admin = AIOKafkaAdminClient(**consumer_kwargs)
        self._admin_started = False
        self._cluster: str | None = None

    async def prepare(self) -> None:
        """Find the accounts before the first event rather than on it (Organizations
        discovery and the first AssumeRole take seconds): a role calls this before it says
        it is ready."""
        await self._target("")

    def assignment(self) -> set[Any]:
        """The CloudTrail partitions this reactor consumes now (empty before it joined its
        group: with ``latest`` offsets, events published before then are not seen)."""
        try:
            return set(self._consumer.assignment())
        except Exception:  # not started, or stopping
            return set()

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
                    # An event acting on the resource over one that only names it; then the
                    # latest: it is the one that left the resource as it is. The store's
                    # join ranks again once the change is known (cloudinv.sinks.versioning).
                    if previous is None or _surety(previous) <= _surety(trigger.attribution):
                        entry.attribution_by_id[rid] = trigger.attribution
                for rid, response in trigger.created.items():
                    entry.created_by_id[rid] = (trigger.attribution, response)
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
        scan_id = f"event-{new_scan_id()}"
        options = ScanOptions(scan_id=scan_id, max_concurrency=4)
        attributed = 0
        seen: set[str] = set()
        complete = True
        manifests: list[ScanManifest] = []
        async for item in scan_types(self.access, [target], regions, [entry.spec], options=options):
            if isinstance(item, ScanManifest):
                complete = complete and item.can_delete
                manifests.append(item)
                continue
            if isinstance(item, ResourceSnapshot):
                seen.update(i for i in (item.resource_id, item.arn, item.name) if i)
                attribution = _attribution_for(item, entry.attribution_by_id)
                if attribution is not None:
                    item = item.model_copy(update={"attribution": attribution})
                    attributed += 1
            await self.publisher.publish(item)
        if complete:
            for rid, (attribution, response) in entry.created_by_id.items():
                if rid in seen:
                    continue
                snapshot = self._from_event(entry, rid, attribution, response, scan_id)
                if snapshot is not None:
                    await self.publisher.publish(snapshot)
                    self.stats.built_from_events += 1
                    attributed += 1
        # After the snapshots: a manifest that no longer lists a resource built from its
        # creation event deletes it (now, or at the next scheduled scan of the scope).
        for manifest in manifests:
            await self.publisher.publish(manifest)
        self.stats.attributed += attributed
        return attributed

    def _from_event(
        self,
        entry: _Pending,
        rid: str,
        attribution: Attribution,
        response: dict[str, Any],
        scan_id: str,
    ) -> ResourceSnapshot | None:
        """A resource created and gone before the re-describe: its snapshot from the creating
        event's response, captured at the event's time and marked ``origin="event"``."""
        spec = entry.spec
        configuration = dict(response)
        id_field = spec.id_field.replace("[]", "")
        if "." not in id_field:
            configuration.setdefault(id_field, rid)
        region = "" if spec.global_service else entry.region
        try:
            identity = resource_identity(
                spec,
                configuration,
                partition=partition_of(entry.region),
                region=region,
                account_id=entry.account_id,
            )
        except MalformedResource as exc:
            self.stats.skipped_unbuildable += 1
            log.warning("cannot build %s %s from its creation event: %s", spec.cfn_type, rid, exc)
            return None
        return ResourceSnapshot.build(
            account_id=entry.account_id,
            region=entry.region,
            resource_type=spec.cfn_type,
            resource_id=identity.resource_id,
            arn=identity.arn,
            name=identity.name,
            tags=identity.tags,
            configuration=configuration,
            scan_id=scan_id,
            captured_at=attribution.event_time,
            attribution=attribution,
        ).model_copy(update={"origin": "event"})

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop``. A stop is never held up by the broker: a start, a batch or
        the consumer's own stop that does not end in time is abandoned (what was not committed
        is read again by the next run)."""
        work = asyncio.ensure_future(self._consume(stop))
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if work.done():
                work.result()  # a failure stops the role, which its supervisor restarts
                return
            finished = await finish_within(work, _STOP_GRACE_S)
            if finished is None or finished.cancelled():
                log.warning(
                    "reactor: stopped in the middle of its start or a batch (what it had not "
                    "committed is read again)"
                )
        finally:
            stopping.cancel()
            stopped = await finish_within(self._consumer.stop(), _STOP_GRACE_S)
            if stopped is None:
                log.warning("reactor: the Kafka consumer did not stop in %.0fs", _STOP_GRACE_S)
            if self._admin_started:
                await finish_within(self._admin.close(), _STOP_GRACE_S)

    async def _consume(self, stop: asyncio.Event) -> None:
        await self._consumer.start()
        await self._broker_replaced()  # learns the cluster id
        while not stop.is_set():
            batch = await self._consumer.getmany(timeout_ms=int(self.debounce_s * 1000))
            replaced = await self._broker_replaced()
            events: list[CloudTrailEvent] = []
            for records in batch.values():
                for record in records:
                    try:
                        events.append(decode(CloudTrailEvent, record.value))
                    except ValidationError as exc:
                        log.warning("skipping undecodable CloudTrail message: %s", exc)
            if events:
                await self.handle(events)
            if replaced and self._consumer.assignment():
                # Positions in the dead broker's log mean nothing in the new one (committing
                # them would skip what it holds; reading on from them skips its first events):
                # what the sources publish again is read from the start.
                await _rewind(self._consumer, self._consumer.assignment())
            elif batch and not replaced:
                try:
                    await self._consumer.commit()
                except CommitFailedError as exc:
                    # The group moved on under this batch (a rebalance): whoever owns its
                    # partitions now reads it again.
                    self.stats.commits_refused += 1
                    log.warning("reactor: commit refused (%s); the batch is read again", exc)

    async def _broker_replaced(self) -> bool:
        """Whether the broker now answers with another cluster id than before: the embedded
        broker restarted empty (it gets a new id at every start), or the cluster was
        recreated. Its partitions' offsets started again from zero."""
        try:
            if not self._admin_started:
                await self._admin.start()
                self._admin_started = True
            now = await cluster_id(self._admin)
        except KafkaError as exc:
            log.debug("reactor: cluster id not read (%s); asked again at the next batch", exc)
            return False
        if now is None or now == self._cluster:
            return False
        before, self._cluster = self._cluster, now
        if before is None:
            return False
        self.stats.brokers_replaced += 1
        log.warning(
            "reactor: the broker was replaced (cluster id %s, was %s): reading the CloudTrail "
            "topic again from its start",
            now,
            before,
        )
        return True
