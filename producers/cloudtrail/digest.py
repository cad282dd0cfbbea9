"""Integrity of CloudTrail log files, checked against CloudTrail's digest files.

With log file validation on, CloudTrail delivers every hour, per account and region, a digest
file under ``AWSLogs/[<org id>/]<account>/CloudTrail-Digest/<region>/YYYY/MM/DD/``: gzipped
JSON naming each log file it delivered in that hour with the SHA-256 of the file's
(uncompressed) content, plus the hash and signature of the previous digest, so digests form a
chain. Each digest is signed (``SHA256withRSA``, the hex signature in the object metadata
``signature``) with a per-region key that CloudTrail's ``ListPublicKeys`` returns.

:class:`DigestVerifier` checks one digest (:meth:`~DigestVerifier.verify_digest`, what the
tailer does when a digest lands) or every digest of a date range
(:meth:`~DigestVerifier.verify_range`, what ``cloudinv cloudtrail backfill --verify`` does):

- the digest is where it says it is (``digestS3Bucket`` / ``digestS3Object``);
- its signature verifies with the public key of its fingerprint — when that key can be had
  (``ListPublicKeys``, or keys given locally); otherwise the signature is counted as
  unchecked, never as valid;
- the chain: ``previousDigestHashValue`` is the SHA-256 of the previous digest and
  ``previousDigestSignature`` its signature (a missing previous digest is a finding);
- every listed log file exists and its content hashes to ``hashValue``.

Each problem is a :class:`Finding` (file, reason), recorded like a rejected log file in the
:class:`~cloudinv.producers.cloudtrail.logfile.RejectionLog` (``cloudinv cloudtrail rejected``).
A failure that may pass (S3 unreachable) raises :class:`DigestUnavailableError` instead.

The string CloudTrail signs, and that log file hashes cover the uncompressed content, follow
AWS's "custom implementation of log file integrity validation" and the AWS CLI's
``validate-logs``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

import orjson
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from cloudinv.producers.cloudtrail.layout import find_region_prefixes
from cloudinv.producers.cloudtrail.logfile import MAX_DECOMPRESSED_BYTES, RejectionLog

__all__ = [
    "MAX_FINDINGS",
    "SIGNATURE_ALGORITHM",
    "CloudTrailPublicKeys",
    "Digest",
    "DigestFormatError",
    "DigestUnavailableError",
    "DigestVerifier",
    "Finding",
    "IntegrityStats",
    "PublicKeys",
    "StaticPublicKeys",
    "content_sha256",
    "digest_key_time",
    "key_fingerprint",
    "parse_digest",
    "string_to_sign",
]

log = logging.getLogger(__name__)

SIGNATURE_ALGORITHM = "SHA256withRSA"
MAX_FINDINGS = 1000
_GONE = frozenset({"NoSuchKey", "NoSuchBucket", "404"})
_REQUIRED = (
    "digestStartTime",
    "digestEndTime",
    "digestS3Bucket",
    "digestS3Object",
    "digestPublicKeyFingerprint",
    "logFiles",
)
_KEY_TIME = re.compile(r"_(\d{8}T\d{6}Z)(?:_backfill)?\.json\.gz$")
_KEY_REGION = re.compile(r"(?:^|/)CloudTrail-Digest/([a-z0-9-]+)/")


class DigestFormatError(ValueError):
    """A digest file that is not gzipped digest JSON; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DigestUnavailableError(Exception):
    """S3 (or CloudTrail) failed in a way that may pass: check again later."""


@dataclass(frozen=True)
class Finding:
    """One integrity problem: the file (``s3://`` URI) and what is wrong with it."""

    source: str
    reason: str


@dataclass
class IntegrityStats:
    digests: int = 0
    log_files: int = 0
    valid_log_files: int = 0
    signatures_verified: int = 0
    signatures_unchecked: int = 0
    """Digests whose public key could not be obtained: neither valid nor invalid."""
    problems: int = 0
    findings: list[Finding] = field(default_factory=list)
    """The latest findings (at most :data:`MAX_FINDINGS`; ``problems`` counts them all)."""


