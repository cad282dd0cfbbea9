"""Change detection: snapshots and scan manifests in, ChangeEvents and stored versions out.

Five agents, bound by :func:`bind`, each with concurrency 1:

``detect_changes``
    Reads the snapshots topic (keyed by resource key). A :class:`ChangeDetector` keeps the
    last known state of every key this worker owns and emits a
    :class:`~cloudinv.core.models.ChangeEvent` to the changes topic for every created, modified
    and deleted resource. Batches come straight from the consumer's fetches
    (:mod:`cloudinv.streams.batch_delivery`, Faust's per-message delivery cost more than detecting
    an
    unchanged resource); changes are sent without awaiting each one, and acknowledged before
    the batch's offsets can be committed.
``apply_scans``
    Reads scan manifests, records them in the store, and for a manifest that may delete
    (``can_delete``: complete and without errors) sends a :class:`DeletionRequest` for each
    key the store holds as current in that scope but the scan did not list. A failed or
    partial manifest deletes nothing.
``apply_deletions``
    Reads those requests from this stage's internal deletions topic, keyed by resource key
    and with the snapshots topic's partition count, so Faust's assignor gives partition N of
    both topics to the same worker and this agent shares that worker's detector: one writer
    per key. The detector deletes only if it last saw the resource before the scan started.
``store_changes``
    The store sink: writes changes to the :class:`~cloudinv.sinks.store.InventoryStore` in batches
    (one transaction each, retried until it succeeds), which closes and opens versions.
    Idempotent by ``change_id``; a stored change that comes back better attributed is
    updated in place (:mod:`cloudinv.sinks.versioning`). Then, for the changes it stored
    without attribution (or with one a write event may better), it asks the store for a
    known write event that explains them, or for the event a state transition inherits.
``join_write_events``
    The attribution join's other half: reads the CloudTrail topic (beside the activity
    store), keeps each successful write event naming inventoried resources
    (:mod:`cloudinv.catalog.event_resources`, with whether it acts on each or only references
    it) in the store for ``attribution_window_s``, and asks for the stored changes it
    explains. The store ranks the events of a change's window and passes an event on along
    a resource's state transitions (:mod:`cloudinv.sinks.versioning`).

Attribution is a join, not a race: the re-describe a write event triggers carries the event
on its snapshots (``cloudinv.producers.reactor``), and whatever that misses (a scheduled scan
saw the change first, a deletion found by a scan) is joined in the store, whichever of the
change and the event is stored first: each side reads after its own write is committed, so
one of the two sees the other. What the join finds is sent on the changes topic as the same
change with its attribution; the sink stores it in place, and subscribers of the topic and
of the live feed get it again.

The two detector agents never interleave inside a comparison: the detector runs without an
await from the moment a batch's unknown keys are loaded to the moment its changes are handed
to the producer.

What a ChangeEvent carries: ``prior_seen_at`` (when the state it leaves was last observed)
and, for a deletion found by a scan, ``observed_at`` (the scan's end) bound the write events
that may have caused it. ``prior_configuration`` and ``configuration`` are normalized
(:func:`cloudinv.catalog.diff.normalize`: the type's volatile fields dropped, lists with identities
sorted), ``before_hash``/``after_hash`` are their hashes, and ``patch`` (RFC 6902) turns the
one into the other; an absent configuration counts as ``{}`` for the patch.
``relationships_added`` / ``relationships_removed`` are the edges to other resources
(:mod:`cloudinv.catalog.relationships`) the change made and ended; a deletion ends all.

Restarts. The detector's memory is a cache of the store: a key it does not hold is
loaded with :meth:`~cloudinv.sinks.store.InventoryStore.latest` (in one query per batch)
before the batch is compared, and the cache is dropped when partitions are revoked.
Restarting the worker, or the whole embedded demo with its memory-only broker (every topic
and offset lost), therefore compares new snapshots with the stored versions and reports
nothing that did not change.
Snapshots older than what is known for a key (a replay after a crash) are ignored.

Change ids are deterministic: a hash of the key, the before and after hashes and the start
of the state being left (the prior version's ``valid_from``, or the deletion time for a
re-creation). A change detected again after a crash or a rebalance (the store sink had not
written it yet) has the same id, and the store keeps one.

Deletions by state: a type may declare states meaning "gone although still listed"
(:data:`GONE_STATES`: an EC2 instance is listed as ``terminated`` for about an hour); such
a snapshot deletes the resource at once, and a later listing in that state changes nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ParamSpec, TypeVar

import faust
import orjson
from mode import Service
from pydantic import BaseModel, ConfigDict, ValidationError

from cloudinv.catalog.diff import (
    NormalizationRules,
    changed_paths,
    json_patch,
    normalize,
    rules_for_type,
)
from cloudinv.catalog.event_resources import EventResourceIndex, attribution_of
from cloudinv.catalog.registry import Registry, default_registry
from cloudinv.catalog.relationships import edge_delta, edges_of_resource, touches_relationships
from cloudinv.core.models import (
    AccountId,
    Attribution,
    ChangeEvent,
    ChangeType,
    CloudTrailEvent,
    Edge,
    ResourceSnapshot,
    ResourceType,
    ScanManifest,
    UtcDatetime,
    canonical_json,
    utcnow,
)
from cloudinv.core.topics import Topic, topic_name
from cloudinv.sinks.sqlite_store import SqliteStore
from cloudinv.sinks.store import (
    AttributionJoin,
    InventoryStore,
    ResourceVersion,
    WriteEvent,
)
from cloudinv.streams import batch_delivery
from cloudinv.streams.app import StreamConfig
from cloudinv.streams.store_retry import until_stored

__all__ = [
    "GONE_STATES",
    "ChangeDetector",
    "ChangeStage",
    "DeletionRequest",
    "DetectorStats",
    "KnownState",
    "bind",
    "change_id",
    "deletions_topic_name",
    "write_events_of",
]

log = logging.getLogger(__name__)
T = TypeVar("T")
D = TypeVar("D")
P = ParamSpec("P")

GONE_STATES: Mapping[str, tuple[str, frozenset[str]]] = {
    "AWS::EC2::Instance": ("State.Name", frozenset({"terminated"})),
}
"""Type → (dotted configuration path, values meaning the resource no longer exists)."""

DETECT_BATCH = 2000
DETECT_WINDOW_S = 0.05
SINK_BATCH = 250
SINK_WINDOW_S = 0.2
SCANS_BATCH = 200
SCANS_WINDOW_S = 0.2
JOIN_BATCH = 1000
JOIN_WINDOW_S = 0.2
_YIELD_EVERY = 200
"""Snapshots compared between two yields to the event loop (and sends of their changes:
changes waiting to be sent hold whole configurations alive)."""


class DeletionRequest(BaseModel):
    """A complete scan of a scope did not list ``key``: delete it unless seen since."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str
    resource_type: ResourceType
    account_id: AccountId
    region: str
    scan_id: str
    scan_started_at: UtcDatetime
    scan_finished_at: UtcDatetime | None = None
    """When the scan that did not list the key ended: the deletion happened before it."""


def deletions_topic_name(prefix: str) -> str:
    """The internal topic carrying :class:`DeletionRequest` s, keyed by resource key."""
    return f"{prefix}.detector-deletions" if prefix else "detector-deletions"


def change_id(key: str, before: str | None, after: str | None, anchor: datetime | None) -> str:
    """The deterministic id of a change (see the module docstring)."""
    stamp = "-" if anchor is None else anchor.isoformat()
    text = f"{key}\n{before or '-'}\n{after or '-'}\n{stamp}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


# ---------------------------------------------------------------------------------------------
# The detector: pure state machine, no I/O


@dataclass(slots=True)
class KnownState:
    """What the detector knows of one key."""

    resource_type: str
    resource_id: str
    account_id: str
    region: str
    name: str | None
    config_hash: str | None
    """Hash of the normalized configuration; ``None`` once deleted."""
    document: bytes | None
    """The normalized configuration as canonical JSON; ``None`` once deleted. Kept as bytes:
    a tree of dicts per resource would make every garbage collection walk millions of
    objects (measured: the unchanged path ran 5x slower with 60,000 resources cached)."""
    since: datetime
    """Start of the current state: the version's ``valid_from``, or the deletion time."""
    last_seen: datetime
    """The latest capture time applied (the deletion time once deleted)."""
    raw_hash: str | None = None
    """The snapshot's own ``config_hash`` that produced this state: a match skips the diff."""

    @property
    def deleted(self) -> bool:
        return self.config_hash is None

    def configuration(self) -> dict[str, Any] | None:
        """The normalized configuration, decoded again (only changes need it)."""
        return None if self.document is None else orjson.loads(self.document)


