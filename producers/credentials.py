"""Which accounts and regions to scan, and the aiobotocore clients to scan them with.

Accounts come from one of three places: the local credential chain (the caller's own
account, found with STS GetCallerIdentity), a list of role ARNs (each with an optional
external id), or AWS Organizations (ListAccounts, then a role of the given name in each
account). Assumed-role credentials are cached per role and refreshed by aiobotocore ahead of
their expiry. AssumeRole happens once per account and credential lifetime, before the
account's first scope (:meth:`AwsAccess.ensure_credentials`), whatever the number of scopes
sharing the credentials; a role that cannot be assumed (denied, or STS unreachable) fails that
account's scopes at once with one error, and is asked again only after
:data:`FAILED_CREDENTIALS_RETRY_S`.

Every client uses botocore's ``standard`` retry mode with its default of 3 attempts
(exponential backoff with jitter on throttling and transient errors, at most a few seconds
in all, so a dead endpoint fails fast) and the configured endpoint (``aws.endpoint_url``, else
``AWS_ENDPOINT_URL``). Clients made through :meth:`AwsAccess.client` share their service
models and client classes (:class:`SharedModels`); a scan's clients also share one HTTP
connection pool (:class:`SharedConnections`).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar

import aiobotocore.session
import aiohttp
from aiobotocore.client import AioClientCreator
from aiobotocore.config import AioConfig
from aiobotocore.credentials import AioDeferredRefreshableCredentials
from aiobotocore.httpsession import AIOHTTPSession
from aiobotocore.session import AioSession, get_session

from cloudinv.core.errors import CloudinvError
from cloudinv.core.settings import AccountRole, AwsSettings
from cloudinv.producers.accounts import OuMembers, is_selected, ou_members, select_roles

DEFAULT_MAX_ATTEMPTS = 3
"""botocore's standard retry mode default: the first call and two retries."""
FAILED_CREDENTIALS_RETRY_S = 60.0
"""How long a failed AssumeRole answers for the role before STS is asked again."""
ADVISORY_REFRESH_S = 15 * 60
"""botocore refreshes assumed credentials when less than this remains (advisory)."""
ROLE_SESSION_NAME = "cloudinv"

GLOBAL_SERVICE_REGIONS = {"aws": "us-east-1", "aws-us-gov": "us-gov-west-1", "aws-cn": "cn-north-1"}
"""Where each partition's global services (IAM, Route 53, CloudFront, S3 listing) answer."""

ENABLED_REGION_STATUSES = frozenset({"opt-in-not-required", "opted-in"})


class AccountDiscoveryError(CloudinvError):
    """The accounts to scan could not be determined (no credentials, Organizations denied)."""


class CredentialsUnavailable(Exception):
    """An account's credentials could not be had (AssumeRole denied, STS unreachable).

    ``cause`` is the error STS (or the connection) gave; every scope of the account fails
    with it."""

    def __init__(self, role_arn: str, cause: BaseException) -> None:
        super().__init__(f"cannot assume {role_arn}: {cause}")
        self.role_arn = role_arn
        self.cause = cause


