"""The derived catalog: the committed data file, the registry it fills, type selection.

``derived_types.json`` is generated from cfn-lint's schemas and botocore's models; the first
test regenerates it with the installed versions and compares, so a stale file (or a change to
the derivation not followed by ``python -m cloudinv.catalog.derive --write``) fails here.
"""

from __future__ import annotations

import json
from importlib import metadata

import botocore.session
import pytest

from cloudinv.catalog.derive import SchemaSource, derive_catalog, render
from cloudinv.catalog.generic import DATA_FILE, derived_catalog
from cloudinv.catalog.registry import (
    Registry,
    UnknownResourceType,
    curated_registry,
    default_registry,
    excluded_types,
)
from cloudinv.catalog.transform import MalformedResource, resource_region
from cloudinv.cli import main
from cloudinv.core.settings import AwsSettings
from cloudinv.producers.engine import select_types

REGISTRY = default_registry()
CURATED = curated_registry()


def test_data_file_is_what_the_derivation_generates_now() -> None:
    committed = json.loads(DATA_FILE.read_text())
    versions = committed["generated_from"]
    if versions["botocore"] != metadata.version("botocore"):
        pytest.skip(
            f"derived_types.json is from botocore {versions['botocore']}, "
            f"{metadata.version('botocore')} is installed: regenerate with "
            "`python -m cloudinv.catalog.derive --write` and review the diff"
        )
    regenerated = derive_catalog(
        SchemaSource.from_cfn_lint(), botocore.session.get_session(), CURATED
    )
    assert render(regenerated) == DATA_FILE.read_text(), (
        "derived_types.json is stale: run `python -m cloudinv.catalog.derive --write`"
    )


def test_at_least_400_types_named_by_cloudformation_and_curated_first() -> None:
    assert len(REGISTRY) >= 400
    assert len(CURATED) == 83
    derived = [spec for spec in REGISTRY if spec.derived]
    assert len(derived) + len(CURATED) == len(REGISTRY)
    # Curated declarations win: same objects, not replaced by a derived one.
    for spec in CURATED:
        assert REGISTRY.get(spec.cfn_type) is spec
    assert not {spec.cfn_type for spec in derived} & set(CURATED.types())
    for cfn_type in ("AWS::Glue::Job", "AWS::Cognito::UserPool", "AWS::Transfer::Server"):
        assert REGISTRY.get(cfn_type).derived, cfn_type


def test_left_out_types_say_why_and_are_not_registered() -> None:
    excluded = excluded_types()
    assert excluded
    assert not set(excluded) & set(REGISTRY.types())
    assert all(why.strip() for why in excluded.values())
    # Types that share one list call cannot be told apart: left out, not double-recorded.
    shared = [why for why in excluded.values() if "also lists" in why]
    assert shared
    calls = [(spec.service, spec.list_operation) for spec in REGISTRY if spec.derived]
    assert len(calls) == len(set(calls))


def test_derived_catalog_is_read_once() -> None:
    assert derived_catalog() is derived_catalog()
    assert derived_catalog().generated_from["schema_region"] == "us-east-1"


def test_global_services_come_from_the_endpoint_data() -> None:
    globals_ = {spec.service for spec in REGISTRY if spec.derived and spec.global_service}
    assert "iam" in globals_ or "networkmanager" in globals_
    regional = {spec.service for spec in REGISTRY if spec.derived and not spec.global_service}
    assert {"glue", "transfer"} <= regional


def _names(specs: list[object]) -> set[str]:
    return {spec.cfn_type for spec in specs}  # type: ignore[attr-defined]


def test_type_selection_from_settings() -> None:
    everything = select_types(REGISTRY, AwsSettings())
    assert len(everything) == len(REGISTRY)
    curated = select_types(REGISTRY, AwsSettings(types="curated"))
    assert _names(curated) == set(CURATED.types())
    opted = select_types(
        REGISTRY,
        AwsSettings(
            types="curated",
            include_types="AWS::Glue::Job,aws::transfer::server",
            exclude_types=["AWS::EC2::Instance"],
        ),
    )
    assert _names(opted) == set(CURATED.types()) - {"AWS::EC2::Instance"} | {
        "AWS::Glue::Job",
        "AWS::Transfer::Server",
    }
    # Named types are scanned as named, still without the excluded ones.
    named = select_types(
        REGISTRY,
        AwsSettings(exclude_types=["AWS::Glue::Job"]),
        ["AWS::Glue::Job", "AWS::S3::Bucket"],
    )
    assert _names(named) == {"AWS::S3::Bucket"}
    with pytest.raises(UnknownResourceType, match="AWS::Glue::Job"):
        select_types(REGISTRY, AwsSettings(exclude_types=["AWS::Glue::Jobb"]))


def test_bucket_region_from_its_location() -> None:
    spec = REGISTRY.get("AWS::S3::Bucket")
    assert resource_region(spec, {"Location": "eu-west-1"}, "global") == "eu-west-1"
    assert resource_region(spec, {"Location": None}, "global") == "us-east-1"
    assert resource_region(spec, {"Location": "EU"}, "global") == "eu-west-1"
    with pytest.raises(MalformedResource):
        resource_region(spec, {"Location": ["eu-west-1"]}, "global")
    other = REGISTRY.get("AWS::EC2::VPC")
    assert resource_region(other, {"Location": "eu-west-1"}, "ap-south-1") == "ap-south-1"


def test_list_types_all_shows_left_out_types(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan", "--list-types"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(REGISTRY)
    assert "AWS::Glue::Job\tglue\tregional\tderived" in lines
    assert main(["scan", "--list-types", "--curated"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(CURATED)
    assert main(["scan", "--list-types", "--all", "--curated"]) == 0
    lines = capsys.readouterr().out.splitlines()
    left_out = [line for line in lines if "\tleft out\t" in line]
    assert len(left_out) == len(excluded_types())
    assert any(line.endswith("not selected") for line in lines)


def test_registry_accepts_only_known_specs() -> None:
    assert len(Registry(CURATED)) == len(CURATED)


def test_derived_types_relate_only_through_unambiguous_field_names() -> None:
    related = {spec.cfn_type: spec.relationships for spec in REGISTRY if spec.derived}
    with_edges = [t for t, rels in related.items() if rels]
    assert len(with_edges) >= 150
    association = {
        (r.path, r.target_type, r.by)
        for r in related["AWS::Route53Resolver::FirewallRuleGroupAssociation"]
    }
    assert ("VpcId", "AWS::EC2::VPC", "id") in association
    # A name several CloudFormation types share, none of them of the source's service nor
    # EC2's, names nothing: Bedrock's policyId is not an FMS policy.
    bedrock = related.get("AWS::Bedrock::AutomatedReasoningPolicy", ())
    assert not [r for r in bedrock if r.target_type == "AWS::FMS::Policy"]
    roles = [r for rels in related.values() for r in rels if r.target_type == "AWS::IAM::Role"]
    assert roles and all(r.by == "arn" and r.name == "uses" for r in roles)
