"""Collect one scope: every resource of one type in one account and region.

:class:`ScopeCollector` reads a :class:`ResourceSpec`: it pages through the list call (once
per parent item for child types, once per parameter variant), runs the detail calls of each
item concurrently, emits one :class:`ResourceSnapshot` per resource as soon as it is built, and
returns the scope's :class:`ScanManifest`.

How errors end a scope:

- the list call fails with one of the spec's ``ignore_error_codes`` ("not offered in this
  region"): ``complete`` with no keys;
- the list call fails otherwise (AccessDenied, throttling that outlived botocore's retries,
  an expired token, a network error): ``failed``; snapshots already emitted stay valid
  observations, but a failed manifest never lets anyone infer a deletion;
- a detail call fails with a code not in its ``absent_codes``, or an item lacks its id or
  ARN: that resource's snapshot is not emitted (a configuration missing a part would look like
  a change) and the scope is ``partial``.
"""

from __future__ import annotations

import asyncio
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
)
from contextlib import AbstractAsyncContextManager, aclosing
from dataclasses import dataclass
from typing import Any

from botocore import xform_name
from botocore.exceptions import ClientError
from pydantic import ValidationError

from cloudinv.catalog.registry import Registry
from cloudinv.catalog.spec import DetailCall, ResourceSpec, search
from cloudinv.catalog.transform import (
    MalformedResource,
    ResourceIdentity,
    resource_identity,
    resource_region,
)
from cloudinv.core.models import (
    ResourceSnapshot,
    ScanError,
    ScanManifest,
    ScanStatus,
    utcnow,
)

CallLimit = Callable[[], AbstractAsyncContextManager[Any]]
"""A fresh context manager held around each API request (concurrency bounds)."""

Emit = Callable[[ResourceSnapshot], Awaitable[None]]

ACCESS_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "UnauthorizedAccess",
        "AuthorizationError",
        "AuthFailure",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
    }
)
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
        "ProvisionedThroughputExceededException",
    }
)
EXPIRED_CREDENTIAL_CODES = frozenset(
    {"ExpiredToken", "ExpiredTokenException", "RequestExpired", "TokenRefreshRequired"}
)

DETAIL_BATCH = 32
"""Items whose detail calls run at once; bounds tasks, the call limits bound requests."""


@dataclass(frozen=True, kw_only=True)
class Scope:
    """One (account, region, type). ``region`` is ``global`` for global types, which are
    called in ``client_region`` (the partition's home of global services)."""

    account_id: str
    partition: str
    region: str
    client_region: str
    spec: ResourceSpec
    global_type: bool = False

    @property
    def name(self) -> str:
        return f"{self.account_id}/{self.region}/{self.spec.cfn_type}"


