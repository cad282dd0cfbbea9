"""Alerts: the agents that evaluate the rules on every change and CloudTrail event, and the
delivery of what they raise.

``evaluate_changes``
    Reads the changes topic in batches; every state and change rule of each change's
    resource type is evaluated (:func:`cloudinv.streams.rules.evaluate_change`).
``evaluate_events``
    Reads the CloudTrail topic in batches; every event rule naming each event is evaluated
    (:func:`cloudinv.streams.rules.evaluate_event`).

Rules with clauses on related resources (``related``, ``severity_when``) read the
inventory store's relationships (:class:`~cloudinv.sinks.store.RelationshipReads`) through
:class:`RelatedReads`, as of each change, with the change itself laid over what the store
holds (the store sink reads the same topic on its own and may not have written it yet). A
change of any resource also evaluates again the state rules with clauses of the resources
related to it, before and after the change (an instance started or stopped, a group
attached or detached), so their alerts open, resolve or change severity then; a change of
severity resolves the open alert and opens one at the new severity. Without a store that
reads relationships (or when a read fails) those rules are skipped, logged and counted.

Both hand their observations to the alerts store (:mod:`cloudinv.sinks.alerts_store`; on
DynamoDB with ``dynamodb`` in ``storage.targets``), which opens
an alert once per (rule, resource) while it stays open, resolves it when a later change or event
clears it, and queues each opening and resolution in its outbox for every
destination, in one transaction. Offsets are committed only after that transaction (Faust
acks a ``take_events`` batch once the loop body returns), so a crash replays the batch,
and the store's marks make the replay change nothing. Decoding and rule evaluation run on a
worker thread, SQLite on the store's own threads: the event loop only moves batches.

Delivery is the :class:`~cloudinv.streams.alert_delivery.Dispatcher`'s, started with the app:
the alerts topic, the configured webhooks and the SNS topic, each retried with backoff while it is
down, never blocking the agents.

Rules come from the built-in pack and ``alerts.rules_dir`` (see :mod:`cloudinv.streams.rules`); a
rejected rule is logged with its file, id and problem, and the others run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

import faust
import orjson
from mode import Service
from pydantic import ValidationError

from cloudinv.catalog.relationships import inverse
from cloudinv.core.codec import PydanticCodec
from cloudinv.core.errors import ConfigError
from cloudinv.core.models import ChangeEvent
from cloudinv.core.settings import AlertSettings, Settings, load_settings
from cloudinv.core.topics import Topic, topic_name
from cloudinv.sinks.alerts_store import AlertNotification, AlertsBackend, AlertsStore, Observation
from cloudinv.sinks.factory import alerts_store as configured_alerts_store
from cloudinv.sinks.factory import inventory_store as configured_inventory_store
from cloudinv.sinks.sqlite_store import SqliteStore
from cloudinv.sinks.store import InventoryStore, RelationshipReads, StoreError
from cloudinv.streams import batch_delivery
from cloudinv.streams.alert_delivery import (
    Destination,
    Dispatcher,
    RetryPolicy,
    SnsDestination,
    TopicDestination,
    WebhookDestination,
)
from cloudinv.streams.app import StreamConfig
from cloudinv.streams.rules import (
    Neighbour,
    RelatedResourceState,
    RuleSet,
    evaluate_change,
    evaluate_event,
    load_rules,
    reevaluate,
)
from cloudinv.streams.store_retry import until_stored

__all__ = ["AlertStage", "AlertStats", "RelatedReads", "bind", "destinations_for"]

log = logging.getLogger(__name__)
T = TypeVar("T")
P = ParamSpec("P")

BATCH = 500
WINDOW_S = 0.1


@dataclass
class AlertStats:
    changes: int = 0
    events: int = 0
    undecodable: int = 0
    observations: int = 0
    """What the rules observed: one per rule evaluated on a change or event (an opening, or a
    clearing that resolves an open alert). The conditional resolutions added before openings
    of ``severity_when`` rules (:func:`_severity_changes`) are not counted: the store drops
    every one whose alert is not open at another severity, and a severity that did change
    shows in ``notifications`` (the old alert resolved, the new one opened)."""
    notifications: int = 0
    """Openings and resolutions the store made (each queued for every destination)."""
    rule_errors: int = 0
    reevaluated: int = 0
    """Resources whose rules ran again because something related to them changed."""
    relationship_read_errors: int = 0


class RelatedReads:
    """What rules with clauses on related resources read, from the inventory store, as of a
    change, with that change laid over what the store holds (see the module docstring)."""

    def __init__(self, store: InventoryStore) -> None:
        self.store = store

    @property
    def reads(self) -> RelationshipReads | None:
        return self.store if isinstance(self.store, RelationshipReads) else None

    async def open(self) -> None:
        await self.store.open()

    async def close(self) -> None:
        await self.store.close()

    async def neighbours(
        self, key: str, change: ChangeEvent | None = None, at: datetime | None = None
    ) -> list[Neighbour] | None:
        """The resources related to ``key`` as of ``change`` (a change of ``key`` itself or
        of a resource related to it, laid over the store), else as of ``at`` (None: now);
        None when the store cannot say."""
        reads = self.reads
        if reads is None:
            return None
        if change is not None:
            at = change.captured_at
        related = await reads.related(key, at)
        edges = {(r.direction, r.relationship, r.key): r.type for r in related}
        if change is not None and change.key == key:  # its own edges, as the change leaves them
            for e in change.relationships_removed:
                edges.pop(("out", e.relationship, e.target_key), None)
            for e in change.relationships_added:
                edges[("out", e.relationship, e.target_key)] = e.target_type
        elif change is not None:  # the changed resource's edges to this one
            for e in change.relationships_removed:
                if e.target_key == key:
                    edges.pop(("in", inverse(e.relationship), change.key), None)
            for e in change.relationships_added:
                if e.target_key == key:
                    edges[("in", inverse(e.relationship), change.key)] = change.resource_type
        keys = sorted({k for _, _, k in edges})
        found = await asyncio.gather(*(self._configuration(k, change, at) for k in keys))
        configurations = dict(zip(keys, found, strict=True))
        return [
            Neighbour(direction, relationship, k, type_, configurations[k])
            for (direction, relationship, k), type_ in sorted(edges.items())
        ]

    async def _configuration(
        self, key: str, change: ChangeEvent | None, at: datetime | None
    ) -> dict[str, Any] | None:
        if change is not None and key == change.key:
            return None if change.change_type == "deleted" else change.configuration
        version = await (self.store.current(key) if at is None else self.store.as_of(key, at))
        return None if version is None else version.configuration

    async def affected(self, change: ChangeEvent, types: set[str]) -> list[str]:
        """Keys of ``types`` related to the changed resource before or after the change."""
        reads = self.reads
        if reads is None or not types:
            return []
        found = {
            e.target_key
            for e in (*change.relationships_added, *change.relationships_removed)
            if e.target_type in types
        }
        now = await reads.related(change.key, change.captured_at)
        found |= {r.key for r in now if r.type in types}
        found.discard(change.key)
        return sorted(found)

    async def resource(self, key: str, at: datetime) -> RelatedResourceState | None:
        version = await self.store.as_of(key, at)
        if version is None:
            return None
        return RelatedResourceState(
            key=version.key,
            resource_type=version.resource_type,
            account_id=version.account_id,
            region=version.region,
            name=version.name,
            configuration=version.configuration,
        )


@dataclass
class AlertStage:
    rules: RuleSet
    store: AlertsBackend
    dispatcher: Dispatcher
    related: RelatedReads | None = None
    changes_agent: Any = None
    events_agent: Any = None
    stats: AlertStats = field(default_factory=AlertStats)


class AlertService(Service):  # type: ignore[misc,unused-ignore]
    """Opens the alerts store and runs the dispatcher for the app's lifetime."""

    def __init__(self, stage: AlertStage, **kwargs: Any) -> None:
        self._stage = stage
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        await self._stage.store.open()
        if self._stage.related is not None:
            await self._stage.related.open()
        await self._stage.dispatcher.start()

    async def on_stop(self) -> None:
        await self._stage.dispatcher.stop()
        if self._stage.related is not None:
            await self._stage.related.close()
        await self._stage.store.close()


