"""The one wire codec: pydantic models as orjson bytes, used as the Faust schema of every topic.

``schema_for(Topic.CHANGES)`` gives the Faust schema of a topic; producers outside Faust
(aiokafka) use :func:`encode` and :func:`decode` with the same model table, so there is one
byte format whatever writes or reads a topic.
"""

from __future__ import annotations

from typing import Any, TypeVar

import faust
import orjson
from faust.serializers.codecs import Codec
from pydantic import BaseModel

from cloudinv.core.models import (
    ChangeEvent,
    CloudTrailEvent,
    ResourceSnapshot,
    ScanManifest,
)
from cloudinv.core.topics import Topic

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


class PydanticCodec(Codec):  # type: ignore[misc,unused-ignore]
    """A Faust codec for one pydantic model."""

    def __init__(self, model: type[BaseModel], **kwargs: Any) -> None:
        self.model = model
        super().__init__(**kwargs)

    def _dumps(self, obj: Any) -> bytes:
        if isinstance(obj, BaseModel):
            return encode(obj)
        # A dict shaped like the model (e.g. from a test or an older producer): validate it.
        return encode(self.model.model_validate(obj))

    def _loads(self, s: bytes) -> Any:
        return decode(self.model, s)

    def clone(self, *children: Any) -> PydanticCodec:
        return type(self)(self.model, children=(*self.nodes, *children))


def codec_for(topic: Topic) -> PydanticCodec:
    try:
        model = MODEL_BY_TOPIC[topic]
    except KeyError:
        raise KeyError(f"topic {topic.value!r} has no registered model") from None
    return PydanticCodec(model)


def schema_for(topic: Topic) -> faust.Schema:
    """Faust schema for a topic: ``str`` keys, model values through :class:`PydanticCodec`."""
    return faust.Schema(
        key_type=str,
        key_serializer="raw",
        value_serializer=codec_for(topic),
    )
