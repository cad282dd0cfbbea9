"""Usage errors name what the user typed and where it came from, and exit 2 before any AWS
call; commands that find nothing say so. The real ``cloudinv`` command, as a subprocess."""

from __future__ import annotations

from pathlib import Path

from tests.cli_helpers import run_cli

ROLE = "arn:aws:iam::111111111111:role/cloudinv-reader"
# No AWS endpoint can answer: a test that reached AWS would fail on time, not pass.
NO_AWS = {
    "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
    "AWS_ACCESS_KEY_ID": "x",
    "AWS_SECRET_ACCESS_KEY": "x",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _scan(tmp_path: Path, *args: str) -> tuple[int, str]:
    result = run_cli(
        "scan",
        "--once",
        "--out",
        str(tmp_path / "o.jsonl"),
        "--no-progress",
        *args,
        cwd=tmp_path,
        env=NO_AWS,
    )
    return result.returncode, result.stderr


def test_a_misspelt_region_flag_is_named_with_a_suggestion(tmp_path: Path) -> None:
    code, err = _scan(tmp_path, "--role-arn", ROLE, "--regions", "us-east1")
    assert code == 2
    assert "us-east1" in err and "did you mean us-east-1" in err
    assert "from --regions" in err and "CLOUDINV_" not in err
    assert "Traceback" not in err


def test_a_region_of_the_right_shape_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    code, err = _scan(tmp_path, "--role-arn", ROLE, "--regions", "xx-nowhere-9")
    assert code == 2 and "unknown AWS region 'xx-nowhere-9'" in err


def test_a_bad_role_arn_flag_names_the_flag(tmp_path: Path) -> None:
    code, err = _scan(tmp_path, "--role-arn", "arn:aws:iam::12:role/x")
    assert code == 2
    assert "from --role-arn" in err and "CLOUDINV_" not in err


def test_an_account_not_among_the_roles_is_a_usage_error(tmp_path: Path) -> None:
    code, err = _scan(tmp_path, "--role-arn", ROLE, "--account", "999999999999")
    assert code == 2
    assert "999999999999" in err and "111111111111" in err and "--role-arn" in err


def test_config_check_names_the_environment_variable_that_set_a_bad_value(
    tmp_path: Path,
) -> None:
    bad = run_cli("config", "check", cwd=tmp_path, env={"CLOUDINV_AWS__REGIONS": "us-east1"})
    assert bad.returncode == 2
    assert "CLOUDINV_AWS__REGIONS" in bad.stderr and "did you mean us-east-1" in bad.stderr
    good = run_cli("config", "check", cwd=tmp_path, env={"CLOUDINV_AWS__REGIONS": "eu-west-1"})
    assert good.returncode == 0, good.stderr
    assert "configuration OK" in good.stdout


def test_a_bad_role_in_the_accounts_list_names_the_list_variable(tmp_path: Path) -> None:
    (tmp_path / "cloudinv.toml").write_text(
        '[aws]\naccounts = [ { role_arn = "arn:aws:iam::1:role/x" } ]\n'
    )
    result = run_cli("config", "check", cwd=tmp_path)
    assert result.returncode == 2
    # A list is set whole: the variable is the list's, not one per item field.
    assert "CLOUDINV_AWS__ACCOUNTS)" in result.stderr
    assert "ROLE_ARN" not in result.stderr


def test_cloudtrail_rejected_says_when_nothing_was_rejected(tmp_path: Path) -> None:
    result = run_cli(
        "cloudtrail",
        "rejected",
        cwd=tmp_path,
        env={"CLOUDINV_STORAGE__DATA_DIR": str(tmp_path / "data")},
    )
    assert result.returncode == 0, result.stderr
    assert "no rejected CloudTrail log files" in result.stdout
