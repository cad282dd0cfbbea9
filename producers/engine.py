"""The scan engine: every declared type, in every account and region, streamed.

``scan(aws_settings, ...)`` discovers the accounts and yields :class:`ResourceSnapshot` and
:class:`ScanManifest` objects as they are produced; ``scan_types(...)`` does the same for an
explicit list of accounts and specs (a targeted re-scan, a benchmark, a report).

How the work is bounded, so memory stays flat however many accounts there are:

- scopes (account, region, type) are planned lazily, account by account, into a small queue
  that ``max_concurrency`` workers drain;
- each API request holds a slot of a semaphore per (account, region, service) and one of a
  global semaphore, so no single API is hammered and the process never has more than
  ``max_concurrency`` requests in flight; botocore's standard retry mode backs off on
  throttling under those bounds;
- results go through a bounded queue: a slow consumer slows the scan, nothing piles up;
- the clients of one (account, region) are closed as soon as its last scope ends, and an
  account's session (shared by its client groups) is dropped with its last group.

What a scan spends its CPU on, once the waiting is concurrent, is botocore's per-client and
per-call work; the engine keeps the per-client part small: one session per account (not per
region), service models and client classes shared by all clients (``AwsAccess.models``),
and one HTTP connection pool for the whole run (:class:`SharedConnections`), so the clients
of one regional endpoint reuse each other's keep-alive connections instead of each opening
and closing its own.

Every planned scope ends with exactly one manifest. Global types (IAM, S3, Route 53,
CloudFront) are scanned once per account and recorded in region ``global``.

Failing fast. An account's credentials are had before its first scope, a few accounts ahead
of the planner (:data:`CREDENTIALS_AHEAD`), one AssumeRole per account shared by all its
scopes; when the role cannot be assumed (denied, STS unreachable) every scope of the account
fails at once with that error and one warning line, and no client is made for it. A scope
that fails for want of a connection (the endpoint refuses or never answers, after botocore's
standard retries) marks its endpoint dead for the rest of the run: the scopes still to come
on it fail at once with the same error (one warning line per endpoint), instead of each
waiting out its own retries.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack, aclosing
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiobotocore.session import AioSession

from cloudinv.catalog.registry import Registry, default_registry
from cloudinv.catalog.spec import ResourceSpec
from cloudinv.core.models import GLOBAL_REGION, ResourceSnapshot, ScanError, ScanManifest, utcnow
from cloudinv.core.settings import AwsSettings
from cloudinv.producers.collect import Scope, ScopeCollector, to_scan_error
from cloudinv.producers.credentials import (
    AccountTarget,
    AwsAccess,
    CredentialsUnavailable,
    SharedConnections,
)

log = logging.getLogger(__name__)

ScanItem = ResourceSnapshot | ScanManifest

UNKNOWN_REGIONS = "*"
"""Region of the failed manifests emitted when an account's regions could not be listed."""

CREDENTIALS_AHEAD = 8
"""Accounts whose credentials are being had at once, ahead of the planner."""

CONNECTION_ERROR_CODES = frozenset({"EndpointConnectionError", "ConnectTimeoutError"})
"""Errors that say the endpoint cannot be reached at all (not that one call failed)."""


def new_scan_id() -> str:
    return f"{utcnow():%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, kw_only=True)
class ScanOptions:
    scan_id: str = field(default_factory=new_scan_id)
    max_concurrency: int = 32
    """Scopes collected at once, and API requests in flight across the whole scan."""
    per_service_concurrency: int = 4
    """API requests in flight per (account, region, service)."""
    buffer_size: int = 256
    """Results waiting for the consumer before the scan pauses."""
    on_scopes_planned: Callable[[int], None] | None = None
    """Called with the number of scopes just planned (for a progress bar's total)."""
    unserved: Mapping[str, str] = field(default_factory=dict)
    """Resource types the endpoint is known not to serve (the demo's simulated AWS, see
    :mod:`cloudinv.simulator.coverage`), with why: not scanned, one log line for all."""


