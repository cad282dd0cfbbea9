"""The one wire format: pydantic models as orjson bytes, by topic.

Producers outside Faust (aiokafka) :func:`encode` and :func:`decode` with this model table;
:mod:`cloudinv.core.codec` wraps the same functions as the Faust schema of every topic, so
there is one byte format whatever writes or reads a topic. Kept apart from Faust so a producer
(a CloudTrail backfill command among them) does not load it.
"""

from __future__ import annotations

from typing import TypeVar

import orjson
from pydantic import BaseModel

from cloudinv.core.models import (
    ChangeEvent,
    CloudTrailEvent,
    ResourceSnapshot,
    ScanManifest,
)
from cloudinv.core.topics import Topic

__all__ = ["MODEL_BY_TOPIC", "decode", "encode", "register"]

M = TypeVar("M", bound=BaseModel)

MODEL_BY_TOPIC: dict[Topic, type[BaseModel]] = {
    Topic.SNAPSHOTS: ResourceSnapshot,
    Topic.SCANS: ScanManifest,
    Topic.CHANGES: ChangeEvent,
    Topic.CLOUDTRAIL: CloudTrailEvent,
}
"""Topics whose values have a model. Later stages register theirs with :func:`register`."""


def register(topic: Topic, model: type[BaseModel]) -> None:
    MODEL_BY_TOPIC[topic] = model


def encode(message: BaseModel) -> bytes:
    """Model → bytes (by alias, so ``JsonPatchOp.from_`` travels as ``from``)."""
    return orjson.dumps(message.model_dump(mode="json", by_alias=True))


def decode(model: type[M], data: bytes) -> M:
    """Bytes → model, validating every field. Raises ``pydantic.ValidationError``."""
    return model.model_validate_json(data)
