"""``cloudinv athena ddl``: every registered type's typed table checked against botocore's
own output shapes (walked here independently, with the registry meta-test's reading of a
declaration), plus partition projection and views."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from botocore.model import Shape

from cloudinv.catalog.registry import default_registry
from cloudinv.catalog.spec import ResourceSpec
from cloudinv.sinks.athena_apply import apply_statements, split_statements
from cloudinv.sinks.athena_ddl import athena_ddl, table_name
from tests.cli_helpers import run_cli
from tests.test_registry_meta import item_members, members_of, service_model, walk

REGISTRY = default_registry()
DDL = athena_ddl("inventory-bucket", "cloudinv")

HIVE_SCALARS = {
    "string": "string",
    "blob": "string",
    "integer": "bigint",
    "long": "bigint",
    "boolean": "boolean",
    "float": "double",
    "double": "double",
    "timestamp": "timestamp",
}


def expected(shape: Shape, depth: int, path: tuple[str, ...]) -> Any:
    """The Hive type tree the shape should have: a scalar name or (kind, children)."""
    if shape.type_name in HIVE_SCALARS:
        return HIVE_SCALARS[shape.type_name]
    if shape.name in path or depth >= 12:
        return "string"  # recursive or very deep: JSON text
    inner = (*path, shape.name)
    if shape.type_name == "structure":
        fields: list[tuple[str, Any]] = []
        for name, member in shape.members.items():
            if name.lower() not in {f[0].lower() for f in fields}:
                fields.append((name, expected(member, depth + 1, inner)))
        return ("struct", fields) if fields else "string"
    if shape.type_name == "list":
        return ("array", expected(shape.member, depth + 1, inner))
    if shape.type_name == "map":
        return ("map", ("string", expected(shape.value, depth + 1, inner)))
    raise AssertionError(f"unexpected shape type {shape.type_name}")


def parse(text: str) -> Any:
    """A Hive type string (``struct<`A`:string,...>``) as the same tree."""
    tree, rest = _parse(text)
    assert rest == "", f"trailing {rest[:40]!r}"
    return tree


def _parse(text: str) -> tuple[Any, str]:
    for kind in ("struct", "array", "map"):
        if text.startswith(kind + "<"):
            text = text[len(kind) + 1 :]
            if kind == "struct":
                fields = []
                while True:
                    match = re.match(r"`([^`]+)`:", text)
                    assert match, text[:40]
                    child, text = _parse(text[match.end() :])
                    fields.append((match[1], child))
                    if text.startswith(","):
                        text = text[1:]
                        continue
                    assert text.startswith(">")
                    return (kind, fields), text[1:]
            if kind == "array":
                child, text = _parse(text)
                assert text.startswith(">")
                return (kind, child), text[1:]
            key, text = _parse(text)
            assert text.startswith(",")
            value, text = _parse(text[1:])
            assert text.startswith(">")
            return (kind, (key, value)), text[1:]
    match = re.match(r"[a-z]+", text)
    assert match, text[:40]
    return match[0], text[match.end() :]


def table_columns(name: str) -> dict[str, str]:
    match = re.search(
        rf"CREATE EXTERNAL TABLE IF NOT EXISTS `{name}` \(\n(.*?)\n\)\nPARTITIONED BY", DDL, re.S
    )
    assert match, f"no table {name}"
    columns = {}
    for line in match[1].split(",\n"):
        col = re.match(r"  `([^`]+)` (.+)$", line, re.S)
        assert col, line
        columns[col[1]] = col[2]
    return columns


def configuration_members(spec: ResourceSpec) -> dict[str, Shape]:
    """As the collector builds a configuration (cloudinv.producers.collect): the list item, then
    each stage's detail results, a later one replacing a field of the same name."""
    members = item_members(spec)
    for stage in sorted({d.stage for d in spec.details}):
        for detail in (d for d in spec.details if d.stage == stage):
            result = service_model(spec.service).operation_model(detail.operation).output_shape
            if detail.result_path is not None:
                result = walk(result, detail.result_path)
            if detail.merge_key is not None:
                members[detail.merge_key] = result
            elif result.type_name == "structure":
                members.update(
                    (k, v) for k, v in members_of(result).items() if k != "ResponseMetadata"
                )
    return members


def expected_configuration(spec: ResourceSpec) -> Any:
    fields: list[tuple[str, Any]] = []
    for name, member in configuration_members(spec).items():
        if name.lower() not in {f[0].lower() for f in fields}:
            fields.append((name, expected(member, 1, ())))
    return ("struct", fields)


@pytest.mark.parametrize("spec", REGISTRY.all(), ids=lambda s: s.cfn_type)
def test_typed_columns_match_the_botocore_shapes(spec: ResourceSpec) -> None:
    want = expected_configuration(spec)
    snapshots = table_columns(table_name("snapshots", spec.cfn_type))
    assert parse(snapshots["configuration"]) == want
    changes = table_columns(table_name("changes", spec.cfn_type))
    assert parse(changes["configuration"]) == want
    assert parse(changes["prior_configuration"]) == want
    # Not all strings: every type has at least one typed (non-string) leaf or nesting.
    assert re.search(r"struct<|array<|bigint|boolean|timestamp", snapshots["configuration"])


