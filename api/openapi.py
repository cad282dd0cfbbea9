"""``/openapi.json`` (OpenAPI 3.1) built from the declared endpoints and their pydantic models,
and ``/docs``, a readable page of it. Never hand-maintained."""

from __future__ import annotations

import html
import re
from typing import Any

from pydantic import BaseModel

from cloudinv import __version__
from cloudinv.api.endpoints import ENDPOINTS, Endpoint
from cloudinv.api.problems import Problem

REF = "#/components/schemas/{model}"
_PATH_PARAM = re.compile(r"{(\w+)(?::[^{}]*(?:{[^{}]*}[^{}]*)*)?}")
"""A path template parameter, with or without an aiohttp regex (``{key:.+}``)."""


def openapi_path(path: str) -> str:
    """The OpenAPI form of an aiohttp path: ``/r/{key:.+}`` -> ``/r/{key}``."""
    return _PATH_PARAM.sub(r"{\1}", path)


def _schema(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=REF, mode="serialization")
    for name, definition in schema.pop("$defs", {}).items():
        components[name] = definition
    components[model.__name__] = schema
    return {"$ref": REF.format(model=model.__name__)}


def _parameters(ep: Endpoint) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    for name in _PATH_PARAM.findall(ep.path):
        params.append(
            {
                "name": name,
                "in": "path",
                "required": True,
                "description": ep.path_params.get(name, ""),
                "schema": {"type": "string"},
            }
        )
    if ep.query is None:
        return params
    schema = ep.query.model_json_schema(mode="validation")
    required = set(schema.get("required", []))
    for name, prop in schema.get("properties", {}).items():
        if name == "params":
            params.append(
                {
                    "name": "param",
                    "in": "query",
                    "style": "deepObject",
                    "explode": True,
                    "description": "param[<dotted.path>]=<value> (or param.<dotted.path>="
                    "<value>): equality filter on the event's request parameters",
                    "schema": {"type": "object", "additionalProperties": {"type": "string"}},
                }
            )
            continue
        description = prop.pop("description", None)
        prop.pop("title", None)
        entry: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": name in required,
            "schema": prop,
        }
        if description:
            entry["description"] = description
        params.append(entry)
    return params


def build_openapi() -> dict[str, Any]:
    components: dict[str, Any] = {}
    problem_ref = _schema(Problem, components)
    paths: dict[str, Any] = {}
    for ep in ENDPOINTS:
        responses: dict[str, Any] = {}
        if ep.response is not None:
            content: dict[str, Any] = {
                "application/json": {"schema": _schema(ep.response, components)}
            }
            if ep.csv_items or ep.csv:
                content["text/csv"] = {"schema": {"type": "string"}}
            responses["200"] = {"description": "OK", "content": content}
        elif ep.raw:
            responses["200"] = {
                "description": "OK",
                "content": {"text/event-stream": {"schema": {"type": "string"}}}
                if "stream" in ep.path
                else {"text/html": {"schema": {"type": "string"}}},
            }
        problem_content = {"application/problem+json": {"schema": problem_ref}}
        responses["400"] = {"description": "Bad parameter", "content": problem_content}
        if not ep.open:
            responses["401"] = {
                "description": "Missing or invalid token",
                "content": problem_content,
            }
        if "{" in ep.path:
            responses["404"] = {"description": "Not found", "content": problem_content}
        if not ep.open:
            responses["503"] = {
                "description": "A store or the AWS access the endpoint needs is not available",
                "content": problem_content,
            }
        operation: dict[str, Any] = {
            "summary": ep.summary,
            "operationId": ep.handler.__name__,
            "tags": ep.tags,
            "parameters": _parameters(ep),
            "responses": responses,
        }
        if not ep.open:
            operation["security"] = [{"bearer": []}]
        paths.setdefault(openapi_path(ep.path), {})[ep.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "cloudinv API",
            "version": __version__,
            "description": "Inventory at any time, diffs, changes, CloudTrail activity and the "
            "live change feed of an AWS estate.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def render_docs(spec: dict[str, Any]) -> str:
    """A self-contained HTML page (no CDN): each operation, its parameters and responses."""
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        "<meta name=viewport content='width=device-width,initial-scale=1'>",
        '<title>cloudinv API</title><link rel="icon" href="/ui/favicon.svg">',
        "<style>body{font:15px/1.5 system-ui,sans-serif;max-width:"
        "60rem;margin:2rem auto;padding:0 1rem;color:#1b1f24}code,pre{font:13px ui-monospace,"
        "monospace}h2{margin-top:2rem;border-top:1px solid #ddd;padding-top:1rem}.m{display:"
        "inline-block;min-width:3.5rem;font-weight:700;color:#0b5}table{border-collapse:"
        "collapse;width:100%}td,th{border-bottom:1px solid #eee;text-align:left;padding:.25rem"
        " .5rem;vertical-align:top}</style></head><body>",
        f"<h1>cloudinv API <small>{html.escape(spec['info']['version'])}</small></h1>",
        f"<p>{html.escape(spec['info']['description'])} Machine-readable: "
        "<a href='/openapi.json'>/openapi.json</a>. Send <code>Authorization: Bearer "
        "&lt;token&gt;</code>.</p>",
    ]
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            parts.append(
                f"<h2><span class=m>{method.upper()}</span> <code>{html.escape(path)}</code></h2>"
                f"<p>{html.escape(op['summary'])}</p>"
            )
            if op["parameters"]:
                parts.append("<table><tr><th>parameter</th><th>in</th><th>about</th></tr>")
                for p in op["parameters"]:
                    parts.append(
                        f"<tr><td><code>{html.escape(p['name'])}</code></td><td>{p['in']}</td>"
                        f"<td>{html.escape(p.get('description', ''))}</td></tr>"
                    )
                parts.append("</table>")
            codes = ", ".join(op["responses"])
            parts.append(f"<p>responses: {codes}</p>")
    parts.append("</body></html>")
    return "".join(parts)
