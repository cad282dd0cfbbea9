"""Child processes that never outlive cloudinv, and their supervision.

Every process the runtime starts (broker, simulated AWS, stream worker) goes through
:class:`ChildProcess`: its output goes to a log file under the data directory, it is stopped
with SIGTERM then SIGKILL, and on Linux the kernel sends it SIGTERM if cloudinv itself dies
(``PR_SET_PDEATHSIG``), so not even a ``kill -9`` of the parent leaves it behind.
:class:`Supervisor` restarts a child that dies, with backoff, and gives up loudly only after
repeated failures; :func:`settings_env` hands a child the parent's effective settings.
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
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from pydantic import SecretStr

from cloudinv.core.errors import RuntimeStartError
from cloudinv.core.settings import Settings

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
ENV_PREFIX = "CLOUDINV_"


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
        # As the servers themselves bind (aiohttp, Tansu): connections of a previous
        # listener in TIME_WAIT (a broker just killed) do not make the port busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            raise RuntimeStartError(
                f"{what} cannot listen on {host}:{port}: the port is already in use. "
                f"Stop whatever uses it or choose another port with {setting}."
            ) from None


def choose_port(host: str, requested: int | None, what: str, setting: str) -> int:
    """``requested`` once checked free (an error naming ``setting`` otherwise), or any free
    port when none is requested."""
    if requested:
        ensure_port_free(host, requested, what, setting)
        return requested
    return free_port(host)


async def start_until_ready(
    child: ChildProcess, ready: Callable[[], Awaitable[bool]], address: str, timeout: float
) -> None:
    """Start ``child`` and wait until ``ready()`` says it serves at ``address``; a child that
    exits meanwhile raises at once, one that never answers is stopped and named, with its
    log, in a :class:`RuntimeStartError`."""
    await child.start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        child.raise_if_exited()
        if await ready():
            log.info("%s ready at %s", child.name, address)
            return
        await asyncio.sleep(0.1)
    await child.stop()
    raise RuntimeStartError(
        f"{child.name} did not answer on {address} within {timeout:.0f}s (log: {child.log_path})"
    )


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

    async def kill(self) -> None:
        """SIGKILL and reap (the last resort when the stop budget is spent)."""
        proc = self.process
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 2.0)

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


class RoleChild:
    """A cloudinv role run as a child (the stream worker, the CloudTrail role): each
    :meth:`spawn` starts a new :class:`ChildProcess` with the same command line and an
    environment from ``env`` (asked again at every start) and calls :attr:`started` with its
    pid; :attr:`process` is the current one, what a :class:`Supervisor` watches."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Callable[[], Mapping[str, str]],
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self.started: Callable[[int | None], None] = lambda pid: None
        self.process: ChildProcess | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    async def spawn(self) -> ChildProcess:
        child = ChildProcess(self.name, self.argv, self.log_path, self.env())
        await child.start()
        self.process = child
        self.started(child.pid)
        return child

    async def stop(self, timeout: float = 3.0) -> None:
        if self.process is not None:
            await self.process.stop(timeout=timeout)


def describe_exit(returncode: int | None) -> str:
    """Why a child ended, from its exit status: the signal that killed it, or its code."""
    if returncode is None:
        return "is running"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with status {returncode}"


