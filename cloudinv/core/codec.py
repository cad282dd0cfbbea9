"""The one wire codec as the Faust schema of every topic.

``schema_for(Topic.CHANGES)`` gives the Faust schema of a topic, encoding and decoding with
:mod:`cloudinv.core.wire` (re-exported here), which producers outside Faust (aiokafka) use
directly, so there is one byte format whatever writes or reads a topic.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.serializers.codecs import Codec
from pydantic import BaseModel

from cloudinv.core.topics import Topic
from cloudinv.core.wire import MODEL_BY_TOPIC, decode, encode, register

__all__ = [
    "MODEL_BY_TOPIC",
    "PydanticCodec",
    "codec_for",
    "decode",
    "encode",
    "register",
    "schema_for",
]


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
