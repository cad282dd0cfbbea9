"""Settings: file, environment and flags; bad values fail with key, value and expectation."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudinv.core.errors import ConfigError
from cloudinv.core.settings import load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("CLOUDINV_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def test_defaults_run_embedded_with_local_storage() -> None:
    settings = load_settings()
    assert settings.kafka.is_embedded
    assert settings.storage.targets == ["local"]
    assert settings.data_dir == Path(".cloudinv")


def test_file_then_environment_then_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cloudinv.toml").write_text(
        """
[kafka]
bootstrap = "broker1:9092,broker2:9092"
partitions = 12

[aws]
regions = ["us-east-1", "eu-west-1"]
accounts = [{ role_arn = "arn:aws:iam::123456789012:role/reader", external_id = "s3cr3t" }]

[api]
port = 9000
"""
    )
    settings = load_settings()
    assert settings.kafka.servers() == ["broker1:9092", "broker2:9092"]
    assert settings.kafka.partitions == 12
    assert settings.aws.accounts[0].account_id == "123456789012"

    monkeypatch.setenv("CLOUDINV_KAFKA__PARTITIONS", "6")
    monkeypatch.setenv("CLOUDINV_AWS__REGIONS", "ap-southeast-2")
    settings = load_settings()
    assert settings.kafka.partitions == 6
    assert settings.aws.regions == ["ap-southeast-2"]
    assert settings.kafka.bootstrap == "broker1:9092,broker2:9092"  # file value kept

    settings = load_settings(api={"port": 0})
    assert settings.api.port == 0


def test_config_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "elsewhere.toml"
    other.write_text('log_level = "DEBUG"\n')
    monkeypatch.setenv("CLOUDINV_CONFIG", str(other))
    assert load_settings().log_level == "DEBUG"


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[kafka\nbootstrap=")
    with pytest.raises(ConfigError, match=r"bad\.toml is not valid TOML"):
        load_settings(bad)


@pytest.mark.parametrize(
    ("env", "value", "key", "expected"),
    [
        ("CLOUDINV_KAFKA__BOOTSTRAP", "no-port-here", "kafka.bootstrap", "host:port"),
        ("CLOUDINV_KAFKA__PARTITIONS", "many", "kafka.partitions", "valid integer"),
        ("CLOUDINV_AWS__REGIONS", "mars-north-1x", "aws.regions", "unknown AWS region"),
        ("CLOUDINV_STORAGE__TARGETS", "local,floppy", "storage.targets", "'local', 's3'"),
        ("CLOUDINV_API__PORT", "70000", "api.port", "less than or equal to 65535"),
        ("CLOUDINV_LOG_LEVEL", "LOUD", "log_level", "'DEBUG'"),
    ],
)
def test_bad_value_names_key_value_and_expectation(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, key: str, expected: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert key in message
    assert value.split(",")[-1] in message or value in message
    assert expected in message
    assert env in message


def test_unknown_key_in_file_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "cloudinv.toml").write_text("[kafka]\nbootstrapp = 'x:1'\n")
    with pytest.raises(ConfigError, match=r"kafka\.bootstrapp = 'x:1': unknown setting"):
        load_settings()


def test_bad_role_arn(tmp_path: Path) -> None:
    (tmp_path / "cloudinv.toml").write_text(
        '[[aws.accounts]]\nrole_arn = "arn:aws:iam::12:user/x"\n'
    )
    with pytest.raises(ConfigError, match=r"aws\.accounts\.0\.role_arn"):
        load_settings()


def test_masked_hides_secrets(tmp_path: Path) -> None:
    (tmp_path / "cloudinv.toml").write_text(
        '[kafka]\nbootstrap = "b:9092"\nsasl_username = "u"\nsasl_password = "hunter2"\n'
        '[[aws.accounts]]\nrole_arn = "arn:aws:iam::123456789012:role/r"\nexternal_id = "ext-1"\n'
    )
    text = str(load_settings().masked())
    assert "hunter2" not in text
    assert "ext-1" not in text
    assert "********" in text