@dataclass
class DetectorStats:
    snapshots: int = 0
    unchanged: int = 0
    created: int = 0
    modified: int = 0
    deleted: int = 0
    stale: int = 0
    invalid: int = 0
    deletion_requests: int = 0
    warm_loads: int = 0

    @property
    def changes(self) -> int:
        return self.created + self.modified + self.deleted


class ChangeDetector:
    """Last known state per key; turns snapshots and deletion requests into ChangeEvents.

    Keys must be loaded (:meth:`missing`, then :meth:`warm` with what the store holds)
    before their snapshots are observed: an unknown key is taken as never seen before.
    """

    def __init__(
        self,
        rules_for: Callable[[str], NormalizationRules] = rules_for_type,
        clock: Callable[[], datetime] = utcnow,
        edges_of: Callable[
            [str, str, str, str, Mapping[str, Any] | None], frozenset[Edge]
        ] = edges_of_resource,
    ) -> None:
        self._rules_for = rules_for
        self._edges_of = edges_of
        self._clock = clock
        self.states: dict[str, KnownState] = {}
        self._absent: set[str] = set()
        self.stats = DetectorStats()
        self.generation = 0
        """How many times the cache was dropped (:meth:`forget`): keys loaded before a
        change of it may be missing again."""

    # -- cache -----------------------------------------------------------------------------

    def missing(self, keys: Iterable[str]) -> list[str]:
        """Keys neither known nor checked against the store, each once."""
        states, absent = self.states, self._absent
        return list(dict.fromkeys(k for k in keys if k not in states and k not in absent))

    def warm(self, checked: Sequence[str], versions: Mapping[str, ResourceVersion]) -> None:
        """Load the store's latest version of each checked key (absent = never stored)."""
        for key in checked:
            version = versions.get(key)
            if version is None:
                self._absent.add(key)
            else:
                self.states[key] = self._state_from_version(version)
        self.stats.warm_loads += len(checked)

    def forget(self) -> None:
        """Drop every cached state (partitions were revoked; the store is the truth)."""
        self.states.clear()
        self._absent.clear()
        self.generation += 1

    def _state_from_version(self, version: ResourceVersion) -> KnownState:
        if version.valid_to is not None:
            return KnownState(
                resource_type=version.resource_type,
                resource_id=version.resource_id,
                account_id=version.account_id,
                region=version.region,
                name=version.name,
                config_hash=None,
                document=None,
                since=version.valid_to,
                last_seen=version.valid_to,
            )
        # Normalized again with today's rules: a field declared volatile since the version
        # was stored must not show up as a change.
        rules = self._rules_for(version.resource_type)
        document = canonical_json(normalize(version.configuration, rules))
        return KnownState(
            resource_type=version.resource_type,
            resource_id=version.resource_id,
            account_id=version.account_id,
            region=version.region,
            name=version.name,
            config_hash=_digest(document),
            document=document,
            since=version.valid_from,
            last_seen=version.valid_from,
        )

    # -- observing ---------------------------------------------------------------------------

    def observe_unchanged(self, data: dict[str, Any]) -> bool:
        """The fast path: True if this decoded snapshot has exactly the known configuration.

        Recognized by the snapshot's own hash, without validation or normalization; the
        key's last-seen time moves on. False means :meth:`observe` must look at it.
        """
        state = self.states.get(data["arn"])
        if state is None or state.raw_hash is None or state.raw_hash != data.get("config_hash"):
            return False
        try:
            captured = datetime.fromisoformat(data["captured_at"])
        except (KeyError, TypeError, ValueError):
            return False  # the full validation will say what is wrong
        if captured.tzinfo is None:
            return False
        self.stats.snapshots += 1
        self.stats.unchanged += 1
        if captured > state.last_seen:
            state.last_seen = captured
        return True

    def observe_wire(self, data: dict[str, Any]) -> ChangeEvent | None:
        """A snapshot as decoded JSON: unchanged ones are recognized without validation."""
        if self.observe_unchanged(data):
            return None
        return self.observe(ResourceSnapshot.model_validate(data))

    def observe(self, snapshot: ResourceSnapshot) -> ChangeEvent | None:
        """Compare one snapshot with the known state of its key."""
        self.stats.snapshots += 1
        key = snapshot.key
        state = self.states.get(key)
        captured = snapshot.captured_at
        if state is not None and captured < state.last_seen:
            self.stats.stale += 1
            return None
        if _is_gone(snapshot):
            if state is None or state.deleted:
                self.stats.unchanged += 1
                return None
            return self._delete(
                key, state, captured, snapshot.scan_id, attribution=snapshot.attribution
            )
        rules = self._rules_for(snapshot.resource_type)
        configuration = normalize(snapshot.configuration, rules)
        document = canonical_json(configuration)
        digest = _digest(document)
        if state is not None and state.config_hash == digest:
            state.raw_hash = snapshot.config_hash
            state.last_seen = captured
            state.name = snapshot.name
            self.stats.unchanged += 1
            return None

        change_type: ChangeType
        prior_seen = None if state is None else state.last_seen
        if state is None or state.deleted:
            change_type = "created"
            prior, before = None, None
            anchor = None if state is None else state.since
            self.stats.created += 1
        else:
            change_type = "modified"
            prior, before, anchor = state.configuration(), state.config_hash, state.since
            self.stats.modified += 1
        patch = json_patch(prior, configuration)
        added: list[Edge] = []
        removed: list[Edge] = []
        if prior is None or touches_relationships(
            snapshot.resource_type, (op.path for op in patch)
        ):
            added, removed = edge_delta(
                self._edges_of(
                    snapshot.resource_type, key, snapshot.account_id, snapshot.region, prior
                ),
                self._edges_of(
                    snapshot.resource_type, key, snapshot.account_id, snapshot.region, configuration
                ),
            )
        event = ChangeEvent(
            change_id=change_id(key, before, digest, anchor),
            key=key,
            resource_type=snapshot.resource_type,
            resource_id=snapshot.resource_id,
            account_id=snapshot.account_id,
            region=snapshot.region,
            change_type=change_type,
            name=snapshot.name,
            prior_configuration=prior,
            configuration=configuration,
            before_hash=before,
            after_hash=digest,
            patch=patch,
            changed_paths=changed_paths(patch),
            captured_at=captured,
            detected_at=self._clock(),
            scan_id=snapshot.scan_id,
            # Set when a CloudTrail event triggered this re-describe (cloudinv.producers.reactor).
            attribution=snapshot.attribution,
            prior_seen_at=prior_seen,
            origin=snapshot.origin,
            relationships_added=added,
            relationships_removed=removed,
        )
        self.states[key] = KnownState(
            resource_type=snapshot.resource_type,
            resource_id=snapshot.resource_id,
            account_id=snapshot.account_id,
            region=snapshot.region,
            name=snapshot.name,
            config_hash=digest,
            document=document,
            since=captured,
            last_seen=captured,
            raw_hash=snapshot.config_hash,
        )
        self._absent.discard(key)
        return event

    def request_deletion(self, request: DeletionRequest) -> ChangeEvent | None:
        """A complete scan did not list the key: delete it unless seen since the scan began."""
        self.stats.deletion_requests += 1
        state = self.states.get(request.key)
        if state is None or state.deleted or state.last_seen >= request.scan_started_at:
            return None
        return self._delete(
            request.key,
            state,
            request.scan_started_at,
            request.scan_id,
            observed_at=request.scan_finished_at,
        )

    def _delete(
        self,
        key: str,
        state: KnownState,
        at: datetime,
        scan_id: str | None,
        *,
        attribution: Attribution | None = None,
        observed_at: datetime | None = None,
    ) -> ChangeEvent:
        prior = state.configuration()
        patch = json_patch(prior, None)
        _, removed = edge_delta(
            self._edges_of(state.resource_type, key, state.account_id, state.region, prior),
            frozenset(),
        )
        event = ChangeEvent(
            change_id=change_id(key, state.config_hash, None, state.since),
            key=key,
            resource_type=state.resource_type,
            resource_id=state.resource_id,
            account_id=state.account_id,
            region=state.region,
            change_type="deleted",
            name=state.name,
            prior_configuration=prior,
            configuration=None,
            before_hash=state.config_hash,
            after_hash=None,
            patch=patch,
            changed_paths=changed_paths(patch),
            captured_at=at,
            detected_at=self._clock(),
            scan_id=scan_id,
            attribution=attribution,
            prior_seen_at=state.last_seen,
            observed_at=observed_at if observed_at is not None and observed_at > at else None,
            relationships_removed=removed,
        )
        state.config_hash = None
        state.document = None
        state.raw_hash = None
        state.since = at
        state.last_seen = at
        self.stats.deleted += 1
        return event