# --- pure parts ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Digest:
    """One digest file: where it was read, its JSON, and the signature from its metadata."""

    bucket: str
    key: str
    data: dict[str, Any]
    content: bytes
    """The uncompressed JSON bytes, as CloudTrail hashed and signed them."""
    signature: str | None
    signature_algorithm: str | None

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def region(self) -> str | None:
        found = _KEY_REGION.search(self.key)
        return found.group(1) if found else None

    @property
    def log_files(self) -> list[dict[str, Any]]:
        files: list[dict[str, Any]] = self.data["logFiles"]
        return files


def _inflate(body: bytes) -> bytes:
    """Gunzip (all members) with a size cap; raises ``zlib.error`` or ``ValueError``."""
    inflate = zlib.decompressobj(wbits=31)
    out = bytearray()
    data = body
    while data:
        out += inflate.decompress(data, MAX_DECOMPRESSED_BYTES + 1 - len(out))
        if len(out) > MAX_DECOMPRESSED_BYTES:
            raise ValueError(f"larger than {MAX_DECOMPRESSED_BYTES} bytes uncompressed")
        if inflate.unconsumed_tail:
            data = inflate.unconsumed_tail
            continue
        if not inflate.eof:
            raise ValueError("truncated")
        data = inflate.unused_data
        if data:
            inflate = zlib.decompressobj(wbits=31)
    return bytes(out)


