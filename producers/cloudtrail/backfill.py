"""Backfilling CloudTrail: log files already in S3 (by date range) or on disk → the topic.

Local: every ``.json`` and ``.json.gz`` file under a directory, digest files (by folder or by
name) skipped. S3 (:mod:`cloudinv.producers.cloudtrail.backfill_s3`) builds its sources and
runs them through the same :class:`Backfill`.

Files are pipelined: ``concurrency`` of them are read and parsed at once, publishing does not
wait for other files, and thousands may wait for their acknowledgement together. A file is
marked done only once the stream worker committed past its events (the end-to-end
acknowledgement, :mod:`cloudinv.producers.cloudtrail.ack`); if the broker may have lost them
first, the file is read and published again. Marks go to the resume file
(``<data dir>/cloudtrail/backfill-done.txt``) in batches; a later run skips the files done.
A file that cannot be read as CloudTrail is recorded as rejected with its size and mtime (or
ETag): the next run skips it while it is unchanged and reads it again once it changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from cloudinv.producers.cloudtrail.ack import AckLost, CommitWatch
from cloudinv.producers.cloudtrail.logfile import (
    INLINE_BYTES,
    LogFileDecoder,
    ParsedLog,
    RejectedFileError,
    RejectionLog,
    is_digest_key,
    parse_log,
    read_log_async,
)
from cloudinv.producers.cloudtrail.publish import CloudTrailPublisher, PublishError

__all__ = [
    "RESUME_FILE",
    "Backfill",
    "BackfillSource",
    "BackfillStats",
    "LocalLog",
    "ResumeFile",
    "SmallFileReads",
    "backfill_local",
    "list_local_logs",
    "read_local_log",
]

log = logging.getLogger(__name__)

RESUME_FILE = Path("cloudtrail") / "backfill-done.txt"
MAX_ATTEMPTS = 5
"""Publishing of one file tried this often (broker lost the events) before it counts failed."""
MAX_WAITING_FILES = 20_000
"""Files published and waiting for the worker at once (only their offsets are kept)."""


Progress = Callable[[str, ParsedLog | None], None]
"""Called once per file: its source and what was read (``None`` if skipped or rejected)."""


@dataclass
class BackfillStats:
    files_found: int = 0
    files_done: int = 0
    """Files published and stored (acknowledged end to end)."""
    already_done: int = 0
    events: int = 0
    rejected_files: int = 0
    """Files that are not CloudTrail logs (recorded; skipped until they change)."""
    still_rejected: int = 0
    """Files rejected by an earlier run and unchanged since: skipped."""
    rejected_records: int = 0
    replayed: int = 0
    """Files published again because the broker may have lost their events."""
    failed: int = 0
    """Files that could not be read or stored for a reason that may pass; not marked done."""


@dataclass(frozen=True)
class BackfillSource:
    """One file to backfill: its URI, what identifies its content, how to read it."""

    uri: str
    fingerprint: str
    """Size and mtime (local) or size and ETag (S3): a changed rejected file is read again."""
    read: Callable[[], Awaitable[ParsedLog]]


@dataclass
class ResumeState:
    done: set[str] = field(default_factory=set)
    rejected: dict[str, str] = field(default_factory=dict)
    """URI → fingerprint of the content that was rejected."""


_REJECTED = "rejected\t"


class ResumeFile:
    """What earlier runs finished: one URI per line for a file done, ``rejected<TAB>
    fingerprint<TAB>URI`` for a file rejected. Marks are buffered and appended in batches
    (:meth:`flush`; at most ``flush_every_s`` late): a crash loses only marks, never events
    (the files are then published again, and stored once)."""

    def __init__(self, path: Path, *, flush_every_s: float = 0.5) -> None:
        self.path = path
        self.flush_every_s = flush_every_s
        self._buffer: list[str] = []
        self._lock = asyncio.Lock()
        self._timer: asyncio.Task[None] | None = None

    def _load(self) -> ResumeState:
        state = ResumeState()
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return state
        for line in lines:
            if line.startswith(_REJECTED):
                _, fingerprint, uri = line.split("\t", 2)
                state.rejected[uri] = fingerprint
            elif line:
                state.done.add(line)
        return state

    async def load(self) -> ResumeState:
        return await asyncio.to_thread(self._load)

    async def clear(self) -> None:
        await asyncio.to_thread(self.path.unlink, missing_ok=True)

    def _append(self, lines: list[str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as fh:
            fh.write("".join(line + "\n" for line in lines))
            fh.flush()
            os.fsync(fh.fileno())

    def mark_done(self, uri: str) -> None:
        self._add(uri)

    def mark_rejected(self, uri: str, fingerprint: str) -> None:
        self._add(f"{_REJECTED}{fingerprint}\t{uri}")

    def _add(self, line: str) -> None:
        self._buffer.append(line)
        if self._timer is None or self._timer.done():
            self._timer = asyncio.create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.flush_every_s)
        await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            lines, self._buffer = self._buffer, []
            if lines:
                await asyncio.to_thread(self._append, lines)

    async def close(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and not timer.done():
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer
        await self.flush()


# --- listing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalLog:
    path: Path
    uri: str
    size: int
    fingerprint: str
    """Size and mtime: a rejected file is read again once it changed."""


def _list_local(root: Path) -> list[LocalLog]:
    if root.is_file():
        resolved = root.resolve()
        st = resolved.stat()
        return [LocalLog(resolved, resolved.as_uri(), st.st_size, _fingerprint(st))]
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a file or directory")
    # os.scandir rather than Path.rglob, resolve and stat per file: a trail's directory holds
    # thousands of small files, and those cost ~0.1 ms each — the start of every backfill.
    # As rglob: symbolic links to directories are not followed; a file's link is resolved.
    found: list[tuple[list[str], os.DirEntry[str]]] = []
    _walk(str(root.resolve()), root.as_posix(), [], found)
    found.sort(key=lambda item: item[0])  # the order of sorted Paths: part by part
    out = []
    for _, entry in found:
        path = Path(entry.path)
        if entry.is_symlink():
            path = path.resolve()
        st = entry.stat()
        out.append(LocalLog(path, path.as_uri(), st.st_size, _fingerprint(st)))
    return out


def _walk(
    directory: str,
    given: str,
    parts: list[str],
    found: list[tuple[list[str], os.DirEntry[str]]],
) -> None:
    """Files under ``directory`` (resolved; ``given``: as the user named it, which digest
    folders are recognised by) into ``found``, with their path parts below the root."""
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                _walk(entry.path, f"{given}/{entry.name}", [*parts, entry.name], found)
            elif (
                entry.name.endswith((".json", ".json.gz"))
                and not is_digest_key(f"{given}/{entry.name}")
                and entry.is_file()
            ):
                found.append(([*parts, entry.name], entry))


def _fingerprint(st: os.stat_result) -> str:
    return f"{st.st_size}:{st.st_mtime_ns}"


async def list_local_logs(root: Path) -> list[LocalLog]:
    """Log files under ``root`` with their size and fingerprint."""
    return await asyncio.to_thread(_list_local, root)


def read_local_log(path: Path) -> ParsedLog:
    """Read, gunzip and parse one local file (blocking: run it in a thread)."""
    source = path.resolve().as_uri()
    decoder = LogFileDecoder(source, expect_gzip=path.name.endswith(".gz"))
    with path.open("rb") as fh:
        while chunk := fh.read(1024 * 1024):
            decoder.feed(chunk)
    return parse_log(decoder.finish(), source)


def _read_files(paths: list[Path]) -> list[bytes | OSError]:
    out: list[bytes | OSError] = []
    for path in paths:
        try:
            out.append(path.read_bytes())
        except OSError as exc:
            out.append(exc)
    return out


class SmallFileReads:
    """Reads small local files on a worker thread, many per hand-off: a trail's files are
    a few kB each, and handing each one to a thread of its own costs more than reading it."""

    def __init__(self, per_batch: int = 64) -> None:
        self.per_batch = per_batch
        self._pending: list[tuple[Path, asyncio.Future[bytes]]] = []
        self._task: asyncio.Task[None] | None = None

    async def read(self, path: Path) -> bytes:
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending.append((path, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            batch = self._pending[: self.per_batch]
            del self._pending[: self.per_batch]
            try:
                results = await asyncio.to_thread(_read_files, [path for path, _ in batch])
            except BaseException as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                raise
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, OSError):
                    future.set_exception(result)
                else:
                    future.set_result(result)


# --- running -------------------------------------------------------------------------------


class Backfill:
    """Publishes sources (see the module docstring); :func:`backfill_local` and
    :func:`~cloudinv.producers.cloudtrail.backfill_s3.backfill_s3` build them."""

    def __init__(
        self,
        *,
        publisher: CloudTrailPublisher,
        ack: CommitWatch | None,
        rejections: RejectionLog,
        resume: ResumeFile | None,
        concurrency: int,
        progress: Progress | None,
        stats: BackfillStats,
    ) -> None:
        self.publisher = publisher
        self.ack = ack
        self.rejections = rejections
        self.resume = resume
        self.progress = progress
        self.stats = stats
        self.reading = asyncio.Semaphore(max(1, concurrency))
        self.window = asyncio.Semaphore(MAX_WAITING_FILES)

    async def run(self, sources: Iterable[BackfillSource]) -> BackfillStats:
        state = await self.resume.load() if self.resume else ResumeState()
        tasks: set[asyncio.Task[None]] = set()
        try:
            for source in sources:
                if source.uri in state.done:
                    self.stats.already_done += 1
                    self._progress(source.uri, None)
                    continue
                if state.rejected.get(source.uri) == source.fingerprint:
                    self.stats.still_rejected += 1
                    self._progress(source.uri, None)
                    continue
                await self.window.acquire()
                task = asyncio.create_task(self.one(source))
                tasks.add(task)
                task.add_done_callback(self._finished(tasks))
            if tasks:
                await asyncio.gather(*list(tasks))
        finally:
            for task in tasks:
                task.cancel()
            if self.resume:
                await self.resume.close()
        return self.stats

    def _finished(self, tasks: set[asyncio.Task[None]]) -> Callable[[asyncio.Task[None]], None]:
        def done(task: asyncio.Task[None]) -> None:
            tasks.discard(task)
            self.window.release()

        return done

    def _progress(self, uri: str, parsed: ParsedLog | None) -> None:
        if self.progress:
            self.progress(uri, parsed)

    def _failed(self, uri: str, exc: BaseException | str) -> None:
        # Not marked done: the next run (resume) tries it again.
        self.stats.failed += 1
        log.warning("cloudtrail backfill: %s not done (the next run tries again): %s", uri, exc)
        self._progress(uri, None)

    async def one(self, source: BackfillSource) -> None:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            async with self.reading:
                parsed = await self._read(source)
            if parsed is None:
                return
            generation = None if self.ack is None else self.ack.generation
            try:
                offsets = await self.publisher.publish(parsed.messages)
                if self.ack is not None:
                    await self.ack.wait(offsets, generation)
            except (PublishError, AckLost) as exc:
                # The broker is away or lost the events (an embedded broker restarts empty):
                # read and publish the file again, after a pause while the broker recovers.
                self.stats.replayed += 1
                if attempt == MAX_ATTEMPTS:
                    return self._failed(source.uri, f"not stored after {attempt} tries: {exc}")
                log.info("cloudtrail backfill: publishing %s again: %s", source.uri, exc)
                await asyncio.sleep(min(2.0**attempt, 15.0))
                continue
            if parsed.bad_records:
                self.stats.rejected_records += len(parsed.bad_records)
                await self.rejections.record(
                    source.uri, parsed.bad_records_reason(), records=len(parsed.bad_records)
                )
            self.stats.events += len(parsed.messages)
            self.stats.files_done += 1
            if self.resume:
                self.resume.mark_done(source.uri)
            self._progress(source.uri, parsed)
            return

    async def _read(self, source: BackfillSource) -> ParsedLog | None:
        """The parsed file, or ``None`` when it was rejected or failed (counted here)."""
        reason: str
        try:
            return await source.read()
        except RejectedFileError as exc:
            reason = exc.reason
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code not in ("NoSuchKey", "404"):
                self._failed(source.uri, exc)
                return None
            reason = f"cannot read from S3: {code}"
        except (BotoCoreError, OSError) as exc:
            self._failed(source.uri, exc)
            return None
        self.stats.rejected_files += 1
        await self.rejections.record(source.uri, reason)
        if self.resume:
            self.resume.mark_rejected(source.uri, source.fingerprint)
        self._progress(source.uri, None)
        return None


async def backfill_local(
    root: Path,
    *,
    publisher: CloudTrailPublisher,
    ack: CommitWatch | None,
    rejections: RejectionLog,
    resume: ResumeFile | None,
    concurrency: int = 8,
    progress: Progress | None = None,
    on_listed: Callable[[int], None] | None = None,
) -> BackfillStats:
    """Publish every log file under ``root``; see the module docstring."""
    found_logs = await list_local_logs(root)
    stats = BackfillStats(files_found=len(found_logs))
    if on_listed:
        on_listed(len(found_logs))

    small = SmallFileReads()

    async def read(found: LocalLog) -> ParsedLog:
        if found.size > INLINE_BYTES:
            return await asyncio.to_thread(read_local_log, found.path)
        data = await small.read(found.path)
        return await read_log_async(data, found.uri, expect_gzip=found.path.name.endswith(".gz"))

    def reader(found: LocalLog) -> Callable[[], Awaitable[ParsedLog]]:
        return lambda: read(found)

    sources = [BackfillSource(f.uri, f.fingerprint, reader(f)) for f in found_logs]
    backfill = Backfill(
        publisher=publisher,
        ack=ack,
        rejections=rejections,
        resume=resume,
        concurrency=concurrency,
        progress=progress,
        stats=stats,
    )
    return await backfill.run(sources)