def unserved_of(specs: Iterable[ResourceSpec], options: ScanOptions) -> dict[str, str]:
    """Of ``specs``, the types ``options`` says the endpoint cannot serve, with why."""
    return {
        s.cfn_type: options.unserved[s.cfn_type] for s in specs if s.cfn_type in options.unserved
    }


def resolve_types(registry: Registry, types: Iterable[str] | None) -> list[ResourceSpec]:
    """Specs for the named CFN types (all when None); UnknownResourceType names close ones."""
    if not types:
        return registry.all()
    specs: dict[str, ResourceSpec] = {}
    for name in types:
        spec = registry.get(name)
        specs[spec.cfn_type] = spec
    return list(specs.values())


def select_types(
    registry: Registry, aws: AwsSettings, types: Iterable[str] | None = None
) -> list[ResourceSpec]:
    """The specs a scan covers: ``types`` when named, else the settings' selection.

    ``aws.types`` picks all registered types or only the curated ones; ``aws.include_types``
    adds types to that set and ``aws.exclude_types`` removes them (also from ``types``). A
    type's parent is scanned through the child's own list calls, so excluding a parent
    does not stop its children. Unknown names raise UnknownResourceType.
    """
    excluded = {registry.get(name).cfn_type for name in aws.exclude_types}
    if types:
        chosen = resolve_types(registry, types)
    else:
        base = registry.all() if aws.types == "all" else [s for s in registry if not s.derived]
        extra = [registry.get(name) for name in aws.include_types]
        chosen = base + [s for s in extra if s not in base]
    return [spec for spec in chosen if spec.cfn_type not in excluded]


async def scan(
    aws: AwsSettings,
    *,
    types: Iterable[str] | None = None,
    accounts: Iterable[str] | None = None,
    options: ScanOptions | None = None,
    registry: Registry | None = None,
    access: AwsAccess | None = None,
) -> AsyncGenerator[ScanItem, None]:
    """Scan what the settings name; ``types`` and ``accounts`` narrow it down.

    Raises :class:`~cloudinv.producers.credentials.AccountDiscoveryError` before yielding anything
    if the accounts cannot be determined; after that, AWS errors only fail their own scopes.
    """
    registry = registry or default_registry()
    specs = select_types(registry, aws, types)
    access = access or AwsAccess.from_settings(aws)
    targets = await access.discover_accounts(aws, only=accounts)
    options = options or ScanOptions(max_concurrency=aws.max_concurrency)
    items = scan_types(access, targets, aws.regions, specs, options=options, registry=registry)
    async with aclosing(items):
        async for item in items:
            yield item


async def scan_types(
    access: AwsAccess,
    targets: Sequence[AccountTarget],
    regions: list[str] | str,
    specs: Sequence[ResourceSpec],
    *,
    options: ScanOptions | None = None,
    registry: Registry | None = None,
) -> AsyncGenerator[ScanItem, None]:
    """Scan ``specs`` in ``targets`` x ``regions`` (a list, or ``"all"`` enabled regions).

    Types the options say the endpoint cannot serve are skipped, with one warning line.
    """
    options = options or ScanOptions()
    skipped = unserved_of(specs, options)
    if skipped:
        log.warning(
            "skipping %d resource types the endpoint cannot serve (%s)",
            len(skipped),
            "; ".join(f"{t}: {why}" for t, why in sorted(skipped.items())),
        )
    run = _ScanRun(
        access=access,
        targets=targets,
        regions=regions,
        specs=[s for s in specs if s.cfn_type not in skipped],
        options=options,
        registry=registry or default_registry(),
    )
    # aclosing: a consumer that stops early must stop the workers and close the clients now,
    # not whenever the abandoned generator is garbage collected.
    async with aclosing(run.items()) as items:
        async for item in items:
            yield item


class _CallLimit:
    """Held around one API request: a slot of the service's and of the global semaphore."""

    __slots__ = ("_global", "_service")

    def __init__(self, service: asyncio.Semaphore, global_: asyncio.Semaphore) -> None:
        self._service = service
        self._global = global_

    async def __aenter__(self) -> None:
        await self._service.acquire()
        try:
            await self._global.acquire()
        except BaseException:
            self._service.release()
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._global.release()
        self._service.release()


