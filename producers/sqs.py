"""One SQS queue's hot calls (receive, delete, change visibility) as signed plain HTTP.

A CloudTrail tailer makes two SQS calls per ten small log files (a receive and a delete
batch); through botocore each costs a few milliseconds of CPU (request building, user agent,
hooks, signing, parsing) — as much as the files themselves. SQS speaks the AWS JSON 1.0
protocol (``X-Amz-Target: AmazonSQS.ReceiveMessage``, a JSON body, a JSON answer shaped as
botocore returns it), so :class:`SqsQueue` sends those calls as aiohttp POSTs signed with
:mod:`cloudinv.producers.sigv4`, and keeps botocore for what it does best:

- **Where to send them.** :meth:`SqsQueue.attributes` (the tailer's first call, which checks
  the queue) goes through the botocore client; its final request (endpoint rules, custom
  endpoints such as moto's, FIPS/dual-stack settings) gives the URL, ``Host`` and signing
  region the direct calls reuse. If that request was not a SigV4-signed JSON call (an older
  botocore speaking the query protocol), every call stays on botocore.
- **Credentials.** The session's own credential provider (``AioSession.get_credentials``):
  refreshable credentials are refreshed before they expire.
- **The odd answers.** Throttling, server errors, an expired token and broken connections are
  retried a few times with backoff (:func:`cloudinv.core.retry.retry`, as botocore's standard
  mode does). A signature SQS does not accept moves the queue back to botocore (logged once).
  Other errors are raised as botocore's ``ClientError`` with SQS's error code (the query-mode
  code, as botocore reports it), and a connection that still fails as :class:`SqsUnreachable`,
  so callers handle both paths alike.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from typing import Any

import aiohttp
import orjson
from botocore.exceptions import ClientError

from cloudinv.producers.sigv4 import (
    Credentials,
    DirectCalls,
    Endpoint,
    learned_endpoint,
    sign_headers,
)

__all__ = ["SqsQueue", "SqsUnreachable"]

log = logging.getLogger(__name__)

_CONTENT_TYPE = "application/x-amz-json-1.0"
_RETRIED_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "RequestThrottled",
        "RequestThrottledException",
        "ServiceUnavailable",
        "InternalError",
        "InternalFailure",
        "ExpiredToken",
        "ExpiredTokenException",
        "RequestTimeout",
    }
)
_BACK_TO_BOTOCORE = frozenset(
    {"SignatureDoesNotMatch", "IncompleteSignature", "InvalidSignatureException"}
)
_BOTOCORE_METHODS = {
    "ReceiveMessage": "receive_message",
    "DeleteMessageBatch": "delete_message_batch",
    "ChangeMessageVisibility": "change_message_visibility",
    "ChangeMessageVisibilityBatch": "change_message_visibility_batch",
}


class SqsUnreachable(OSError):
    """SQS could not be reached (or broke the connection) after retries: try again later."""


class _Fallback(Exception):
    """SQS did not accept the direct request's signature: botocore from now on."""


