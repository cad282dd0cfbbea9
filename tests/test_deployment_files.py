"""The reference deployment files stay valid: no Docker engine runs here, so the compose file
is checked against the Compose specification's JSON schema, and its cloudinv services against
cloudinv's own CLI and settings."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from cloudinv.cli import build_parser
from cloudinv.core.settings import load_settings

REPO = Path(__file__).resolve().parent.parent
# The Compose specification schema, as shipped in the docker-compose 1.29.2 wheel
# (compose/config/compose_spec.json, Apache-2.0).
SCHEMA = Path(__file__).parent / "data" / "compose-spec.schema.json"


def _compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return doc


def test_compose_file_matches_the_compose_specification() -> None:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft201909Validator(schema)
    errors = [
        f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(_compose())
    ]
    assert errors == []


def test_compose_has_kafka_emulator_and_every_role() -> None:
    services = _compose()["services"]
    assert {"kafka", "aws", "producers-a", "producers-b", "cloudtrail", "worker", "api"} <= set(
        services
    )
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"


def test_compose_runs_the_roles_apart_topology_on_one_shared_store(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """What tests/test_roles_apart.py runs: producers x2 splitting the organization, the
    CloudTrail role, workers x2, APIs x2, DynamoDB and S3 as the store, no shared volume."""
    services = _compose()["services"]
    monkeypatch.chdir(tmp_path)

    def settings(name: str) -> Any:
        for key, value in services[name]["environment"].items():
            monkeypatch.setenv(key, str(value))
        try:
            return load_settings()
        finally:
            for key in services[name]["environment"]:
                monkeypatch.delenv(key)

    a, b = settings("producers-a"), settings("producers-b")
    assert a.aws.organization_role_name and a.aws.include_accounts
    assert b.aws.exclude_accounts == a.aws.include_accounts and not b.aws.include_accounts
    assert services["cloudtrail"]["command"] == ["cloudtrail", "run"]
    assert settings("cloudtrail").cloudtrail.queue_urls
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["api"]["deploy"]["replicas"] == 2
    for name, service in _cloudinv_services():
        chosen = settings(name)
        assert set(chosen.storage.targets) == {"dynamodb", "s3"}, name
        assert chosen.storage.s3_bucket, name
        assert "volumes" not in service, f"{name} keeps local state on a shared volume"
        assert service["stop_grace_period"] == "10s", name
        assert "healthcheck" in service, name


def test_compose_role_commands_parse() -> None:
    parser = build_parser()
    for name, service in _cloudinv_services():
        args = parser.parse_args(service["command"])
        assert callable(args.handler), name


def _cloudinv_services() -> list[tuple[str, dict[str, Any]]]:
    return [
        (n, s)
        for n, s in _compose()["services"].items()
        if s.get("image", "").startswith("cloudinv")
    ]


@pytest.mark.parametrize(("name", "service"), _cloudinv_services())
def test_cloudinv_services_run_real_commands_with_valid_settings(
    name: str, service: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    parser = build_parser()
    choices = next(a for a in parser._actions if a.dest == "command").choices
    assert choices is not None
    command = service["command"][0]
    assert command in choices, f"compose runs `cloudinv {command}`, which does not exist"
    monkeypatch.chdir(tmp_path)
    for key, value in service["environment"].items():
        monkeypatch.setenv(key, str(value))
    settings = load_settings()
    assert settings.kafka.bootstrap == "kafka:9092"


def test_compose_api_token_hash_is_a_sha256() -> None:
    tokens = json.loads(_compose()["services"]["api"]["environment"]["CLOUDINV_API__TOKENS"])
    assert all(re.fullmatch(r"[0-9a-f]{64}", t["sha256"]) for t in tokens)


def test_dockerfile_runs_as_non_root_with_one_entrypoint() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^USER cloudinv$", text, re.M)
    assert 'ENTRYPOINT ["cloudinv"]' in text
    assert text.count("FROM python:3.11-slim") == 2
