"""Declared endpoints: each route names its query model and response model.

The declaration drives three things at once, so they can never disagree: validation of the
query string (an unknown parameter or a malformed value is a 400 problem, never ignored),
the response serialization (JSON, or CSV for list endpoints), and ``/openapi.json``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Generic, Protocol, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cloudinv.api.problems import problem

Q = TypeVar("Q", bound=BaseModel)
R = TypeVar("R", bound=BaseModel)


class Query(BaseModel):
    """Base of every query model: unknown parameters are errors."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class PageQuery(Query):
    limit: int = Field(default=100, ge=1, le=1000, description="items per page")
    cursor: str | None = Field(default=None, description="next_cursor of the previous page")
    format: str | None = Field(
        default=None, pattern="^(json|csv)$", description="json (default) or csv"
    )


class Page(BaseModel, Generic[R]):
    items: list[R]
    next_cursor: str | None = None


Handler = Callable[[web.Request, Any], Awaitable[Any]]


@dataclass
class Endpoint:
    method: str
    path: str
    summary: str
    query: type[Query] | None
    response: type[BaseModel] | None
    handler: Handler
    tags: list[str] = field(default_factory=list)
    csv_items: bool = False
    """The response is a Page: ``format=csv`` / ``Accept: text/csv`` gives its items as CSV."""
    open: bool = False
    raw: bool = False
    """The handler returns its own web.StreamResponse (SSE, HTML)."""
    path_params: dict[str, str] = field(default_factory=dict)
    csv: bool = False
    """The handler answers ``text/csv`` itself (``format=csv`` / ``Accept: text/csv``)."""


ENDPOINTS: list[Endpoint] = []


def endpoint(
    method: str,
    path: str,
    *,
    summary: str,
    query: type[Query] | None = None,
    response: type[BaseModel] | None = None,
    tags: list[str] | None = None,
    csv_items: bool = False,
    open: bool = False,
    raw: bool = False,
    path_params: dict[str, str] | None = None,
    csv: bool = False,
) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        ENDPOINTS.append(
            Endpoint(
                method=method,
                path=path,
                summary=summary,
                query=query,
                response=response,
                handler=handler,
                tags=tags or [],
                csv_items=csv_items,
                open=open,
                raw=raw,
                path_params=path_params or {},
                csv=csv,
            )
        )
        return handler

    return register


def parse_query(request: web.Request, model: type[Q]) -> Q:
    """Validate the query string. Repeated parameters become lists only where declared."""
    data: dict[str, Any] = {}
    for key in request.query:
        values = request.query.getall(key)
        data[key] = values if len(values) > 1 else values[0]
    extras: dict[str, str] = {}
    if "params" in model.model_fields:
        # Filters on nested fields are collected into ``params``: OpenAPI's deepObject form
        # ``param[<dotted.path>]=<value>``, as /openapi.json declares it, or the shorter
        # ``param.<dotted.path>=<value>``.
        for key in [k for k in data if _param_path(k) is not None]:
            value = data.pop(key)
            path = _param_path(key)
            assert path is not None
            extras[path] = value if isinstance(value, str) else value[-1]
        data["params"] = extras
    return model.model_validate(data)


def _param_path(key: str) -> str | None:
    """The dotted path of a ``param[<path>]`` or ``param.<path>`` key, else None."""
    if key.startswith("param[") and key.endswith("]"):
        return key[len("param[") : -1]
    if key.startswith("param."):
        return key.removeprefix("param.")
    return None


class BadRequest(Exception):
    def __init__(self, parameter: str | None, detail: str, expected: str | None = None) -> None:
        super().__init__(detail)
        self.parameter = parameter
        self.detail = detail
        self.expected = expected


class NotFound(Exception):
    pass


class ServiceUnavailable(Exception):
    """Something the endpoint needs (a store, AWS access) is not available: a 503."""


def validation_problem(exc: ValidationError) -> web.Response:
    err = exc.errors()[0]
    parameter = ".".join(str(p) for p in err["loc"]) or None
    if err["type"] == "extra_forbidden":
        detail = f"unknown query parameter {parameter!r}"
        expected = "one of the parameters documented in /openapi.json"
    else:
        detail = f"invalid value {err.get('input')!r} for {parameter!r}: " + err[
            "msg"
        ].removeprefix("Value error, ")
        expected = err["msg"].removeprefix("Value error, ")
    return problem(400, "Bad Request", detail, parameter=parameter, expected=expected)


def wants_csv(request: web.Request, query: BaseModel | None) -> bool:
    fmt = getattr(query, "format", None)
    if fmt:
        return bool(fmt == "csv")
    return "text/csv" in request.headers.get("Accept", "")


class JsonFields(Protocol):
    """An item that gives its JSON object's fields itself, some as ``orjson.Fragment`` of
    stored JSON, such that ``orjson.dumps(fields, option=OPT_UTC_Z)`` is the model's JSON."""

    def json_fields(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class RawPage:
    """A :class:`Page` of stored items, sent without a model round trip: the stored JSON
    goes into the response as it is. ``to_model`` makes an item's model (for CSV)."""

    raw: Sequence[JsonFields]
    next_cursor: str | None
    to_model: Callable[[Any], BaseModel]

    @property
    def items(self) -> list[BaseModel]:
        return [self.to_model(item) for item in self.raw]

    def json_body(self) -> bytes:
        return orjson.dumps(
            {"items": [item.json_fields() for item in self.raw], "next_cursor": self.next_cursor},
            option=orjson.OPT_UTC_Z,
        )


@dataclass(frozen=True)
class RawItem:
    """One stored item sent as :class:`RawPage` sends its items."""

    raw: JsonFields

    def json_body(self) -> bytes:
        return orjson.dumps(self.raw.json_fields(), option=orjson.OPT_UTC_Z)


@dataclass(frozen=True)
class RawJson:
    """A response body the store wrote itself, already in the declared response's JSON."""

    body: bytes

    def json_body(self) -> bytes:
        return self.body


def json_bytes(model: Any) -> bytes:
    if isinstance(model, RawPage | RawItem | RawJson):
        return model.json_body()
    if isinstance(model, BaseModel):
        # Straight to JSON bytes in pydantic-core: about twice as fast as model_dump + orjson
        # on large pages, with the same output.
        return model.__pydantic_serializer__.to_json(model, by_alias=True)
    return orjson.dumps(model)


def to_csv(items: list[BaseModel]) -> str:
    """Flat CSV: scalar fields as they are, nested values as compact JSON."""
    buffer = io.StringIO()
    rows = [item.model_dump(mode="json", by_alias=True) for item in items]
    columns: list[str] = []
    for row in rows:
        columns.extend(c for c in row if c not in columns)
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {
                k: (orjson.dumps(v).decode() if isinstance(v, dict | list) else v)
                for k, v in row.items()
            }
        )
    return buffer.getvalue()


# -- time parameters ------------------------------------------------------------------------


def parse_time(value: str, *, end: bool = False) -> datetime:
    """ISO 8601 in UTC. A date alone means that whole day: its start, or with ``end`` its
    last instant (end dates are inclusive). A time without zone is UTC; ``Z`` is accepted."""
    text = value.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            moment = datetime.combine(day, time.min, tzinfo=UTC)
            return moment + timedelta(days=1) - timedelta(microseconds=1) if end else moment
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "+"))
    except ValueError:
        raise ValueError(
            "expected an ISO 8601 date (2026-11-01) or time (2026-11-01T12:00:00Z)"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
