"""Reading one CloudTrail log file: bytes (gzip or plain JSON) → encoded events, and the
record of files that could not be read.

:class:`LogFileDecoder` takes the file chunk by chunk as it streams from S3 or disk and
gunzips on the fly when the data is gzip (by its magic bytes, whatever the name says).
:func:`parse_log` is the CPU-bound part — JSON parse, normalize, encode. :func:`read_log_async`
decodes and parses a whole file's bytes: on the event loop when the file is small (a handful
of records, well under a millisecond: handing it to a thread costs more), in a worker thread
otherwise, so the event loop never waits long on it.

A file that is not valid gzip or not ``{"Records": [...]}`` JSON raises
:class:`RejectedFileError`; the caller records it with :class:`RejectionLog` (a small
JSON-lines file under the data dir that the API can show) and carries on with other files.
"""

from __future__ import annotations

import asyncio
import logging
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from cloudinv.core.models import utcnow
from cloudinv.producers.cloudtrail.normalize import InvalidRecordError, encode_record

__all__ = [
    "INLINE_BYTES",
    "REJECTIONS_FILE",
    "LogFileDecoder",
    "ParsedLog",
    "RejectedFileError",
    "Rejection",
    "RejectionLog",
    "is_digest_key",
    "parse_log",
    "read_log",
    "read_log_async",
    "read_rejections",
]

log = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"
MAX_DECOMPRESSED_BYTES = 1024 * 1024 * 1024
"""A CloudTrail log file is at most tens of MB; anything past this is a gzip bomb."""

REJECTIONS_FILE = Path("cloudtrail") / "rejected.jsonl"
"""Under the data dir: one JSON object per rejected file or record."""

_MAX_REJECTIONS_BYTES = 1024 * 1024


class RejectedFileError(ValueError):
    """A log file that cannot be read as CloudTrail; ``reason`` says why."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


_DIGEST_NAME = re.compile(r"_CloudTrail-Digest_[^/]*\.json(\.gz)?$")


def is_digest_key(key: str) -> bool:
    """Digest files (hourly SHA-256 chains) are not event logs: recognised by their folder
    (``CloudTrail-Digest/``) or by their name (``<account>_CloudTrail-Digest_<region>_...``),
    so a digest copied out of its folder is not read as a log."""
    return (
        "CloudTrail-Digest/" in key
        or key.startswith("CloudTrail-Digest")
        or _DIGEST_NAME.search(key) is not None
    )


class LogFileDecoder:
    """Feed chunks of one file; :meth:`finish` returns its JSON bytes."""

    def __init__(self, source: str, *, expect_gzip: bool = False) -> None:
        self.source = source
        self._expect_gzip = expect_gzip
        self._gzip: bool | None = None
        self._inflate: Any = None
        self._out = bytearray()
        self._head = b""

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        if self._gzip is None:
            self._head += chunk
            if len(self._head) < 2:
                return
            chunk, self._head = self._head, b""
            self._gzip = chunk.startswith(GZIP_MAGIC)
            if self._expect_gzip and not self._gzip:
                raise RejectedFileError(self.source, "not valid gzip (no gzip header)")
            if self._gzip:
                self._inflate = zlib.decompressobj(wbits=31)
        if self._gzip:
            self._inflate_chunk(chunk)
        else:
            self._out += chunk
        if len(self._out) > MAX_DECOMPRESSED_BYTES:
            raise RejectedFileError(
                self.source, f"larger than {MAX_DECOMPRESSED_BYTES} bytes uncompressed"
            )

    def _inflate_chunk(self, chunk: bytes) -> None:
        data = chunk
        while data:
            if self._inflate.eof:
                # Concatenated gzip members are one valid gzip file.
                if not data.startswith(GZIP_MAGIC):
                    raise RejectedFileError(self.source, "not valid gzip (trailing garbage)")
                self._inflate = zlib.decompressobj(wbits=31)
            try:
                self._out += self._inflate.decompress(data)
            except zlib.error as exc:
                raise RejectedFileError(self.source, f"not valid gzip ({exc})") from None
            data = self._inflate.unused_data

    def finish(self) -> bytes:
        if self._gzip is None:
            if self._expect_gzip:
                raise RejectedFileError(self.source, "not valid gzip (empty or too short)")
            self._out += self._head
            self._head = b""
        elif self._gzip and not self._inflate.eof:
            raise RejectedFileError(self.source, "not valid gzip (truncated)")
        return bytes(self._out)


@dataclass
class ParsedLog:
    """One file's events, encoded for Kafka, and the records that were not events."""

    source: str
    messages: list[tuple[bytes, bytes]] = field(default_factory=list)
    """(key, value) pairs: principal label, encoded CloudTrailEvent."""
    bad_records: list[str] = field(default_factory=list)

    def bad_records_reason(self) -> str:
        return f"{len(self.bad_records)} record(s) skipped; first: {self.bad_records[0]}"