def settings_env(settings: Settings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment that gives a child process exactly ``settings``, whatever their
    source (file, environment, flags, values the runtime decided): every ``CLOUDINV_*``
    variable of ``base`` is dropped and each top-level setting is passed as one
    ``CLOUDINV_<NAME>`` variable (JSON for sections), which outranks any config file the
    child could find. Secrets travel only in this environment (readable by the same user
    alone), never on a command line or in a log."""
    env = {k: v for k, v in (base if base is not None else os.environ).items()}
    for name in [k for k in env if k.startswith(ENV_PREFIX)]:
        del env[name]
    for name, value in reveal_secrets(settings.model_dump(mode="python")).items():
        key = f"{ENV_PREFIX}{name.upper()}"
        if isinstance(value, dict | list):
            env[key] = orjson.dumps(value).decode()
        elif value is not None:
            env[key] = str(value)
    return env


def reveal_secrets(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {k: reveal_secrets(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [reveal_secrets(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


@dataclass(eq=False)
class Supervised:
    """One child the :class:`Supervisor` keeps running."""

    name: str
    child: Callable[[], ChildProcess | None]
    """The current process (it changes with every restart)."""
    restart: Callable[[], Awaitable[object]]
    """Start it again (and whatever must follow, e.g. topics after a broker restart)."""
    failures: deque[float] = field(default_factory=deque)
    down: str | None = None
    """Why it is not running now (``None`` while it runs)."""
    restarts: int = 0
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    """Cleared while its owner replaces it on purpose (:meth:`Supervisor.replacing`)."""

    def __post_init__(self) -> None:
        self.settled.set()


class Supervisor:
    """Restarts children that die, with backoff, saying why they died (signal or exit
    status). Gives up — :meth:`run` raises — once one child failed ``max_failures`` times
    within ``window_s``: a child that cannot stay up is a problem to report, not to hide."""

    def __init__(
        self,
        *,
        max_failures: int = 5,
        window_s: float = 60.0,
        first_delay_s: float = 0.5,
        max_delay_s: float = 15.0,
        note: Callable[[str], None] | None = None,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.first_delay_s = first_delay_s
        self.max_delay_s = max_delay_s
        self.note = note or (lambda text: None)
        self.children: list[Supervised] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._fatal: asyncio.Future[None] | None = None
        self.stopping = False

    def watch(
        self,
        name: str,
        child: Callable[[], ChildProcess | None],
        restart: Callable[[], Awaitable[object]],
    ) -> Supervised:
        entry = Supervised(name, child, restart)
        self.children.append(entry)
        if self._fatal is not None:
            self._tasks.append(asyncio.create_task(self._keep(entry), name=f"supervise {name}"))
        return entry

    @contextlib.asynccontextmanager
    async def replacing(self, entry: Supervised) -> AsyncIterator[None]:
        """Inside, the owner stops and replaces ``entry``'s child itself: its exit is not a
        failure and the supervisor does not restart it (it watches whatever child ``entry``
        names once the block ends)."""
        entry.settled.clear()
        try:
            yield
        finally:
            entry.settled.set()

    def down(self) -> list[str]:
        """Why each child that is not running is down."""
        return [entry.down for entry in self.children if entry.down is not None]

    async def run(self) -> None:
        """Supervise until cancelled; raise RuntimeStartError when giving up."""
        self._fatal = asyncio.get_running_loop().create_future()
        self._tasks = [
            asyncio.create_task(self._keep(entry), name=f"supervise {entry.name}")
            for entry in self.children
        ]
        try:
            await self._fatal
        finally:
            self.stopping = True
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _give_up(self, entry: Supervised, reason: str) -> None:
        message = (
            f"{entry.name} {reason}, its {len(entry.failures)}th failure within "
            f"{self.window_s:.0f}s: giving up"
        )
        child = entry.child()
        if child is not None:
            message += f" (log: {child.log_path})"
        log.error("%s", message)
        if self._fatal is not None and not self._fatal.done():
            self._fatal.set_exception(RuntimeStartError(message))

    def _failed(self, entry: Supervised) -> bool:
        """Count a failure; True when that was one too many."""
        now = time.monotonic()
        entry.failures.append(now)
        while entry.failures and now - entry.failures[0] > self.window_s:
            entry.failures.popleft()
        return len(entry.failures) >= self.max_failures

    async def _keep(self, entry: Supervised) -> None:
        while not self.stopping:
            child = entry.child()
            if child is None or child.process is None:
                return
            returncode = await child.process.wait()
            await entry.settled.wait()
            if self.stopping:
                return
            if entry.child() is not child:
                continue  # replaced on purpose (e.g. the worker after a broker restart)
            reason = describe_exit(returncode)
            while True:
                if self._failed(entry):
                    entry.down = f"{entry.name} {reason}"
                    self._give_up(entry, reason)
                    return
                delay = min(self.first_delay_s * 2 ** (len(entry.failures) - 1), self.max_delay_s)
                entry.down = f"{entry.name} {reason}; restarting"
                text = (
                    f"{entry.name} (pid {child.pid}) {reason}; restarting it in {delay:.1f}s "
                    f"(log: {child.log_path})"
                )
                log.error("%s", text)
                self.note(text)
                await asyncio.sleep(delay)
                try:
                    await entry.restart()
                except (RuntimeStartError, OSError) as exc:
                    reason = f"could not be restarted ({exc})"
                    continue
                break
            entry.down = None
            entry.restarts += 1
            restarted = entry.child()
            text = f"{entry.name} restarted (pid {restarted.pid if restarted else '?'})"
            log.warning("%s", text)
            self.note(text)
