"""Kafka clients configured from settings: one place that turns ``[kafka]`` into aiokafka
keyword arguments (bootstrap, TLS, SASL, MSK IAM), Faust broker credentials, and creates or
checks cloudinv's topics.

Every client cloudinv builds — the producers' and tailer's producers, the reactor's
consumer, the admin client here — takes :func:`client_kwargs`; the Faust worker takes
:func:`faust_credentials`. Both come from the same :class:`~cloudinv.core.settings.KafkaSettings`,
so a managed cluster's security is configured once.

AWS MSK IAM authentication is SASL/OAUTHBEARER whose token is a SigV4-presigned
``kafka-cluster:Connect`` URL, base64url-encoded: the same token AWS's
``aws-msk-iam-sasl-signer-python`` builds, signed here with botocore's signer and the
credentials aiobotocore resolves (the standard chain: environment, profile, container or
instance role), so no synchronous AWS client runs on the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import calendar
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlparse

from aiokafka.abc import AbstractTokenProvider
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, for_code

from cloudinv import __version__
from cloudinv.core.errors import ConfigError, RuntimeStartError
from cloudinv.core.settings import KafkaSettings
from cloudinv.core.topics import ALL_TOPICS, Topic, topic_name

if TYPE_CHECKING:
    from botocore.credentials import ReadOnlyCredentials
    from faust.types.auth import CredentialsT

__all__ = [
    "COMPACTED_TOPICS",
    "MSK_IAM_ACTION",
    "MskIamTokenProvider",
    "TopicsReport",
    "client_kwargs",
    "cluster_reachable",
    "ensure_topics",
    "faust_credentials",
    "msk_iam_token",
    "prepare_topics",
    "ssl_context",
]

log = logging.getLogger(__name__)

COMPACTED_TOPICS: frozenset[Topic] = frozenset({Topic.ACTIVITY})
"""Topics whose messages each carry a key's whole current value (an activity bucket's new
totals): only the latest per key matters, so they are compacted like a changelog. The
others are event logs (every snapshot, change, manifest and alert counts) and keep the
cluster's time-based retention. Faust creates its own table changelogs compacted."""

MSK_IAM_ACTION = "kafka-cluster:Connect"
MSK_IAM_SIGNING_NAME = "kafka-cluster"
MSK_IAM_TOKEN_TTL_S = 900
_TOPIC_ALREADY_EXISTS = 36


# -- connection settings ------------------------------------------------------------------


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext | None:
    """The TLS context for ``SSL`` / ``SASL_SSL``, or ``None`` for a plaintext protocol.

    Verifies brokers against ``ssl_cafile`` (else the system CAs), presents
    ``ssl_certfile`` / ``ssl_keyfile`` for mutual TLS, and checks host names unless
    ``ssl_check_hostname`` is false.
    """
    if kafka.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    cafile = str(kafka.ssl_cafile) if kafka.ssl_cafile else None
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
        if kafka.ssl_certfile is not None:
            context.load_cert_chain(
                str(kafka.ssl_certfile),
                str(kafka.ssl_keyfile) if kafka.ssl_keyfile else None,
                kafka.ssl_key_password.get_secret_value() if kafka.ssl_key_password else None,
            )
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"kafka TLS files cannot be used ({exc}): check kafka.ssl_cafile "
            f"({kafka.ssl_cafile}), kafka.ssl_certfile ({kafka.ssl_certfile}) and "
            f"kafka.ssl_keyfile ({kafka.ssl_keyfile}) are PEM files that match"
        ) from None
    if not kafka.ssl_check_hostname:
        context.check_hostname = False
    return context


def client_kwargs(kafka: KafkaSettings, bootstrap: str | None = None) -> dict[str, Any]:
    """aiokafka connection arguments. ``bootstrap`` overrides the configured servers (the
    embedded broker's address is only known once it runs)."""
    servers = bootstrap or ",".join(kafka.servers())
    kwargs: dict[str, Any] = {
        "bootstrap_servers": servers.removeprefix("kafka://"),
        "security_protocol": kafka.security_protocol,
    }
    context = ssl_context(kafka)
    if context is not None:
        kwargs["ssl_context"] = context
    if kafka.sasl_mechanism == "AWS_MSK_IAM":
        kwargs["sasl_mechanism"] = "OAUTHBEARER"
        kwargs["sasl_oauth_token_provider"] = MskIamTokenProvider(_msk_region(kafka))
    elif kafka.sasl_mechanism:
        kwargs["sasl_mechanism"] = kafka.sasl_mechanism
        kwargs["sasl_plain_username"] = kafka.sasl_username
        kwargs["sasl_plain_password"] = (
            kafka.sasl_password.get_secret_value() if kafka.sasl_password else None
        )
    return kwargs