class _ClientGroup:
    """The clients of one (account, client region), closed when its last scope ends."""

    def __init__(
        self,
        run: _ScanRun,
        target: AccountTarget,
        client_region: str,
        scopes: int,
    ) -> None:
        self.run = run
        self.access = run.access
        self.target = target
        self.client_region = client_region
        self._session = run.sessions.acquire(target)
        self._clients: dict[str, Any] = {}
        self._service_limits: dict[str, asyncio.Semaphore] = {}
        self._stack = AsyncExitStack()
        self._lock = asyncio.Lock()
        self._remaining = scopes
        self._closed = False

    async def client(self, service: str) -> Any:
        async with self._lock:
            client = self._clients.get(service)
            if client is None:
                await self.access.warm_up(service)
                context = self.access.client(
                    self._session, service, self.client_region, self.run.client_config
                )
                client = await self._stack.enter_async_context(context)
                self._clients[service] = client
            return client

    def service_limit(self, service: str, size: int) -> asyncio.Semaphore:
        limit = self._service_limits.get(service)
        if limit is None:
            limit = self._service_limits[service] = asyncio.Semaphore(size)
        return limit

    async def scope_done(self) -> bool:
        """Count one scope as ended; True (and the clients closed) when it was the last."""
        self._remaining -= 1
        if self._remaining > 0:
            return False
        await self.close()
        return True

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._clients.clear()
        self.run.sessions.release(self.target)
        try:
            await self._stack.aclose()
        except Exception:
            # A connection that fails to close loses nothing already collected.
            log.warning(
                "closing clients of %s in %s failed",
                self.target.account_id,
                self.client_region,
                exc_info=True,
            )


class _AccountSessions:
    """One aiobotocore session per account while any of its client groups is open.

    A session is costly to build (its event hooks and configuration chain) and carries the
    account's credentials, so the groups of one account share it; it is dropped when the
    last one closes, so memory stays flat however many accounts a scan covers.
    """

    def __init__(self, access: AwsAccess) -> None:
        self._access = access
        self._sessions: dict[str, tuple[AioSession, int]] = {}

    def acquire(self, target: AccountTarget) -> AioSession:
        session, users = self._sessions.get(target.account_id, (None, 0))
        if session is None:
            session = self._access.session(target)
        self._sessions[target.account_id] = (session, users + 1)
        return session

    def release(self, target: AccountTarget) -> None:
        session, users = self._sessions[target.account_id]
        if users <= 1:
            del self._sessions[target.account_id]
        else:
            self._sessions[target.account_id] = (session, users - 1)


@dataclass(frozen=True)
class _ScopeWork:
    scope: Scope
    group: _ClientGroup


class _Done:
    """Marks the end of the result stream."""