def _digest(document: bytes) -> str:
    return hashlib.sha256(document).hexdigest()


def _is_gone(snapshot: ResourceSnapshot) -> bool:
    rule = GONE_STATES.get(snapshot.resource_type)
    if rule is None:
        return False
    path, values = rule
    value: Any = snapshot.configuration
    for part in path.split("."):
        if not isinstance(value, dict):
            return False
        value = value.get(part)
    return isinstance(value, str) and value in values


# ---------------------------------------------------------------------------------------------
# The Faust stage


class StoreService(Service):  # type: ignore[misc,unused-ignore]
    """Opens the store on first use and closes it when the app stops."""

    def __init__(self, factory: Callable[[], InventoryStore], **kwargs: Any) -> None:
        self._factory = factory
        self._store: InventoryStore | None = None
        self._lock = asyncio.Lock()
        super().__init__(**kwargs)

    async def get(self) -> InventoryStore:
        if self._store is None:
            async with self._lock:
                if self._store is None:
                    store = self._factory()
                    await store.open()
                    self._store = store
        return self._store

    async def on_stop(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            await store.close()


@dataclass
class ChangeStage:
    """What :func:`bind` declared, and counters for status pages, tests and benchmarks."""

    detector: ChangeDetector
    store: StoreService
    detect_agent: Any
    deletions_agent: Any
    scans_agent: Any
    sink_agent: Any
    deletions_topic: str
    batch_queues: dict[str, batch_delivery.BatchQueue] = field(default_factory=dict)
    """The topics delivered in batches (cloudinv.streams.batch_delivery), by name."""
    stored_changes: int = 0
    recorded_scans: int = 0
    deletion_requests_sent: int = 0
    detect_batches: int = 0
    store_batches: int = 0
    """Batches the store sink wrote (one write transaction each)."""
    join_agent: Any = None
    write_events: int = 0
    """Successful write events naming inventoried resources, recorded for the join."""
    attributed_late: int = 0
    """Stored changes the join attributed after the fact (sent again on the changes topic)."""


def bind(
    app: faust.App,
    config: StreamConfig,
    store_factory: Callable[[], InventoryStore] | None = None,
    registry: Registry | None = None,
) -> ChangeStage:
    """Declare the change detection agents on ``app``; the store defaults to local SQLite."""
    if store_factory is None:
        data_dir = config.data_dir

        def store_factory() -> InventoryStore:
            return SqliteStore.in_data_dir(data_dir)

    service = StoreService(store_factory)
    app.add_dependency(service)
    detector = ChangeDetector()

    snapshots_name = topic_name(Topic.SNAPSHOTS, config.topic_prefix)
    deletions_name = deletions_topic_name(config.topic_prefix)
    raw = {
        "key_type": bytes,
        "value_type": bytes,
        "key_serializer": "raw",
        "value_serializer": "raw",
        "partitions": config.partitions,
        "replicas": config.replication_factor,
    }
    # Both topics are keyed by resource key with the same partition count, so Faust's
    # assignor gives partition N of both to the same worker, where both agents share one
    # detector. Its comparisons run without an await in between, so the agents never
    # interleave inside one another's batch.
    snapshots_in = batch_delivery.BatchTopic(app, topics=[snapshots_name], **raw)
    deletions = app.topic(deletions_name, **raw)
    # Raw bytes everywhere: this stage decodes what it reads itself, so that a message it
    # cannot read is logged and skipped instead of stopping the agent.
    changes_name = topic_name(Topic.CHANGES, config.topic_prefix)
    changes = batch_delivery.BatchTopic(app, topics=[changes_name], **raw)
    scans = app.topic(topic_name(Topic.SCANS, config.topic_prefix), **raw)
    # The snapshots and the changes skip Faust's per-message delivery
    # (cloudinv.streams.batch_delivery): both agents work on batches anyway, and Faust's
    # per-message path cost the store sink about as much CPU per change as its SQLite write
    # (bench/changes.py --threads). The other readers of the changes topic (drift alerts, the
    # warehouse) keep their own delivery. None with a transport it does not support, and the
    # agents read their streams.
    queues = batch_delivery.enable(app, (snapshots_name, changes_name)) or {}
    # The attribution join reads the CloudTrail topic beside the activity store, in batches
    # of its own (batch_delivery gives each enable() call its own queues).
    cloudtrail_name = topic_name(Topic.CLOUDTRAIL, config.topic_prefix)
    cloudtrail_in = batch_delivery.BatchTopic(app, topics=[cloudtrail_name], **raw)
    queues = {**queues, **(batch_delivery.enable(app, (cloudtrail_name,)) or {})}
    index = EventResourceIndex(registry or default_registry())
    stage = ChangeStage(
        detector=detector,
        store=service,
        detect_agent=None,
        deletions_agent=None,
        scans_agent=None,
        sink_agent=None,
        deletions_topic=deletions_name,
        batch_queues=dict(queues),
    )

    async def on_revoked(sender: Any, revoked: Any = None, **kwargs: Any) -> None:
        if revoked:
            detector.forget()

    app.on_partitions_revoked.connect(on_revoked)

    async def emit(emitted: list[ChangeEvent]) -> None:
        # Not awaited one by one: handed to the producer in a burst, then acknowledged
        # together before the batch's offsets can be committed.
        if not emitted:
            return
        send = app.producer.send
        futures = [
            await send(changes_name, c.key.encode(), _encode(c), None, None, None) for c in emitted
        ]
        await asyncio.gather(*futures)

    async def compare_snapshots(messages: Sequence[Any]) -> None:
        await _compare(detector, service, _decode(detector, messages, _decode_snapshot), emit)
        stage.detect_batches += 1

    async def detect_changes(stream: faust.StreamT[bytes]) -> None:
        await _consume(
            stream, queues.get(snapshots_name), DETECT_BATCH, DETECT_WINDOW_S, compare_snapshots
        )

    async def apply_deletions(stream: faust.StreamT[bytes]) -> None:
        async for events in stream.take_events(DETECT_BATCH, within=DETECT_WINDOW_S):
            messages = [event.message for event in events]
            items = _decode(detector, messages, DeletionRequest.model_validate_json)
            await _compare(detector, service, items, emit)

    async def apply_scans(stream: faust.StreamT[bytes]) -> None:
        async for events in stream.take_events(SCANS_BATCH, within=SCANS_WINDOW_S):
            messages = [event.message for event in events]
            manifests = list(_decode(detector, messages, ScanManifest.model_validate_json))
            store = await service.get()
            stage.recorded_scans += await until_stored(
                "record scans", store.record_scans, manifests
            )
            futures = []
            for request in await _deletion_requests(store, manifests):
                futures.append(
                    await deletions.send(
                        key=request.key.encode(),
                        value=orjson.dumps(request.model_dump(mode="json")),
                        force=True,
                    )
                )
            stage.deletion_requests_sent += len(futures)
            if futures:
                await asyncio.gather(*futures)

    async def put_changes(messages: Sequence[Any]) -> None:
        batch = _change_batch(detector, messages)
        store = await service.get()
        await until_stored("store changes", store.put_changes, batch)
        stage.stored_changes += len(batch)
        stage.store_batches += 1
        if isinstance(store, AttributionJoin):
            # After the changes are committed: an event stored meanwhile is seen here, or
            # its own join (join_write_events) sees these changes.
            updates = await until_stored("attribute changes", store.attribution_updates, batch)
            stage.attributed_late += len(updates)
            await emit(updates)

    async def record_write_events(messages: Sequence[Any]) -> None:
        events = list(_write_events(index, detector, messages))
        store = await service.get()
        if not isinstance(store, AttributionJoin):
            return
        keep_since = utcnow() - timedelta(seconds=config.attribution_window_s)
        updates = await until_stored(
            "record write events", store.record_write_events, events, keep_since=keep_since
        )
        stage.write_events += len(events)
        stage.attributed_late += len(updates)
        await emit(updates)

    async def join_write_events(stream: faust.StreamT[bytes]) -> None:
        await _consume(
            stream, queues.get(cloudtrail_name), JOIN_BATCH, JOIN_WINDOW_S, record_write_events
        )

    async def store_changes(stream: faust.StreamT[bytes]) -> None:
        await _consume(stream, queues.get(changes_name), SINK_BATCH, SINK_WINDOW_S, put_changes)

    stage.detect_agent = app.agent(snapshots_in, name="detect_changes", concurrency=1)(
        detect_changes
    )
    stage.deletions_agent = app.agent(deletions, name="apply_deletions", concurrency=1)(
        apply_deletions
    )
    stage.scans_agent = app.agent(scans, name="apply_scans", concurrency=1)(apply_scans)
    stage.sink_agent = app.agent(changes, name="store_changes", concurrency=1)(store_changes)
    stage.join_agent = app.agent(cloudtrail_in, name="join_write_events", concurrency=1)(
        join_write_events
    )
    return stage


@dataclass(slots=True)
class SnapshotWire:
    """A snapshot as read from the topic: its key, its bytes, and its decoded JSON until
    the fast path has looked at it."""

    key: str
    raw: bytes
    data: dict[str, Any] | None


Item = SnapshotWire | DeletionRequest


class ChangeBatch(list[ChangeEvent]):
    """Changes read from the topic, with the bytes each was read from (``wire``): a store
    may keep those instead of encoding the change again (see ``SqliteStore.put_changes``)."""

    def __init__(self) -> None:
        super().__init__()
        self.wire: list[bytes] = []


def _change_batch(detector: ChangeDetector, messages: Sequence[Any]) -> ChangeBatch:
    batch = ChangeBatch()
    validate = ChangeEvent.model_validate
    for message in messages:
        try:
            # Decoded by orjson, then validated: a quarter less CPU than pydantic's own JSON
            # parsing for these documents (two configurations each), same model.
            change = validate(orjson.loads(message.value))
        except (ValueError, ValidationError) as exc:
            _skip(detector, message, exc)
            continue
        batch.append(change)
        batch.wire.append(message.value)
    return batch


def _write_events(
    index: EventResourceIndex, detector: ChangeDetector, messages: Sequence[Any]
) -> Iterator[WriteEvent]:
    """The write events of a batch of CloudTrail messages that name inventoried resources."""
    for event in _decode(detector, messages, CloudTrailEvent.model_validate_json):
        yield from write_events_of(index, event)


def write_events_of(index: EventResourceIndex, event: CloudTrailEvent) -> list[WriteEvent]:
    """What the attribution join keeps of one CloudTrail event: one write event for the
    resources it acts on, one for those it only references, each attribution saying which
    (its ``match``), so the join ranks them; none for reads, failures or events naming no
    inventoried resource."""
    return [
        WriteEvent(refs=tuple(ref.ref for ref in refs), attribution=attribution_of(event, match))
        for match, refs in index.refs_by_match(event).items()
    ]


def _encode(change: ChangeEvent) -> bytes:
    return change.model_dump_json(by_alias=True).encode()


def _decode_snapshot(value: bytes) -> SnapshotWire:
    # Only JSON here: the detector recognizes an unchanged snapshot by its hash and validates
    # the full model only when it has to compare it.
    data = orjson.loads(value)
    if not isinstance(data, dict) or not isinstance(data.get("arn"), str):
        raise ValueError("expected a ResourceSnapshot object with an arn")
    return SnapshotWire(data["arn"], value, data)


async def _consume(
    stream: faust.StreamT[bytes],
    queue: batch_delivery.BatchQueue | None,
    limit: int,
    within: float,
    handle: Callable[[Sequence[Any]], Awaitable[None]],
) -> None:
    """Hand batches of raw messages to ``handle``, acknowledging each batch after it."""
    if queue is None:
        # Faust's own delivery: take_events acknowledges a batch when the next is asked for.
        async for events in stream.take_events(limit, within=within):
            await handle([event.message for event in events])
        return
    while True:
        batch = await queue.get(limit)
        await handle(batch.messages)
        queue.ack(batch)


def _decode(
    detector: ChangeDetector, messages: Sequence[Any], decode: Callable[[bytes], D]
) -> Iterator[D]:
    """Decode each message's value; an undecodable one is logged, counted and skipped."""
    for message in messages:
        try:
            yield decode(message.value)
        except (ValueError, ValidationError) as exc:
            _skip(detector, message, exc)


def _skip(detector: ChangeDetector, message: Any, exc: Exception) -> None:
    detector.stats.invalid += 1
    log.warning(
        "skipping undecodable message %s[%s]@%s: %s",
        message.topic,
        message.partition,
        message.offset,
        exc,
    )


async def _compare(
    detector: ChangeDetector,
    service: StoreService,
    items: Iterable[Item],
    emit: Callable[[list[ChangeEvent]], Awaitable[None]],
) -> None:
    """Compare a batch in order and emit the changes.

    Unchanged snapshots of known keys are handled as they are decoded. The rest, and
    anything after them for the same key, keep their order: their unknown keys are loaded
    from the store in one query, then they are compared, each decoded again from its bytes.
    No decoded document outlives its step: a batch of them alive at once (hundreds of
    thousands of objects) made the garbage collector's older generations grow and be walked
    again and again, which cost more than the second decode (measured in bench/changes.py).
    """
    deferred: list[Item] = []
    deferred_keys: set[str] = set()
    for item in items:
        key = item.key
        if isinstance(item, SnapshotWire):
            data, item.data = item.data, None
            if key not in deferred_keys and data is not None and detector.observe_unchanged(data):
                continue
        deferred.append(item)
        deferred_keys.add(key)
    if not deferred:
        return
    keys = [item.key for item in deferred]
    await _ensure_loaded(detector, service, keys)
    generation = detector.generation
    emitted: list[ChangeEvent] = []
    for n, item in enumerate(deferred, 1):
        try:
            if isinstance(item, DeletionRequest):
                change = detector.request_deletion(item)
            else:
                change = detector.observe_wire(orjson.loads(item.raw))
        except (ValidationError, KeyError, ValueError) as exc:
            detector.stats.invalid += 1
            log.warning("skipping invalid snapshot %r: %s", item.key, exc)
            continue
        if change is not None:
            emitted.append(change)
        if n % _YIELD_EVERY == 0 and n < len(deferred):
            # Diffing is CPU work: let the consumer and the other agent run between chunks,
            # after handing what was found so far to the producer (keeps per-key order).
            await emit(emitted)
            emitted = []
            if detector.generation != generation:
                # The cache was dropped meanwhile (a rebalance): load the rest again. Only
                # then: checking every remaining key after each chunk cost more than the
                # chunk's sends.
                await _ensure_loaded(detector, service, keys[n:])
                generation = detector.generation
    await emit(emitted)


async def _ensure_loaded(
    detector: ChangeDetector, service: StoreService, keys: Sequence[str]
) -> None:
    """Load every unknown key from the store; returns with no await after the last load."""
    # A loop: the cache may be dropped (rebalance) while the store is being read.
    while missing := detector.missing(keys):
        store = await service.get()
        found = await until_stored("load known state", store.latest, missing)
        detector.warm(missing, found)


async def _deletion_requests(
    store: InventoryStore, manifests: Sequence[ScanManifest]
) -> list[DeletionRequest]:
    """Requests for keys current in a completely scanned scope that the scan did not list."""
    requests: list[DeletionRequest] = []
    for manifest in manifests:
        if not manifest.can_delete:
            continue
        current = await until_stored(
            "read current keys",
            store.current_keys_in_scope,
            manifest.account_id,
            manifest.region,
            manifest.resource_type,
        )
        listed = set(manifest.keys)
        for key in sorted(current - listed):
            requests.append(
                DeletionRequest(
                    key=key,
                    resource_type=manifest.resource_type,
                    account_id=manifest.account_id,
                    region=manifest.region,
                    scan_id=manifest.scan_id,
                    scan_started_at=manifest.started_at,
                    scan_finished_at=manifest.finished_at,
                )
            )
    return requests
