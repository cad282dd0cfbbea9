"""RFC 9457 problem responses (``application/problem+json``): every API error's shape."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from aiohttp import web
from pydantic import BaseModel


class Problem(BaseModel):
    type: str = "about:blank"
    title: str
    status: int
    detail: str
    parameter: str | None = None
    expected: str | None = None


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    parameter: str | None = None,
    expected: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    body = Problem(
        title=title, status=status, detail=detail, parameter=parameter, expected=expected
    )
    return web.Response(
        status=status,
        body=orjson.dumps(body.model_dump(exclude_none=True)),
        content_type="application/problem+json",
        headers=headers,
    )