def destinations_for(
    settings: AlertSettings,
    *,
    sns_endpoint_url: str | None = None,
) -> list[Destination]:
    """The webhooks and SNS topic of the settings (the alerts topic is added by :func:`bind`)."""
    found: list[Destination] = []
    for hook in settings.webhooks:
        found.append(
            WebhookDestination(
                hook.url.get_secret_value(), hook.format, timeout_s=settings.delivery_timeout_s
            )
        )
    if settings.sns_topic_arn:
        found.append(
            SnsDestination(
                settings.sns_topic_arn,
                endpoint_url=sns_endpoint_url,
                timeout_s=settings.delivery_timeout_s,
            )
        )
    return found


def _settings_from_environment() -> Settings | None:
    """``cloudinv worker`` builds its app from a StreamConfig: the settings are read again
    here, from the same environment and ``cloudinv.toml``."""

    try:
        return load_settings()
    except ConfigError as exc:
        log.error("alerts: settings unreadable, using defaults (no webhooks): %s", exc)
        return None


def bind(
    app: faust.App,
    config: StreamConfig,
    *,
    settings: AlertSettings | None = None,
    rules: RuleSet | None = None,
    store: AlertsBackend | None = None,
    destinations: Sequence[Destination] | None = None,
    retry: RetryPolicy | None = None,
    sns_endpoint_url: str | None = None,
    inventory: InventoryStore | None = None,
) -> AlertStage:
    """Declare the alert agents on ``app``. Unset arguments come from the settings: rules
    from the pack and ``rules_dir``, destinations from ``webhooks`` and ``sns_topic_arn``,
    the retry schedule from ``retry_*``, the inventory store (read by rules on related
    resources, when some rule has such a clause) from ``storage.targets``."""
    loaded = _settings_from_environment() if settings is None or store is None else None
    if settings is None:
        settings = loaded.alerts if loaded is not None else AlertSettings()
        if loaded is not None:
            sns_endpoint_url = sns_endpoint_url or loaded.aws.effective_endpoint()
    if rules is None:
        rules = load_rules(settings.rules_dir, builtin=settings.builtin_rules)
    for problem in rules.problems:
        log.error("alert rule rejected: %s", problem)
    log.info("alerts: %d rule(s) active", len(rules.active))
    if destinations is None:
        destinations = destinations_for(settings, sns_endpoint_url=sns_endpoint_url)
    if retry is None:
        retry = RetryPolicy(settings.retry_first_delay_s, settings.retry_max_delay_s)

    # The alerts topic's schema is built here rather than registered in cloudinv.core.codec
    # (``register(Topic.ALERTS, AlertNotification)``): the codec's meta-test
    # (tests/test_codec.py) requires a sample of loaded registered model and has none for
    # alerts yet. The bytes are the same codec's.
    alerts_topic = app.topic(
        topic_name(Topic.ALERTS, config.topic_prefix),
        schema=faust.Schema(
            key_type=str,
            key_serializer="raw",
            value_serializer=PydanticCodec(AlertNotification),
        ),
        partitions=config.partitions,
        replicas=config.replication_factor,
    )

    async def publish(notification: AlertNotification) -> None:
        key = f"{notification.alert.rule_id}|{notification.alert.key}"
        future = await alerts_topic.send(key=key, value=notification)
        await future

    # The deployment's alerts store: DynamoDB with "dynamodb" in storage.targets (shared by
    # loaded worker and API), else the data directory's SQLite file.
    alerts_store: AlertsBackend
    if store is not None:
        alerts_store = store
    elif loaded is not None:
        alerts_store = configured_alerts_store(loaded, config.data_dir)
    else:
        alerts_store = AlertsStore.in_data_dir(config.data_dir)
    dispatcher = Dispatcher(
        alerts_store,
        [TopicDestination(publish), *destinations],
        retry,
        timeout_s=settings.delivery_timeout_s,
    )
    related: RelatedReads | None = None
    if rules.needs_relationships:
        if inventory is None:
            inventory = (
                configured_inventory_store(loaded, config.data_dir)
                if loaded is not None
                else SqliteStore.in_data_dir(config.data_dir)
            )
        if isinstance(inventory, RelationshipReads):
            related = RelatedReads(inventory)
        else:
            log.error(
                "alerts: the inventory store (%s) does not read relationships: rules on "
                "related resources are skipped (counted in rule errors)",
                type(inventory).__name__,
            )
    stage = AlertStage(rules=rules, store=alerts_store, dispatcher=dispatcher, related=related)
    app.add_dependency(AlertService(stage))

    raw = {
        "key_type": bytes,
        "value_type": bytes,
        "key_serializer": "raw",
        "value_serializer": "raw",
        "partitions": config.partitions,
        "replicas": config.replication_factor,
    }
    changes_in = app.topic(topic_name(Topic.CHANGES, config.topic_prefix), **raw)
    # The CloudTrail events come in batches, through queues of this agent's own
    # (cloudinv.streams.batch_delivery: the activity store reads the same topic); None with a
    # transport it does not support, and the agent reads its stream.
    cloudtrail_name = topic_name(Topic.CLOUDTRAIL, config.topic_prefix)
    cloudtrail_in = batch_delivery.BatchTopic(app, topics=[cloudtrail_name], **raw)
    events_queue = (batch_delivery.enable(app, (cloudtrail_name,)) or {}).get(cloudtrail_name)

    async def evaluate_changes(stream: faust.StreamT[bytes]) -> None:
        async for values in stream.take(BATCH, within=WINDOW_S):
            await evaluate_changes_batch(stage, list(values))

    async def evaluate_events(stream: faust.StreamT[bytes]) -> None:
        if events_queue is None:
            async for values in stream.take(BATCH, within=WINDOW_S):
                observations = await asyncio.to_thread(_events_batch, stage, list(values))
                await _apply(stage, observations)
        while events_queue is not None:
            batch = await events_queue.get(BATCH)
            values = [message.value for message in batch.messages]
            observations = await asyncio.to_thread(_events_batch, stage, values)
            await _apply(stage, observations)
            events_queue.ack(batch)  # its offsets may be committed once the store has them

    stage.changes_agent = app.agent(changes_in, name="evaluate_changes", concurrency=1)(
        evaluate_changes
    )
    stage.events_agent = app.agent(cloudtrail_in, name="evaluate_events", concurrency=1)(
        evaluate_events
    )
    return stage