class _AssumedRole:
    """One role's AssumeRole, shared by everything that signs with its credentials.

    :meth:`ensure` (what :meth:`AwsAccess.ensure_credentials` awaits) assumes the role unless
    credentials with more than :data:`ADVISORY_REFRESH_S` left are held; :meth:`fetch` is
    the refresher botocore calls when its copy needs refreshing, and hands over what
    :meth:`ensure` got first, so the first client costs no second call. Concurrent callers
    share one call; a failure answers for :data:`FAILED_CREDENTIALS_RETRY_S` without asking
    STS again.
    """

    def __init__(self, access: AwsAccess, role_arn: str, external_id: str | None) -> None:
        self._access = access
        self.role_arn = role_arn
        self._external_id = external_id
        self._lock = asyncio.Lock()
        self._metadata: dict[str, Any] | None = None
        self._expires: float = 0.0
        self._unclaimed = False
        """Credentials got by :meth:`ensure` that botocore has not taken yet."""
        self._failure: CredentialsUnavailable | None = None
        self._failed_at: float = 0.0
        self.calls = 0
        """AssumeRole calls made so far (for tests and diagnostics)."""

    async def ensure(self) -> None:
        async with self._lock:
            if self._metadata is not None and self._expires - time.time() > ADVISORY_REFRESH_S:
                return
            await self._refresh()
            self._unclaimed = True

    async def fetch(self) -> dict[str, Any]:
        async with self._lock:
            fresh = self._expires - time.time() > ADVISORY_REFRESH_S
            if not (self._unclaimed and fresh and self._metadata is not None):
                await self._refresh()
            self._unclaimed = False
            assert self._metadata is not None
            return self._metadata

    async def _refresh(self) -> None:
        now = time.time()
        if self._failure is not None and now - self._failed_at < FAILED_CREDENTIALS_RETRY_S:
            raise self._failure
        try:
            self._metadata, self._expires = await self._assume()
        except Exception as exc:
            self._failure, self._failed_at = CredentialsUnavailable(self.role_arn, exc), now
            raise self._failure from None
        self._failure = None

    async def _assume(self) -> tuple[dict[str, Any], float]:
        params: dict[str, Any] = {
            "RoleArn": self.role_arn,
            "RoleSessionName": f"{ROLE_SESSION_NAME}-{uuid.uuid4().hex[:8]}",
        }
        if self._external_id:
            params["ExternalId"] = self._external_id
        access = self._access
        self.calls += 1
        async with access.client(access.base_session, "sts", access.home_region) as sts:
            response = await sts.assume_role(**params)
        credentials = response["Credentials"]
        expiration = credentials["Expiration"]
        metadata = {
            "access_key": credentials["AccessKeyId"],
            "secret_key": credentials["SecretAccessKey"],
            "token": credentials["SessionToken"],
            "expiry_time": expiration.isoformat(),
        }
        return metadata, expiration.timestamp()


@dataclass(frozen=True, kw_only=True)
class AccountTarget:
    """One account to scan and the credentials that reach it.

    ``credentials`` is ``None`` for the local credential chain's own account, else the
    account's assumed-role credentials (refreshable, shared by every client of the account).
    """

    account_id: str
    partition: str = "aws"
    role_arn: str | None = None
    credentials: AioDeferredRefreshableCredentials | None = field(
        default=None, repr=False, compare=False
    )

    @property
    def global_region(self) -> str:
        return GLOBAL_SERVICE_REGIONS.get(self.partition, "us-east-1")

    @property
    def label(self) -> str:
        return self.role_arn or f"{self.account_id} (local credentials)"


def client_config(
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    *,
    max_pool: int = 10,
    emulator: bool = False,
    connections: SharedConnections | None = None,
) -> AioConfig:
    """Standard retry mode; service models loaded in a thread, not on the event loop.

    Emulators behind one custom endpoint (moto, LocalStack) need path-style S3 addressing:
    ``bucket.localhost`` does not resolve. With ``connections``, clients send through that
    shared pool, and the caller has warmed the loader for their services (see
    :meth:`AwsAccess.warm_up`), so creating a client does not hop to a thread.
    """
    extra: dict[str, Any] = {}
    if connections is not None:
        extra["http_session_cls"] = connections.http_session_cls
    return AioConfig(
        retries={"mode": "standard", "max_attempts": max_attempts},
        warm_up_loader_caches=connections is None,
        max_pool_connections=max_pool,
        connect_timeout=10,
        read_timeout=60,
        s3={"addressing_style": "path"} if emulator else None,
        **extra,
    )


class _PooledHTTPSession(AIOHTTPSession):  # type: ignore[misc]
    """aiobotocore's HTTP session, sending through a :class:`SharedConnections` pool.

    Closing the client leaves the pool open: the pool belongs to whoever made it.
    """

    pool: ClassVar[SharedConnections]

    async def _get_session(self, proxy_url: str | None) -> aiohttp.ClientSession:
        return await self.pool.session(proxy_url, self)


