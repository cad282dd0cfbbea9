"""Starting a supervised child and waiting for it to serve (the embedded broker's and the
simulated AWS's way): a child that dies says so with its log's last line, one that never
answers is stopped and named with its log. Real child processes (the Python interpreter)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from cloudinv.core.errors import RuntimeStartError
from cloudinv.runtime.processes import ChildProcess, choose_port, start_until_ready


async def _never() -> bool:
    return False


async def test_a_child_that_exits_is_reported_with_its_log(tmp_path: Path) -> None:
    child = ChildProcess(
        "doomed",
        [sys.executable, "-c", "import sys; print('no config here'); sys.exit(3)"],
        tmp_path / "doomed.log",
    )
    with pytest.raises(RuntimeStartError, match=r"doomed exited with status 3.*no config here"):
        await start_until_ready(child, _never, "127.0.0.1:1", timeout=120)


async def test_a_child_that_never_answers_is_stopped_and_named(tmp_path: Path) -> None:
    child = ChildProcess(
        "mute", [sys.executable, "-c", "import time; time.sleep(600)"], tmp_path / "mute.log"
    )
    with pytest.raises(RuntimeStartError, match=r"mute did not answer on 127.0.0.1:9 within"):
        await start_until_ready(child, _never, "127.0.0.1:9", timeout=0.5)
    assert child.process is not None and child.process.returncode is not None


async def test_a_ready_child_returns_and_a_requested_free_port_is_kept(tmp_path: Path) -> None:
    child = ChildProcess(
        "sleeper", [sys.executable, "-c", "import time; time.sleep(600)"], tmp_path / "s.log"
    )
    calls = 0

    async def third_time() -> bool:
        nonlocal calls
        calls += 1
        return calls >= 3

    await start_until_ready(child, third_time, "here", timeout=120)
    try:
        assert calls == 3
    finally:
        await child.stop()
    port = choose_port("127.0.0.1", None, "x", "--x")
    assert choose_port("127.0.0.1", port, "x", "--x") == port