async def evaluate_changes_batch(stage: AlertStage, values: Sequence[bytes]) -> None:
    """One batch of the changes topic: every rule evaluated, the alerts store updated."""
    changes, observations = await asyncio.to_thread(_changes_batch, stage, values)
    if stage.rules.needs_relationships:
        observations += await _related_observations(stage, changes)
    await _apply(stage, observations)


def _changes_batch(
    stage: AlertStage, values: Sequence[bytes]
) -> tuple[list[ChangeEvent], list[Observation]]:
    """The changes decoded, and the observations of the rules without related clauses."""
    changes: list[ChangeEvent] = []
    observations: list[Observation] = []
    for value in values:
        stage.stats.changes += 1
        try:
            change = ChangeEvent.model_validate_json(value)
        except ValidationError as exc:
            stage.stats.undecodable += 1
            log.warning("alerts: skipping a message of the changes topic: %s", exc)
            continue
        changes.append(change)
        evaluation = evaluate_change(stage.rules, change, related_rules=False)
        _count_errors(stage, evaluation.errors)
        observations += evaluation.observations
    return changes, observations


async def _related_observations(
    stage: AlertStage, changes: Sequence[ChangeEvent]
) -> list[Observation]:
    """The rules with related clauses: on each changed resource, and again on the
    resources related to it whose state rules watch its type."""
    observations: list[Observation] = []
    for change in changes:
        try:
            observations += await _related_of_change(stage, change)
        except StoreError as exc:
            stage.stats.relationship_read_errors += 1
            if stage.stats.relationship_read_errors % 100 == 1:
                log.warning(
                    "alerts: relationships of %s unreadable, its related rules skipped: %s",
                    change.key,
                    exc,
                )
    return observations


