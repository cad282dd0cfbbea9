"""Reading CloudTrail log files from S3, at a cost per file far below botocore's.

A trail writes many small files (one per account and region about every five minutes, often a
handful of records): a botocore ``GetObject`` costs more CPU than reading and parsing such a
file. :class:`S3LogReader` therefore makes the call as a plain aiohttp GET signed with SigV4
(:mod:`cloudinv.producers.sigv4`) and keeps botocore for what it does best:

- **Where to send it.** The first read of each bucket goes through the botocore S3 client; its
  final request (after botocore's endpoint rules, addressing style, custom endpoints such as
  moto's, and region redirects) gives the bucket's URL prefix and signing region, which later
  reads of that bucket reuse. If that request was not SigV4 (S3 Express, anonymous access) the
  bucket stays on botocore.
- **Credentials.** The session's own credential provider (``AioSession.get_credentials``), the
  one the botocore clients use: refreshable credentials are refreshed before they expire.
- **The odd answers.** A region redirect (301/307, ``AuthorizationHeaderMalformed``,
  ``PermanentRedirect``) or a signature S3 does not accept moves the bucket back to botocore
  (logged once). Throttling and server errors (503 ``SlowDown``, 500) and broken connections
  are retried a few times with backoff (:func:`cloudinv.core.retry.retry`), as botocore's
  standard mode does, and so is an expired token (the provider refreshes it). Other errors are
  raised as botocore's ``ClientError`` with S3's error code, so the callers treat both paths
  alike (``NoSuchKey``: the file is rejected; ``AccessDenied``: left for a retry).

Small files are gunzipped and parsed on the event loop, big ones in a worker thread
(:func:`cloudinv.producers.cloudtrail.logfile.read_log_async`).
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
from botocore.exceptions import ClientError
from yarl import URL

from cloudinv.producers.cloudtrail.logfile import (
    LogFileDecoder,
    ParsedLog,
    parse_log,
    read_log_async,
)
from cloudinv.producers.sigv4 import (
    Credentials,
    DirectCalls,
    Endpoint,
    learned_endpoint,
    sign_headers,
)

__all__ = ["S3LogReader", "S3Object", "S3Unreachable"]

log = logging.getLogger(__name__)

CHUNK_SIZE = 256 * 1024
_RETRIED_CODES = frozenset(
    {"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "ExpiredToken"}
)
_BACK_TO_BOTOCORE = frozenset(
    {
        "AuthorizationHeaderMalformed",
        "PermanentRedirect",
        "TemporaryRedirect",
        "SignatureDoesNotMatch",
        "IllegalLocationConstraintException",
    }
)
_XML_FIELD = re.compile(rb"<(Code|Message)>([^<]*)</\1>")


@dataclass(frozen=True)
class S3Object:
    bucket: str
    key: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


class S3Unreachable(OSError):
    """S3 could not be reached (or broke the connection) after retries: try again later."""


class _Fallback(Exception):
    """This bucket's answer is one botocore handles (redirects, other signing)."""