def faust_credentials(kafka: KafkaSettings) -> CredentialsT | None:
    """Faust's ``broker_credentials`` for the same settings (``None``: plaintext).

    Faust passes these to every aiokafka client it makes (consumer, producer, and the admin
    client that creates its internal topics).
    """
    from faust.auth import OAuthCredentials, SASLCredentials, SSLCredentials

    context = ssl_context(kafka)
    if kafka.sasl_mechanism == "AWS_MSK_IAM":
        return OAuthCredentials(
            oauth_cb=MskIamTokenProvider(_msk_region(kafka)), ssl_context=context
        )
    if kafka.sasl_mechanism:
        return SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password.get_secret_value() if kafka.sasl_password else None,
            ssl_context=context,
            mechanism=kafka.sasl_mechanism,
        )
    if context is not None:
        return SSLCredentials(context)
    return None


def _msk_region(kafka: KafkaSettings) -> str:
    region = kafka.msk_iam_region()
    if region is None:  # the settings validator already refuses this
        raise ConfigError("kafka.sasl_mechanism AWS_MSK_IAM needs kafka.msk_region")
    return region


async def cluster_reachable(
    kafka: KafkaSettings, bootstrap: str | None = None, timeout: float = 10.0
) -> bool:
    """True when the cluster answers a Metadata request over the configured security
    (TLS handshake and SASL authentication included)."""
    from aiokafka import AIOKafkaClient
    from aiokafka.errors import KafkaError

    kwargs = client_kwargs(kafka, bootstrap)
    client = AIOKafkaClient(**kwargs, request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(client.bootstrap(), timeout)
        return True
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        with contextlib.suppress(Exception):
            await client.close()


# -- AWS MSK IAM ----------------------------------------------------------------------------


def msk_iam_token(region: str, credentials: ReadOnlyCredentials) -> tuple[str, int]:
    """The MSK IAM auth token for ``region`` and its expiry (epoch milliseconds).

    A presigned ``GET https://kafka.<region>.amazonaws.com/?Action=kafka-cluster:Connect``
    (SigV4 query signing, service ``kafka-cluster``, valid 900 s) with a ``User-Agent``
    parameter, base64url-encoded without padding. Pure computation: no I/O.
    """
    from botocore.auth import SigV4QueryAuth
    from botocore.awsrequest import AWSRequest

    if not credentials.access_key or not credentials.secret_key:
        raise ConfigError("AWS_MSK_IAM: no AWS credentials found to sign the Kafka auth token")
    request = AWSRequest(
        method="GET",
        url=f"https://kafka.{region}.amazonaws.com/",
        params={"Action": MSK_IAM_ACTION},
    )
    signer = SigV4QueryAuth(credentials, MSK_IAM_SIGNING_NAME, region, expires=MSK_IAM_TOKEN_TTL_S)
    signer.add_auth(request)
    request.params = {"User-Agent": f"cloudinv/{__version__}"}
    url = request.prepare().url
    token = base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")
    signed_at = parse_qs(urlparse(url).query)["X-Amz-Date"][0]
    signed_epoch = calendar.timegm(time.strptime(signed_at, "%Y%m%dT%H%M%SZ"))
    return token, (signed_epoch + MSK_IAM_TOKEN_TTL_S) * 1000


CredentialsSource = Callable[[], Awaitable["ReadOnlyCredentials"]]


async def _default_credentials() -> ReadOnlyCredentials:
    from aiobotocore.session import get_session

    credentials = await get_session().get_credentials()
    if credentials is None:
        raise ConfigError(
            "AWS_MSK_IAM: no AWS credentials found (environment, profile, container or "
            "instance role) to sign the Kafka auth token"
        )
    frozen: ReadOnlyCredentials = await credentials.get_frozen_credentials()
    return frozen


@dataclass
class MskIamTokenProvider(AbstractTokenProvider):  # type: ignore[misc]
    """aiokafka's OAUTHBEARER token source for MSK IAM: a token is reused until a minute
    before it expires, then signed again with freshly resolved credentials (which may have
    rotated: instance and container roles do). Credentials come from aiobotocore, so
    resolving a container or instance role awaits its HTTP call instead of blocking."""

    region: str
    credentials: CredentialsSource = _default_credentials
    refresh_before_s: float = 60.0
    _token: str | None = field(default=None, init=False, repr=False)
    _expires_ms: int = field(default=0, init=False, repr=False)

    async def token(self) -> str:
        # No asyncio lock: Faust's consumer runs on its own thread and event loop and shares
        # this provider with the producer, and a lock bound to one loop fails on the other.
        # Two connections racing at expiry just sign two valid tokens.
        token = self._token
        if token is None or time.time() * 1000 >= self._expires_ms - self.refresh_before_s * 1000:
            credentials = await self.credentials()
            token, expires_ms = msk_iam_token(self.region, credentials)
            self._token, self._expires_ms = token, expires_ms
        return token


# -- topics -----------------------------------------------------------------------------------


@dataclass
class TopicsReport:
    """What :func:`prepare_topics` did: topics created, and existing topics whose
    partition count differs from ``kafka.partitions`` (name → actual count)."""

    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    partition_mismatches: dict[str, int] = field(default_factory=dict)


def _new_topic(name: str, which: Topic, kafka: KafkaSettings) -> NewTopic:
    configs = {"cleanup.policy": "compact"} if which in COMPACTED_TOPICS else {}
    return NewTopic(
        name=name,
        num_partitions=kafka.partitions,
        replication_factor=kafka.replication_factor,
        topic_configs=configs,
    )


async def prepare_topics(kafka: KafkaSettings, bootstrap: str | None = None) -> TopicsReport:
    """Create cloudinv's missing topics with the configured partitions, replication factor
    and cleanup policy; check the partition count of those that exist.

    An existing topic is never altered. One with a different partition count is logged as a
    warning and reported: keyed streams are co-partitioned by count (the worker's deletions
    topic with the snapshots topic), and adding partitions to a keyed topic moves keys.
    """
    kwargs = client_kwargs(kafka, bootstrap)
    admin = AIOKafkaAdminClient(**kwargs)
    try:
        try:
            await admin.start()
        except KafkaConnectionError as exc:
            raise RuntimeStartError(
                f"cannot reach Kafka at {kwargs['bootstrap_servers']} "
                f"({kafka.security_protocol}) to create topics: {exc}; check kafka.bootstrap "
                "and the kafka security settings"
            ) from None
        names = {topic_name(t, kafka.topic_prefix): t for t in ALL_TOPICS}
        present = set(await admin.list_topics())
        report = TopicsReport(existing=sorted(n for n in names if n in present))
        wanted = [_new_topic(n, t, kafka) for n, t in names.items() if n not in present]
        if wanted:
            response = await admin.create_topics(wanted)
            for name, code in _topic_errors(response):
                if code == 0:
                    report.created.append(name)
                elif code == _TOPIC_ALREADY_EXISTS:
                    # A concurrent starter won the race: its topics are checked below.
                    report.existing.append(name)
                else:
                    error = for_code(code)
                    raise ConfigError(
                        f"cannot create Kafka topic {name} with {kafka.partitions} "
                        f"partition(s) and replication factor {kafka.replication_factor}: "
                        f"{error.__name__} ({error.description}); check kafka.partitions "
                        "and kafka.replication_factor against the cluster"
                    )
        if report.existing:
            for meta in await admin.describe_topics(report.existing):
                count = len(meta.get("partitions") or [])
                if meta.get("error_code", 0) == 0 and count != kafka.partitions:
                    report.partition_mismatches[meta["topic"]] = count
        for name, count in sorted(report.partition_mismatches.items()):
            log.warning(
                "Kafka topic %s exists with %d partition(s) but kafka.partitions is %d: it is "
                "used as it is (set kafka.partitions to %d to match, or recreate the topic)",
                name,
                count,
                kafka.partitions,
                count,
            )
        return report
    finally:
        await admin.close()


def _topic_errors(response: Any) -> list[tuple[str, int]]:
    errors = response.to_object().get("topic_errors") or response.to_object().get("topics", [])
    return [(e.get("topic") or e.get("name"), int(e["error_code"])) for e in errors]


async def cluster_id(admin: AIOKafkaAdminClient) -> str | None:
    """The cluster id the broker answers with (``None`` when it does not say). The embedded
    broker gets a new one at every start: a changed id means offsets started again from zero."""
    described = await admin.describe_cluster()
    cluster = described.get("cluster_id")
    return str(cluster) if cluster else None


async def ensure_topics(kafka: KafkaSettings, bootstrap: str | None = None) -> list[str]:
    """Create cloudinv's topics (see :func:`prepare_topics`). Returns the names created."""
    report = await prepare_topics(kafka, bootstrap)
    return report.created
