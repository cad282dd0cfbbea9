"""AWS Signature Version 4 for a plain HTTP request: the one copy of the signing in cloudinv.

botocore signs every call it makes, but its per-call cost (request building, endpoint rules,
user agent, hooks, signing, response parsing) is a few milliseconds of CPU. Where one simple
call is made per small object or batch (a CloudTrail log file's GetObject, the tailer's SQS
receives and deletes), :func:`sign_headers` signs the request directly: the canonical
request, string to sign and signature exactly as botocore's ``SigV4Auth`` / ``S3SigV4Auth``
compute them (tests compare the two byte for byte), with the derived signing key cached per
day, region and service. :func:`learned_endpoint` reads where to send such a request, and how
to sign it, from one request botocore made (so botocore keeps endpoint resolution: regions,
custom endpoints, addressing styles).

Only header signing of requests whose path the caller has already URI-encoded is supported
(the path is used as it is in the canonical request, as S3 requires); credentials are
botocore's frozen credentials (access key, secret key, session token).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, NamedTuple, Self, TypeVar
from urllib.parse import urlsplit

import aiohttp
from botocore.exceptions import ClientError

from cloudinv.core.retry import retry

__all__ = [
    "EMPTY_SHA256",
    "RETRIED_STATUS",
    "Credentials",
    "Endpoint",
    "SigningKeys",
    "host_header",
    "learned_endpoint",
    "sign_headers",
]

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
"""The payload hash of a request without a body (a GET)."""

_ALGORITHM = "AWS4-HMAC-SHA256"

T = TypeVar("T")


class Credentials(NamedTuple):
    """What signing needs (botocore's ``ReadOnlyCredentials`` has the same fields)."""

    access_key: str
    secret_key: str
    token: str | None = None


class SigningKeys:
    """Derived signing keys, one per (secret, day, region, service): four HMACs saved per
    request. Holds at most a few keys (they change once a day or on a credential refresh)."""

    def __init__(self) -> None:
        self._keys: dict[tuple[str, str, str, str], bytes] = {}

    def key(self, secret_key: str, day: str, region: str, service: str) -> bytes:
        found = self._keys.get((secret_key, day, region, service))
        if found is None:
            if len(self._keys) > 16:
                self._keys.clear()
            k_date = _hmac(f"AWS4{secret_key}".encode(), day)
            k_region = _hmac(k_date, region)
            k_service = _hmac(k_region, service)
            found = self._keys[(secret_key, day, region, service)] = _hmac(
                k_service, "aws4_request"
            )
        return found


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def sign_headers(
    method: str,
    host: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    *,
    credentials: Credentials,
    region: str,
    service: str,
    payload_sha256: str = EMPTY_SHA256,
    content_sha256_header: bool = True,
    now: datetime | None = None,
    keys: SigningKeys | None = None,
) -> dict[str, str]:
    """The headers to send: ``headers`` plus ``Host``, ``X-Amz-Date``,
    ``X-Amz-Content-SHA256`` (S3 wants it; ``content_sha256_header=False`` leaves it out, as
    botocore does for other services), ``X-Amz-Security-Token`` (with a session token) and
    ``Authorization``. ``path`` is the URI-encoded path as sent; ``query`` the query string
    as sent (``key=value`` pairs, already encoded); ``host`` the ``Host`` header (no port for
    the scheme's default port). Every header given is signed (pass only headers that reach
    the server unchanged)."""
    moment = now or datetime.now(UTC)
    amz_date = moment.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    out = dict(headers)
    out["Host"] = host
    out["X-Amz-Date"] = amz_date
    if content_sha256_header:
        out["X-Amz-Content-SHA256"] = payload_sha256
    if credentials.token:
        out["X-Amz-Security-Token"] = credentials.token
    signed = sorted((name.lower(), " ".join(value.split())) for name, value in out.items())
    signed_names = ";".join(name for name, _ in signed)
    canonical = "\n".join(
        (
            method,
            path,
            _canonical_query(query),
            "".join(f"{name}:{value}\n" for name, value in signed),
            signed_names,
            payload_sha256,
        )
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = f"{_ALGORITHM}\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    signing_key = (keys or SigningKeys()).key(credentials.secret_key, day, region, service)
    signature = hmac.new(signing_key, to_sign.encode(), hashlib.sha256).hexdigest()
    out["Authorization"] = (
        f"{_ALGORITHM} Credential={credentials.access_key}/{scope}, "
        f"SignedHeaders={signed_names}, Signature={signature}"
    )
    return out


def _canonical_query(query: str) -> str:
    if not query:
        return ""
    pairs = []
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        pairs.append((key, value))
    return "&".join(f"{key}={value}" for key, value in sorted(pairs))


# --- where to send a request: learned from one botocore made --------------------------------

_SCOPE = re.compile(r"^AWS4-HMAC-SHA256 Credential=[^/]+/\d{8}/([^/]+)/([^/]+)/aws4_request,")


@dataclass(frozen=True)
class Endpoint:
    """Where requests like one botocore sent go, and how they are signed: URL ``prefix``
    (scheme, host, path up to the caller's part, as botocore sent it), ``Host`` header,
    ``path`` (the prefix's path), signing ``region`` and ``service``."""

    prefix: str
    host: str
    path: str
    region: str
    service: str


def learned_endpoint(url: str, authorization: str | bytes, tail: str = "") -> Endpoint | None:
    """The :class:`Endpoint` of a request botocore signed and sent to ``url`` (whose path
    ends with ``tail``, the caller's part, e.g. an S3 object's encoded key). ``None`` when the
    request was not SigV4 header-signed (anonymous, S3 Express, presigned) or has a query
    string: such requests stay with botocore."""
    if isinstance(authorization, bytes):
        authorization = authorization.decode("latin-1")
    parts = urlsplit(url)
    scope = _SCOPE.match(authorization)
    if parts.query or scope is None or not parts.path.endswith(tail):
        return None
    return Endpoint(
        prefix=url[: len(url) - len(tail)],
        host=host_header(parts.scheme, parts.netloc),
        path=parts.path[: len(parts.path) - len(tail)],
        region=scope.group(1),
        service=scope.group(2),
    )


def host_header(scheme: str, netloc: str) -> str:
    """The ``Host`` header botocore signs: without the scheme's default port."""
    default = ":443" if scheme == "https" else ":80"
    return netloc[: -len(default)] if netloc.endswith(default) else netloc


class DirectCalls:
    """What the calls that go around botocore share (S3 reads, SQS calls): a hook on a botocore
    client's ``event`` that learns from botocore's own request where they go (``_capture``,
    given by the subclass), the botocore session's credentials (botocore refreshes them),
    signing keys, one plain HTTP session, and one retry policy (:meth:`_with_retries`: the
    failures ``unreachable`` and ``retried_codes`` name, a 5xx, up to ``attempts`` tries with
    jittered backoff, as botocore's standard mode does). Use as ``async with``."""

    unreachable: ClassVar[type[BaseException]] = OSError
    """What the subclass raises when the service could not be reached (worth another try)."""
    retried_codes: ClassVar[frozenset[str]] = frozenset()
    """The service's error codes worth another try (throttling, a token botocore refreshes)."""

    def __init__(
        self,
        client: Any,
        session: Any,
        event: str,
        *,
        connections: int,
        read_timeout_s: float,
        attempts: int,
        decompress: bool = True,
    ) -> None:
        self._botocore = client
        self._session = session
        self._event = event
        self._connections = connections
        self._read_timeout_s = read_timeout_s
        self._attempts = attempts
        self._decompress = decompress
        self._http: aiohttp.ClientSession | None = None
        self._credentials: Any = None
        self._keys = SigningKeys()

    def _capture(self, request: Any, **_: Any) -> None:
        raise NotImplementedError

    async def _with_retries(self, call: Callable[[], Awaitable[T]]) -> T:
        """``await call()``, again after a failure worth another try (see the class)."""
        return await retry(
            call,
            attempts=self._attempts,
            first_delay_s=0.05,
            max_delay_s=5.0,
            jitter=True,
            retry_if=self._worth_retrying,
        )

    def _worth_retrying(self, exc: BaseException) -> bool:
        return worth_retrying(exc, self.unreachable, self.retried_codes)

    async def __aenter__(self) -> Self:
        self._botocore.meta.events.register(self._event, self._capture)
        self._credentials = await self._session.get_credentials()
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._connections),
            auto_decompress=self._decompress,
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=10, sock_read=self._read_timeout_s
            ),
            skip_auto_headers=("User-Agent",),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._botocore.meta.events.unregister(self._event, self._capture)
        if self._http is not None:
            await self._http.close()
            self._http = None


RETRIED_STATUS = frozenset({500, 502, 503, 504})
"""The HTTP statuses of a direct call that are worth another try."""


def worth_retrying(
    exc: BaseException, unreachable: type[BaseException], codes: frozenset[str]
) -> bool:
    """Whether a direct call's failure is worth another try: the service was not reached
    (``unreachable``), or it answered a 5xx or one of ``codes`` (throttling, a token that
    botocore refreshes)."""
    if isinstance(exc, unreachable):
        return True
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = exc.response.get("Error", {}).get("Code")
        return status in RETRIED_STATUS or code in codes
    return False