class SqsQueue(DirectCalls):
    """The calls a tailer makes on one queue; see the module docstring. Use as
    ``async with``; ``sqs`` is an aiobotocore SQS client of ``session`` (kept open by the
    caller). Every method returns what the botocore call of the same name returns."""

    unreachable = SqsUnreachable
    retried_codes = _RETRIED_CODES

    def __init__(
        self,
        sqs: Any,
        session: Any,
        queue_url: str,
        *,
        connections: int = 16,
        attempts: int = 5,
        read_timeout_s: float = 60.0,
    ) -> None:
        super().__init__(
            sqs,
            session,
            "before-send.sqs.GetQueueAttributes",
            connections=connections,
            read_timeout_s=read_timeout_s,
            attempts=attempts,
        )
        self._sqs = sqs
        self.queue_url = queue_url
        self._endpoint: Endpoint | None = None
        self._learning = False
        self.direct_calls = 0
        self.botocore_calls = 0

    @property
    def direct(self) -> bool:
        """Whether the hot calls go directly (learned from :meth:`attributes`)."""
        return self._endpoint is not None and self._credentials is not None

    # -- the calls ------------------------------------------------------------------------------

    async def attributes(self, names: list[str]) -> dict[str, Any]:
        """``GetQueueAttributes`` through botocore (once, at start), which also teaches where
        the direct calls go."""
        self._learning = True
        try:
            response: dict[str, Any] = await self._sqs.get_queue_attributes(
                QueueUrl=self.queue_url, AttributeNames=names
            )
        finally:
            self._learning = False
        self.botocore_calls += 1
        return response

    async def receive(
        self, *, max_messages: int, wait_time_s: int, visibility_timeout_s: int | None = None
    ) -> dict[str, Any]:
        params: dict[str, Any] = {
            "QueueUrl": self.queue_url,
            "MaxNumberOfMessages": max_messages,
            "WaitTimeSeconds": wait_time_s,
        }
        if visibility_timeout_s is not None:
            params["VisibilityTimeout"] = visibility_timeout_s
        return await self._call("ReceiveMessage", params)

    async def delete_batch(self, entries: list[dict[str, Any]]) -> dict[str, Any]:
        return await self._call(
            "DeleteMessageBatch", {"QueueUrl": self.queue_url, "Entries": entries}
        )

    async def change_visibility(self, receipt_handle: str, timeout_s: int) -> dict[str, Any]:
        return await self._call(
            "ChangeMessageVisibility",
            {
                "QueueUrl": self.queue_url,
                "ReceiptHandle": receipt_handle,
                "VisibilityTimeout": timeout_s,
            },
        )

    async def change_visibility_batch(self, entries: list[dict[str, Any]]) -> dict[str, Any]:
        return await self._call(
            "ChangeMessageVisibilityBatch", {"QueueUrl": self.queue_url, "Entries": entries}
        )

    # -- direct, or botocore ---------------------------------------------------------------------

    def _capture(self, request: Any, **_: Any) -> None:
        if not self._learning:
            return
        target = request.headers.get("X-Amz-Target", b"")
        if isinstance(target, bytes):
            target = target.decode("latin-1")
        endpoint = learned_endpoint(str(request.url), request.headers.get("Authorization", b""))
        # The query protocol (an older botocore) is not what the direct calls speak.
        self._endpoint = endpoint if target.startswith("AmazonSQS.") else None

    async def _call(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        endpoint = self._endpoint
        if endpoint is not None and self._credentials is not None:
            body = orjson.dumps(params)
            try:
                answer = await self._with_retries(lambda: self._post(endpoint, action, body))
            except _Fallback as exc:
                if self._endpoint is not None:
                    log.info(
                        "sqs: calling %s through botocore from now on (%s)", self.queue_url, exc
                    )
                self._endpoint = None
            else:
                self.direct_calls += 1
                return answer
        self.botocore_calls += 1
        response: dict[str, Any] = await getattr(self._sqs, _BOTOCORE_METHODS[action])(**params)
        return response

    async def _post(self, endpoint: Endpoint, action: str, body: bytes) -> dict[str, Any]:
        assert self._http is not None, "SqsQueue is used as async with"
        frozen = await self._credentials.get_frozen_credentials()
        headers = sign_headers(
            "POST",
            endpoint.host,
            endpoint.path,
            "",
            {
                "Content-Type": _CONTENT_TYPE,
                "X-Amz-Target": f"AmazonSQS.{action}",
                # As botocore sends it: errors then carry the query-protocol code too.
                "x-amzn-query-mode": "true",
            },
            credentials=Credentials(frozen.access_key, frozen.secret_key, frozen.token),
            region=endpoint.region,
            service=endpoint.service,
            payload_sha256=hashlib.sha256(body).hexdigest(),
            content_sha256_header=False,
            keys=self._keys,
        )
        try:
            async with self._http.post(
                endpoint.prefix, data=body, headers=headers, allow_redirects=False
            ) as response:
                answer = await response.read()
                if response.status == 200:
                    return orjson.loads(answer) if answer else {}
                status, response_headers = response.status, response.headers
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SqsUnreachable(f"cannot call SQS {action} on {self.queue_url}: {exc!r}") from exc
        except orjson.JSONDecodeError as exc:
            raise SqsUnreachable(f"SQS {action} answered with a body that is not JSON") from exc
        code, message = _error_of(status, response_headers, answer)
        if code in _BACK_TO_BOTOCORE:
            raise _Fallback(f"SQS answered {status} {code}")
        raise ClientError(
            {
                "Error": {"Code": code, "Message": message},
                "ResponseMetadata": {
                    "HTTPStatusCode": status,
                    "HTTPHeaders": {k.lower(): v for k, v in response_headers.items()},
                },
            },
            action,
        )


def _error_of(status: int, headers: Any, body: bytes) -> tuple[str, str]:
    """SQS's error code and message, as botocore reads them (the query-mode code first)."""
    doc: Any = {}
    with contextlib.suppress(orjson.JSONDecodeError):
        doc = orjson.loads(body) if body else {}
    if not isinstance(doc, dict):
        doc = {}
    code = str(doc.get("__type") or status)
    code = code.split(":", 1)[0].rsplit("#", 1)[-1]
    query_error = str(headers.get("x-amzn-query-error", ""))
    query_code, _, kind = query_error.partition(";")
    if query_code and kind:
        code = query_code
    message = str(doc.get("message") or doc.get("Message") or "")
    return code, message
