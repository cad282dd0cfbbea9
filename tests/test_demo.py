"""``cloudinv demo`` as a user runs it: a real subprocess that brings everything up, answers
on its API, and leaves no process behind on Ctrl-C (or even on kill -9)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli_helpers import cli_env, run_cli


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) is not running.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in pids if _alive(p)]
        if not left:
            return []
        time.sleep(0.2)
    return [p for p in pids if _alive(p)]


def _get(url: str, token: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


class Demo:
    def __init__(self, tmp_path: Path) -> None:
        self.data_dir = tmp_path / "data"
        self.stderr_path = tmp_path / "demo.stderr"
        self.stdout_path = tmp_path / "demo.stdout"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cloudinv",
                "demo",
                "--api-port",
                "0",
                "--data-dir",
                str(self.data_dir),
                "--mutate-interval",
                "1",
            ],
            cwd=tmp_path,
            env=cli_env(),
            stdout=self.stdout_path.open("w"),
            stderr=self.stderr_path.open("w"),
        )

    def wait_ready(self, timeout: float = 240) -> dict[str, Any]:
        path = self.data_dir / "demo.json"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"demo exited {self.proc.returncode}: {self.stderr_path.read_text()}")
            if path.exists():
                info: dict[str, Any] = json.loads(path.read_text())
                return info
            time.sleep(0.2)
        pytest.fail(f"demo not ready in {timeout}s: {self.stderr_path.read_text()}")

    def child_pids(self, info: dict[str, Any]) -> list[int]:
        return [c["pid"] for c in info["components"] if c.get("pid") and c["pid"] != self.proc.pid]


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    running = Demo(tmp_path)
    try:
        yield running
    finally:
        if running.proc.poll() is None:
            running.proc.kill()
            running.proc.wait()


def test_demo_comes_up_answers_and_stops_clean_on_ctrl_c(demo: Demo) -> None:
    info = demo.wait_ready()
    assert info["mode"] == "demo"
    assert len(info["accounts"]) >= 3 and len(info["regions"]) >= 3
    status, body = _get(info["api_url"] + "/healthz")
    assert status == 200 and body["status"] == "ok"

    status, body = _get(info["api_url"] + "/v1/status")
    assert status == 401 and body["status"] == 401
    status, body = _get(info["api_url"] + "/v1/status", info["api_token"])
    assert status == 200
    assert {c["name"] for c in body["components"]} >= {"broker", "aws", "worker", "api"}

    # What runs where is printed for humans too, token included.
    assert info["api_token"] in demo.stdout_path.read_text()
    assert oct((demo.data_dir / "demo.json").stat().st_mode & 0o777) == "0o600"

    children = demo.child_pids(info)
    assert len(children) >= 3 and all(_alive(p) for p in children)

    # Commands started beside the demo read its simulated AWS with no setup: the endpoint
    # and the accounts' reader roles are in demo.json.
    assert len(info["aws_role_arns"]) == len(info["accounts"])
    beside = {"CLOUDINV_STORAGE__DATA_DIR": str(demo.data_dir), "AWS_ENDPOINT_URL": ""}
    work = demo.data_dir.parent
    report = run_cli("report", "snapshots", cwd=work, env=beside, timeout=120)
    assert report.returncode == 0, report.stdout + report.stderr
    assert "running demo's simulated AWS" in report.stderr
    out = work / "instances.jsonl"
    scan = run_cli(
        "scan",
        "--once",
        "--type",
        "AWS::EC2::Instance",
        "--out",
        str(out),
        "--no-progress",
        cwd=work,
        env=beside,
        timeout=120,
    )
    assert scan.returncode == 0, scan.stdout + scan.stderr
    scanned = [json.loads(line) for line in out.read_text().splitlines()]
    assert {s["account_id"] for s in scanned} <= set(info["accounts"]) and scanned

    # Every curated type: those the simulated AWS cannot serve (known from moto) are skipped
    # and listed, not retried and failed; the scan exits 0.
    everything = run_cli(
        "scan",
        "--once",
        "--curated",
        "--out",
        str(work / "curated.jsonl"),
        "--no-progress",
        cwd=work,
        env=beside,
        timeout=300,
    )
    assert everything.returncode == 0, everything.stdout + everything.stderr
    assert "Types skipped: the simulated AWS cannot serve them" in everything.stdout
    assert "AWS::StorageGateway::Gateway" in everything.stdout
    assert "0 failed; 3 types skipped" in everything.stdout, everything.stdout

    demo.proc.send_signal(signal.SIGINT)
    assert demo.proc.wait(timeout=45) == 0, demo.stderr_path.read_text()
    assert _wait_gone(children, 5) == []
    assert not (demo.data_dir / "demo.json").exists()


def test_children_die_even_when_the_demo_is_killed(demo: Demo) -> None:
    info = demo.wait_ready()
    children = demo.child_pids(info)
    assert children
    demo.proc.send_signal(signal.SIGKILL)
    demo.proc.wait(timeout=10)
    assert _wait_gone(children, 20) == []


def test_up_runs_the_same_stages_against_configured_aws(tmp_path: Path, moto_endpoint: str) -> None:
    """`cloudinv up` against a configured AWS endpoint (moto here) and the embedded broker."""
    (tmp_path / "cloudinv.toml").write_text(
        f"""
[aws]
regions = ["us-east-1"]
endpoint_url = "{moto_endpoint}"
accounts = [{{ role_arn = "arn:aws:iam::444444444444:role/cloudinv-reader" }}]

[storage]
data_dir = "{tmp_path / "data"}"

[api]
port = 0
"""
    )
    env = cli_env({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"})
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloudinv", "up", "--interval", "60"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "up.stderr").open("w"),
    )
    try:
        path = tmp_path / "data" / "demo.json"
        deadline = time.monotonic() + 240
        while not path.exists():
            assert proc.poll() is None, (tmp_path / "up.stderr").read_text()
            assert time.monotonic() < deadline, "up did not start in 240 s"
            time.sleep(0.2)
        info = json.loads(path.read_text())
        assert info["mode"] == "up"
        assert info["accounts"] == ["444444444444"]
        assert info["aws_endpoint_url"] == moto_endpoint
        status, body = _get(info["api_url"] + "/v1/status", info["api_token"])
        assert status == 200
        assert "aws" not in {c["name"] for c in body["components"]}  # no simulated estate
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=45) == 0
        assert not path.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
