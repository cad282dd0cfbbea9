"""Children of ``cloudinv up`` / ``demo`` get exactly the parent's effective settings,
whatever their source (config file, environment, flags, values the runtime decided), secrets
included, through their environment only, never their command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from cloudinv.core.settings import load_settings
from cloudinv.runtime.processes import reveal_secrets, settings_env

PRINT_SETTINGS = (
    "import orjson\n"
    "from cloudinv.core.settings import load_settings\n"
    "from cloudinv.runtime.processes import reveal_secrets\n"
    "print(orjson.dumps(reveal_secrets(load_settings().model_dump(mode='python'))).decode())\n"
)


def test_a_child_sees_the_parents_effective_settings(tmp_path: Path) -> None:
    parent_dir = tmp_path / "parent"
    parent_dir.mkdir()
    config = parent_dir / "cloudinv.toml"
    config.write_text(
        """
scan_interval_s = 120
[kafka]
topic_prefix = "from-file"
consumer_group = "group-from-file"
sasl_mechanism = "PLAIN"
sasl_username = "svc"
sasl_password = "s3cret-from-file"
security_protocol = "SASL_SSL"
[[alerts.webhooks]]
url = "https://hooks.example.com/secret-path"
[cloudtrail]
queue_urls = ["https://sqs.us-east-1.amazonaws.com/111122223333/q"]
react = false
"""
    )
    parent = load_settings(
        config,
        storage={"data_dir": tmp_path / "data"},
        kafka={"bootstrap": "127.0.0.1:19092"},  # as the runtime decides it
    )
    assert parent.kafka.topic_prefix == "from-file"

    # The child starts elsewhere, next to another config file and with stray variables:
    # none of that may change what it runs with.
    child_dir = tmp_path / "child"
    child_dir.mkdir()
    (child_dir / "cloudinv.toml").write_text('[kafka]\ntopic_prefix = "wrong"\n')
    base = {
        "PATH": "/usr/bin:/bin",
        "CLOUDINV_KAFKA__CONSUMER_GROUP": "wrong",
        "CLOUDINV_CONFIG": str(child_dir / "cloudinv.toml"),
    }
    env = settings_env(parent, base)
    assert env["PATH"] == "/usr/bin:/bin"
    assert "CLOUDINV_CONFIG" not in env and "CLOUDINV_KAFKA__CONSUMER_GROUP" not in env

    result = subprocess.run(
        [sys.executable, "-c", PRINT_SETTINGS],
        cwd=child_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    child = orjson.loads(result.stdout)
    assert child == orjson.loads(orjson.dumps(reveal_secrets(parent.model_dump(mode="python"))))
    assert child["kafka"]["sasl_password"] == "s3cret-from-file"
    assert child["kafka"]["consumer_group"] == "group-from-file"
    assert child["alerts"]["webhooks"][0]["url"] == "https://hooks.example.com/secret-path"
