"""Kafka clients configured from settings: one place that turns ``[kafka]`` into aiokafka
keyword arguments (bootstrap, TLS, SASL) and creates cloudinv's topics."""

from __future__ import annotations

import contextlib
import logging
import ssl
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from cloudinv.settings import KafkaSettings
from cloudinv.topics import ALL_TOPICS, topic_name

log = logging.getLogger(__name__)


def client_kwargs(kafka: KafkaSettings, bootstrap: str | None = None) -> dict[str, Any]:
    """aiokafka connection arguments. ``bootstrap`` overrides the configured servers (the
    embedded broker's address is only known once it runs)."""
    servers = bootstrap or ",".join(kafka.servers())
    kwargs: dict[str, Any] = {
        "bootstrap_servers": servers.removeprefix("kafka://"),
        "security_protocol": kafka.security_protocol,
    }
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        kwargs["ssl_context"] = ssl.create_default_context()
    if kafka.sasl_mechanism:
        kwargs["sasl_mechanism"] = kafka.sasl_mechanism
        kwargs["sasl_plain_username"] = kafka.sasl_username
        kwargs["sasl_plain_password"] = (
            kafka.sasl_password.get_secret_value() if kafka.sasl_password else None
        )
    return kwargs


async def ensure_topics(kafka: KafkaSettings, bootstrap: str | None = None) -> list[str]:
    """Create cloudinv's topics with the configured partitions and replication.

    Topics that already exist are left as they are. Returns the names created.
    """
    admin = AIOKafkaAdminClient(**client_kwargs(kafka, bootstrap))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                name=topic_name(t, kafka.topic_prefix),
                num_partitions=kafka.partitions,
                replication_factor=kafka.replication_factor,
            )
            for t in ALL_TOPICS
            if topic_name(t, kafka.topic_prefix) not in existing
        ]
        if wanted:
            # A concurrent starter may win the race: its topics are as good as ours.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(wanted)
        return [t.name for t in wanted]
    finally:
        await admin.close()