def parse_digest(
    body: bytes, bucket: str, key: str, metadata: Mapping[str, str] | None = None
) -> Digest:
    """A digest from its S3 object (the gzipped bytes and the object metadata)."""
    try:
        content = _inflate(body)
    except (zlib.error, ValueError) as exc:
        raise DigestFormatError(f"not valid gzip ({exc})") from None
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        raise DigestFormatError(f"not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DigestFormatError("not a digest: the JSON is not an object")
    missing = [name for name in _REQUIRED if name not in data]
    if missing:
        raise DigestFormatError(f"not a digest: no {', '.join(missing)}")
    files = data["logFiles"]
    if not isinstance(files, list) or not all(
        isinstance(f, dict)
        and isinstance(f.get("s3Bucket"), str)
        and isinstance(f.get("s3Object"), str)
        and isinstance(f.get("hashValue"), str)
        for f in files
    ):
        raise DigestFormatError("logFiles entries need s3Bucket, s3Object and hashValue")
    meta = {k.lower(): v for k, v in (metadata or {}).items()}
    return Digest(
        bucket=bucket,
        key=key,
        data=data,
        content=content,
        signature=meta.get("signature"),
        signature_algorithm=meta.get("signature-algorithm"),
    )


def string_to_sign(digest: Digest) -> bytes:
    """What CloudTrail signs: end time, the digest's S3 path, the SHA-256 of its content and
    the previous digest's signature (``null`` for the first of a chain), one per line."""
    previous = digest.data.get("previousDigestSignature")
    return (
        f"{digest.data['digestEndTime']}\n"
        f"{digest.data['digestS3Bucket']}/{digest.data['digestS3Object']}\n"
        f"{digest.sha256}\n"
        f"{'null' if previous is None else previous}"
    ).encode()


def verify_signature(digest: Digest, public_key: rsa.RSAPublicKey) -> bool:
    """Whether the digest's hex signature verifies (RSA PKCS#1 v1.5 over SHA-256)."""
    if digest.signature is None:
        return False
    try:
        signature = bytes.fromhex(digest.signature)
        public_key.verify(signature, string_to_sign(digest), padding.PKCS1v15(), hashes.SHA256())
    except (ValueError, InvalidSignature):
        return False
    return True


def content_sha256(body: bytes) -> str:
    """Hex SHA-256 of a log file's content: of the gunzipped bytes for gzip files (what
    CloudTrail's ``hashValue`` covers), else of the bytes as they are."""
    if body[:2] == b"\x1f\x8b":
        try:
            body = _inflate(body)
        except (zlib.error, ValueError) as exc:
            raise DigestFormatError(f"not valid gzip ({exc})") from None
    return hashlib.sha256(body).hexdigest()


def digest_key_time(key: str) -> datetime | None:
    """The end time in a digest file's name (``..._20150817T150131Z.json.gz``)."""
    found = _KEY_TIME.search(key)
    if not found:
        return None
    return datetime.strptime(found.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def key_fingerprint(public_key: rsa.RSAPublicKey) -> str:
    """The fingerprint this module gives a local key: hex MD5 of its PKCS#1 DER encoding
    (the format of ``ListPublicKeys`` values, whose fingerprints CloudTrail supplies)."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    return hashlib.md5(der, usedforsecurity=False).hexdigest()


# --- public keys ---------------------------------------------------------------------------


class PublicKeys(Protocol):
    async def get(self, fingerprint: str, digest: Digest) -> rsa.RSAPublicKey | None:
        """The key of ``fingerprint`` for ``digest``, or None when it cannot be obtained."""
        ...


class StaticPublicKeys:
    """Keys given locally, by fingerprint (files, or a test's own key pair)."""

    def __init__(self, keys: Mapping[str, rsa.RSAPublicKey] | Iterable[rsa.RSAPublicKey]):
        if isinstance(keys, Mapping):
            self.keys = dict(keys)
        else:
            self.keys = {key_fingerprint(k): k for k in keys}

    @classmethod
    def from_files(cls, data: Iterable[bytes]) -> StaticPublicKeys:
        """Keys from PEM or DER (PKCS#1 or SubjectPublicKeyInfo) bytes."""
        keys = []
        for raw in data:
            if raw.lstrip().startswith(b"-----BEGIN"):
                key = serialization.load_pem_public_key(raw)
            else:
                key = serialization.load_der_public_key(raw)
            if not isinstance(key, rsa.RSAPublicKey):
                raise ValueError("CloudTrail digest keys are RSA keys; this one is not")
            keys.append(key)
        return cls(keys)

    async def get(self, fingerprint: str, digest: Digest) -> rsa.RSAPublicKey | None:
        return self.keys.get(fingerprint)


class CloudTrailPublicKeys:
    """Keys from CloudTrail's ``ListPublicKeys`` in each digest's region (cached per region),
    optionally with local keys first. Where the call fails (no permission, or an endpoint
    that does not implement it), keys of that region are treated as unobtainable."""

    def __init__(
        self,
        session: Any,
        *,
        endpoint_url: str | None = None,
        local: StaticPublicKeys | None = None,
    ) -> None:
        self._session = session
        self._endpoint_url = endpoint_url
        self._local = local
        self._by_region: dict[str, dict[str, rsa.RSAPublicKey]] = {}
        self._lock = asyncio.Lock()

    async def get(self, fingerprint: str, digest: Digest) -> rsa.RSAPublicKey | None:
        if self._local is not None and (key := await self._local.get(fingerprint, digest)):
            return key
        region = digest.region or "us-east-1"
        async with self._lock:
            if region not in self._by_region:
                self._by_region[region] = await self._list(region)
        return self._by_region[region].get(fingerprint)

    async def _list(self, region: str) -> dict[str, rsa.RSAPublicKey]:
        keys: dict[str, rsa.RSAPublicKey] = {}
        try:
            async with self._session.create_client(
                "cloudtrail",
                region_name=region,
                endpoint_url=self._endpoint_url,
                config=AioConfig(retries={"mode": "standard", "max_attempts": 3}),
            ) as client:
                # Keys valid in the last ~year and a half: wide enough for any backfill range.
                now = datetime.now(UTC)
                kwargs: dict[str, Any] = {"StartTime": now - timedelta(days=550), "EndTime": now}
                while True:
                    page = await client.list_public_keys(**kwargs)
                    for item in page.get("PublicKeyList", []):
                        try:
                            key = serialization.load_der_public_key(item["Value"])
                        except (ValueError, KeyError, TypeError):
                            continue
                        if isinstance(key, rsa.RSAPublicKey) and "Fingerprint" in item:
                            keys[item["Fingerprint"]] = key
                    if not page.get("NextToken"):
                        break
                    kwargs["NextToken"] = page["NextToken"]
        except (ClientError, BotoCoreError) as exc:
            log.warning(
                "cloudtrail: cannot list CloudTrail public keys in %s (%s); digest signatures "
                "there are left unchecked",
                region,
                exc,
            )
        return keys


# --- checking ------------------------------------------------------------------------------


class DigestVerifier:
    """Checks digests and the log files they list, from S3 (see the module docstring)."""

    def __init__(
        self,
        s3: Any,
        rejections: RejectionLog,
        public_keys: PublicKeys | None = None,
        *,
        concurrency: int = 8,
    ) -> None:
        self.s3 = s3
        self.rejections = rejections
        self.public_keys = public_keys
        self.stats = IntegrityStats()
        self._downloads = asyncio.Semaphore(concurrency)
        self._cache: dict[tuple[str, str], Digest | None] = {}

    async def verify_digest(self, bucket: str, key: str) -> list[Finding]:
        """Check one digest, its link to the previous one and its log files; record and
        return what is wrong. Raises DigestUnavailableError for failures that may pass."""
        uri = f"s3://{bucket}/{key}"
        try:
            digest = await self._digest(bucket, key)
        except DigestFormatError as exc:
            return await self._record([Finding(uri, f"integrity: digest {exc.reason}")])
        self.stats.digests += 1
        if digest is None:
            return await self._record([Finding(uri, "integrity: digest file not found")])
        findings = self._location(digest)
        findings += await self._signature(digest)
        findings += await self._chain(digest)
        results = await asyncio.gather(*(self._log_file(digest, f) for f in digest.log_files))
        findings += [f for f in results if f is not None]
        return await self._record(findings)

    async def verify_range(
        self, bucket: str, prefix: str, start: date, end: date
    ) -> IntegrityStats:
        """Check every digest under ``prefix`` whose end time falls from ``start`` 00:00
        through one hour past the end of ``end`` (the digest after midnight covers the last
        hour of ``end``), oldest first."""
        low = datetime(start.year, start.month, start.day, tzinfo=UTC)
        high = datetime(end.year, end.month, end.day, tzinfo=UTC) + timedelta(days=1, hours=1)
        keys: list[tuple[datetime, str]] = []
        for region_prefix in await find_digest_prefixes(self.s3, bucket, prefix):
            days = (high.date() - low.date()).days + 1
            for d in range(days):
                day = f"{region_prefix}{low.date() + timedelta(d):%Y/%m/%d}/"
                for key in await _list_keys(self.s3, bucket, day):
                    when = digest_key_time(key)
                    if when is None or low <= when <= high:
                        keys.append((when or low, key))
        for _, key in sorted(keys):
            await self.verify_digest(bucket, key)
        return self.stats

    # -- the checks ----------------------------------------------------------------------

    def _location(self, digest: Digest) -> list[Finding]:
        if (digest.data["digestS3Bucket"], digest.data["digestS3Object"]) != (
            digest.bucket,
            digest.key,
        ):
            where = f"s3://{digest.data['digestS3Bucket']}/{digest.data['digestS3Object']}"
            return [Finding(digest.uri, f"integrity: digest moved from {where}")]
        return []

    async def _signature(self, digest: Digest) -> list[Finding]:
        algorithm = digest.signature_algorithm or digest.data.get("digestSignatureAlgorithm")
        if digest.signature is None:
            return [Finding(digest.uri, "integrity: digest has no signature metadata")]
        if algorithm != SIGNATURE_ALGORITHM:
            return [Finding(digest.uri, f"integrity: unknown signature algorithm {algorithm!r}")]
        fingerprint = str(digest.data["digestPublicKeyFingerprint"])
        key = await self.public_keys.get(fingerprint, digest) if self.public_keys else None
        if key is None:
            self.stats.signatures_unchecked += 1
            log.info(
                "cloudtrail: no public key %s: signature of %s unchecked", fingerprint, digest.uri
            )
            return []
        if not verify_signature(digest, key):
            return [
                Finding(
                    digest.uri,
                    f"integrity: digest signature does not verify with public key {fingerprint}",
                )
            ]
        self.stats.signatures_verified += 1
        return []

    async def _chain(self, digest: Digest) -> list[Finding]:
        data = digest.data
        prev_bucket, prev_key = (
            data.get("previousDigestS3Bucket"),
            data.get("previousDigestS3Object"),
        )
        if prev_bucket is None or prev_key is None:
            if data.get("previousDigestSignature") is not None:
                return [Finding(digest.uri, "integrity: chain broken: previous digest not named")]
            return []  # the first digest of a chain (or after logging was off)
        prev_uri = f"s3://{prev_bucket}/{prev_key}"
        try:
            previous = await self._digest(prev_bucket, prev_key)
        except DigestFormatError as exc:
            return [Finding(digest.uri, f"integrity: previous digest {prev_uri} {exc.reason}")]
        if previous is None:
            return [Finding(digest.uri, f"integrity: previous digest {prev_uri} is missing")]
        findings = []
        if data.get("previousDigestHashValue") != previous.sha256:
            findings.append(
                Finding(
                    digest.uri,
                    "integrity: chain broken: previousDigestHashValue "
                    f"{data.get('previousDigestHashValue')} is not the SHA-256 of {prev_uri} "
                    f"({previous.sha256})",
                )
            )
        if data.get("previousDigestSignature") != previous.signature:
            findings.append(
                Finding(
                    digest.uri,
                    f"integrity: chain broken: previousDigestSignature is not {prev_uri}'s "
                    "signature",
                )
            )
        return findings

    async def _log_file(self, digest: Digest, entry: dict[str, Any]) -> Finding | None:
        uri = f"s3://{entry['s3Bucket']}/{entry['s3Object']}"
        self.stats.log_files += 1
        async with self._downloads:
            body = await self._get(entry["s3Bucket"], entry["s3Object"])
        if body is None:
            return Finding(uri, f"integrity: missing, listed in digest {digest.uri}")
        try:
            actual = await asyncio.to_thread(content_sha256, body[0])
        except DigestFormatError as exc:
            return Finding(uri, f"integrity: {exc.reason}, listed in digest {digest.uri}")
        expected = entry["hashValue"].lower()
        if actual != expected:
            return Finding(
                uri,
                f"integrity: SHA-256 {actual} differs from {expected} in digest {digest.uri}",
            )
        self.stats.valid_log_files += 1
        return None

    # -- S3 ------------------------------------------------------------------------------

    async def _digest(self, bucket: str, key: str) -> Digest | None:
        """A digest (cached: the next digest's chain check reads it again), None if gone."""
        if (bucket, key) not in self._cache:
            got = await self._get(bucket, key)
            parsed = None
            if got is not None:
                parsed = await asyncio.to_thread(parse_digest, got[0], bucket, key, got[1])
            self._cache[(bucket, key)] = parsed
            if len(self._cache) > 64:
                self._cache.pop(next(iter(self._cache)))
        return self._cache[(bucket, key)]

    async def _get(self, bucket: str, key: str) -> tuple[bytes, dict[str, str]] | None:
        try:
            response = await self.s3.get_object(Bucket=bucket, Key=key)
            async with response["Body"] as stream:
                body: bytes = await stream.read()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in _GONE:
                return None
            raise DigestUnavailableError(f"s3://{bucket}/{key}: {exc}") from exc
        except (BotoCoreError, OSError, TimeoutError) as exc:
            raise DigestUnavailableError(f"s3://{bucket}/{key}: {exc!r}") from exc
        return body, dict(response.get("Metadata") or {})

    async def _record(self, findings: list[Finding]) -> list[Finding]:
        for finding in findings:
            await self.rejections.record(finding.source, finding.reason)
        self.stats.problems += len(findings)
        self.stats.findings = (self.stats.findings + findings)[-MAX_FINDINGS:]
        return findings


async def _list_keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    paginator = s3.get_paginator("list_objects_v2")
    async for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return keys


async def find_digest_prefixes(s3: Any, bucket: str, prefix: str = "") -> list[str]:
    """Every ``.../CloudTrail-Digest/<region>/`` prefix under ``prefix``."""

    return await find_region_prefixes(s3, bucket, prefix, folder="CloudTrail-Digest")
