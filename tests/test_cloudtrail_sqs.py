"""The tailer's SQS calls without botocore per call: the SigV4 signature of a JSON-protocol
POST against botocore's own signer (byte for byte), and :class:`SqsQueue` against moto through
a proxy that checks every direct call's signature with botocore (moto checks none) and answers
as SQS does when it throttles, refuses or rejects a signature."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import botocore.auth
import orjson
import pytest
from aiobotocore.session import get_session
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials
from botocore.exceptions import ClientError
from yarl import URL

from cloudinv.producers.sigv4 import Credentials, learned_endpoint, sign_headers
from cloudinv.producers.sqs import SqsQueue, SqsUnreachable
from tests.cloudtrail_helpers import MotoTrail

MOMENT = datetime(2024, 5, 1, 12, 34, 56, tzinfo=UTC)
GONE = "AWS.SimpleQueueService.NonExistentQueue"


@pytest.mark.parametrize("token", [None, "FwoGZXIvYXdzE//session+token=="])
@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://sqs.eu-west-1.amazonaws.com/", "sqs.eu-west-1.amazonaws.com"),
        ("http://127.0.0.1:4566/", "127.0.0.1:4566"),
    ],
)
def test_json_protocol_post_is_signed_as_botocore_signs_it(
    url: str, host: str, token: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    body = orjson.dumps(
        {"QueueUrl": "https://sqs.eu-west-1.amazonaws.com/1/q", "MaxNumberOfMessages": 10}
    )
    headers = {
        "Content-Type": "application/x-amz-json-1.0",
        "X-Amz-Target": "AmazonSQS.ReceiveMessage",
    }
    mine = sign_headers(
        "POST",
        host,
        "/",
        "",
        headers,
        credentials=credentials,
        region="eu-west-1",
        service="sqs",
        payload_sha256=hashlib.sha256(body).hexdigest(),
        content_sha256_header=False,
        now=MOMENT,
    )
    assert "X-Amz-Content-SHA256" not in mine  # botocore sends none to SQS either
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: MOMENT)
    request = AWSRequest(method="POST", url=url, data=body, headers=headers)
    creds = ReadOnlyCredentials(credentials.access_key, credentials.secret_key, token)
    SigV4Auth(creds, "sqs", "eu-west-1").add_auth(request)
    assert mine == {**dict(request.headers.items()), "Host": host}


def test_the_endpoint_is_learned_only_from_a_sigv4_request_without_a_query() -> None:
    signed = "AWS4-HMAC-SHA256 Credential=AK/20240501/eu-west-1/sqs/aws4_request, Sign..."
    found = learned_endpoint("https://sqs.eu-west-1.amazonaws.com:443/", signed)
    assert found is not None
    assert (found.prefix, found.host, found.path, found.region, found.service) == (
        "https://sqs.eu-west-1.amazonaws.com:443/",
        "sqs.eu-west-1.amazonaws.com",
        "/",
        "eu-west-1",
        "sqs",
    )
    assert learned_endpoint("https://sqs.eu-west-1.amazonaws.com/?Action=X", signed) is None
    assert learned_endpoint("https://sqs.eu-west-1.amazonaws.com/", "") is None


# --- a checking proxy in front of moto -------------------------------------------------------


@dataclass
class SqsFront:
    url: str = ""
    direct: list[str] = field(default_factory=list)
    """X-Amz-Target of each direct (not botocore) call."""
    botocore: list[str] = field(default_factory=list)
    bad_signatures: list[str] = field(default_factory=list)
    query_mode: set[str] = field(default_factory=set)
    """``x-amzn-query-mode`` of the direct calls (botocore sends ``true``)."""
    answer: Callable[[str], web.Response | None] = lambda target: None


def _sqs_error(status: int, type_: str, query_code: str | None = None) -> web.Response:
    headers = {"x-amzn-query-error": f"{query_code};Sender"} if query_code else {}
    return web.Response(
        status=status,
        body=orjson.dumps({"__type": f"com.amazonaws.sqs#{type_}", "message": f"{type_} (test)"}),
        content_type="application/x-amz-json-1.0",
        headers=headers,
    )


def _check_signature(request: web.Request, body: bytes) -> str | None:
    authorization = request.headers.get("Authorization", "")
    fields = dict(
        part.strip().split("=", 1)
        for part in authorization.removeprefix("AWS4-HMAC-SHA256 ").split(",")
    )
    _, _day, region, service, _ = fields["Credential"].split("/")
    signed = fields["SignedHeaders"].split(";")
    aws = AWSRequest(
        method=request.method, url=f"http://{request.host}{request.raw_path}", data=body
    )
    for name in signed:
        aws.headers[name] = request.headers[name]
    aws.context["timestamp"] = request.headers["X-Amz-Date"]
    # "testing" is the secret every test uses (conftest); moto itself checks nothing.
    auth = SigV4Auth(ReadOnlyCredentials("testing", "testing", None), service, region)
    expected = auth.signature(auth.string_to_sign(aws, auth.canonical_request(aws)), aws)
    if fields["Signature"] != expected or "host" not in signed or "x-amz-target" not in signed:
        return f"{request.headers.get('X-Amz-Target')}: signature {fields['Signature']}"
    return None


@pytest.fixture
async def sqs_front(moto_endpoint: str) -> AsyncIterator[SqsFront]:
    front = SqsFront()
    hop_by_hop = {"host", "content-length", "transfer-encoding", "connection"}

    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        target = request.headers.get("X-Amz-Target", "")
        if "botocore" in request.headers.get("User-Agent", "").lower():
            front.botocore.append(target)
        else:
            front.direct.append(target)
            front.query_mode.add(request.headers.get("x-amzn-query-mode", ""))
            problem = _check_signature(request, body)
            if problem is not None:
                front.bad_signatures.append(problem)
                return _sqs_error(400, "SignatureDoesNotMatch")
            replaced = front.answer(target)
            if replaced is not None:
                return replaced
        headers = {k: v for k, v in request.headers.items() if k.lower() not in hop_by_hop}
        async with client.request(
            request.method,
            URL(moto_endpoint + request.raw_path, encoded=True),
            headers=headers,
            data=body,
            allow_redirects=False,
        ) as upstream:
            answer = await upstream.read()
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in hop_by_hop}
            return web.Response(status=upstream.status, body=answer, headers=out)

    client = aiohttp.ClientSession(auto_decompress=False)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    front.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield front
    finally:
        await runner.cleanup()
        await client.close()


async def _drop_test_event(trail: MotoTrail) -> None:
    """Delete the bucket notification's s3:TestEvent so the queue holds only the test's."""

    def drop() -> None:
        for message in trail.sqs.receive_message(
            QueueUrl=trail.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        ).get("Messages", []):
            if "s3:TestEvent" in message["Body"]:
                trail.sqs.delete_message(
                    QueueUrl=trail.queue_url, ReceiptHandle=message["ReceiptHandle"]
                )
            else:
                trail.sqs.change_message_visibility(
                    QueueUrl=trail.queue_url,
                    ReceiptHandle=message["ReceiptHandle"],
                    VisibilityTimeout=0,
                )

    await asyncio.to_thread(drop)


async def _queue_for(endpoint: str, queue_url: str) -> AsyncIterator[SqsQueue]:
    session = get_session()
    async with (
        session.create_client("sqs", region_name="us-east-1", endpoint_url=endpoint) as sqs,
        SqsQueue(sqs, session, queue_url, attempts=3) as queue,
    ):
        yield queue


async def test_receive_delete_and_visibility_go_directly_with_valid_signatures(
    sqs_front: SqsFront, moto_endpoint: str, unique: str
) -> None:
    trail = await asyncio.to_thread(MotoTrail.create, moto_endpoint, unique)
    for i in range(12):
        await trail.send(orjson.dumps({"n": i, "text": "ü + é / ~"}))
    async for queue in _queue_for(sqs_front.url, trail.queue_url):
        attributes = await queue.attributes(["VisibilityTimeout"])
        assert attributes["Attributes"]["VisibilityTimeout"] == "30"
        assert queue.direct
        received: list[dict[str, Any]] = []
        while len(received) < 13:  # and the s3:TestEvent of the bucket's notification
            answer = await queue.receive(max_messages=10, wait_time_s=1, visibility_timeout_s=30)
            received += answer.get("Messages", [])
        numbers = [orjson.loads(m["Body"]).get("n") for m in received]
        assert sorted(n for n in numbers if n is not None) == list(range(12))
        # One goes back at once and is received again; the rest are deleted in batches.
        await queue.change_visibility(received[0]["ReceiptHandle"], 0)
        again = await queue.receive(max_messages=10, wait_time_s=2)
        assert [m["MessageId"] for m in again["Messages"]] == [received[0]["MessageId"]]
        extended = await queue.change_visibility_batch(
            [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 60}
                for i, m in enumerate(received[1:3])
            ]
        )
        assert len(extended["Successful"]) == 2 and not extended.get("Failed")
        handles = [again["Messages"][0]["ReceiptHandle"]]
        handles += [m["ReceiptHandle"] for m in received[1:]]
        for start in range(0, len(handles), 10):
            chunk = handles[start : start + 10]
            deleted = await queue.delete_batch(
                [{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(chunk)]
            )
            assert len(deleted["Successful"]) == len(chunk) and not deleted.get("Failed")
        assert (await queue.receive(max_messages=10, wait_time_s=0)).get("Messages", []) == []
        assert queue.botocore_calls == 1  # GetQueueAttributes only
    assert sqs_front.bad_signatures == []
    assert sqs_front.query_mode == {"true"}
    assert sqs_front.botocore == ["AmazonSQS.GetQueueAttributes"]
    assert "AmazonSQS.DeleteMessageBatch" in sqs_front.direct


async def test_throttling_is_retried_and_refusals_are_clear_errors(
    sqs_front: SqsFront, moto_endpoint: str, unique: str
) -> None:
    trail = await asyncio.to_thread(MotoTrail.create, moto_endpoint, unique)
    await trail.send("hello")
    await _drop_test_event(trail)
    throttled = {"left": 2}
    refusal: dict[str, Callable[[], web.Response] | None] = {"next": None}

    def answer(target: str) -> web.Response | None:
        if refusal["next"] is not None:
            return refusal["next"]()  # a new response each time: one is sent only once
        if throttled["left"] > 0:
            throttled["left"] -= 1
            return _sqs_error(400, "RequestThrottled", "RequestThrottled")
        return None

    sqs_front.answer = answer
    async for queue in _queue_for(sqs_front.url, trail.queue_url):
        await queue.attributes(["VisibilityTimeout"])
        got = await queue.receive(max_messages=10, wait_time_s=1)
        assert got["Messages"][0]["Body"] == "hello" and throttled["left"] == 0

        cases = [
            (lambda: _sqs_error(403, "AccessDeniedException", "AccessDenied"), "AccessDenied", 1),
            (lambda: _sqs_error(400, "ExpiredTokenException"), "ExpiredTokenException", 3),
            (lambda: _sqs_error(503, "ServiceUnavailable"), "ServiceUnavailable", 3),
            (lambda: _sqs_error(400, "QueueDoesNotExist", GONE), GONE, 1),
        ]  # fmt: skip
        for respond, code, attempts in cases:
            refusal["next"] = respond
            before = len(sqs_front.direct)
            with pytest.raises(ClientError) as refused:
                await queue.receive(max_messages=10, wait_time_s=0)
            assert refused.value.response["Error"]["Code"] == code
            assert f"({code}) when calling the ReceiveMessage operation" in str(refused.value)
            assert len(sqs_front.direct) - before == attempts  # attempts=3 for what may pass


async def test_a_rejected_signature_moves_the_queue_back_to_botocore(
    sqs_front: SqsFront, moto_endpoint: str, unique: str
) -> None:
    trail = await asyncio.to_thread(MotoTrail.create, moto_endpoint, unique)
    await trail.send("one")
    await _drop_test_event(trail)
    sqs_front.answer = lambda target: _sqs_error(400, "SignatureDoesNotMatch")
    async for queue in _queue_for(sqs_front.url, trail.queue_url):
        await queue.attributes(["VisibilityTimeout"])
        got = await queue.receive(max_messages=10, wait_time_s=1)
        assert got["Messages"][0]["Body"] == "one"
        await queue.delete_batch(
            [{"Id": "0", "ReceiptHandle": got["Messages"][0]["ReceiptHandle"]}]
        )
        assert not queue.direct and queue.direct_calls == 0
    assert len(sqs_front.direct) == 1  # tried once, then botocore
    assert sqs_front.botocore[-2:] == ["AmazonSQS.ReceiveMessage", "AmazonSQS.DeleteMessageBatch"]


async def test_an_unreachable_endpoint_is_retried_then_raised(
    moto_endpoint: str, unique: str
) -> None:
    trail = await asyncio.to_thread(MotoTrail.create, moto_endpoint, unique)

    # A front that only lets GetQueueAttributes through, then drops every connection.
    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if request.headers.get("X-Amz-Target") != "AmazonSQS.GetQueueAttributes":
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=500)
        async with (
            aiohttp.ClientSession() as client,
            client.post(
                moto_endpoint + "/",
                data=body,
                headers={
                    k: v
                    for k, v in request.headers.items()
                    if k.lower() not in ("host", "content-length")
                },
            ) as upstream,
        ):
            return web.Response(
                status=upstream.status,
                body=await upstream.read(),
                content_type="application/x-amz-json-1.0",
            )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        async for queue in _queue_for(
            f"http://127.0.0.1:{runner.addresses[0][1]}", trail.queue_url
        ):
            await queue.attributes(["VisibilityTimeout"])
            assert queue.direct
            with pytest.raises(SqsUnreachable, match="cannot call SQS ReceiveMessage"):
                await queue.receive(max_messages=10, wait_time_s=0)
            assert queue.direct_calls == 0
    finally:
        await runner.cleanup()
