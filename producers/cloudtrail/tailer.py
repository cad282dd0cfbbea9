"""Tailing CloudTrail from SQS into the CloudTrail topic.

Two kinds of SQS message are understood, on the same or separate queues:

- S3 event notifications for new log files (directly, or wrapped by SNS; CloudTrail's own
  SNS notification ``{"s3Bucket", "s3ObjectKey": [...]}`` too). Keys are URL-decoded;
  ``s3:TestEvent`` is skipped, and so are digest files unless ``verify_digests`` is set, in
  which case each is checked (:mod:`cloudinv.producers.cloudtrail.digest`). Each log file is
  read from S3 (bounded concurrency; a signed plain GET, :mod:`cloudinv.producers.cloudtrail.
  s3logs`), gunzipped when it is gzip, parsed, normalized and published.
- CloudTrail events delivered by EventBridge: the body is an EventBridge envelope whose
  ``detail`` is the CloudTrail record.

A message is deleted only after the stream worker committed past every event it led to (the
end-to-end acknowledgement, :mod:`cloudinv.producers.cloudtrail.ack`); while it waits, its
visibility is extended, and if the broker may have lost its events it is made visible again
at once and replayed. Deletes and extensions go in batches of ten, several receives are in
flight at once, and a message's events are not kept while it waits: files are pipelined.
Receives, deletes and extensions are signed plain HTTP calls (:mod:`cloudinv.producers.sqs`),
not botocore calls: botocore's CPU per call cost as much as the small files themselves. A
file that is not
valid gzip or JSON (or an S3 object that no longer exists, or a body that is no known
message) is recorded in the :class:`~cloudinv.producers.cloudtrail.logfile.RejectionLog` and
skipped, and its message is deleted so it does not come back forever; the rest of the batch goes on.
A transient failure (S3 or Kafka unreachable) leaves the message in the queue, to be
received again after its visibility timeout — every sink is idempotent by event id.

Entry point for the runtime: :func:`tail` (or :class:`CloudTrailTailer` for more control).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import orjson
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import BotoCoreError, ClientError

from cloudinv.core.errors import CloudinvError
from cloudinv.producers.cloudtrail.ack import AckLost, CommitWatch, Offsets
from cloudinv.producers.cloudtrail.digest import (
    CloudTrailPublicKeys,
    DigestUnavailableError,
    DigestVerifier,
    PublicKeys,
)
from cloudinv.producers.cloudtrail.logfile import (
    ParsedLog,
    RejectedFileError,
    RejectionLog,
    encode_records,
    is_digest_key,
)
from cloudinv.producers.cloudtrail.normalize import unwrap_eventbridge
from cloudinv.producers.cloudtrail.publish import CloudTrailPublisher
from cloudinv.producers.cloudtrail.s3logs import S3LogReader, S3Object
from cloudinv.producers.sqs import SqsQueue, SqsUnreachable

__all__ = [
    "CloudTrailTailer",
    "DigestObject",
    "InlineRecords",
    "S3Object",
    "Skip",
    "TailerConfig",
    "TailerError",
    "TailerStats",
    "Unrecognized",
    "classify_message",
    "tail",
]

log = logging.getLogger(__name__)

_GONE = frozenset({"NoSuchKey", "NoSuchBucket", "404"})
"""S3 errors that will not fix themselves: the file is recorded as rejected."""

_SQS_ERRORS = (ClientError, BotoCoreError, SqsUnreachable)
"""What an SQS call raises when SQS says no or cannot be reached (after retries)."""


# --- what a message asks for ---------------------------------------------------------------


@dataclass(frozen=True)
class DigestObject:
    """A CloudTrail digest file to check (only when digests are verified)."""

    bucket: str
    key: str


@dataclass(frozen=True)
class InlineRecords:
    """CloudTrail records carried in the message itself (EventBridge)."""

    records: list[dict[str, Any]]
    source: str


@dataclass(frozen=True)
class Skip:
    reason: str


@dataclass(frozen=True)
class Unrecognized:
    reason: str


Work = S3Object | DigestObject | InlineRecords | Skip | Unrecognized


def classify_message(
    body: str | bytes, message_id: str = "?", *, verify_digests: bool = False
) -> list[Work]:
    """What one SQS message body asks the tailer to do (pure; no I/O). Digest files are
    skipped, or with ``verify_digests`` checked (:class:`DigestObject`)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return [Unrecognized("message body is not JSON")]
    if not isinstance(doc, dict):
        return [Unrecognized("message body is not a JSON object")]
    # S3 → SNS → SQS (without raw delivery): the S3 document is a string in "Message".
    if doc.get("Type") == "Notification" and isinstance(doc.get("Message"), str):
        return classify_message(doc["Message"], message_id, verify_digests=verify_digests)
    if doc.get("Event") == "s3:TestEvent":
        return [Skip("s3:TestEvent")]
    if isinstance(doc.get("Records"), list):
        return [_s3_record(r, verify_digests) for r in doc["Records"]] or [Skip("no records")]
    if isinstance(doc.get("s3ObjectKey"), list) and isinstance(doc.get("s3Bucket"), str):
        # CloudTrail's own SNS notification: keys are not URL-encoded there.
        return [_object(doc["s3Bucket"], key, verify_digests) for key in doc["s3ObjectKey"]]
    if "detail-type" in doc and "detail" in doc:
        record = unwrap_eventbridge(doc)
        if record is None:
            return [
                Unrecognized(
                    f"EventBridge event {doc.get('detail-type')!r} has no CloudTrail record"
                )
            ]
        return [InlineRecords([record], source=f"eventbridge:{doc.get('id', message_id)}")]
    return [
        Unrecognized("not an S3 notification, CloudTrail SNS notification or EventBridge event")
    ]