def error_code(exc: BaseException) -> str:
    """The AWS error code of ``exc``, or its class name (EndpointConnectionError, ...)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code") or type(exc).__name__)
    return type(exc).__name__


def to_scan_error(exc: BaseException, operation: str | None) -> ScanError:
    # str(ClientError) names the operation that failed, which may differ from ``operation``
    # (AssumeRole, when an account's role cannot be assumed).
    message = str(exc) or type(exc).__name__
    return ScanError(code=error_code(exc), message=message[:500], operation=operation)


def strip_metadata(response: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in response.items() if k != "ResponseMetadata"}


class _ListFailed(Exception):
    """The list call of a scope failed; carries the operation that failed."""

    def __init__(self, cause: BaseException, operation: str) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.operation = operation


class ScopeCollector:
    """Collects one scope with one client; see the module docstring for error handling."""

    def __init__(
        self,
        *,
        scope: Scope,
        client: Any,
        limit: CallLimit,
        registry: Registry,
        scan_id: str,
        emit: Emit,
        max_errors: int = 10,
    ) -> None:
        self.scope = scope
        self.spec = scope.spec
        self.client = client
        self.limit = limit
        self.registry = registry
        self.scan_id = scan_id
        self.emit = emit
        self.max_errors = max_errors
        self._keys: dict[str, None] = {}
        self._key_regions: dict[str, str] = {}
        self._errors: list[ScanError] = []
        self._partial = False

    async def run(self) -> ScanManifest:
        """Collect the scope; always returns its manifest (never raises for AWS errors)."""
        started = utcnow()
        status: ScanStatus = "complete"
        try:
            async with aclosing(self._list_items()) as pages:
                async for items, list_params in pages:
                    await self._collect_items(items, list_params)
            if self._partial:
                status = "partial"
        except _ListFailed as failure:
            if error_code(failure.cause) in self.spec.ignore_error_codes:
                status = "partial" if self._partial else "complete"
            else:
                status = "failed"
                self._record(to_scan_error(failure.cause, failure.operation))
        except Exception as exc:  # a bug or an unexpected response: this scope only
            status = "failed"
            self._record(to_scan_error(exc, None))
        return self.manifest(status, started)

    def manifest(self, status: ScanStatus, started: Any) -> ScanManifest:
        return ScanManifest(
            scan_id=self.scan_id,
            account_id=self.scope.account_id,
            region=self.scope.region,
            resource_type=self.spec.cfn_type,
            status=status,
            started_at=started,
            finished_at=utcnow(),
            keys=list(self._keys),
            errors=self._errors,
        )

    def by_region(self, manifest: ScanManifest, regions: Iterable[str]) -> list[ScanManifest]:
        """For a type recorded in each resource's own region (``region_field``): one manifest
        per region (``regions``, where the type can be, and every region seen), each listing
        that region's keys, so deletions are found where the resources are recorded."""
        if self.spec.region_field is None:
            return [manifest]
        keys: dict[str, list[str]] = {region: [] for region in regions}
        for key in manifest.keys:
            keys.setdefault(self._key_regions.get(key, self.scope.region), []).append(key)
        return [
            manifest.model_copy(update={"region": region, "keys": region_keys})
            for region, region_keys in sorted(keys.items())
        ]

    def _record(self, error: ScanError) -> None:
        if len(self._errors) < self.max_errors:
            self._errors.append(error)

    # -- listing -------------------------------------------------------------------------

    async def _list_items(
        self,
    ) -> AsyncGenerator[tuple[list[dict[str, Any]], dict[str, Any]], None]:
        """Pages of list items, each with the list parameters that produced it."""
        spec = self.spec
        if spec.parent is None and not spec.list_param_variants:
            async for items in self._list_pages(spec, dict(spec.list_params)):
                yield items, dict(spec.list_params)
            return
        if spec.parent is None:
            for variant in spec.list_param_variants:
                params = {**spec.list_params, **variant}
                try:
                    async for items in self._list_pages(spec, params):
                        yield items, params
                except _ListFailed as failure:
                    if error_code(failure.cause) not in spec.ignore_error_codes:
                        raise
            return
        parent_spec = self.registry.get(spec.parent.cfn_type)
        async for parents in self._list_pages(parent_spec, dict(parent_spec.list_params)):
            for parent in parents:
                params = {
                    **spec.list_params,
                    **{name: search(expr, parent) for name, expr in spec.parent.params.items()},
                }
                try:
                    async for items in self._list_pages(spec, params):
                        yield items, params
                except _ListFailed as failure:
                    if error_code(failure.cause) not in spec.parent.absent_codes:
                        raise

    async def _list_pages(
        self, spec: ResourceSpec, params: dict[str, Any]
    ) -> AsyncIterator[list[dict[str, Any]]]:
        try:
            async for page in self._pages(spec.list_operation, params):
                found = search(spec.result_path, page) or []
                items: list[dict[str, Any]] = []
                for raw in found:
                    item = {spec.item_key: raw} if spec.item_key is not None else raw
                    if not isinstance(item, dict):
                        continue
                    if spec.item_filter is not None and not search(spec.item_filter, item):
                        continue
                    items.append(item)
                yield items
        except _ListFailed:
            raise
        except Exception as exc:
            raise _ListFailed(exc, spec.list_operation) from exc

    async def _pages(self, operation: str, params: dict[str, Any]) -> AsyncIterator[Any]:
        """Every page of ``operation``; the call limit is held per request, not per page."""
        method = xform_name(operation)
        if not self.client.can_paginate(method):
            async with self.limit():
                response = await getattr(self.client, method)(**params)
            yield response
            return
        pages = self.client.get_paginator(method).paginate(**params).__aiter__()
        while True:
            async with self.limit():
                try:
                    page = await pages.__anext__()
                except StopAsyncIteration:
                    return
            yield page

    # -- details and snapshots -----------------------------------------------------------

    async def _collect_items(
        self, items: list[dict[str, Any]], list_params: dict[str, Any]
    ) -> None:
        for start in range(0, len(items), DETAIL_BATCH):
            batch = items[start : start + DETAIL_BATCH]
            configurations = await asyncio.gather(
                *(self._configuration(item, list_params) for item in batch)
            )
            for configuration in configurations:
                if configuration is not None:
                    await self._emit_snapshot(configuration)

    async def _configuration(
        self, item: dict[str, Any], list_params: dict[str, Any]
    ) -> dict[str, Any] | None:
        """The item with every detail merged in, or None if a detail call failed."""
        configuration = dict(item)
        for stage in sorted({d.stage for d in self.spec.details}):
            calls = [d for d in self.spec.details if d.stage == stage]
            seen = dict(configuration)
            results = await asyncio.gather(
                *(self._detail(d, seen, list_params) for d in calls), return_exceptions=True
            )
            for detail, result in zip(calls, results, strict=True):
                if isinstance(result, BaseException):
                    if isinstance(result, asyncio.CancelledError):
                        raise result
                    self._partial = True
                    self._record(to_scan_error(result, detail.operation))
                    # Still list the key, if it can be read: the resource exists.
                    self._remember_key(configuration)
                    return None
                if detail.merge_key is not None:
                    configuration[detail.merge_key] = result
                elif isinstance(result, dict):
                    configuration.update(result)
        return configuration

    async def _detail(
        self, detail: DetailCall, item: dict[str, Any], list_params: dict[str, Any]
    ) -> Any:
        params: dict[str, Any] = dict(detail.static_params)
        params.update({name: list_params[name] for name in detail.inherit_list_params})
        params.update({name: search(expr, item) for name, expr in detail.params.items()})
        method = xform_name(detail.operation)
        try:
            if self.client.can_paginate(method):
                async with self.limit():
                    paginator = self.client.get_paginator(method).paginate(**params)
                    response = await paginator.build_full_result()
            else:
                async with self.limit():
                    response = await getattr(self.client, method)(**params)
        except ClientError as exc:
            if error_code(exc) in detail.absent_codes:
                return None
            raise
        if detail.result_path is None:
            return strip_metadata(response)
        return search(detail.result_path, response)

    def _identity(self, configuration: dict[str, Any]) -> ResourceIdentity:
        """The identity of a resource of this scope (:class:`MalformedResource` if none)."""
        return resource_identity(
            self.spec,
            configuration,
            partition=self.scope.partition,
            region="" if self.scope.global_type else self.scope.region,
            account_id=self.scope.account_id,
        )

    def _remember_key(self, configuration: dict[str, Any]) -> None:
        try:
            identity = self._identity(configuration)
            region = resource_region(self.spec, configuration, self.scope.region)
        except MalformedResource:
            return
        self._keys.setdefault(identity.arn)
        self._key_regions.setdefault(identity.arn, region)

    async def _emit_snapshot(self, configuration: dict[str, Any]) -> None:
        try:
            identity = self._identity(configuration)
            if identity.arn in self._keys:
                return  # the same resource twice (overlapping pages or variants)
            region = resource_region(self.spec, configuration, self.scope.region)
            snapshot = ResourceSnapshot.build(
                account_id=self.scope.account_id,
                region=region,
                resource_type=self.spec.cfn_type,
                resource_id=identity.resource_id,
                arn=identity.arn,
                name=identity.name,
                tags=identity.tags,
                configuration=configuration,
                scan_id=self.scan_id,
            )
        except (MalformedResource, ValidationError) as exc:
            self._partial = True
            self._record(
                ScanError(code="MalformedResource", message=str(exc)[:500], operation=None)
            )
            return
        self._keys[identity.arn] = None
        self._key_regions[identity.arn] = region
        await self.emit(snapshot)