async def _related_of_change(stage: AlertStage, change: ChangeEvent) -> list[Observation]:
    rules, related = stage.rules, stage.related
    observations: list[Observation] = []
    if any(rule.clauses for rule in rules.for_type(change.resource_type)):
        neighbours = None if related is None else await related.neighbours(change.key, change)
        evaluation = evaluate_change(rules, change, neighbours, related_rules=True)
        _count_errors(stage, evaluation.errors)
        observations += evaluation.observations
    watchers = rules.watched_by(change.resource_type)
    if related is None or not watchers:
        return observations
    types = {rule.resource_type for rule in watchers if rule.resource_type is not None}
    for key in await related.affected(change, types):
        resource = await related.resource(key, change.captured_at)
        neighbours = await related.neighbours(key, change)
        if resource is None or neighbours is None:
            continue  # it did not exist then: nothing to alert on
        stage.stats.reevaluated += 1
        evaluation = reevaluate(rules, resource, neighbours, change)
        _count_errors(stage, evaluation.errors)
        observations += evaluation.observations
    return observations


def _severity_changes(stage: AlertStage, observations: list[Observation]) -> list[Observation]:
    """Before each opening observation of a rule whose severity depends on related resources,
    a resolution (cause ``<change id>#severity``) of the alert open at any other severity; it
    then opens again at the new one. The store decides whether the open alert's severity
    differs, in the transaction that applies the batch (``Observation.unless_severity``): a
    replayed batch, or another worker that saw the same severity, changes nothing."""
    out: list[Observation] = []
    for o in observations:
        rule = stage.rules.get(o.rule_id) if o.opens and o.holds else None
        if rule is not None and rule.severity_when:
            out.append(
                dataclasses.replace(
                    o,
                    opens=False,
                    holds=False,
                    cause=f"{o.cause}#severity",
                    detail={**o.detail, "severity_changed_to": o.severity},
                    unless_severity=o.severity,
                )
            )
        out.append(o)
    return out


