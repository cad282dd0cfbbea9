"""The topics' published contract (AsyncAPI 3.0): complete, kept in the repository, served by
the API, and true of the bytes a real pipeline wrote, as read by an independent Kafka client
(kafka-python, not the aiokafka cloudinv itself uses) from the Tansu broker."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from jsonschema import Draft202012Validator
from kafka import KafkaConsumer, TopicPartition
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from cloudinv.api.asyncapi import TOPIC_CONTRACTS, build_asyncapi
from cloudinv.core.topics import Topic, topic_name
from tests.api_helpers import Api, PipelineData, pipeline_data, running_api

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
async def data(
    broker: str, moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> PipelineData:
    return await pipeline_data(broker, moto_endpoint, tmp_path_factory)


def _validator(document: dict[str, Any], message: str) -> Draft202012Validator:
    """A validator of one message's payload, resolving the document's own $refs."""
    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource("urn:cloudinv:asyncapi", resource)
    payload = document["components"]["messages"][message]["payload"]
    schema = {"$ref": "urn:cloudinv:asyncapi" + payload["$ref"]}
    return Draft202012Validator(schema, registry=registry)


def test_every_topic_has_a_channel_a_key_and_a_schema() -> None:
    document = build_asyncapi("acme", "b-1:9092")
    assert document["asyncapi"] == "3.0.0"
    assert {c.topic for c in TOPIC_CONTRACTS} == set(Topic)
    for topic in Topic:
        channel = document["channels"][topic.value]
        assert channel["address"] == topic_name(topic, "acme")
        (ref,) = channel["messages"].values()
        message = document["components"]["messages"][ref["$ref"].rsplit("/", 1)[1]]
        assert message["bindings"]["kafka"]["key"]["description"]
        Draft202012Validator.check_schema(
            document["components"]["schemas"][message["payload"]["$ref"].rsplit("/", 1)[1]]
        )
        operation = document["operations"][f"receive_{topic.value}"]
        assert operation["channel"] == {"$ref": f"#/channels/{topic.value}"}
    assert "at-least-once" in document["info"]["description"]
    assert "change_id" in document["channels"]["changes"]["description"]
    assert document["channels"]["activity"]["bindings"]["kafka"]["topicConfiguration"] == {
        "cleanup.policy": ["compact"]
    }


def test_the_repository_copy_is_the_generated_document() -> None:
    kept = orjson.loads((REPO / "asyncapi.json").read_bytes())
    assert kept == build_asyncapi(), (
        "asyncapi.json is stale: regenerate it with `cloudinv asyncapi --example > asyncapi.json`"
    )


def _read_topic(bootstrap: str, topic: str) -> list[tuple[bytes | None, bytes]]:
    """Every message of ``topic``, by partition assignment (no consumer group)."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,
        consumer_timeout_ms=5000,
        request_timeout_ms=30000,
    )
    try:
        partitions = consumer.partitions_for_topic(topic)
        assert partitions, f"{topic} has no partitions"
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        ends = consumer.end_offsets(assigned)
        out: list[tuple[bytes | None, bytes]] = []
        while any(consumer.position(tp) < ends[tp] for tp in assigned):
            for records in consumer.poll(timeout_ms=1000).values():
                out.extend((r.key, r.value) for r in records)
        return out
    finally:
        consumer.close()


async def test_an_independent_client_reads_changes_that_match_the_schema(
    broker: str, data: PipelineData
) -> None:
    document = build_asyncapi(f"api{data.a.id}")
    validator = _validator(document, "ChangeEvent")
    address = document["channels"]["changes"]["address"]
    messages = await asyncio.to_thread(_read_topic, broker, address)
    # The pipeline's two scans: every first-seen resource, then the changes between them.
    assert len(messages) >= 10
    types: set[str] = set()
    for key, value in messages:
        change = orjson.loads(value)
        errors = sorted(validator.iter_errors(change), key=lambda e: list(e.path))
        assert not errors, (
            f"{change.get('change_id')}: {errors[0].message} at {list(errors[0].path)}"
        )
        assert key is not None and key.decode() == change["key"], "keyed by the resource key"
        types.add(change["change_type"])
    assert {"created", "deleted"} <= types


async def test_the_api_serves_the_contract_without_a_token(data: PipelineData) -> None:
    async with running_api(data.data_dir, {"admin": None}) as api:
        await _check_served(api)


async def _check_served(api: Api) -> None:
    async with aiohttp.ClientSession() as http, http.get(api.base + "/asyncapi.json") as resp:
        assert resp.status == 200
        document = await resp.json()
    assert document["asyncapi"] == "3.0.0"
    assert document["channels"]["changes"]["address"].endswith(".changes")