def parse_log(data: bytes, source: str) -> ParsedLog:
    """Parse and normalize one log file's JSON. Raises :class:`RejectedFileError`."""
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise RejectedFileError(source, f"not valid JSON ({exc})") from None
    records = document.get("Records") if isinstance(document, dict) else None
    if not isinstance(records, list):
        raise RejectedFileError(source, 'not a CloudTrail log (expected {"Records": [...]})')
    return encode_records(records, source)


def encode_records(records: list[Any], source: str) -> ParsedLog:
    """Normalize and encode records; the ones that are not events are listed, not raised."""
    parsed = ParsedLog(source=source)
    for index, record in enumerate(records):
        try:
            parsed.messages.append(encode_record(record, source))
        except (InvalidRecordError, ValueError) as exc:
            parsed.bad_records.append(f"record {index}: {exc}")
    return parsed


INLINE_BYTES = 16 * 1024
"""Files up to this size as read, and up to :data:`INLINE_JSON_BYTES` once gunzipped, are
parsed on the event loop (about a hundred records at most, a few milliseconds); bigger ones
in a worker thread."""
INLINE_JSON_BYTES = 128 * 1024


def read_log(data: bytes, source: str, *, expect_gzip: bool = False) -> ParsedLog:
    """Gunzip (when gzip) and parse one whole file. Raises :class:`RejectedFileError`."""
    decoder = LogFileDecoder(source, expect_gzip=expect_gzip)
    decoder.feed(data)
    return parse_log(decoder.finish(), source)


async def read_log_async(data: bytes, source: str, *, expect_gzip: bool = False) -> ParsedLog:
    """:func:`read_log`, in a worker thread unless the file is small (see module docstring)."""
    if len(data) > INLINE_BYTES:
        return await asyncio.to_thread(read_log, data, source, expect_gzip=expect_gzip)
    decoder = LogFileDecoder(source, expect_gzip=expect_gzip)
    decoder.feed(data)
    document = decoder.finish()
    if len(document) > INLINE_JSON_BYTES:  # compresses unusually well: not on the loop
        return await asyncio.to_thread(parse_log, document, source)
    return parse_log(document, source)


@dataclass(frozen=True)
class Rejection:
    source: str
    reason: str
    at: str
    records: int | None = None


class RejectionLog:
    """Rejected files and records: logged, counted, and appended to a small JSON-lines file
    (``<data dir>/cloudtrail/rejected.jsonl``, trimmed to its newest half past 1 MB)."""

    def __init__(self, data_dir: Path | None) -> None:
        self.path = data_dir / REJECTIONS_FILE if data_dir is not None else None
        self.count = 0
        self.recent: list[Rejection] = []

    async def record(self, source: str, reason: str, *, records: int | None = None) -> None:
        rejection = Rejection(
            source=source, reason=reason, at=utcnow().isoformat(), records=records
        )
        self.count += 1
        self.recent = [*self.recent[-99:], rejection]
        log.warning("cloudtrail: rejected %s: %s", source, reason)
        if self.path is not None:
            await asyncio.to_thread(_append, self.path, rejection)


def _append(path: Path, rejection: Rejection) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    line = orjson.dumps(rejection.__dict__) + b"\n"
    with path.open("ab") as fh:
        fh.write(line)
        size = fh.tell()
    if size > _MAX_REJECTIONS_BYTES:
        lines = path.read_bytes().splitlines(keepends=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(b"".join(lines[len(lines) // 2 :]))
        tmp.replace(path)


def _read(path: Path, limit: int) -> list[Rejection]:
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in reversed(lines):
        try:
            out.append(Rejection(**orjson.loads(line)))
        except (orjson.JSONDecodeError, TypeError):
            continue
        if len(out) >= limit:
            break
    return out


async def read_rejections(data_dir: Path, limit: int = 100) -> list[Rejection]:
    """The newest rejections first (what the API shows)."""
    return await asyncio.to_thread(_read, data_dir / REJECTIONS_FILE, limit)
