"""The Faust app: one per worker process, configured from :class:`~cloudinv.core.settings.Settings`.

Delivery is at-least-once (the embedded broker has no transactions); every sink write is
idempotent, so a replay after a crash never double-counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from cloudinv.core import kafka_holes
from cloudinv.core.codec import schema_for
from cloudinv.core.kafka import faust_credentials
from cloudinv.core.settings import FETCH_MAX_WAIT_MS, KafkaSettings
from cloudinv.core.topics import Topic, topic_name


@dataclass(frozen=True)
class StreamConfig:
    """What a Faust app needs: where the broker is and how topics are named."""

    bootstrap: str
    data_dir: Path
    app_id: str = "cloudinv"
    topic_prefix: str = "cloudinv"
    partitions: int = 4
    replication_factor: int = 1
    fast_rebalance: bool = True
    kafka: KafkaSettings | None = None
    """The ``[kafka]`` settings, for TLS / SASL / MSK IAM credentials (None: plaintext)."""
    attribution_window_s: float = 1800.0
    """How long write events are kept for the attribution join: at least two scan intervals
    (a scheduled scan may see a change that long after its event)."""
    fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS
    """How long a fetch may wait at the broker for messages (``kafka.fetch_max_wait_ms``)."""
    commit_interval_s: float = 1.0
    """How often the worker commits what its agents are done with. A source acknowledged end
    to end (an SQS message, a backfilled file) lets go only after that commit, so this is
    most of its wait (with Faust's own 2.8 s, 600 files/s would keep about 1,700 SQS
    messages waiting, near the tailer's limit of 2,000)."""


class _FetchWaitThread(faust_aiokafka.AIOKafkaConsumerThread):  # type: ignore[misc]
    fetch_max_wait_ms: ClassVar[int] = FETCH_MAX_WAIT_MS

    def _create_consumer(self, loop: Any) -> Any:
        consumer = super()._create_consumer(loop)
        # Faust passes a fixed fetch_max_wait_ms=1500 to aiokafka; read before start().
        consumer._fetch_max_wait_ms = self.fetch_max_wait_ms
        return consumer


class FetchWaitConsumer(faust_aiokafka.Consumer):  # type: ignore[misc]
    """Faust's aiokafka consumer with the fetch wait of :attr:`StreamConfig.fetch_max_wait_ms`
    instead of Faust's fixed 1.5 s (set per app on a subclass of its own, by
    :func:`create_app`).

    A Kafka broker answers a fetch as soon as a message arrives; the wait only bounds an idle
    poll. Tansu (the embedded broker) answers only when the wait runs out, about 0.5 s with
    Faust's value: every hop of the pipeline (CloudTrail topic to the event store, snapshots
    to changes to the feed) then waited that long on a laptop (bench/cloudtrail.py)."""

    thread_class: ClassVar[type[_FetchWaitThread]] = _FetchWaitThread

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return self.thread_class(self, loop=self.loop, beacon=self.beacon)


def create_app(config: StreamConfig) -> faust.App:
    """A configured Faust app with no agents yet
    (see :func:`cloudinv.streams.worker.build_worker_app`)."""
    # The embedded broker can show a partition's later batch before an earlier one: never
    # read past it (cloudinv.core.kafka_holes).
    kafka_holes.install()
    servers = ";".join(
        f"kafka://{s.strip()}" for s in config.bootstrap.removeprefix("kafka://").split(",")
    )
    extra: dict[str, object] = {}
    if config.fast_rebalance:
        # The default rebalance timeout makes the first group join take ~30 s on Tansu;
        # ~10 s brings a worker up in a few seconds (measured, see design.md).
        extra.update(
            broker_rebalance_timeout=10.0,
            broker_session_timeout=10.0,
            broker_heartbeat_interval=1.0,
            consumer_max_fetch_size=4 * 1024 * 1024,
        )
    if config.kafka is not None:
        credentials = faust_credentials(config.kafka)
        if credentials is not None:
            extra["broker_credentials"] = credentials
    datadir = config.data_dir / "faust"
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        config.app_id,
        broker=servers,
        store="memory://",
        datadir=str(datadir / config.app_id),
        topic_partitions=config.partitions,
        topic_replication_factor=config.replication_factor,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        stream_wait_empty=False,
        producer_linger=timedelta(milliseconds=5),
        table_cleanup_interval=30.0,
        broker_commit_interval=config.commit_interval_s,
        **extra,
    )
    thread = type(
        "FetchWaitThread", (_FetchWaitThread,), {"fetch_max_wait_ms": config.fetch_max_wait_ms}
    )
    app.transport.Consumer = type(
        "FetchWaitConsumer", (FetchWaitConsumer,), {"thread_class": thread}
    )
    return app


def topic(app: faust.App, config: StreamConfig, which: Topic) -> faust.TopicT:
    """The Faust topic for one of cloudinv's streams, with its schema."""
    return app.topic(
        topic_name(which, config.topic_prefix),
        schema=schema_for(which),
        partitions=config.partitions,
        replicas=config.replication_factor,
    )
