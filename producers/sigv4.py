"""AWS Signature Version 4 for a plain HTTP request: the one copy of the signing in cloudinv.

botocore signs every call it makes, but its per-call cost (request building, endpoint rules,
hooks, signing, response parsing) is a few milliseconds of CPU. Where one simple call is made
per small object (a CloudTrail log file's GetObject), :func:`sign_headers` signs the request
directly: the canonical request, string to sign and signature exactly as botocore's
``SigV4Auth`` / ``S3SigV4Auth`` compute them (tests compare the two byte for byte), with the
derived signing key cached per day, region and service.

Only header signing of requests whose path the caller has already URI-encoded is supported
(the path is used as it is in the canonical request, as S3 requires); credentials are
botocore's frozen credentials (access key, secret key, session token).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import NamedTuple

__all__ = ["EMPTY_SHA256", "Credentials", "SigningKeys", "sign_headers"]

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
"""The payload hash of a request without a body (a GET)."""

_ALGORITHM = "AWS4-HMAC-SHA256"


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
    now: datetime | None = None,
    keys: SigningKeys | None = None,
) -> dict[str, str]:
    """The headers to send: ``headers`` plus ``Host``, ``X-Amz-Date``,
    ``X-Amz-Content-SHA256``, ``X-Amz-Security-Token`` (with a session token) and
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
