"""``cloudinv scan --once`` as a real subprocess against moto (and the denying proxy)."""

from __future__ import annotations

import asyncio
import csv
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import orjson

from cloudinv.catalog.registry import default_registry
from cloudinv.core.models import ResourceSnapshot, ScanManifest
from tests.conftest import (
    SCAN_DENIED_REGION,
    SCAN_DENIED_SERVICE,
    SCAN_ESTATE_TYPES,
    ScanEstate,
)

REPO = Path(__file__).resolve().parent.parent


def scan_env(endpoint: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDINV_")}
    env.update(AWS_ENDPOINT_URL=endpoint, PYTHONUNBUFFERED="1", COLUMNS="200")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def scan_args(estate: ScanEstate, out: Path, manifests: Path) -> list[str]:
    args = ["scan", "--once", "--out", str(out), "--manifests", str(manifests)]
    for arn in estate.role_arns:
        args += ["--role-arn", arn]
    args += ["--regions", ",".join(estate.regions)]
    for cfn_type in SCAN_ESTATE_TYPES:
        args += ["--type", cfn_type]
    return args


def run_cloudinv(*args: str, cwd: Path, endpoint: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cloudinv", *args],
        cwd=cwd,
        env=scan_env(endpoint),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def read_snapshots(path: Path) -> list[ResourceSnapshot]:
    """Every line of a JSON-lines output file as a snapshot; a bad line is shown whole."""
    snapshots = []
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        if not line:
            continue
        try:
            snapshots.append(ResourceSnapshot.model_validate_json(line))
        except ValueError as exc:
            raise AssertionError(f"{path.name} line {number} is not a snapshot: {line!r}") from exc
    return snapshots


def read_manifests(path: Path) -> dict[tuple[str, str, str], ScanManifest]:
    manifests = [ScanManifest.model_validate_json(line) for line in path.read_text().splitlines()]
    return {(m.account_id, m.region, m.resource_type): m for m in manifests}


def test_scan_once_writes_exactly_what_boto3_lists(scan_estate: ScanEstate, tmp_path: Path) -> None:
    out, manifests = tmp_path / "inventory.jsonl", tmp_path / "manifests.jsonl"

    result = run_cloudinv(
        *scan_args(scan_estate, out, manifests), cwd=tmp_path, endpoint=scan_estate.endpoint
    )

    assert result.returncode == 0, result.stderr + result.stdout
    snapshots = read_snapshots(out)
    found: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for s in snapshots:
        found[(s.account_id, s.region, s.resource_type)].add(s.resource_id)
    for scope, ids in scan_estate.expected.items():
        assert found.get(scope, set()) == ids, scope
    assert set(found) <= set(scan_estate.expected)
    by_scope = read_manifests(manifests)
    assert set(by_scope) == set(scan_estate.expected)
    assert {m.status for m in by_scope.values()} == {"complete"}
    assert "Scan summary" in result.stdout
    assert f"{len(snapshots)} resources from {len(by_scope)} scopes" in result.stdout
    assert "scopes" in result.stderr  # the progress bar
    assert not (tmp_path / "inventory.jsonl.partial").exists()


async def test_scan_once_reports_denied_scopes_and_exits_1(
    scan_estate: ScanEstate, denying_proxy: str, tmp_path: Path
) -> None:
    out, manifests = tmp_path / "inventory.csv", tmp_path / "manifests.jsonl"
    # Run without blocking the loop: the denying proxy is served by this test's event loop.
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cloudinv",
        *scan_args(scan_estate, out, manifests),
        "--no-progress",
        cwd=tmp_path,
        env=scan_env(denying_proxy),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout_bytes, stderr_bytes = await asyncio.wait_for(process.communicate(), 120)
    stdout = stdout_bytes.decode()

    assert process.returncode == 1, stderr_bytes.decode() + stdout
    registry = default_registry()

    def denied(scope: tuple[str, str, str]) -> bool:
        spec = registry.get(scope[2])
        # S3 buckets are listed through the global endpoint, then recorded in their region.
        in_denied_region = scope[1] == SCAN_DENIED_REGION and not spec.global_service
        return in_denied_region or spec.service == SCAN_DENIED_SERVICE

    by_scope = read_manifests(manifests)
    assert {s for s, m in by_scope.items() if m.status == "failed"} == {
        s for s in scan_estate.expected if denied(s)
    }
    assert all(m.status == "complete" for s, m in by_scope.items() if not denied(s))
    # The summary names the failures and their codes.
    assert "Scopes not complete" in stdout
    assert "UnauthorizedOperation" in stdout and "AccessDenied" in stdout
    assert SCAN_DENIED_REGION in stdout
    failed = sum(1 for s in scan_estate.expected if denied(s))
    assert f"{failed} failed" in stdout

    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    found: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for row in rows:
        found[(row["account_id"], row["region"], row["resource_type"])].add(row["resource_id"])
        assert isinstance(orjson.loads(row["configuration"]), dict)
    for scope, ids in scan_estate.expected.items():
        assert found.get(scope, set()) == (set() if denied(scope) else ids), scope


def test_account_filter_and_single_type(scan_estate: ScanEstate, tmp_path: Path) -> None:
    out = tmp_path / "buckets.jsonl"
    account = scan_estate.accounts[1]
    args = ["scan", "--once", "--out", str(out), "--type", "aws::s3::bucket", "--no-progress"]
    for arn in scan_estate.role_arns:
        args += ["--role-arn", arn]
    result = run_cloudinv(*args, "--account", account, cwd=tmp_path, endpoint=scan_estate.endpoint)
    assert result.returncode == 0, result.stderr
    snapshots = read_snapshots(out)
    # Buckets are recorded in their own regions; together they are the account's buckets.
    assert {s.resource_id for s in snapshots} == {
        name
        for (owner, _, cfn_type), names in scan_estate.expected.items()
        if owner == account and cfn_type == "AWS::S3::Bucket"
        for name in names
    }
    assert {s.region for s in snapshots} == {"us-east-1", "eu-west-1"}


def test_bad_invocations_get_one_clear_line(tmp_path: Path, moto_endpoint: str) -> None:
    unknown = run_cloudinv(
        "scan",
        "--once",
        "--out",
        str(tmp_path / "x.jsonl"),
        "--type",
        "AWS::EC2::Instanse",
        cwd=tmp_path,
        endpoint=moto_endpoint,
    )
    assert unknown.returncode == 2
    assert "unknown resource type 'AWS::EC2::Instanse'" in unknown.stderr
    assert "AWS::EC2::Instance" in unknown.stderr
    assert "Traceback" not in unknown.stderr

    not_once = run_cloudinv("scan", cwd=tmp_path, endpoint=moto_endpoint)
    assert not_once.returncode == 2
    assert "cloudinv up" in not_once.stderr and "--once" in not_once.stderr

    bad_out = run_cloudinv(
        "scan", "--once", "--out", str(tmp_path / "x.parquet"), cwd=tmp_path, endpoint=moto_endpoint
    )
    assert bad_out.returncode == 2
    assert ".jsonl or .csv" in bad_out.stderr

    bad_region = run_cloudinv(
        "scan",
        "--once",
        "--out",
        str(tmp_path / "x.jsonl"),
        "--regions",
        "mars-1",
        cwd=tmp_path,
        endpoint=moto_endpoint,
    )
    assert bad_region.returncode == 2
    assert "mars-1" in bad_region.stderr

    listed = run_cloudinv("scan", "--list-types", cwd=tmp_path, endpoint=moto_endpoint)
    assert listed.returncode == 0
    assert "AWS::EC2::Instance\tec2\tregional" in listed.stdout


def test_scan_against_a_closed_port_ends_fast_with_one_line_per_account(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on once this closes
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    accounts = ["700000000081", "700000000082"]
    args = ["scan", "--once", "--out", str(tmp_path / "out.jsonl"), "--no-progress"]
    for account in accounts:
        args += ["--role-arn", f"arn:aws:iam::{account}:role/cloudinv-reader"]
    args += ["--regions", "us-east-1,eu-west-1"]  # every type: hundreds of scopes
    result = subprocess.run(
        [sys.executable, "-m", "cloudinv", *args],
        cwd=tmp_path,
        env=scan_env(closed),
        capture_output=True,
        text=True,
        timeout=60,  # the bound for the whole scan; it used to run for hours
        check=False,
    )
    assert result.returncode == 1, result.stderr + result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    # One warning line per account on stderr, one row per account in the summary.
    for account in accounts:
        assert sum(account in line for line in result.stderr.splitlines()) == 1, result.stderr
        rows = [line for line in result.stdout.splitlines() if line.strip("│ ").startswith(account)]
        assert len(rows) == 1, result.stdout
        assert "EndpointConnectionError" in rows[0]
    assert "0 resources from" in result.stdout
    assert "0 complete" in result.stdout and "failed" in result.stdout
    assert len(result.stderr.splitlines()) < 10, result.stderr
