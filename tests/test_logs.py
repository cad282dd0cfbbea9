"""Structured logs: one JSON object per line, carrying the role and the correlation id."""

from __future__ import annotations

import json
import logging

from cloudinv.core.logs import JsonFormatter, correlate


def _record(message: str) -> logging.LogRecord:
    return logging.LogRecord("cloudinv.test", logging.INFO, __file__, 1, message, None, None)


def test_json_lines_carry_role_and_correlation_id() -> None:
    formatter = JsonFormatter("producers")
    with correlate("20261123T120000Z-abcd1234"):
        inside = json.loads(formatter.format(_record("scanning")))
    outside = json.loads(formatter.format(_record("idle")))
    assert inside["correlation_id"] == "20261123T120000Z-abcd1234"
    assert inside["role"] == "producers" and inside["level"] == "INFO"
    assert inside["message"] == "scanning"
    assert inside["time"].endswith("+00:00")
    assert "correlation_id" not in outside


def test_exceptions_are_kept_in_one_line() -> None:
    formatter = JsonFormatter("worker")
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = _record("failed")
        record.exc_info = sys.exc_info()
    line = formatter.format(record)
    assert "\n" not in line
    assert "ValueError: boom" in json.loads(line)["exception"]
