"""Logging for every role: human text or structured JSON, with a correlation id.

``log_format = "json"`` (``CLOUDINV_LOG_FORMAT=json``) writes one JSON object per line with
``time``, ``level``, ``logger``, ``message``, the role, and the correlation id of the work in
hand (a scan id, a CloudTrail log file) set with :func:`correlate`.
"""

from __future__ import annotations

import contextlib
import logging
import traceback
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path

import orjson

_correlation: ContextVar[str | None] = ContextVar("cloudinv_correlation_id", default=None)


@contextlib.contextmanager
def correlate(correlation_id: str) -> Iterator[None]:
    """Tag every log record emitted inside the block (in this task) with ``correlation_id``."""
    token = _correlation.set(correlation_id)
    try:
        yield
    finally:
        _correlation.reset(token)


def current_correlation() -> str | None:
    return _correlation.get()


class JsonFormatter(logging.Formatter):
    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "role": self.role,
        }
        correlation = getattr(record, "correlation_id", None) or _correlation.get()
        if correlation:
            entry["correlation_id"] = correlation
        if record.exc_info:
            entry["exception"] = "".join(traceback.format_exception(*record.exc_info)).strip()
        return orjson.dumps(entry).decode()


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        correlation = _correlation.get()
        return f"{text} [{correlation}]" if correlation else text


def make_handlers(
    role: str, level: str, fmt: str, log_file: Path | None, console_level: str | None = None
) -> list[logging.Handler]:
    formatter: logging.Formatter = (
        JsonFormatter(role)
        if fmt == "json"
        else _TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    handlers: list[logging.Handler] = []
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        to_file = logging.FileHandler(log_file)
        to_file.setLevel(level)
        handlers.append(to_file)
    console = logging.StreamHandler()
    console.setLevel(console_level or level)
    handlers.append(console)
    for handler in handlers:
        handler.setFormatter(formatter)
    return handlers


def configure_logging(
    role: str,
    level: str = "INFO",
    fmt: str = "text",
    log_file: Path | None = None,
    console_level: str | None = None,
) -> None:
    root = logging.getLogger()
    root.setLevel(level)
    root.handlers[:] = make_handlers(role, level, fmt, log_file, console_level)
    # aiokafka logs every refused connection while a broker starts; that is expected.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


class RateLimit(logging.Filter):
    """Lets one record per message template through every ``every_s`` seconds, and says how
    many were held back: a broker that is away makes aiokafka log every reconnect attempt
    (dozens a second), which would bury everything else."""

    def __init__(self, every_s: float = 30.0) -> None:
        super().__init__()
        self.every_s = every_s
        self._last: dict[tuple[str, object], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.msg)
        now = record.created
        last, held = self._last.get(key, (0.0, 0))
        if now - last < self.every_s:
            self._last[key] = (last, held + 1)
            return False
        self._last[key] = (now, 0)
        if held:
            record.msg = f"{record.msg} ({held} more like this in the last {self.every_s:.0f}s)"
        return True


def limit_reconnect_noise(every_s: float = 30.0) -> None:
    """Rate-limit aiokafka's connection errors (one line per kind every ``every_s``)."""
    logger = logging.getLogger("aiokafka")
    if not any(isinstance(f, RateLimit) for f in logger.filters):
        logger.addFilter(RateLimit(every_s))
    for name in (
        "aiokafka.conn",
        "aiokafka.client",
        "aiokafka.cluster",
        "aiokafka.consumer.fetcher",
        "aiokafka.consumer.group_coordinator",
        "aiokafka.producer.sender",
    ):
        child = logging.getLogger(name)
        if not any(isinstance(f, RateLimit) for f in child.filters):
            child.addFilter(RateLimit(every_s))
