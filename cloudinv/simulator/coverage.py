"""Which resource types the simulated AWS (moto) cannot serve, known before any call.

moto answers an operation it does not implement with an HTTP 500 and an HTML page, the
answer it gives when it fails for any other reason: the SDK cannot tell the two apart and
retries, and the scope fails after its retries. So a command pointed at a running demo works
out beforehand, from moto itself (installed beside the demo), which types need an operation
moto lacks (no backend for the service, no handler for the action, or a handler that only
raises ``NotImplementedError``), and skips them: counted, one log line, listed in the scan
summary. Real AWS is never asked about this.

moto is imported inside :func:`_handlers`: it is an optional extra (the demo's), and this
module is imported by the command line whether or not it is installed.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from functools import cache
from typing import Any

import botocore.session
from botocore import xform_name

from cloudinv.catalog.spec import ResourceSpec

__all__ = ["implements", "unserved_types"]

REGION = "us-east-1"

_URL_DISPATCHED = frozenset({"s3"})
"""botocore services whose moto responses dispatch by URL and method, not by action name:
their actions cannot be looked up by name (and the ones cloudinv lists are implemented)."""


@cache
def _botocore() -> Any:
    return botocore.session.get_session()


@cache
def _handlers(service: str) -> dict[str, object]:
    """The action handlers of the moto backends serving a botocore service: the backend
    named like the service and those whose URL patterns (what moto's server routes
    requests with) match the service's endpoint; empty when none does."""
    from moto import backends
    from moto.backend_index import backend_url_patterns
    from moto.core.responses import BaseResponse

    prefix = _botocore().get_service_model(service).endpoint_prefix
    host = f"https://{prefix}.{REGION}.amazonaws.com"
    safe = service.replace("-", "")
    named = backends.ALT_SERVICE_NAMES.get(safe, safe)
    modules = [named] + [b for b, pattern in backend_url_patterns if pattern.match(host)]
    handlers: dict[str, object] = {}
    for backend in dict.fromkeys(modules):
        try:
            module = importlib.import_module(f"moto.{backend}.responses")
        except ImportError:
            continue
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, BaseResponse):
                handlers.update((name, getattr(value, name)) for name in dir(value))
    return handlers


def _stub(handler: object) -> bool:
    """A handler that only says it is not implemented (a short body raising it)."""
    code = getattr(handler, "__code__", None)
    return code is not None and "NotImplementedError" in code.co_names and len(code.co_names) <= 2


def implements(service: str, operation: str) -> bool:
    """True if moto has a working handler for ``operation`` of ``service``."""
    handler = _handlers(service).get(xform_name(operation))
    return callable(handler) and not _stub(handler)


def _why(spec: ResourceSpec) -> str | None:
    if spec.service in _URL_DISPATCHED:
        return None
    if not _handlers(spec.service):
        return f"the simulated AWS has no {spec.service} service"
    for operation in (spec.list_operation, *(d.operation for d in spec.details)):
        if not implements(spec.service, operation):
            return f"the simulated AWS does not implement {spec.service} {operation}"
    return None


def unserved_types(specs: Iterable[ResourceSpec]) -> dict[str, str]:
    """Of ``specs``, the types the simulated AWS cannot serve, each with why."""
    found: dict[str, str] = {}
    for spec in specs:
        why = _why(spec)
        if why is not None:
            found[spec.cfn_type] = why
    return found