class S3LogReader(DirectCalls):
    """Reads and parses log files: see the module docstring. Use as ``async with``.

    ``s3`` is an aiobotocore S3 client of ``session`` (kept open by the caller)."""

    unreachable = S3Unreachable
    retried_codes = _RETRIED_CODES

    def __init__(self, s3: Any, session: Any, *, connections: int = 64, attempts: int = 5) -> None:
        # A .json.gz with Content-Encoding: gzip is gunzipped here, not by aiohttp.
        super().__init__(
            s3,
            session,
            "before-send.s3.GetObject",
            connections=connections,
            read_timeout_s=60.0,
            attempts=attempts,
            decompress=False,
        )
        self._s3 = s3
        self._targets: dict[str, Endpoint | None] = {}
        """Bucket → where to read it directly; ``None``: botocore only."""
        self._sent: dict[str, tuple[str, str]] = {}
        """Encoded object path → (URL, Authorization) of botocore's last GetObject for it."""
        self._learning = 0
        """botocore reads under way that may teach a bucket's target."""
        self.direct_reads = 0
        self.botocore_reads = 0

    async def read(self, obj: S3Object) -> ParsedLog:
        """The parsed file. Raises ``RejectedFileError`` (not CloudTrail), botocore's
        ``ClientError`` (S3 said no), :class:`S3Unreachable` or ``BotoCoreError``."""
        target = self._targets.get(obj.bucket)
        if target is not None and self._credentials is not None:
            try:
                return await self._read_direct(obj, target)
            except _Fallback as exc:
                if self._targets.get(obj.bucket) is not None:
                    log.info(
                        "cloudtrail: reading bucket %s through botocore from now on (%s)",
                        obj.bucket,
                        exc,
                    )
                self._targets[obj.bucket] = None
        return await self._read_botocore(obj, learn=obj.bucket not in self._targets)

    # -- botocore, and learning a bucket's target from it ---------------------------------------

    def _capture(self, request: Any, **_: Any) -> None:
        if not self._learning:
            return
        url = str(request.url)
        authorization = request.headers.get("Authorization", b"")
        if isinstance(authorization, bytes):
            authorization = authorization.decode("latin-1")
        self._sent[urlsplit(url).path] = (url, authorization)
        if len(self._sent) > 1000:
            self._sent.clear()

    async def _read_botocore(self, obj: S3Object, *, learn: bool) -> ParsedLog:
        self._learning += learn
        try:
            response = await self._s3.get_object(Bucket=obj.bucket, Key=obj.key)
        finally:
            self._learning -= learn
        self.botocore_reads += 1
        if learn:
            self._learn(obj)
        decoder = LogFileDecoder(obj.uri, expect_gzip=obj.key.endswith(".gz"))
        async with response["Body"] as body:
            while chunk := await body.read(CHUNK_SIZE):
                decoder.feed(chunk)
        return await asyncio.to_thread(parse_log, decoder.finish(), obj.uri)

    def _learn(self, obj: S3Object) -> None:
        encoded = quote(obj.key, safe="/~")
        for path, (url, authorization) in list(self._sent.items()):
            if not path.endswith("/" + encoded):
                continue
            del self._sent[path]
            self._targets[obj.bucket] = learned_endpoint(url, authorization, encoded)
            return

    # -- the direct read ------------------------------------------------------------------------

    async def _read_direct(self, obj: S3Object, target: Endpoint) -> ParsedLog:
        encoded = quote(obj.key, safe="/~")
        data = await self._with_retries(lambda: self._get(obj, target, encoded))
        self.direct_reads += 1
        return await read_log_async(data, obj.uri, expect_gzip=obj.key.endswith(".gz"))

    async def _get(self, obj: S3Object, target: Endpoint, encoded: str) -> bytes:
        assert self._http is not None, "S3LogReader is used as async with"
        frozen = await self._credentials.get_frozen_credentials()
        headers = sign_headers(
            "GET",
            target.host,
            target.path + encoded,
            "",
            {},
            credentials=Credentials(frozen.access_key, frozen.secret_key, frozen.token),
            region=target.region,
            service=target.service,
            keys=self._keys,
        )
        url = URL(target.prefix + encoded, encoded=True)
        try:
            async with self._http.get(url, headers=headers, allow_redirects=False) as response:
                body = await response.read()
                if response.status == 200:
                    return body
                status, response_headers = response.status, response.headers
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise S3Unreachable(f"cannot read {obj.uri}: {exc!r}") from exc
        fields = dict(_XML_FIELD.findall(body[:4096]))
        code = fields.get(b"Code", str(status).encode()).decode(errors="replace")
        message = fields.get(b"Message", b"").decode(errors="replace")
        if status in (301, 307) or code in _BACK_TO_BOTOCORE:
            raise _Fallback(f"S3 answered {status} {code}")
        raise ClientError(
            {
                "Error": {"Code": code, "Message": message},
                "ResponseMetadata": {
                    "HTTPStatusCode": status,
                    "HTTPHeaders": {k.lower(): v for k, v in response_headers.items()},
                },
            },
            "GetObject",
        )
