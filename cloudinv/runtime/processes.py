"""Child processes that never outlive cloudinv.

Every process the runtime starts (broker, simulated AWS, stream worker) goes through
:class:`ChildProcess`: its output goes to a log file under the data directory, it is stopped
with SIGTERM then SIGKILL, and on Linux the kernel sends it SIGTERM if cloudinv itself dies
(``PR_SET_PDEATHSIG``), so not even a ``kill -9`` of the parent leaves it behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from cloudinv.core.errors import RuntimeStartError

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # A new process group keeps a terminal's Ctrl-C away from the child: cloudinv stops its
    # children itself, in order. PDEATHSIG covers the parent dying without cleaning up.
    os.setpgrp()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def ensure_port_free(host: str, port: int, what: str, setting: str) -> None:
    """Raise a one-line error naming the port, its user and the setting that picks it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            raise RuntimeStartError(
                f"{what} cannot listen on {host}:{port}: the port is already in use. "
                f"Stop whatever uses it or choose another port with {setting}."
            ) from None


class ChildProcess:
    """One supervised child process with its output in ``log_path``."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Opening the log is a one-off at start-up, not on a hot path.
        log_file = open(self.log_path, "ab")  # noqa: SIM115, ASYNC230
        try:
            self.process = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                env=self.env,
                preexec_fn=_die_with_parent,
            )
        except FileNotFoundError as exc:
            raise RuntimeStartError(f"cannot start {self.name}: {exc.filename} not found") from None
        finally:
            log_file.close()
        log.info("started %s (pid %s), log: %s", self.name, self.process.pid, self.log_path)

    async def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait, then SIGKILL. Safe to call twice or on a process that died."""
        proc = self.process
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            log.warning("%s did not stop within %.0fs; killing it", self.name, timeout)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        log.info("stopped %s (exit %s)", self.name, proc.returncode)

    def log_tail(self, lines: int = 5) -> str:
        """The last lines of the child's log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def raise_if_exited(self) -> None:
        if self.process is not None and self.process.returncode is not None:
            tail = self.log_tail()
            raise RuntimeStartError(
                f"{self.name} exited with status {self.process.returncode} "
                f"(log: {self.log_path})" + (f": {tail.splitlines()[-1]}" if tail else "")
            )
