"""CloudTrail log file integrity: digest files in moto's S3, checked by
:class:`cloudinv.producers.cloudtrail.digest.DigestVerifier`, by the tailer when a digest lands, and
by ``cloudinv cloudtrail backfill --verify``.

The digests here have the structure AWS documents ("CloudTrail digest file structure") and are
signed as CloudTrail signs them (SHA256withRSA over end time, S3 path, SHA-256 of the digest
and the previous signature). The signing key is a key pair generated in this test: moto does
not implement CloudTrail's ListPublicKeys, so the public key is handed to the verifier locally
(StaticPublicKeys, or ``--public-key`` on the command line) instead of coming from CloudTrail.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiobotocore.session import get_session
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from cloudinv.core.topics import Topic, topic_name
from cloudinv.producers.cloudtrail.digest import (
    CloudTrailPublicKeys,
    DigestFormatError,
    DigestVerifier,
    StaticPublicKeys,
    content_sha256,
    digest_key_time,
    key_fingerprint,
    parse_digest,
    string_to_sign,
    verify_signature,
)
from cloudinv.producers.cloudtrail.logfile import RejectionLog, read_rejections
from cloudinv.producers.cloudtrail.publish import CloudTrailPublisher
from cloudinv.producers.cloudtrail.tailer import CloudTrailTailer, DigestObject, TailerConfig
from tests.cli_helpers import run_cli
from tests.cloudtrail_helpers import (
    ACCOUNT,
    CommittingGroup,
    MotoTrail,
    create_topics,
    fixture_records,
    log_bytes,
)

REGION = "us-east-1"
TRAIL = "org-trail"


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    # Local key pair: moto has no ListPublicKeys, so the verifier gets this public key directly.
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def digest_key(end: datetime) -> str:
    return (
        f"AWSLogs/{ACCOUNT}/CloudTrail-Digest/{REGION}/{end:%Y/%m/%d}/"
        f"{ACCOUNT}_CloudTrail-Digest_{REGION}_{TRAIL}_{REGION}_{end:%Y%m%dT%H%M%SZ}.json.gz"
    )


@dataclass
class SignedTrail:
    """Log files and a chain of hourly digests, as CloudTrail would deliver them."""

    trail: MotoTrail
    key: rsa.RSAPrivateKey
    digests: list[str] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    previous: tuple[str, bytes, str] | None = None
    """Key, uncompressed content and signature of the last digest."""

    def uri(self, key: str) -> str:
        return f"s3://{self.trail.bucket}/{key}"

    async def hour(
        self, end: datetime, logs: dict[str, bytes], *, previous_hash: str | None = None
    ) -> str:
        """Upload ``logs`` and the digest of the hour ending at ``end`` that lists them."""
        for key, body in logs.items():
            await self.trail.put(key, body)
            self.logs.append(key)
        key = digest_key(end)
        start = end - timedelta(hours=1)
        stamp = "%Y-%m-%dT%H:%M:%SZ"
        prev_key, prev_content, prev_sig = self.previous or (None, b"", None)
        doc: dict[str, Any] = {
            "awsAccountId": ACCOUNT,
            "digestStartTime": start.strftime(stamp),
            "digestEndTime": end.strftime(stamp),
            "digestS3Bucket": self.trail.bucket,
            "digestS3Object": key,
            "digestPublicKeyFingerprint": key_fingerprint(self.key.public_key()),
            "digestSignatureAlgorithm": "SHA256withRSA",
            "newestEventTime": end.strftime(stamp),
            "oldestEventTime": start.strftime(stamp),
            "previousDigestS3Bucket": self.trail.bucket if prev_key else None,
            "previousDigestS3Object": prev_key,
            "previousDigestHashValue": (
                previous_hash or hashlib.sha256(prev_content).hexdigest() if prev_key else None
            ),
            "previousDigestHashAlgorithm": "SHA-256" if prev_key else None,
            "previousDigestSignature": prev_sig,
            "logFiles": [
                {
                    "s3Bucket": self.trail.bucket,
                    "s3Object": log,
                    "hashValue": hashlib.sha256(gzip.decompress(body)).hexdigest(),
                    "hashAlgorithm": "SHA-256",
                    "newestEventTime": end.strftime(stamp),
                    "oldestEventTime": start.strftime(stamp),
                }
                for log, body in logs.items()
            ],
        }
        content = orjson.dumps(doc)
        to_sign = (
            f"{doc['digestEndTime']}\n{self.trail.bucket}/{key}\n"
            f"{hashlib.sha256(content).hexdigest()}\n{prev_sig or 'null'}"
        ).encode()
        signature = self.key.sign(to_sign, padding.PKCS1v15(), hashes.SHA256()).hex()
        await asyncio.to_thread(
            self.trail.s3.put_object,
            Bucket=self.trail.bucket,
            Key=key,
            Body=gzip.compress(content),
            Metadata={"signature": signature, "signature-algorithm": "SHA256withRSA"},
        )
        self.previous = (key, content, signature)
        self.digests.append(key)
        return key


def _logs(n: int, tag: str, day: str = "2024/05/01") -> dict[str, bytes]:
    """``n`` gzipped log files of four fixture records each, under ``day``."""
    records = fixture_records()
    stamp = day.replace("/", "")
    return {
        (
            f"AWSLogs/{ACCOUNT}/CloudTrail/{REGION}/{day}/"
            f"{ACCOUNT}_CloudTrail_{REGION}_{stamp}T{i:02d}00Z_{tag}{i:015x}.json.gz"
        ): log_bytes([{**r, "eventID": f"{tag}-{i}-{j}"} for j, r in enumerate(records[:4])])
        for i in range(n)
    }


async def _signed_trail(
    endpoint: str, name: str, key: rsa.RSAPrivateKey, **kwargs: Any
) -> SignedTrail:
    trail = SignedTrail(await asyncio.to_thread(MotoTrail.create, endpoint, name), key, **kwargs)
    first = datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)
    await trail.hour(first, _logs(3, "a"))
    await trail.hour(first + timedelta(hours=1), _logs(2, "b"))
    return trail


@pytest.fixture
async def s3(moto_endpoint: str) -> AsyncIterator[Any]:
    async with get_session().create_client(
        "s3", region_name=REGION, endpoint_url=moto_endpoint
    ) as client:
        yield client


# --- pure parts ----------------------------------------------------------------------------


def test_parse_digest_rejects_what_is_not_a_digest() -> None:
    with pytest.raises(DigestFormatError, match="not valid gzip"):
        parse_digest(b"\x1f\x8b\x08garbage", "b", "k")
    with pytest.raises(DigestFormatError, match="not valid gzip"):
        parse_digest(b"plain bytes", "b", "k")
    with pytest.raises(DigestFormatError, match="not valid JSON"):
        parse_digest(gzip.compress(b'{"awsAccountId": '), "b", "k")
    with pytest.raises(DigestFormatError, match="no digestEndTime"):
        parse_digest(
            gzip.compress(
                b'{"digestStartTime": "x", "digestS3Bucket": "b", "digestS3Object": "k",'
                b' "digestPublicKeyFingerprint": "f", "logFiles": []}'
            ),
            "b",
            "k",
        )
    with pytest.raises(DigestFormatError, match="logFiles entries"):
        parse_digest(
            gzip.compress(
                b'{"digestStartTime": "x", "digestEndTime": "y", "digestS3Bucket": "b",'
                b' "digestS3Object": "k", "digestPublicKeyFingerprint": "f",'
                b' "logFiles": [{"s3Bucket": "b"}]}'
            ),
            "b",
            "k",
        )


def test_signature_covers_content_path_and_previous_signature(
    signing_key: rsa.RSAPrivateKey,
) -> None:
    content = orjson.dumps(
        {
            "digestStartTime": "2024-05-01T09:00:00Z",
            "digestEndTime": "2024-05-01T10:00:00Z",
            "digestS3Bucket": "b",
            "digestS3Object": "k",
            "digestPublicKeyFingerprint": "f",
            "previousDigestSignature": "ab12",
            "logFiles": [],
        }
    )
    expected = f"2024-05-01T10:00:00Z\nb/k\n{hashlib.sha256(content).hexdigest()}\nab12".encode()
    signature = signing_key.sign(expected, padding.PKCS1v15(), hashes.SHA256()).hex()
    meta = {"Signature": signature, "signature-algorithm": "SHA256withRSA"}
    digest = parse_digest(gzip.compress(content), "b", "k", meta)
    assert string_to_sign(digest) == expected
    public = signing_key.public_key()
    assert verify_signature(digest, public)
    # A digest naming another place, or checked with another key, does not verify.
    moved = content.replace(b'"k"', b'"k2"')
    assert not verify_signature(parse_digest(gzip.compress(moved), "b", "k2", meta), public)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    assert not verify_signature(digest, other)
    assert not verify_signature(parse_digest(gzip.compress(content), "b", "k", {}), public)


def test_content_hash_is_of_the_uncompressed_log_and_key_times_parse() -> None:
    data = b'{"Records": []}'
    assert content_sha256(gzip.compress(data)) == hashlib.sha256(data).hexdigest()
    assert content_sha256(data) == hashlib.sha256(data).hexdigest()
    with pytest.raises(DigestFormatError, match="not valid gzip"):
        content_sha256(gzip.compress(data)[:-6])
    end = datetime(2024, 5, 1, 11, 0, 0, tzinfo=UTC)
    assert digest_key_time(digest_key(end)) == end
    assert digest_key_time(digest_key(end).replace(".json.gz", "_backfill.json.gz")) == end
    assert digest_key_time("AWSLogs/x/CloudTrail-Digest/r/2024/05/01/odd.json.gz") is None


# --- against moto's S3 ---------------------------------------------------------------------


async def test_untouched_trail_passes_every_check(
    moto_endpoint: str, unique: str, tmp_path: Path, s3: Any, signing_key: rsa.RSAPrivateKey
) -> None:
    trail = await _signed_trail(moto_endpoint, unique, signing_key)
    keys = StaticPublicKeys([signing_key.public_key()])
    verifier = DigestVerifier(s3, RejectionLog(tmp_path), keys)
    stats = await verifier.verify_range(trail.trail.bucket, "", date(2024, 5, 1), date(2024, 5, 1))
    assert stats.findings == []
    assert (stats.digests, stats.signatures_verified, stats.signatures_unchecked) == (2, 2, 0)
    assert (stats.log_files, stats.valid_log_files) == (5, 5)
    assert await read_rejections(tmp_path) == []


async def test_tampered_missing_and_broken_chain_are_recorded(
    moto_endpoint: str, unique: str, tmp_path: Path, s3: Any, signing_key: rsa.RSAPrivateKey
) -> None:
    trail = await _signed_trail(moto_endpoint, unique, signing_key)
    # A third hour whose digest is correctly signed but names a wrong previous hash.
    third = await trail.hour(
        datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC), _logs(1, "c"), previous_hash="0" * 64
    )
    tampered, missing = trail.logs[0], trail.logs[3]
    body = gzip.decompress(
        (
            await asyncio.to_thread(
                trail.trail.s3.get_object, Bucket=trail.trail.bucket, Key=tampered
            )
        )["Body"].read()
    )
    await trail.trail.put(tampered, gzip.compress(body.replace(b"-0-0", b"-0-X")))
    await asyncio.to_thread(trail.trail.s3.delete_object, Bucket=trail.trail.bucket, Key=missing)

    verifier = DigestVerifier(
        s3, RejectionLog(tmp_path), StaticPublicKeys([signing_key.public_key()])
    )
    stats = await verifier.verify_range(trail.trail.bucket, "", date(2024, 5, 1), date(2024, 5, 1))
    found = {(f.source, f.reason.split(" ")[1]) for f in stats.findings}
    assert found == {
        (trail.uri(tampered), "SHA-256"),
        (trail.uri(missing), "missing,"),
        (trail.uri(third), "chain"),
    }, stats.findings
    assert (stats.digests, stats.signatures_verified, stats.log_files, stats.valid_log_files) == (
        3,
        3,
        6,
        4,
    )
    assert stats.problems == 3
    recorded = {(r.source, r.reason) for r in await read_rejections(tmp_path)}
    assert recorded == {(f.source, f.reason) for f in stats.findings}
    assert any("previousDigestHashValue" in r for _, r in recorded)


async def test_forged_digest_and_missing_previous_digest(
    moto_endpoint: str, unique: str, tmp_path: Path, s3: Any, signing_key: rsa.RSAPrivateKey
) -> None:
    trail = await _signed_trail(moto_endpoint, unique, signing_key)
    first, second = trail.digests
    # Rewrite the second digest (drop a log file from it) keeping its old signature.
    got = await asyncio.to_thread(trail.trail.s3.get_object, Bucket=trail.trail.bucket, Key=second)
    doc = orjson.loads(gzip.decompress(got["Body"].read()))
    doc["logFiles"] = doc["logFiles"][:1]
    await asyncio.to_thread(
        trail.trail.s3.put_object,
        Bucket=trail.trail.bucket,
        Key=second,
        Body=gzip.compress(orjson.dumps(doc)),
        Metadata=got["Metadata"],
    )
    await asyncio.to_thread(trail.trail.s3.delete_object, Bucket=trail.trail.bucket, Key=first)
    verifier = DigestVerifier(
        s3, RejectionLog(tmp_path), StaticPublicKeys([signing_key.public_key()])
    )
    findings = await verifier.verify_digest(trail.trail.bucket, second)
    reasons = sorted(f.reason for f in findings)
    assert [f.source for f in findings] == [trail.uri(second)] * 2
    assert "signature does not verify" in reasons[0]
    assert reasons[1] == f"integrity: previous digest {trail.uri(first)} is missing"


async def test_without_a_public_key_signatures_are_unchecked_not_valid(
    moto_endpoint: str, unique: str, tmp_path: Path, s3: Any, signing_key: rsa.RSAPrivateKey
) -> None:
    # The real key source: moto answers ListPublicKeys with an error, so no key is found.
    trail = await _signed_trail(moto_endpoint, unique, signing_key)
    keys = CloudTrailPublicKeys(get_session(), endpoint_url=moto_endpoint)
    verifier = DigestVerifier(s3, RejectionLog(tmp_path), keys)
    stats = await verifier.verify_range(trail.trail.bucket, "", date(2024, 5, 1), date(2024, 5, 1))
    assert (stats.signatures_verified, stats.signatures_unchecked) == (0, 2)
    assert stats.findings == [] and stats.valid_log_files == 5
    # Local keys are consulted first.
    local = StaticPublicKeys([signing_key.public_key()])
    keys = CloudTrailPublicKeys(get_session(), endpoint_url=moto_endpoint, local=local)
    again = await DigestVerifier(s3, RejectionLog(None), keys).verify_range(
        trail.trail.bucket, "", date(2024, 5, 1), date(2024, 5, 1)
    )
    assert (again.signatures_verified, again.signatures_unchecked) == (2, 0)


async def test_tailer_checks_digests_that_land_when_asked(
    broker: str, moto_endpoint: str, unique: str, tmp_path: Path, signing_key: rsa.RSAPrivateKey
) -> None:
    prefix = f"t{unique}"
    await create_topics(broker, prefix)
    trail = await _signed_trail(moto_endpoint, unique, signing_key)
    await trail.trail.put(trail.logs[1], log_bytes(fixture_records()[:2]))  # tampered
    config = TailerConfig(
        queue_url=trail.trail.queue_url,
        region=REGION,
        endpoint_url=moto_endpoint,
        wait_time_s=0,
        verify_digests=True,
    )
    rejections = RejectionLog(tmp_path)
    async with CloudTrailPublisher({"bootstrap_servers": broker}, prefix) as publisher:
        tailer = CloudTrailTailer(
            config, publisher, rejections, public_keys=StaticPublicKeys([signing_key.public_key()])
        )
        stats = await asyncio.wait_for(tailer.run(until_idle=True), timeout=60)
    assert stats.digests_checked == 2 and stats.integrity_findings == 1
    assert stats.files == 6  # the five log files and the re-upload, each published
    assert [(r.source, r.reason.split(" ")[1]) for r in await read_rejections(tmp_path)] == [
        (trail.uri(trail.logs[1]), "SHA-256")
    ]
    assert stats.deleted == stats.messages and trail.trail.messages_left() == 0


def test_digests_are_skipped_unless_verifying() -> None:
    from cloudinv.producers.cloudtrail.tailer import Skip, classify_message

    body = orjson.dumps(
        {
            "Records": [
                {
                    "eventName": "ObjectCreated:Put",
                    "s3": {
                        "bucket": {"name": "b"},
                        "object": {"key": "AWSLogs/1/CloudTrail-Digest/x.json.gz"},
                    },
                }
            ]
        }
    )
    assert classify_message(body) == [Skip("digest file")]
    assert classify_message(body, verify_digests=True) == [
        DigestObject("b", "AWSLogs/1/CloudTrail-Digest/x.json.gz")
    ]


async def test_backfill_cli_verify_records_findings(
    broker: str, moto_endpoint: str, unique: str, tmp_path: Path, signing_key: rsa.RSAPrivateKey
) -> None:
    prefix = f"t{unique}"
    await create_topics(broker, prefix)
    trail = await _signed_trail(moto_endpoint, unique, signing_key)
    await asyncio.to_thread(
        trail.trail.s3.delete_object, Bucket=trail.trail.bucket, Key=trail.logs[4]
    )
    pem = tmp_path / "cloudtrail-key.pem"
    pem.write_bytes(
        signing_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    data_dir = tmp_path / "data"
    # The files count as done once this group (standing in for the worker) committed.
    async with CommittingGroup(broker, topic_name(Topic.CLOUDTRAIL, prefix), f"g{unique}"):
        result = await asyncio.to_thread(
            run_cli,
            "cloudtrail", "backfill", "--bucket", trail.trail.bucket,
            "--from", "2024-05-01", "--to", "2024-05-01", "--verify", "--public-key", str(pem),
            "--bootstrap", broker, "--topic-prefix", prefix, "--endpoint-url", moto_endpoint,
            "--region", REGION, "--data-dir", str(data_dir), "--consumer-group", f"g{unique}",
            cwd=tmp_path,
            timeout=120,
        )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "4 file(s) stored" in result.stderr
    assert "verify: 2 digest(s), 4 of 5 log file(s) valid, 2 signature(s) verified" in (
        result.stderr
    )
    assert "1 integrity problem(s)" in result.stderr
    shown = await asyncio.to_thread(
        run_cli, "cloudtrail", "rejected", "--data-dir", str(data_dir), cwd=tmp_path
    )
    assert trail.uri(trail.logs[4]) in shown.stdout and "missing" in shown.stdout


def test_backfill_cli_verify_needs_s3_and_readable_keys(tmp_path: Path) -> None:
    local = run_cli(
        "cloudtrail", "backfill", "--path", str(tmp_path), "--verify",
        "--bootstrap", "127.0.0.1:1", "--data-dir", str(tmp_path), cwd=tmp_path,
    )  # fmt: skip
    assert local.returncode == 2 and "--verify checks digests in S3" in local.stderr
    junk = tmp_path / "key.pem"
    junk.write_bytes(b"-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n")
    bad_key = run_cli(
        "cloudtrail", "backfill", "--bucket", "b", "--from", "2024-05-01", "--to", "2024-05-01",
        "--verify", "--public-key", str(junk), "--bootstrap", "127.0.0.1:1",
        "--data-dir", str(tmp_path), cwd=tmp_path,
    )  # fmt: skip
    assert bad_key.returncode == 2 and "--public-key: cannot read an RSA public key" in (
        bad_key.stderr
    )