def test_a_few_well_known_fields_have_the_right_types() -> None:
    instance = parse(table_columns("snapshots_ec2_instance")["configuration"])
    fields = dict(instance[1])
    assert fields["LaunchTime"] == "timestamp"
    assert fields["AmiLaunchIndex"] == "bigint"
    assert fields["EbsOptimized"] == "boolean"
    assert fields["State"] == ("struct", [("Code", "bigint"), ("Name", "string")])
    assert fields["Tags"] == ("array", ("struct", [("Key", "string"), ("Value", "string")]))
    bucket = dict(parse(table_columns("snapshots_s3_bucket")["configuration"])[1])
    assert bucket["PolicyStatus"] == ("struct", [("IsPublic", "boolean")])


def test_cross_type_tables_use_partition_projection_over_every_type() -> None:
    block = DDL.split("CREATE EXTERNAL TABLE IF NOT EXISTS `snapshots` (")[1].split(";")[0]
    assert "PARTITIONED BY (`resource_type` string, `dt` string)" in block
    assert "LOCATION 's3://inventory-bucket/cloudinv/snapshots/'" in block
    values = re.search(r"'projection.resource_type.values'='([^']+)'", block)
    assert values and values[1].split(",") == REGISTRY.types()
    assert "'projection.dt.type'='date'" in block
    assert (
        "'storage.location.template'='s3://inventory-bucket/cloudinv/snapshots/"
        "resource_type=${resource_type}/dt=${dt}/'" in block
    )
    typed = DDL.split("CREATE EXTERNAL TABLE IF NOT EXISTS `snapshots_ec2_instance` (")[1]
    typed = typed.split(";")[0]
    assert "PARTITIONED BY (`dt` string)" in typed
    assert "snapshots/resource_type=AWS::EC2::Instance/dt=${dt}/'" in typed
    tables = re.findall(r"CREATE EXTERNAL TABLE IF NOT EXISTS `([^`]+)`", DDL)
    assert len(tables) == 3 + 2 * len(REGISTRY)
    views = re.findall(r'CREATE OR REPLACE VIEW "([^"]+)"', DDL)
    assert {"snapshots_current", "snapshots_latest_per_day", "changes_latest_per_day"} <= set(views)
    assert "snapshots_ec2_instance_current" in views
    qualified = athena_ddl("inventory-bucket", database="inv")
    assert qualified.startswith("CREATE DATABASE IF NOT EXISTS `inv`;")
    assert "CREATE EXTERNAL TABLE IF NOT EXISTS `inv`.`snapshots` (" in qualified
    assert 'FROM "inv"."snapshots" s) t WHERE t.dt = t.latest_dt' in qualified
    injected = athena_ddl("inventory-bucket", projection="injected")
    assert "'projection.resource_type.type'='injected'" in injected
    assert "projection.resource_type.values" not in injected


def test_cli_prints_the_ddl_and_needs_a_bucket(tmp_path: Path) -> None:
    done = run_cli("athena", "ddl", "--bucket", "my-inv", "--prefix", "p/q", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "LOCATION 's3://my-inv/p/q/changes/'" in done.stdout
    assert done.stdout.count("CREATE EXTERNAL TABLE") == 3 + 2 * len(REGISTRY)
    missing = run_cli("athena", "ddl", cwd=tmp_path)
    assert missing.returncode == 2
    assert "pass --bucket or set storage.s3_bucket" in missing.stderr
    bad = run_cli("athena", "ddl", "--bucket", "Not_A_Bucket", cwd=tmp_path)
    assert bad.returncode == 2 and "not an S3 bucket name" in bad.stderr


def test_apply_runs_every_statement_in_athena(tmp_path: Path, moto_endpoint: str) -> None:
    """``--apply`` against moto's Athena: every statement is started and waited for."""
    env = {
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    args = ("athena", "ddl", "--bucket", "my-inv", "--database", "inv", "--apply")
    done = run_cli(*args, "--output-location", "s3://results/q/", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    total = 1 + 3 + 2 * len(REGISTRY) + done.stdout.count("CREATE OR REPLACE VIEW")
    assert len(lines) == total and all(" ok " in line for line in lines)
    assert lines[0].startswith(f"[1/{total}] ok  CREATE DATABASE")
    assert f"{total} of {total} statement(s) applied" in done.stderr

    bad = run_cli(*args, "--output-location", "results/q", cwd=tmp_path, env=env)
    assert bad.returncode == 2 and "expected s3://" in bad.stderr


async def test_apply_reports_each_statement_athena_refuses(moto_endpoint: str) -> None:
    """A workgroup Athena does not have: every statement fails, each with Athena's reason,
    in the order given (the CLI exits 1 on any failure)."""
    statements = split_statements(athena_ddl("my-inv", database="inv"))[:4]
    seen: list[str] = []
    results = await apply_statements(
        statements,
        region="us-east-1",
        workgroup="no-such-workgroup",
        endpoint_url=moto_endpoint,
        on_result=lambda r: seen.append(r.title),
    )
    assert [r.statement for r in results] == statements
    assert all(not r.ok and r.state == "ERROR" and r.reason for r in results), results
    assert sorted(seen) == sorted(r.title for r in results)