def _s3_record(record: Any, verify_digests: bool) -> Work:
    if not isinstance(record, dict) or not isinstance(record.get("s3"), dict):
        return Unrecognized("S3 notification record without s3")
    name = str(record.get("eventName", ""))
    if not name.startswith(("ObjectCreated", "s3:ObjectCreated")):
        return Skip(f"S3 event {name}")
    try:
        bucket = record["s3"]["bucket"]["name"]
        key = unquote_plus(record["s3"]["object"]["key"])
    except (KeyError, TypeError):
        return Unrecognized("S3 notification record without bucket name or object key")
    return _object(bucket, key, verify_digests)


def _object(bucket: str, key: str, verify_digests: bool = False) -> Work:
    if is_digest_key(key):
        return DigestObject(bucket, key) if verify_digests else Skip("digest file")
    if key.endswith("/"):
        return Skip("folder marker")
    return S3Object(bucket, key)


# --- the tailer ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TailerConfig:
    queue_url: str
    region: str | None = None
    endpoint_url: str | None = None
    wait_time_s: int = 20
    """SQS long polling (0-20 s)."""
    max_messages: int = 10
    receivers: int = 8
    """Receive calls in flight at once: one SQS round trip brings at most 10 messages, so
    this bounds the messages received per round trip (an idle long poll costs nothing)."""
    max_concurrent_downloads: int = 64
    max_messages_in_flight: int = 2000
    """Messages received and not yet deleted. Their events are not kept in memory while they
    wait for the end-to-end acknowledgement (only offsets are), so this can be large: it is
    what keeps files pipelined while the worker stores and commits."""
    visibility_timeout_s: int | None = None
    """Override the queue's visibility timeout for received messages."""
    verify_digests: bool = False
    """Check each digest file that lands (its log files' SHA-256, the chain, the signature
    when CloudTrail's public key can be had) and record what is wrong as rejections."""


@dataclass
class TailerStats:
    messages: int = 0
    deleted: int = 0
    files: int = 0
    events: int = 0
    skipped: int = 0
    rejected_files: int = 0
    rejected_records: int = 0
    retried: int = 0
    """Messages left in the queue after a transient failure."""
    replayed: int = 0
    """Messages handed back to the queue because the broker may have lost their events."""
    extended: int = 0
    """Visibility extensions of messages waiting for the worker."""
    idle_polls: int = 0
    digests_checked: int = 0
    integrity_findings: int = 0
    errors: list[str] = field(default_factory=list)
    """The latest 100 errors."""


