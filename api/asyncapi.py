"""The topics as a published contract: an AsyncAPI 3.0 document generated from the message models.

Subscribers (another team's consumer, a SIEM, a data pipeline) read cloudinv's topics
directly; this document says, per topic, its address, its key, the JSON Schema of its values,
and the delivery rules they can rely on. It is built from the same pydantic models the
producers encode with (:mod:`cloudinv.core.codec`), so it cannot drift from the bytes:
``GET /asyncapi.json`` serves it, ``cloudinv asyncapi`` prints it, and the repository keeps a
copy (``asyncapi.json``) that a test regenerates and compares.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from cloudinv import __version__
from cloudinv.core.models import ChangeEvent, CloudTrailEvent, ResourceSnapshot, ScanManifest
from cloudinv.core.topics import DEFAULT_PREFIX, Topic, topic_name
from cloudinv.sinks.alerts_store import AlertNotification
from cloudinv.sinks.events_store import ActivityUpdate

__all__ = ["TOPIC_CONTRACTS", "TopicContract", "build_asyncapi"]

SCHEMA_REF = "#/components/schemas/{model}"


@dataclass(frozen=True)
class TopicContract:
    """What a subscriber of one topic may rely on."""

    topic: Topic
    model: type[BaseModel]
    key: str
    """What the message key is; messages of one key are in one partition, in order."""
    about: str
    compacted: bool = False


DELIVERY = (
    "Delivery is at-least-once: after a crash or a rebalance a message may be delivered "
    "again, never lost once acknowledged. De-duplicate by each topic's identity field. "
    "Messages of one key are in one partition and arrive in the order they were produced; "
    "there is no order across keys. Values are UTF-8 JSON objects (content type "
    "application/json); keys are UTF-8 strings. Fields may be added in later versions: "
    "ignore fields you do not know. Read the topics from a consumer group of your own, or "
    "by partition assignment."
)

TOPIC_CONTRACTS: tuple[TopicContract, ...] = (
    TopicContract(
        Topic.CHANGES,
        ChangeEvent,
        key="the resource key (its ARN), as in the value's `key`",
        about=(
            "One message per change of a resource: created, modified or deleted, with the "
            "RFC 6902 patch from the prior configuration and, when known, the CloudTrail "
            "event that caused it (`attribution`). Identity: `change_id`, deterministic from "
            "the key and the before and after hashes. When the event that caused a change "
            "becomes known after the change was published, the change is published again "
            "with the same `change_id` and `attribution` set: keep the latest message per "
            "`change_id` (an upsert), never count it twice."
        ),
    ),
    TopicContract(
        Topic.SNAPSHOTS,
        ResourceSnapshot,
        key="the resource key (its ARN)",
        about=(
            "Every resource as a scan or a re-describe saw it, changed or not. Identity: "
            "(`arn`, `config_hash`, `captured_at`). Most subscribers want the changes topic."
        ),
    ),
    TopicContract(
        Topic.SCANS,
        ScanManifest,
        key="the scope: `<account>/<region>/<resource type>`",
        about=(
            "One manifest per scanned scope: every key it saw, or why it failed. A key "
            "missing from a complete scan of its scope was deleted; a failed or partial "
            "scan deletes nothing. Identity: (`scan_id`, scope)."
        ),
    ),
    TopicContract(
        Topic.CLOUDTRAIL,
        CloudTrailEvent,
        key="the principal's label (its ARN when CloudTrail gives one)",
        about=(
            "CloudTrail records, normalized, with credentials and secret-looking values "
            "removed. Identity: `event_id` (CloudTrail's eventID). Late events are normal: "
            "a record may arrive hours after its `event_time`."
        ),
    ),
    TopicContract(
        Topic.ACTIVITY,
        ActivityUpdate,
        key="`<kind>:<principal or service>`",
        about=(
            "The new totals of an hourly or daily activity bucket after each batch of "
            "events: each message replaces the previous one for its (granularity, kind, key, "
            "account, bucket start). The topic is compacted."
        ),
        compacted=True,
    ),
    TopicContract(
        Topic.ALERTS,
        AlertNotification,
        key="`<rule id>|<resource key>`",
        about=(
            "An alert opened or resolved. Identity: `notification_id` (`<alert id>:<kind>`); "
            "`seq` grows with every notification."
        ),
    ),
)


def _schemas(components: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=SCHEMA_REF, mode="serialization", by_alias=True)
    for name, definition in schema.pop("$defs", {}).items():
        components[name] = definition
    components[model.__name__] = schema
    return {"$ref": SCHEMA_REF.format(model=model.__name__)}


def build_asyncapi(
    prefix: str = DEFAULT_PREFIX, bootstrap: str = "kafka.example:9092"
) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the topics named with ``prefix``."""
    schemas: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for contract in TOPIC_CONTRACTS:
        name = contract.topic.value
        address = topic_name(contract.topic, prefix)
        message = contract.model.__name__
        messages[message] = {
            "name": message,
            "title": message,
            "contentType": "application/json",
            "summary": (contract.model.__doc__ or message).strip().splitlines()[0],
            "payload": _schemas(schemas, contract.model),
            "bindings": {
                "kafka": {
                    "key": {"type": "string", "description": contract.key},
                    "bindingVersion": "0.5.0",
                }
            },
        }
        channels[name] = {
            "address": address,
            "description": contract.about,
            "messages": {message: {"$ref": f"#/components/messages/{message}"}},
            "bindings": {
                "kafka": {
                    "topic": address,
                    "topicConfiguration": {
                        "cleanup.policy": ["compact"] if contract.compacted else ["delete"]
                    },
                    "bindingVersion": "0.5.0",
                }
            },
        }
        operations[f"receive_{name}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{name}"},
            "summary": f"Read {address}",
            "messages": [{"$ref": f"#/channels/{name}/messages/{message}"}],
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "cloudinv topics",
            "version": __version__,
            "description": DELIVERY,
        },
        "defaultContentType": "application/json",
        "servers": {
            "kafka": {
                "host": bootstrap,
                "protocol": "kafka",
                "description": "the deployment's Kafka cluster (kafka.bootstrap)",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }
