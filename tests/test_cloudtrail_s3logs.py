"""Reading log files from S3 without botocore per call: the SigV4 signer against botocore's
own signer (byte for byte), and :class:`S3LogReader` against moto — directly, and through a
proxy that checks every signature with botocore (moto does not) and answers as S3 does when
it throttles, redirects or refuses."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import botocore.auth
import orjson
import pytest
from aiobotocore.session import get_session
from aiohttp import web
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials
from botocore.exceptions import ClientError

from cloudinv.producers.cloudtrail.logfile import RejectedFileError
from cloudinv.producers.cloudtrail.s3logs import S3LogReader, S3Object
from cloudinv.producers.sigv4 import Credentials, sign_headers
from tests.cloudtrail_helpers import MotoTrail, fixture_records, log_bytes, log_key
from tests.moto_proxy import moto_proxy

MOMENT = datetime(2024, 5, 1, 12, 34, 56, tzinfo=UTC)

# --- the signer, byte for byte against botocore ---------------------------------------------


def _botocore_signed(
    auth_class: type[SigV4Auth],
    url: str,
    headers: dict[str, str],
    credentials: Credentials,
    region: str,
    service: str,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, str]:
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: MOMENT)
    request = AWSRequest(method="GET", url=url, headers=headers)
    creds = ReadOnlyCredentials(credentials.access_key, credentials.secret_key, credentials.token)
    auth_class(creds, service, region).add_auth(request)
    return dict(request.headers.items())


@pytest.mark.parametrize(
    ("url", "host", "path", "query"),
    [
        # moto / path style, a key needing escapes (space, unicode, plus, tilde kept)
        (
            "http://127.0.0.1:4566/trail-bucket/AWSLogs/1/a%20b/%C3%BC%2B~x.json.gz",
            "127.0.0.1:4566",
            "/trail-bucket/AWSLogs/1/a%20b/%C3%BC%2B~x.json.gz",
            "",
        ),
        # virtual host style on AWS, https (no port in Host)
        (
            "https://trail.s3.eu-west-1.amazonaws.com/AWSLogs/111100000000/CloudTrail/x.json.gz",
            "trail.s3.eu-west-1.amazonaws.com",
            "/AWSLogs/111100000000/CloudTrail/x.json.gz",
            "",
        ),
        # a query string, sorted in the canonical request
        (
            "https://trail.s3.amazonaws.com/?prefix=AWSLogs%2F&list-type=2",
            "trail.s3.amazonaws.com",
            "/",
            "prefix=AWSLogs%2F&list-type=2",
        ),
    ],
)
@pytest.mark.parametrize("token", [None, "FwoGZXIvYXdzE//session+token=="])
def test_signature_matches_botocore_byte_for_byte(
    url: str, host: str, path: str, query: str, token: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    mine = sign_headers(
        "GET",
        host,
        path,
        query,
        {"X-Extra": "  two   spaces "},
        credentials=credentials,
        region="eu-west-1",
        service="s3",
        now=MOMENT,
    )
    # botocore takes Host from the URL, as the HTTP client sends it.
    unsigned = {k: v for k, v in mine.items() if k not in ("Authorization", "Host")}
    theirs = _botocore_signed(
        S3SigV4Auth, url, unsigned, credentials, "eu-west-1", "s3", monkeypatch
    )
    assert mine == {**theirs, "Host": host}
    assert mine["Authorization"].startswith(
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240501/eu-west-1/s3/aws4_request, "
    )


def test_signature_for_another_service_matches_botocore(monkeypatch: pytest.MonkeyPatch) -> None:
    credentials = Credentials("AKIDEXAMPLE", "secret")
    mine = sign_headers(
        "GET",
        "sqs.us-east-1.amazonaws.com",
        "/",
        "Action=ListQueues&Version=2012-11-05",
        {},
        credentials=credentials,
        region="us-east-1",
        service="sqs",
        now=MOMENT,
    )
    unsigned = {k: v for k, v in mine.items() if k not in ("Authorization", "Host")}
    theirs = _botocore_signed(
        SigV4Auth,
        "https://sqs.us-east-1.amazonaws.com/?Action=ListQueues&Version=2012-11-05",
        unsigned,
        credentials,
        "us-east-1",
        "sqs",
        monkeypatch,
    )
    assert mine["Authorization"] == theirs["Authorization"]


# --- a checking proxy in front of moto -------------------------------------------------------


@dataclass
class S3Front:
    """What the proxy saw and how it answers: ``answer(request)`` may return a response in
    place of moto's."""

    url: str
    direct_gets: int = 0
    botocore_gets: int = 0
    bad_signatures: list[str] = field(default_factory=list)
    answer: Callable[[web.Request], web.Response | None] = lambda request: None


def _s3_error(status: int, code: str, **headers: str) -> web.Response:
    body = f"<Error><Code>{code}</Code><Message>{code} (test proxy)</Message></Error>"
    return web.Response(status=status, text=body, content_type="application/xml", headers=headers)


def _check_signature(request: web.Request) -> str | None:
    """Recompute the request's SigV4 signature with botocore; the reason it is wrong, if so."""
    authorization = request.headers.get("Authorization", "")
    fields = dict(
        part.strip().split("=", 1)
        for part in authorization.removeprefix("AWS4-HMAC-SHA256 ").split(",")
    )
    _, _day, region, service, _ = fields["Credential"].split("/")
    signed = fields["SignedHeaders"].split(";")
    headers = {name: request.headers[name] for name in signed}
    aws = AWSRequest(method=request.method, url=f"http://{request.host}{request.raw_path}")
    for name, value in headers.items():
        aws.headers[name] = value
    aws.context["timestamp"] = request.headers["X-Amz-Date"]
    # "testing" is the secret every test uses (conftest); moto itself checks nothing.
    auth = S3SigV4Auth(ReadOnlyCredentials("testing", "testing", None), service, region)
    expected = auth.signature(auth.string_to_sign(aws, auth.canonical_request(aws)), aws)
    if fields["Signature"] != expected or "host" not in signed:
        return f"{request.raw_path}: signature {fields['Signature']} != {expected}"
    if request.headers["Host"] != f"127.0.0.1:{request.transport.get_extra_info('sockname')[1]}":  # type: ignore[union-attr]
        return f"{request.raw_path}: signed for host {request.headers['Host']}"
    return None


@pytest.fixture
async def s3_front(moto_endpoint: str) -> AsyncIterator[S3Front]:
    front = S3Front(url="")

    async def intercept(request: web.Request) -> web.Response | None:
        if request.method != "GET":
            return None
        if "botocore" in request.headers.get("User-Agent", "").lower():
            front.botocore_gets += 1
            return None
        front.direct_gets += 1
        problem = _check_signature(request)
        if problem is not None:
            front.bad_signatures.append(problem)
            return _s3_error(403, "SignatureDoesNotMatch")
        return front.answer(request)

    async with moto_proxy(moto_endpoint, intercept) as url:
        front.url = url
        yield front


async def _reader_for(endpoint: str) -> AsyncIterator[S3LogReader]:
    session = get_session()
    async with (
        session.create_client("s3", region_name="us-east-1", endpoint_url=endpoint) as s3,
        S3LogReader(s3, session, attempts=3) as reader,
    ):
        yield reader


def _records(tag: str, n: int) -> list[dict[str, Any]]:
    return [{**r, "eventID": f"{tag}-{i}"} for i, r in enumerate(fixture_records()[:n])]


async def test_reads_directly_after_the_first_read_with_valid_signatures(
    s3_front: S3Front, moto_endpoint: str, unique: str
) -> None:
    trail = await asyncio.to_thread(MotoTrail.create, moto_endpoint, unique)
    keys = [log_key(i) for i in range(5)]
    odd = "AWSLogs/odd names/ü+~ é.json.gz"
    plain = log_key(9).removesuffix(".gz")
    for i, key in enumerate([*keys, odd]):
        await trail.put(key, log_bytes(_records(f"f{i}", 3)))
    await trail.put(plain, log_bytes(_records("plain", 2), compress=False))
    big = [{**fixture_records()[0], "eventID": f"big-{i}"} for i in range(400)]
    await trail.put(log_key(10), log_bytes(big))

    async for reader in _reader_for(s3_front.url):
        first = await reader.read(S3Object(trail.bucket, keys[0]))
        rest = await asyncio.gather(
            *(reader.read(S3Object(trail.bucket, k)) for k in [*keys[1:], odd, plain])
        )
        whole = await reader.read(S3Object(trail.bucket, log_key(10)))
        assert (reader.botocore_reads, reader.direct_reads) == (1, 7)
    assert s3_front.bad_signatures == []
    assert s3_front.direct_gets == 7 and s3_front.botocore_gets == 1
    ids = [orjson.loads(v)["event_id"] for p in [first, *rest] for _, v in p.messages]
    assert sorted(ids) == sorted(
        [f"f{i}-{j}" for i in range(6) for j in range(3)] + ["plain-0", "plain-1"]
    )
    assert len(whole.messages) == 400


async def test_missing_object_and_bad_gzip_are_clear(
    s3_front: S3Front, moto_endpoint: str, unique: str
) -> None:
    trail = await asyncio.to_thread(MotoTrail.create, moto_endpoint, unique)
    await trail.put(log_key(1), log_bytes(_records("a", 1)))
    await trail.put(log_key(2), b"not gzip at all")
    async for reader in _reader_for(s3_front.url):
        await reader.read(S3Object(trail.bucket, log_key(1)))  # learns the bucket
        with pytest.raises(ClientError) as gone:
            await reader.read(S3Object(trail.bucket, log_key(3)))
        assert gone.value.response["Error"]["Code"] == "NoSuchKey"
        with pytest.raises(RejectedFileError, match="not valid gzip"):
            await reader.read(S3Object(trail.bucket, log_key(2)))
        assert reader.botocore_reads == 1
    assert s3_front.direct_gets == 2


async def test_throttling_is_retried_then_reported(
    s3_front: S3Front, moto_endpoint: str, unique: str
) -> None:
    trail = await asyncio.to_thread(MotoTrail.create, moto_endpoint, unique)
    for i in range(3):
        await trail.put(log_key(i), log_bytes(_records(f"t{i}", 2)))
    slow_downs = {"left": 2}

    def throttle(request: web.Request) -> web.Response | None:
        if request.raw_path.endswith(log_key(2)):
            return _s3_error(503, "SlowDown")  # always
        if slow_downs["left"] > 0:
            slow_downs["left"] -= 1
            return _s3_error(503, "SlowDown")
        return None

    s3_front.answer = throttle
    async for reader in _reader_for(s3_front.url):
        await reader.read(S3Object(trail.bucket, log_key(0)))  # learns the bucket
        parsed = await reader.read(S3Object(trail.bucket, log_key(1)))
        assert len(parsed.messages) == 2 and slow_downs["left"] == 0
        before = s3_front.direct_gets
        with pytest.raises(ClientError) as throttled:
            await reader.read(S3Object(trail.bucket, log_key(2)))
        assert throttled.value.response["Error"]["Code"] == "SlowDown"
        assert s3_front.direct_gets - before == 3  # attempts=3, then the error


async def test_expired_or_refused_credentials_are_an_error_not_a_skip(
    s3_front: S3Front, moto_endpoint: str, unique: str
) -> None:
    trail = await asyncio.to_thread(MotoTrail.create, moto_endpoint, unique)
    for i in range(3):
        await trail.put(log_key(i), log_bytes(_records(f"e{i}", 1)))
    answers = {log_key(1): (400, "ExpiredToken"), log_key(2): (403, "AccessDenied")}

    def refuse(request: web.Request) -> web.Response | None:
        for key, (status, code) in answers.items():
            if request.raw_path.endswith(key):
                return _s3_error(status, code)
        return None

    s3_front.answer = refuse
    async for reader in _reader_for(s3_front.url):
        await reader.read(S3Object(trail.bucket, log_key(0)))
        for key, (_, code) in answers.items():
            with pytest.raises(ClientError) as refused:
                await reader.read(S3Object(trail.bucket, key))
            assert refused.value.response["Error"]["Code"] == code


async def test_a_region_redirect_moves_the_bucket_back_to_botocore(
    s3_front: S3Front, moto_endpoint: str, unique: str
) -> None:
    trail = await asyncio.to_thread(MotoTrail.create, moto_endpoint, unique)
    for i in range(3):
        await trail.put(log_key(i), log_bytes(_records(f"r{i}", 1)))
    s3_front.answer = lambda request: _s3_error(
        400, "AuthorizationHeaderMalformed", **{"x-amz-bucket-region": "eu-west-1"}
    )
    async for reader in _reader_for(s3_front.url):
        for i in range(3):
            parsed = await reader.read(S3Object(trail.bucket, log_key(i)))
            assert len(parsed.messages) == 1
        assert (reader.direct_reads, reader.botocore_reads) == (0, 3)
    assert s3_front.direct_gets == 1  # tried once, then botocore for that bucket


async def test_gzip_content_encoding_is_not_undone_twice(
    s3_front: S3Front, moto_endpoint: str, unique: str
) -> None:
    trail = await asyncio.to_thread(MotoTrail.create, moto_endpoint, unique)
    body = log_bytes(_records("ce", 2))
    for key in (log_key(0), log_key(1)):
        await asyncio.to_thread(
            trail.s3.put_object,
            Bucket=trail.bucket,
            Key=key,
            Body=body,
            ContentEncoding="gzip",
            ContentType="application/json",
        )
    async for reader in _reader_for(s3_front.url):
        for key in (log_key(0), log_key(1)):
            parsed = await reader.read(S3Object(trail.bucket, key))
            assert len(parsed.messages) == 2
        assert reader.direct_reads == 1
    assert gzip.decompress(body)  # the stored object is the gzip file itself