class SharedConnections:
    """One HTTP connection pool for many aiobotocore clients (a whole scan).

    aiobotocore gives every client its own pool, so a scan that makes a client per (account,
    region, service) opens, and TLS-handshakes, new connections for each of them, and
    closes them with the client. Clients of the same regional endpoint (every account's EC2
    client in eu-west-1) reuse each other's keep-alive connections here instead. The pool
    holds at most ``limit`` connections; call :meth:`close` when the clients are done.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.opened = 0
        """Connections opened so far."""
        self._sessions: dict[str | None, aiohttp.ClientSession] = {}
        self._lock = asyncio.Lock()
        self.http_session_cls: type[AIOHTTPSession] = type(
            "PooledHTTPSession", (_PooledHTTPSession,), {"pool": self}
        )

    async def session(
        self, proxy_url: str | None, template: AIOHTTPSession
    ) -> aiohttp.ClientSession:
        """The pool's aiohttp session for ``proxy_url``; the first client's settings (TLS
        verification, timeouts, ``max_pool_connections`` as the pool's limit: see
        :meth:`AwsAccess.pooled_config`) make it, and every client of one scan shares them."""
        session = self._sessions.get(proxy_url)
        if session is not None:
            return session
        async with self._lock:
            session = self._sessions.get(proxy_url)
            if session is None:
                connector = await template._create_connector(proxy_url)
                tracing = aiohttp.TraceConfig()
                tracing.on_connection_create_end.append(self._count_connection)
                session = aiohttp.ClientSession(
                    connector=connector,
                    timeout=template._timeout,
                    skip_auto_headers={"CONTENT-TYPE"},
                    auto_decompress=False,
                    trace_configs=[tracing],
                )
                self._sessions[proxy_url] = session
            return session

    async def _count_connection(self, *_: Any) -> None:
        self.opened += 1

    async def close(self) -> None:
        sessions = list(self._sessions.values())
        self._sessions.clear()
        for session in sessions:
            await session.close()


class SharedModels:
    """Service models and client classes shared by every client one :class:`AwsAccess` makes.

    botocore builds a new ``ServiceModel`` and a new client class (one method per
    operation: about 700 for EC2) for every client, and each new model starts with cold
    shape caches that every response parse then fills again. A scan makes a client per
    (account, region, service), so that repeated work was a third of its CPU time. The
    models and classes depend only on the service, its API version and the client-class
    hooks of a plain session, which are the same for every session an ``AwsAccess`` creates.
    """

    def __init__(self) -> None:
        self.service_models: dict[tuple[str, str | None], Any] = {}
        self.client_classes: dict[tuple[str, str], type] = {}


_shared_models: ContextVar[SharedModels | None] = ContextVar("cloudinv_shared_models", default=None)


class _SharingClientCreator(AioClientCreator):  # type: ignore[misc]
    """aiobotocore's client creator, reusing a :class:`SharedModels` when one is in context
    (only while :meth:`AwsAccess.client` creates a client); otherwise exactly the original."""

    def _load_service_model(self, service_name: str, api_version: str | None = None) -> Any:
        shared = _shared_models.get()
        if shared is None:
            return super()._load_service_model(service_name, api_version)
        key = (service_name, api_version)
        model = shared.service_models.get(key)
        if model is None:
            model = shared.service_models[key] = super()._load_service_model(
                service_name, api_version
            )
        return model

    async def _create_client_class(self, service_name: str, service_model: Any) -> type:
        shared = _shared_models.get()
        if shared is None:
            return await super()._create_client_class(service_name, service_model)  # type: ignore[no-any-return]
        key = (service_name, service_model.api_version)
        cls = shared.client_classes.get(key)
        if cls is None:
            cls = shared.client_classes[key] = await super()._create_client_class(
                service_name, service_model
            )
        return cls


# aiobotocore's session names its creator class at client creation; the subclass behaves
# as the original unless a SharedModels is in context. Left alone if aiobotocore changes;
# aiobotocore is pinned exactly and tests/test_dependency_canaries.py checks what this relies on.
if getattr(aiobotocore.session, "AioClientCreator", None) is AioClientCreator:
    aiobotocore.session.AioClientCreator = _SharingClientCreator


class _SharedModelsClient:
    """A client context whose creation reuses ``models``."""

    def __init__(self, context: Any, models: SharedModels) -> None:
        self._context = context
        self._models = models

    async def __aenter__(self) -> Any:
        token = _shared_models.set(self._models)
        try:
            return await self._context.__aenter__()
        finally:
            _shared_models.reset(token)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        result: bool | None = await self._context.__aexit__(exc_type, exc, tb)
        return result


def partition_of(arn: str) -> str:
    return arn.split(":")[1]


class AwsAccess:
    """Creates sessions and clients for the accounts of one scan.

    One base session (the local credential chain) assumes roles; each role's credentials are
    cached and refresh themselves. Sessions for an account are cheap and short-lived (one per
    account and region being scanned) and share the base session's data loader, so a service
    model is read from disk once per process and memory stays flat across many accounts.
    """

    def __init__(
        self,
        *,
        endpoint_url: str | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        home_region: str = "us-east-1",
        base_session: AioSession | None = None,
    ) -> None:
        self.endpoint_url = endpoint_url
        self.home_region = home_region
        self.config = client_config(max_attempts, emulator=endpoint_url is not None)
        self.base_session = base_session or get_session()
        self.max_attempts = max_attempts
        self._role_credentials: dict[tuple[str, str | None], AioDeferredRefreshableCredentials] = {}
        self._roles: dict[tuple[str, str | None], _AssumedRole] = {}
        self._warm: set[str] = set()
        self.models = SharedModels()

    @classmethod
    def from_settings(cls, aws: AwsSettings, **kwargs: Any) -> AwsAccess:
        """Endpoint from the settings or AWS_ENDPOINT_URL; attempts from AWS_MAX_ATTEMPTS."""
        home = aws.regions[0] if isinstance(aws.regions, list) else "us-east-1"
        attempts = os.environ.get("AWS_MAX_ATTEMPTS", "")
        if attempts.isdigit() and int(attempts) > 0:
            kwargs.setdefault("max_attempts", int(attempts))
        return cls(endpoint_url=aws.effective_endpoint(), home_region=home, **kwargs)

    def client(
        self, session: AioSession, service: str, region: str, config: AioConfig | None = None
    ) -> AbstractAsyncContextManager[Any]:
        """An aiobotocore client (an async context manager) for one service and region."""
        context = session.create_client(
            service,
            region_name=region,
            endpoint_url=self.endpoint_url,
            config=config or self.config,
        )
        return _SharedModelsClient(context, self.models)

    def pooled_config(self, connections: SharedConnections) -> AioConfig:
        """The client settings, sending through ``connections``; warm the services' models
        with :meth:`warm_up` before creating clients with it."""
        return client_config(
            self.max_attempts,
            max_pool=connections.limit,
            emulator=self.endpoint_url is not None,
            connections=connections,
        )

    async def warm_up(self, service: str) -> None:
        """Read ``service``'s models into the shared loader, in a thread, once per process
        of this access: client creation then finds them in memory."""
        if service in self._warm:
            return
        # Two first callers at once both read in threads: harmless, the loader caches.
        await asyncio.to_thread(self.base_session.warm_up_loader_caches, service)
        self._warm.add(service)

    def session(self, target: AccountTarget) -> AioSession:
        """A session whose clients reach ``target``'s account."""
        if target.credentials is None:
            return self.base_session
        session = AioSession()
        # Share the base session's loader: service models and endpoint data are read once.
        session.register_component("data_loader", self.base_session.get_component("data_loader"))
        # botocore's Session keeps resolved credentials here; setting it skips the provider
        # chain, so this session's clients sign with the account's refreshable credentials.
        session._credentials = target.credentials
        return session

    def role_credentials(
        self, role_arn: str, external_id: str | None = None
    ) -> AioDeferredRefreshableCredentials:
        """Credentials of ``role_arn``: assumed on first use, cached, refreshed before expiry.

        aiobotocore refreshes them when less than 15 minutes remain (advisory) and insists
        when less than 10 remain (mandatory), so a long scan never signs with an expired token.
        """
        cache_key = (role_arn, external_id)
        credentials = self._role_credentials.get(cache_key)
        if credentials is None:
            role = self._roles[cache_key] = _AssumedRole(self, role_arn, external_id)
            credentials = AioDeferredRefreshableCredentials(
                refresh_using=role.fetch, method="assume-role"
            )
            self._role_credentials[cache_key] = credentials
        return credentials

    def assume_role_calls(self, role_arn: str, external_id: str | None = None) -> int:
        """How many times AssumeRole was called for the role (0 if never used)."""
        role = self._roles.get((role_arn, external_id))
        return role.calls if role is not None else 0

    async def ensure_credentials(self, target: AccountTarget) -> None:
        """Have ``target``'s credentials before its scopes start: one AssumeRole shared by
        all of them (none for the local credential chain, which signs on its own).

        Raises :class:`CredentialsUnavailable` when the role cannot be assumed; the caller
        then fails the account's scopes without trying them. Goes around botocore's refresh,
        which would log a traceback per failed attempt."""
        if target.role_arn is None or target.credentials is None:
            return
        role = next(
            (self._roles[k] for k, c in self._role_credentials.items() if c is target.credentials),
            None,
        )
        if role is None:  # credentials made elsewhere: let them resolve themselves
            try:
                await target.credentials.get_frozen_credentials()
            except Exception as exc:
                raise CredentialsUnavailable(target.role_arn, exc) from None
            return
        await role.ensure()

    async def caller_account(self) -> AccountTarget:
        """The account of the local credential chain."""
        try:
            async with self.client(self.base_session, "sts", self.home_region) as sts:
                identity = await sts.get_caller_identity()
        except Exception as exc:
            raise AccountDiscoveryError(
                f"cannot identify the account of the local AWS credentials: {exc}"
            ) from None
        return AccountTarget(
            account_id=identity["Account"], partition=partition_of(identity["Arn"])
        )

    def role_account(self, role: AccountRole) -> AccountTarget:
        external_id = role.external_id.get_secret_value() if role.external_id else None
        return AccountTarget(
            account_id=role.account_id,
            partition=partition_of(role.role_arn),
            role_arn=role.role_arn,
            credentials=self.role_credentials(role.role_arn, external_id),
        )

    async def organization_roles(self, role_name: str) -> list[AccountRole]:
        """A role of ``role_name`` in every active account of the caller's organization."""
        roles: list[AccountRole] = []
        try:
            async with self.client(self.base_session, "sts", self.home_region) as sts:
                partition = partition_of((await sts.get_caller_identity())["Arn"])
            async with self.client(
                self.base_session, "organizations", self.home_region
            ) as organizations:
                async for page in organizations.get_paginator("list_accounts").paginate():
                    for account in page["Accounts"]:
                        if account.get("State", account.get("Status")) != "ACTIVE":
                            continue
                        roles.append(
                            AccountRole(
                                role_arn=f"arn:{partition}:iam::{account['Id']}:role/{role_name}"
                            )
                        )
        except Exception as exc:
            raise AccountDiscoveryError(
                f"cannot list the accounts of the organization (organizations:ListAccounts): {exc}"
            ) from None
        return roles

    async def ou_members(self, aws: AwsSettings) -> OuMembers | None:
        """The accounts under the OUs the include / exclude lists name (``None``: none)."""
        if not (aws.include_ous or aws.exclude_ous):
            return None
        try:
            async with self.client(
                self.base_session, "organizations", self.home_region
            ) as organizations:
                return await ou_members(organizations, aws)
        except Exception as exc:
            raise AccountDiscoveryError(
                "cannot list the accounts of aws.include_ous / exclude_ous "
                f"(organizations:ListAccountsForParent): {exc}"
            ) from None

    async def discover_accounts(
        self, aws: AwsSettings, only: Iterable[str] | None = None
    ) -> list[AccountTarget]:
        """The accounts the settings name, in order, without duplicates.

        Explicit roles come first, then Organizations discovery; with neither, the local
        credential chain's own account. ``only`` keeps just those account ids.
        """
        wanted = set(only) if only else None
        roles = list(aws.accounts)
        if aws.organization_role_name:
            roles += await self.organization_roles(aws.organization_role_name)
        targets: dict[str, AccountTarget] = {}
        if roles:
            # The [aws] include / exclude lists: this process's share (producers/accounts.py).
            for role in select_roles(roles, aws, await self.ou_members(aws)):
                if wanted is None or role.account_id in wanted:
                    targets[role.account_id] = self.role_account(role)
            if not targets and wanted is None:
                raise AccountDiscoveryError(
                    f"none of the {len(roles)} account(s) found is selected by aws."
                    "include_accounts / exclude_accounts / include_ous / exclude_ous: "
                    "check those lists"
                )
        else:
            caller = await self.caller_account()
            if (wanted is None or caller.account_id in wanted) and is_selected(
                caller.account_id, aws
            ):
                targets[caller.account_id] = caller
        if wanted is not None:
            missing = wanted - set(targets)
            if missing:
                raise AccountDiscoveryError(
                    f"account(s) {', '.join(sorted(missing))} are not among the configured "
                    f"accounts ({', '.join(sorted(t for t in targets)) or 'none left'}); "
                    "add their roles with --role-arn"
                )
        return list(targets.values())

    async def enabled_regions(self, target: AccountTarget) -> list[str]:
        """Every region enabled in the account (EC2 DescribeRegions, opted-in only)."""
        async with self.client(self.session(target), "ec2", target.global_region) as ec2:
            response = await ec2.describe_regions(AllRegions=False)
        return sorted(
            region["RegionName"]
            for region in response["Regions"]
            if region.get("OptInStatus", "opt-in-not-required") in ENABLED_REGION_STATUSES
        )

    async def regions_for(self, target: AccountTarget, regions: list[str] | str) -> list[str]:
        if isinstance(regions, str):
            return await self.enabled_regions(target)
        return list(regions)
