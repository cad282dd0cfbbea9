"""The connection file: how scripts and other commands find a running instance.

``cloudinv demo`` and ``cloudinv up`` write ``<data dir>/demo.json`` (mode 0600: it holds
the API token) when everything is up, and remove it when they stop. ``scan``, ``cloudtrail
backfill`` and the reports read it when no flag names a broker or API.
"""

from __future__ import annotations

import contextlib
import os
from datetime import datetime
from pathlib import Path
from typing import Literal

import orjson
from pydantic import BaseModel, Field, ValidationError

from cloudinv.core.errors import CloudinvError
from cloudinv.core.models import UtcDatetime, utcnow

CONNECTION_FILE = "demo.json"


class RunningComponent(BaseModel):
    name: str
    address: str | None = None
    pid: int | None = None
    log: str | None = None


class ConnectionInfo(BaseModel):
    """What runs where, for humans (printed) and scripts (``demo.json``)."""

    mode: Literal["demo", "up"]
    pid: int
    started_at: UtcDatetime
    api_url: str
    api_token: str
    kafka_bootstrap: str
    topic_prefix: str
    aws_endpoint_url: str | None
    aws_role_arns: list[str] = Field(
        default_factory=list,
        description="The roles the collectors assume (the demo's simulated accounts' reader "
        "roles): other commands started against a running demo use them",
    )
    accounts: list[str]
    regions: list[str]
    data_dir: str
    components: list[RunningComponent]


def connection_path(data_dir: Path) -> Path:
    return data_dir / CONNECTION_FILE


def write_connection(data_dir: Path, info: ConnectionInfo) -> Path:
    """Write atomically with owner-only permissions."""
    path = connection_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(orjson.dumps(info.model_dump(mode="json"), option=orjson.OPT_INDENT_2))
    tmp.replace(path)
    return path


def remove_connection(data_dir: Path, pid: int) -> None:
    """Remove the file if it is ours (another instance may have replaced it)."""
    path = connection_path(data_dir)
    with contextlib.suppress(FileNotFoundError, CloudinvError):
        info = read_connection(path)
        if info.pid == pid:
            path.unlink()


def read_connection(path: Path) -> ConnectionInfo:
    try:
        return ConnectionInfo.model_validate(orjson.loads(path.read_bytes()))
    except FileNotFoundError:
        raise
    except (orjson.JSONDecodeError, ValidationError) as exc:
        raise CloudinvError(f"{path} is not a valid cloudinv connection file: {exc}") from None


def find_running_instance(data_dir: Path) -> ConnectionInfo | None:
    """The instance recorded under ``data_dir`` if its process is still alive."""
    try:
        info = read_connection(connection_path(data_dir))
    except FileNotFoundError:
        return None
    try:
        os.kill(info.pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return info


def require_running_instance(data_dir: Path) -> ConnectionInfo:
    info = find_running_instance(data_dir)
    if info is None:
        raise CloudinvError(
            f"no running cloudinv instance found in {data_dir} (no live {CONNECTION_FILE}): "
            "start one with `cloudinv demo` or `cloudinv up`, or pass the broker/API explicitly"
        )
    return info


def started_now() -> datetime:

    return utcnow()