class TailerError(CloudinvError):
    """The tailer cannot run (its queue is missing or not readable)."""


class _Transient(Exception):
    """A failure that may pass: leave the message for another try."""


def _merge(into: dict[int, int], offsets: Offsets | None) -> None:
    for partition, offset in (offsets or {}).items():
        into[partition] = max(offset, into.get(partition, -1))


class CloudTrailTailer:
    """Receive, process and delete SQS messages until stopped (see module docstring).

    With ``ack`` (the runtime always passes one), a message is deleted only once the stream
    worker committed past its events; without, once the broker acknowledged them (for a
    topic no stream worker of this deployment reads)."""

    def __init__(
        self,
        config: TailerConfig,
        publisher: CloudTrailPublisher,
        rejections: RejectionLog,
        *,
        ack: CommitWatch | None = None,
        session: AioSession | None = None,
        public_keys: PublicKeys | None = None,
    ) -> None:
        self.config = config
        self.publisher = publisher
        self.rejections = rejections
        self.ack = ack
        self.stats = TailerStats()
        self._session = session or get_session()
        self._downloads = asyncio.Semaphore(config.max_concurrent_downloads)
        self._in_flight = asyncio.Semaphore(config.max_messages_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()
        self._queue: SqsQueue | None = None
        self._s3: Any = None
        self._reader: S3LogReader | None = None
        self._public_keys = public_keys
        self._verifier: DigestVerifier | None = None
        self._visibility_s = config.visibility_timeout_s or 30
        self._waiting: dict[str, tuple[str, float]] = {}
        """Message id → (receipt handle, when its visibility runs out) while it waits."""
        self._deletes: list[dict[str, Any]] = []
        self._delete_flush: asyncio.TimerHandle | None = None
        self._delete_tasks: set[asyncio.Task[None]] = set()

    @contextlib.asynccontextmanager
    async def _clients(self) -> AsyncIterator[None]:
        aio_config = AioConfig(
            retries={"mode": "standard", "max_attempts": 5},
            # The calls are the tailer's own, well-formed: validating their parameters
            # is CPU spent per file for nothing.
            parameter_validation=False,
            max_pool_connections=self.config.max_concurrent_downloads + self.config.receivers + 8,
            read_timeout=max(60, self.config.wait_time_s + 10),
        )
        common: dict[str, Any] = {
            "region_name": self.config.region,
            "endpoint_url": self.config.endpoint_url,
            "config": aio_config,
        }
        async with (
            self._session.create_client("sqs", **common) as sqs,
            self._session.create_client("s3", **common) as s3,
            S3LogReader(
                s3, self._session, connections=self.config.max_concurrent_downloads
            ) as reader,
            SqsQueue(
                sqs,
                self._session,
                self.config.queue_url,
                connections=self.config.receivers + 8,
                read_timeout_s=aio_config.read_timeout,
            ) as queue,
        ):
            self._queue, self._s3, self._reader = queue, s3, reader
            if self.config.verify_digests:
                keys = self._public_keys or CloudTrailPublicKeys(
                    self._session, endpoint_url=self.config.endpoint_url
                )
                self._verifier = DigestVerifier(s3, self.rejections, keys)
            try:
                yield
            finally:
                self._queue = self._s3 = self._reader = None
                self._verifier = None

    async def run(
        self, stop: asyncio.Event | None = None, *, until_idle: bool = False
    ) -> TailerStats:
        """Poll until ``stop`` is set (or cancelled); with ``until_idle``, return after an
        empty receive once nothing is in flight. In-flight messages finish first, except
        those still waiting for the worker: they stay in the queue and come back."""
        stop = stop or asyncio.Event()
        idle = asyncio.Event()
        async with self._clients():
            await self._check_queue()
            extender = asyncio.create_task(self._extend_visibility(stop))
            receivers = [
                asyncio.create_task(self._receive_loop(stop, idle, until_idle))
                for _ in range(max(1, self.config.receivers))
            ]
            try:
                await asyncio.gather(*receivers)
            finally:
                for task in receivers:
                    task.cancel()
                await asyncio.gather(*receivers, return_exceptions=True)
                finishing = asyncio.Event()
                finishing.set()
                await self._drain(finishing)
                extender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await extender
                await self._flush_deletes()
        return self.stats

    async def _receive_loop(
        self, stop: asyncio.Event, idle: asyncio.Event, until_idle: bool
    ) -> None:
        while not stop.is_set() and not idle.is_set():
            received = await self._receive(stop)
            if received == 0:
                self.stats.idle_polls += 1
                if until_idle:
                    await self._drain(stop)
                    if await self._receive(stop, peek=True) == 0 and not self._tasks:
                        idle.set()

    async def _check_queue(self) -> None:
        assert self._queue is not None, "used inside run()"
        try:
            attributes = await self._queue.attributes(["QueueArn", "VisibilityTimeout"])
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if "NonExistentQueue" in code or "QueueDoesNotExist" in code:
                raise TailerError(
                    f"SQS queue {self.config.queue_url} does not exist: check the CloudTrail "
                    "queue URL (and region)"
                ) from None
            raise TailerError(f"cannot use SQS queue {self.config.queue_url}: {exc}") from None
        if self.config.visibility_timeout_s is None:
            with contextlib.suppress(KeyError, TypeError, ValueError):
                self._visibility_s = int(attributes["Attributes"]["VisibilityTimeout"])
        self._visibility_s = max(self._visibility_s, 2)

    async def _drain(self, stop: asyncio.Event) -> None:
        """Wait for the messages in flight; once ``stop`` is set, those still waiting for the
        worker are given up (they stay in the queue and come back)."""
        while self._tasks:
            stopping = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({*self._tasks, stopping}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
            if stop.is_set():
                break
        if self._tasks and stop.is_set():
            # Let what is being read and published finish (seconds); abandon the waits.
            deadline = asyncio.get_running_loop().time() + 5
            while self._tasks and asyncio.get_running_loop().time() < deadline:
                waiting = [t for t in self._tasks if t.get_name() == "waiting"]
                for task in waiting:
                    task.cancel()
                await asyncio.wait(set(self._tasks), timeout=0.2)
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _receive(self, stop: asyncio.Event, *, peek: bool = False) -> int:
        assert self._queue is not None, "used inside run()"
        receive = asyncio.ensure_future(
            self._queue.receive(
                max_messages=self.config.max_messages,
                wait_time_s=0 if peek else self.config.wait_time_s,
                visibility_timeout_s=self.config.visibility_timeout_s,
            )
        )
        stopped = asyncio.ensure_future(stop.wait())
        try:
            # A stop request must not wait out a 20 s long poll.
            await asyncio.wait({receive, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        if not receive.done():
            receive.cancel()
            with contextlib.suppress(asyncio.CancelledError, *_SQS_ERRORS):
                await receive
            return 0
        try:
            response = receive.result()
        except _SQS_ERRORS as exc:
            self._note(f"receive: {exc}")
            log.warning("cloudtrail: cannot receive from %s: %s", self.config.queue_url, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=5)
            return 0
        messages = response.get("Messages", [])
        for message in messages:
            await self._in_flight.acquire()
            task = asyncio.create_task(self._handle(message))
            self._tasks.add(task)
            task.add_done_callback(self._done)
        return len(messages)

    def _note(self, error: str) -> None:
        self.stats.errors = [*self.stats.errors[-99:], error]

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._in_flight.release()
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("cloudtrail: message handling failed: %r", exc)

    async def _handle(self, message: dict[str, Any]) -> None:
        self.stats.messages += 1
        message_id = message.get("MessageId", "?")
        work = classify_message(
            message.get("Body", ""), message_id, verify_digests=self.config.verify_digests
        )
        generation = None if self.ack is None else self.ack.generation
        results: list[Offsets | BaseException | None]
        if len(work) == 1:
            # Nearly every notification names one file: no task of its own for it.
            try:
                results = [await self._do(work[0], message_id)]
            except Exception as exc:
                results = [exc]
        else:
            results = await asyncio.gather(
                *(self._do(item, message_id) for item in work), return_exceptions=True
            )
        transient = [r for r in results if isinstance(r, BaseException)]
        if transient:
            self.stats.retried += 1
            self._note(f"message {message_id}: {transient[0]}")
            log.warning(
                "cloudtrail: message %s left in the queue for a retry: %s", message_id, transient[0]
            )
            return
        offsets: dict[int, int] = {}
        for result in results:
            _merge(offsets, result)  # type: ignore[arg-type]
        if offsets and self.ack is not None:
            current = asyncio.current_task()
            if current is not None:
                current.set_name("waiting")
            self._waiting[message_id] = (
                message["ReceiptHandle"],
                time.monotonic() + self._visibility_s,
            )
            try:
                await self.ack.wait(offsets, generation)
            except AckLost as exc:
                self.stats.replayed += 1
                log.info("cloudtrail: message %s comes back for a replay: %s", message_id, exc)
                await self._release(message)
                return
            finally:
                self._waiting.pop(message_id, None)
        self._delete(message)

    async def _do(self, item: Work, message_id: str) -> Offsets | None:
        if isinstance(item, Skip):
            self.stats.skipped += 1
            log.debug("cloudtrail: skipped %s (%s)", message_id, item.reason)
        elif isinstance(item, Unrecognized):
            await self._reject(f"sqs:{message_id}", item.reason)
        elif isinstance(item, DigestObject):
            await self._verify_digest(item)
        elif isinstance(item, InlineRecords):
            parsed = await asyncio.to_thread(encode_records, item.records, item.source)
            return await self._publish(parsed)
        else:
            return await self._process_object(item)
        return None

    async def _process_object(self, obj: S3Object) -> Offsets | None:
        assert self._reader is not None, "used inside run()"
        async with self._downloads:
            try:
                parsed = await self._reader.read(obj)
            except RejectedFileError as exc:
                await self._reject(exc.source, exc.reason)
                return None
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code in _GONE:
                    await self._reject(obj.uri, f"cannot read from S3: {code}")
                    return None
                raise _Transient(f"{obj.uri}: {exc}") from exc
            except (TimeoutError, BotoCoreError, OSError) as exc:
                raise _Transient(f"{obj.uri}: {exc!r}") from exc
        self.stats.files += 1
        return await self._publish(parsed)

    async def _verify_digest(self, item: DigestObject) -> None:
        if self._verifier is None:  # pragma: no cover - classify_message needs verify_digests
            return
        try:
            findings = await self._verifier.verify_digest(item.bucket, item.key)
        except DigestUnavailableError as exc:
            raise _Transient(str(exc)) from exc
        self.stats.digests_checked += 1
        self.stats.integrity_findings += len(findings)

    async def _publish(self, parsed: ParsedLog) -> Offsets:
        if parsed.bad_records:
            self.stats.rejected_records += len(parsed.bad_records)
            await self.rejections.record(
                parsed.source,
                parsed.bad_records_reason(),
                records=len(parsed.bad_records),
            )
        offsets = await self.publisher.publish(parsed.messages)
        self.stats.events += len(parsed.messages)
        return offsets

    async def _reject(self, source: str, reason: str) -> None:
        self.stats.rejected_files += 1
        await self.rejections.record(source, reason)

    # -- deleting, extending, releasing: in batches of ten ------------------------------------

    def _delete(self, message: dict[str, Any]) -> None:
        self._deletes.append(message)
        if len(self._deletes) >= 10:
            self._start_delete_flush()
        elif self._delete_flush is None:
            loop = asyncio.get_running_loop()
            self._delete_flush = loop.call_later(0.05, self._start_delete_flush)

    def _start_delete_flush(self) -> None:
        if self._delete_flush is not None:
            self._delete_flush.cancel()
            self._delete_flush = None
        pending, self._deletes = self._deletes, []
        for start in range(0, len(pending), 10):
            task = asyncio.create_task(self._delete_batch(pending[start : start + 10]))
            self._delete_tasks.add(task)
            task.add_done_callback(self._delete_tasks.discard)

    async def _flush_deletes(self) -> None:
        while self._deletes or self._delete_tasks:
            self._start_delete_flush()
            await asyncio.gather(*list(self._delete_tasks), return_exceptions=True)

    async def _delete_batch(self, messages: list[dict[str, Any]]) -> None:
        entries = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
        ]
        assert self._queue is not None, "used inside run()"
        try:
            response = await self._queue.delete_batch(entries)
        except _SQS_ERRORS as exc:
            # Received again later; the sinks are idempotent.
            self._note(f"delete: {exc}")
            log.warning("cloudtrail: cannot delete %d message(s): %s", len(messages), exc)
            return
        failed = response.get("Failed", [])
        self.stats.deleted += len(messages) - len(failed)
        if failed:
            self._note(f"delete: {failed[0]}")
            log.warning("cloudtrail: %d message(s) not deleted: %s", len(failed), failed[0])

    async def _release(self, message: dict[str, Any]) -> None:
        """Make a message visible again at once, to be received and replayed."""
        assert self._queue is not None, "used inside run()"
        try:
            await self._queue.change_visibility(message["ReceiptHandle"], 0)
        except _SQS_ERRORS as exc:
            # It comes back when its visibility runs out instead.
            log.info("cloudtrail: cannot release message early: %s", exc)

    async def _extend_visibility(self, stop: asyncio.Event) -> None:
        """Keep the messages that wait for the worker invisible, in batches of ten."""
        every = max(self._visibility_s / 3, 0.5)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
            now = time.monotonic()
            due = [
                (mid, handle)
                for mid, (handle, until) in self._waiting.items()
                if until - now < self._visibility_s / 2
            ]
            for start in range(0, len(due), 10):
                chunk = due[start : start + 10]
                entries = [
                    {"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": self._visibility_s}
                    for i, (_, h) in enumerate(chunk)
                ]
                assert self._queue is not None, "used inside run()"
                try:
                    response = await self._queue.change_visibility_batch(entries)
                except _SQS_ERRORS as exc:
                    log.warning("cloudtrail: cannot extend message visibility: %s", exc)
                    continue
                failed = {f.get("Id") for f in response.get("Failed", [])}
                for i, (mid, handle) in enumerate(chunk):
                    if str(i) not in failed and mid in self._waiting:
                        self._waiting[mid] = (handle, time.monotonic() + self._visibility_s)
                        self.stats.extended += 1


async def tail(
    queue_url: str,
    *,
    kafka_client_kwargs: dict[str, Any],
    topic_prefix: str,
    consumer_group: str | None,
    data_dir: Path | None,
    endpoint_url: str | None = None,
    region: str | None = None,
    stop: asyncio.Event | None = None,
    until_idle: bool = False,
    **options: Any,
) -> TailerStats:
    """Run a tailer with its own Kafka producer until ``stop`` is set or the task is
    cancelled. Messages are deleted once ``consumer_group`` (the stream workers' group)
    committed past their events; ``None`` only for a topic no worker of ours reads.
    ``options`` are further :class:`TailerConfig` fields."""
    config = TailerConfig(queue_url=queue_url, region=region, endpoint_url=endpoint_url, **options)
    async with contextlib.AsyncExitStack() as stack:
        publisher = await stack.enter_async_context(
            CloudTrailPublisher(kafka_client_kwargs, topic_prefix)
        )
        ack = None
        if consumer_group is not None:
            ack = await stack.enter_async_context(
                CommitWatch(kafka_client_kwargs, publisher.topic, consumer_group)
            )
        tailer = CloudTrailTailer(config, publisher, RejectionLog(data_dir), ack=ack)
        return await tailer.run(stop, until_idle=until_idle)
