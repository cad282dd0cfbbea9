"""Alerts: the agents that evaluate the rules on every change and CloudTrail event, and the
delivery of what they raise.

``evaluate_changes``
    Reads the changes topic in batches; every state and change rule of each change's
    resource type is evaluated (:func:`cloudinv.streams.rules.evaluate_change`).
``evaluate_events``
    Reads the CloudTrail topic in batches; every event rule naming each event is evaluated
    (:func:`cloudinv.streams.rules.evaluate_event`).

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
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

import faust
import orjson
from mode import Service
from pydantic import ValidationError

from cloudinv.core.codec import PydanticCodec
from cloudinv.core.errors import ConfigError
from cloudinv.core.models import ChangeEvent
from cloudinv.core.settings import AlertSettings, Settings, load_settings
from cloudinv.core.topics import Topic, topic_name
from cloudinv.sinks.alerts_store import AlertNotification, AlertsBackend, AlertsStore, Observation
from cloudinv.sinks.factory import alerts_store as configured_alerts_store
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
from cloudinv.streams.rules import RuleSet, evaluate_change, evaluate_event, load_rules
from cloudinv.streams.store_retry import until_stored

__all__ = ["AlertStage", "AlertStats", "bind", "destinations_for"]

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
    notifications: int = 0
    rule_errors: int = 0


@dataclass
class AlertStage:
    rules: RuleSet
    store: AlertsBackend
    dispatcher: Dispatcher
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
        await self._stage.dispatcher.start()

    async def on_stop(self) -> None:
        await self._stage.dispatcher.stop()
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
) -> AlertStage:
    """Declare the alert agents on ``app``. Unset arguments come from the settings: rules
    from the pack and ``rules_dir``, destinations from ``webhooks`` and ``sns_topic_arn``,
    the retry schedule from ``retry_*``."""
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
    stage = AlertStage(rules=rules, store=alerts_store, dispatcher=dispatcher)
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
            observations = await asyncio.to_thread(_changes_batch, stage, list(values))
            await _apply(stage, observations)

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


def _changes_batch(stage: AlertStage, values: Sequence[bytes]) -> list[Observation]:
    observations: list[Observation] = []
    for value in values:
        stage.stats.changes += 1
        try:
            change = ChangeEvent.model_validate_json(value)
        except ValidationError as exc:
            stage.stats.undecodable += 1
            log.warning("alerts: skipping a message of the changes topic: %s", exc)
            continue
        evaluation = evaluate_change(stage.rules, change)
        _count_errors(stage, evaluation.errors)
        observations += evaluation.observations
    return observations


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
    notifications = await until_stored(
        "record alerts", stage.store.apply, observations, stage.dispatcher.names
    )
    if notifications:
        stage.stats.notifications += len(notifications)
        stage.dispatcher.wake()