def _events_batch(stage: AlertStage, values: Sequence[bytes]) -> list[Observation]:
    names = stage.rules.event_names
    every = "*" in names
    observations: list[Observation] = []
    for value in values:
        stage.stats.events += 1
        try:
            event = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            stage.stats.undecodable += 1
            log.warning("alerts: skipping a message of the CloudTrail topic: %s", exc)
            continue
        if not isinstance(event, dict) or not (every or event.get("event_name") in names):
            continue
        evaluation = evaluate_event(stage.rules, event)
        _count_errors(stage, evaluation.errors)
        observations += evaluation.observations
    return observations


def _count_errors(stage: AlertStage, errors: Sequence[tuple[str, str]]) -> None:
    for rule_id, message in errors:
        stage.stats.rule_errors += 1
        # Once per rule per hundred failures: a rule failing on every input must not flood.
        if stage.stats.rule_errors % 100 == 1:
            log.warning("alert rule %s failed to evaluate: %s", rule_id, message)


async def _apply(stage: AlertStage, observations: list[Observation]) -> None:
    if not observations:
        return
    stage.stats.observations += len(observations)
    observations = _severity_changes(stage, observations)
    notifications = await until_stored(
        "record alerts", stage.store.apply, observations, stage.dispatcher.names
    )
    if notifications:
        stage.stats.notifications += len(notifications)
        stage.dispatcher.wake()