class _ScanRun:
    """One run of the engine: a planner, ``max_concurrency`` workers, one result queue."""

    def __init__(
        self,
        *,
        access: AwsAccess,
        targets: Sequence[AccountTarget],
        regions: list[str] | str,
        specs: Sequence[ResourceSpec],
        options: ScanOptions,
        registry: Registry,
    ) -> None:
        self.access = access
        self.targets = targets
        self.regions = regions
        self.specs = list(specs)
        self.options = options
        self.registry = registry
        self._results: asyncio.Queue[ScanItem | _Done | BaseException] = asyncio.Queue(
            options.buffer_size
        )
        self._work: asyncio.Queue[_ScopeWork | None] = asyncio.Queue(options.max_concurrency)
        self._requests = asyncio.Semaphore(options.max_concurrency)
        self._groups: set[_ClientGroup] = set()
        self._offered_regions: dict[tuple[str, str], frozenset[str]] = {}
        self._credentials: dict[str, asyncio.Task[None]] = {}
        self._dead_endpoints: dict[str, ScanError] = {}
        self.sessions = _AccountSessions(access)
        # Every client of the run sends through one pool: the clients of one regional
        # endpoint (each account's EC2 in eu-west-1) reuse each other's connections.
        self.connections = SharedConnections(limit=max(10, options.max_concurrency))
        self.client_config = access.pooled_config(self.connections)

    async def items(self) -> AsyncGenerator[ScanItem, None]:
        workers = [asyncio.create_task(self._worker()) for _ in range(self.options.max_concurrency)]
        conductor = asyncio.create_task(self._conduct(workers))
        try:
            while True:
                item = await self._results.get()
                if isinstance(item, _Done):
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            pending = [conductor, *workers, *self._credentials.values()]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            for group in list(self._groups):
                await group.close()
            await self.connections.close()

    async def _conduct(self, workers: list[asyncio.Task[None]]) -> None:
        """Plan every scope, then wait for the workers; the consumer always hears the end."""
        try:
            await self._plan()
            for _ in workers:
                await self._work.put(None)
            await asyncio.gather(*workers)
        except Exception as exc:  # a bug, not an AWS error: those end their own scopes
            await self._results.put(exc)
            return
        await self._results.put(_Done())

    # -- planning ------------------------------------------------------------------------

    async def _plan(self) -> None:
        global_specs = [s for s in self.specs if s.global_service]
        regional_specs = [s for s in self.specs if not s.global_service]
        for n, target in enumerate(self.targets):
            for ahead in self.targets[n : n + CREDENTIALS_AHEAD]:
                if ahead.account_id not in self._credentials:
                    self._credentials[ahead.account_id] = asyncio.create_task(
                        self.access.ensure_credentials(ahead)
                    )
            try:
                await self._credentials.pop(target.account_id)
            except CredentialsUnavailable as exc:
                await self._fail_account(target, global_specs, regional_specs, exc)
                continue
            # Hold the account's session while planning it, so that its groups share one
            # even when an early group ends before the next is planned.
            self.sessions.acquire(target)
            try:
                await self._plan_account(target, global_specs, regional_specs)
            finally:
                self.sessions.release(target)

    async def _fail_account(
        self,
        target: AccountTarget,
        global_specs: list[ResourceSpec],
        regional_specs: list[ResourceSpec],
        failure: CredentialsUnavailable,
    ) -> None:
        """Every scope of an account whose credentials could not be had: failed, at once."""
        error = to_scan_error(failure.cause, "AssumeRole")
        scopes = len(global_specs)
        if global_specs:
            await self._fail_unplanned(target, global_specs, error, GLOBAL_REGION)
        if regional_specs:
            regions = self.regions if isinstance(self.regions, list) else [UNKNOWN_REGIONS]
            for region in regions:
                await self._fail_unplanned(target, regional_specs, error, region)
            scopes += len(regional_specs) * len(regions)
        log.warning(
            "account %s: %s failed (%s): its %d scopes were not scanned",
            target.account_id,
            f"AssumeRole {failure.role_arn}",
            " ".join(f"{error.code}: {error.message}".split())[:300],
            scopes,
        )

    async def _plan_account(
        self,
        target: AccountTarget,
        global_specs: list[ResourceSpec],
        regional_specs: list[ResourceSpec],
    ) -> None:
        if global_specs:
            await self._plan_group(
                target, GLOBAL_REGION, target.global_region, global_specs, global_type=True
            )
        if not regional_specs:
            return
        try:
            regions = await self.access.regions_for(target, self.regions)
        except Exception as exc:
            error = to_scan_error(exc, None)
            await self._fail_unplanned(target, regional_specs, error, UNKNOWN_REGIONS)
            return
        for region in regions:
            here = [s for s in regional_specs if await self._offered(target, s, region)]
            if here:
                await self._plan_group(target, region, region, here, global_type=False)

    async def _plan_group(
        self,
        target: AccountTarget,
        region: str,
        client_region: str,
        specs: list[ResourceSpec],
        *,
        global_type: bool,
    ) -> None:
        group = _ClientGroup(self, target, client_region, len(specs))
        self._groups.add(group)
        if self.options.on_scopes_planned is not None:
            self.options.on_scopes_planned(len(specs))
        for spec in specs:
            scope = Scope(
                account_id=target.account_id,
                partition=target.partition,
                region=region,
                client_region=client_region,
                spec=spec,
                global_type=global_type,
            )
            await self._work.put(_ScopeWork(scope, group))

    async def _offered(self, target: AccountTarget, spec: ResourceSpec, region: str) -> bool:
        """False only when botocore's endpoint data says the service is not in ``region``.

        With a custom endpoint (moto, LocalStack) every service is taken to be everywhere.
        """
        if self.access.endpoint_url:
            return True
        regions = await self._service_regions(target.partition, spec.service)
        return not regions or region in regions

    async def _service_regions(self, partition: str, service: str) -> frozenset[str]:
        """The regions botocore's endpoint data lists for ``service`` (empty if unknown)."""
        key = (partition, service)
        regions = self._offered_regions.get(key)
        if regions is None:
            session = self.access.base_session
            try:
                # Read the service model in a thread; the lookup then hits the loader's cache.
                await asyncio.to_thread(session.warm_up_loader_caches, service)
                found = await session.get_available_regions(service, partition)
            except Exception:
                found = []
            regions = self._offered_regions[key] = frozenset(found)
        return regions

    async def _fail_unplanned(
        self, target: AccountTarget, specs: list[ResourceSpec], error: ScanError, region: str
    ) -> None:
        if self.options.on_scopes_planned is not None:
            self.options.on_scopes_planned(len(specs))
        now = utcnow()
        for spec in specs:
            await self._results.put(self._failed(target.account_id, region, spec, error, now))

    def _failed(
        self, account_id: str, region: str, spec: ResourceSpec, error: ScanError, started: Any
    ) -> ScanManifest:
        return ScanManifest(
            scan_id=self.options.scan_id,
            account_id=account_id,
            region=region,
            resource_type=spec.cfn_type,
            status="failed",
            started_at=started,
            finished_at=utcnow(),
            errors=[error],
        )

    # -- collecting ----------------------------------------------------------------------

    async def _worker(self) -> None:
        while (work := await self._work.get()) is not None:
            try:
                for manifest in await self._collect(work):
                    await self._results.put(manifest)
            finally:
                if await work.group.scope_done():
                    self._groups.discard(work.group)

    async def _collect(self, work: _ScopeWork) -> list[ScanManifest]:
        """The scope's manifest; one per region for types recorded in their own region."""
        scope, group = work.scope, work.group
        started = utcnow()
        try:
            client = await group.client(scope.spec.service)
        except Exception as exc:
            error = to_scan_error(exc, None)
            return [self._failed(scope.account_id, scope.region, scope.spec, error, started)]
        endpoint = str(client.meta.endpoint_url)
        dead = self._dead_endpoints.get(endpoint)
        if dead is not None:
            return [self._failed(scope.account_id, scope.region, scope.spec, dead, started)]
        service_limit = group.service_limit(
            scope.spec.service, self.options.per_service_concurrency
        )
        collector = ScopeCollector(
            scope=scope,
            client=client,
            limit=lambda: _CallLimit(service_limit, self._requests),
            registry=self.registry,
            scan_id=self.options.scan_id,
            emit=self._results.put,
        )
        manifest = await collector.run()
        if manifest.status == "failed" and manifest.errors:
            error = manifest.errors[0]
            if error.code in CONNECTION_ERROR_CODES and endpoint not in self._dead_endpoints:
                self._dead_endpoints[endpoint] = error
                log.warning(
                    "endpoint %s cannot be reached (%s): the scopes still to scan there fail "
                    "at once",
                    endpoint,
                    error.code,
                )
        if scope.spec.region_field is None:
            return [manifest]
        regions = await self._recorded_regions(scope)
        return collector.by_region(manifest, regions)

    async def _recorded_regions(self, scope: Scope) -> list[str]:
        """Where a type recorded in its resources' own regions can have resources: every
        region of its service in the partition (the scanned ones with a custom endpoint)."""
        if not self.access.endpoint_url:
            found = await self._service_regions(scope.partition, scope.spec.service)
            if found:
                return sorted(found)
        return self.regions if isinstance(self.regions, list) else []
