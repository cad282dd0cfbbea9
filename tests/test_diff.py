"""What counts as a change: normalization rules, and JSON Patches that really turn the old
document into the new one (checked with an independent RFC 6902 implementation)."""

from __future__ import annotations

import copy
import random
from typing import Any

import jsonpatch  # type: ignore[import-untyped]
import orjson
import pytest

from cloudinv.catalog.diff import (
    NormalizationRules,
    changed_paths,
    json_patch,
    normalize,
    normalized_hash,
    rules_for_type,
    rules_of,
)
from cloudinv.catalog.registry import default_registry
from cloudinv.catalog.spec import ResourceSpec
from cloudinv.core.codec import encode
from cloudinv.core.models import ChangeEvent, JsonPatchOp, canonical_json


def apply(doc: Any, patch: list[JsonPatchOp]) -> Any:
    """Apply with the independent implementation, the ops as they travel on the wire."""
    ops = [orjson.loads(encode_op(op)) for op in patch]
    return jsonpatch.apply_patch(copy.deepcopy(doc), ops)


def encode_op(op: JsonPatchOp) -> bytes:
    return orjson.dumps(op.model_dump(mode="json", by_alias=True))


SG = {
    "GroupId": "sg-1",
    "GroupName": "web",
    "IpPermissions": [
        {
            "IpProtocol": "tcp",
            "FromPort": 443,
            "ToPort": 443,
            "IpRanges": [{"CidrIp": "10.0.0.0/8"}, {"CidrIp": "0.0.0.0/0"}],
            "UserIdGroupPairs": [],
        },
        {
            "IpProtocol": "tcp",
            "FromPort": 22,
            "ToPort": 22,
            "IpRanges": [{"CidrIp": "10.1.0.0/16", "Description": "vpn"}],
            "UserIdGroupPairs": [{"GroupId": "sg-9", "UserId": "111111111111"}],
        },
    ],
    "Tags": [{"Key": "b", "Value": "2"}, {"Key": "a", "Value": "1"}],
    "VpcSecurityGroupIds": ["sg-3", "sg-1", "sg-2"],
}


# -- normalization ----------------------------------------------------------------------------


def test_reordered_tags_rules_ranges_and_id_sets_normalize_equal() -> None:
    shuffled = copy.deepcopy(SG)
    shuffled["IpPermissions"].reverse()
    shuffled["IpPermissions"][1]["IpRanges"].reverse()
    shuffled["Tags"].reverse()
    shuffled["VpcSecurityGroupIds"] = ["sg-2", "sg-3", "sg-1"]
    assert normalize(shuffled) == normalize(SG)
    assert normalized_hash(normalize(shuffled)) == normalized_hash(normalize(SG))


def test_normalized_lists_are_sorted_by_identity() -> None:
    out = normalize(SG)
    assert [t["Key"] for t in out["Tags"]] == ["a", "b"]
    assert out["VpcSecurityGroupIds"] == ["sg-1", "sg-2", "sg-3"]
    https = next(p for p in out["IpPermissions"] if p["FromPort"] == 443)
    assert [r["CidrIp"] for r in https["IpRanges"]] == ["0.0.0.0/0", "10.0.0.0/8"]


def test_a_real_change_still_changes_the_hash() -> None:
    opened = copy.deepcopy(SG)
    opened["IpPermissions"][1]["IpRanges"].append({"CidrIp": "0.0.0.0/0"})
    assert normalized_hash(normalize(opened)) != normalized_hash(normalize(SG))


def test_ordered_lists_without_identity_keep_their_order() -> None:
    doc = {"Command": ["sh", "-c", "run"], "Behaviors": [{"Path": "/b"}, {"Path": "/a"}]}
    assert normalize(doc) == doc
    swapped = {"Command": ["-c", "sh", "run"], "Behaviors": doc["Behaviors"]}
    assert normalize(swapped) != normalize(doc)


def test_ids_that_repeat_are_not_an_identity() -> None:
    doc = {"Things": [{"Name": "x", "v": 2}, {"Name": "x", "v": 1}]}
    assert normalize(doc) == doc


def test_explicit_list_ids_and_ordered_lists() -> None:
    rules = NormalizationRules(list_ids={"Rules": ("Priority",)}, ordered_lists=frozenset({"Tags"}))
    doc = {
        "Rules": [{"Priority": 2, "Name": "b"}, {"Priority": 1, "Name": "a"}],
        "Tags": [{"Key": "z"}, {"Key": "a"}],
    }
    out = normalize(doc, rules)
    assert [r["Priority"] for r in out["Rules"]] == [1, 2]
    assert [t["Key"] for t in out["Tags"]] == ["z", "a"]


def test_a_declaration_gives_the_rules_it_declares() -> None:
    spec = ResourceSpec(
        cfn_type="AWS::ElasticLoadBalancingV2::Thing",
        service="elbv2",
        list_operation="DescribeLoadBalancers",
        result_path="LoadBalancers",
        id_field="LoadBalancerArn",
        arn_field="LoadBalancerArn",
        volatile_fields=("State.Code",),
        list_ids={"Rules": ("Priority",)},
        ordered_lists=frozenset({"Actions"}),
    )
    rules = rules_of(spec)
    assert rules == NormalizationRules(
        volatile_paths=("State.Code",),
        list_ids={"Rules": ("Priority",)},
        ordered_lists=frozenset({"Actions"}),
    )
    doc = {"Rules": [{"Priority": 2}, {"Priority": 1}], "State": {"Code": "active"}}
    assert normalize(doc, rules) == {"Rules": [{"Priority": 1}, {"Priority": 2}], "State": {}}
    # Every registered type's rules are its declaration's (nothing read that is not declared).
    for registered in default_registry().all():
        assert rules_for_type(registered.cfn_type) == rules_of(registered)


def test_volatile_paths_are_dropped_including_inside_lists() -> None:
    rules = NormalizationRules(
        volatile_paths=("ItemCount", "Stats.Last", "Deployments[].runningCount", "Nope.x")
    )
    doc = {
        "ItemCount": 5,
        "Stats": {"Last": "t", "Keep": 1},
        "Deployments": [{"id": "d1", "runningCount": 3}, {"id": "d2", "runningCount": 1}],
        "Name": "t",
    }
    out = normalize(doc, rules)
    assert out == {
        "Stats": {"Keep": 1},
        "Deployments": [{"id": "d1"}, {"id": "d2"}],
        "Name": "t",
    }
    assert doc["ItemCount"] == 5 and doc["Deployments"][0]["runningCount"] == 3  # not mutated
    ticked = copy.deepcopy(doc)
    ticked["ItemCount"] = 6
    ticked["Deployments"][1]["runningCount"] = 9
    assert normalize(ticked, rules) == out


def test_rules_come_from_the_registry_and_unknown_types_get_defaults() -> None:
    assert "ItemCount" in rules_for_type("AWS::DynamoDB::Table").volatile_paths
    assert rules_for_type("AWS::Nothing::Here") == NormalizationRules()


# -- JSON Patch ---------------------------------------------------------------------------------


def test_patch_for_a_tag_change_and_an_opened_rule() -> None:
    old = normalize(SG)
    new_doc = copy.deepcopy(SG)
    new_doc["Tags"][1]["Value"] = "changed"
    new_doc["IpPermissions"].append(
        {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
    )
    new = normalize(new_doc)
    patch = json_patch(old, new)
    assert apply(old, patch) == new
    assert JsonPatchOp(op="replace", path="/Tags/0/Value", value="changed") in patch
    adds = [op for op in patch if op.op == "add"]
    assert len(adds) == 1 and adds[0].value["FromPort"] == 80
    assert "/Tags/0/Value" in changed_paths(patch)


def test_creation_and_deletion_patches() -> None:
    doc = {"a": 1, "b": [1, 2]}
    created = json_patch(None, doc)
    assert {op.op for op in created} == {"add"} and apply({}, created) == doc
    deleted = json_patch(doc, None)
    assert {op.op for op in deleted} == {"remove"} and apply(doc, deleted) == {}
    assert json_patch(doc, copy.deepcopy(doc)) == []


def test_json_types_are_not_confused() -> None:
    patch = json_patch({"a": 1, "b": True, "c": 1.0}, {"a": True, "b": 1, "c": 1})
    assert sorted(op.path for op in patch) == ["/a", "/b", "/c"]


def test_pointer_escaping() -> None:
    old = {"a/b": {"c~d": 1}}
    new = {"a/b": {"c~d": 2}}
    patch = json_patch(old, new)
    assert patch[0].path == "/a~1b/c~0d"
    assert apply(old, patch) == new


def test_patch_travels_in_a_change_event() -> None:
    patch = json_patch({"a": [1, 2, 3]}, {"a": [1, 3], "b": None})
    event = ChangeEvent.model_validate_json(
        encode(
            ChangeEvent(
                change_id="x",
                key="k",
                resource_type="AWS::S3::Bucket",
                resource_id="b",
                account_id="111111111111",
                region="global",
                change_type="modified",
                patch=patch,
                captured_at="2026-01-01T00:00:00Z",  # type: ignore[arg-type]
                detected_at="2026-01-01T00:00:00Z",  # type: ignore[arg-type]
            )
        )
    )
    assert apply({"a": [1, 2, 3]}, event.patch) == {"a": [1, 3], "b": None}


# -- property-ish: many random documents --------------------------------------------------------


def _scalar(rng: random.Random) -> Any:
    return rng.choice(
        [
            None,
            True,
            False,
            rng.randint(-3, 3),
            rng.random(),
            rng.choice(["", "x", "y", "a/b", "t~1", "0"]),
        ]
    )


def _value(rng: random.Random, depth: int) -> Any:
    roll = rng.random()
    if depth <= 0 or roll < 0.4:
        return _scalar(rng)
    if roll < 0.7:
        return {rng.choice("abcdefg/~"): _value(rng, depth - 1) for _ in range(rng.randint(0, 5))}
    return [_value(rng, depth - 1) for _ in range(rng.randint(0, 5))]


def _mutate(rng: random.Random, value: Any, depth: int = 0) -> Any:
    if isinstance(value, dict) and value and rng.random() < 0.8:
        out = dict(value)
        for _ in range(rng.randint(1, 3)):
            action = rng.random()
            key = rng.choice([*out, rng.choice("abcdefgh")]) if out else "z"
            if action < 0.3 and key in out:
                del out[key]
            elif action < 0.7 and key in out:
                out[key] = _mutate(rng, out[key], depth + 1)
            else:
                out[key] = _value(rng, 2)
        return out
    if isinstance(value, list) and rng.random() < 0.8:
        out_list = list(value)
        for _ in range(rng.randint(1, 3)):
            action = rng.random()
            if action < 0.3 and out_list:
                del out_list[rng.randrange(len(out_list))]
            elif action < 0.6 and out_list:
                i = rng.randrange(len(out_list))
                out_list[i] = _mutate(rng, out_list[i], depth + 1)
            elif action < 0.8:
                out_list.insert(rng.randint(0, len(out_list)), _value(rng, 2))
            else:
                rng.shuffle(out_list)
        return out_list
    return _value(rng, 3)


@pytest.mark.parametrize("seed", range(20))
def test_applying_the_patch_to_old_gives_new_for_random_documents(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(200):
        old = {k: _value(rng, 4) for k in rng.sample("abcdefghij", rng.randint(0, 6))}
        new = _mutate(rng, old)
        if not isinstance(new, dict):
            new = {"root": new}
        patch = json_patch(old, new)
        assert apply(old, patch) == new, (old, new, patch)
        assert (patch == []) == (canonical_json(old) == canonical_json(new))
        # and on the normalized forms, the way the detector uses it
        n_old, n_new = normalize(old), normalize(new)
        assert apply(n_old, json_patch(n_old, n_new)) == n_new


@pytest.mark.parametrize("seed", range(5))
def test_shuffling_identified_lists_never_changes_the_hash(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(100):
        tags = [{"Key": f"k{i}", "Value": str(rng.random())} for i in range(rng.randint(2, 8))]
        perms = [
            {
                "IpProtocol": rng.choice(["tcp", "udp", "-1"]),
                "FromPort": p,
                "ToPort": p,
                "IpRanges": [{"CidrIp": f"10.{i}.0.0/16"} for i in range(rng.randint(0, 4))],
            }
            for p in rng.sample(range(1, 1000), rng.randint(1, 5))
        ]
        doc = {"Tags": tags, "IpPermissions": perms, "SubnetIds": [f"s-{i}" for i in range(5)]}
        shuffled = copy.deepcopy(doc)
        rng.shuffle(shuffled["Tags"])
        rng.shuffle(shuffled["IpPermissions"])
        for perm in shuffled["IpPermissions"]:
            rng.shuffle(perm["IpRanges"])
        rng.shuffle(shuffled["SubnetIds"])
        assert normalized_hash(normalize(shuffled)) == normalized_hash(normalize(doc))


def test_target_group_targets_compare_as_a_set_of_targets() -> None:
    """DescribeTargetHealth returns targets in no stable order: a reorder is no change, and a
    deregistered target is one removal (its health, being volatile, is not compared)."""
    rules = rules_for_type("AWS::ElasticLoadBalancingV2::TargetGroup")
    a = {"Target": {"Id": "i-a", "Port": 80}, "TargetHealth": {"State": "healthy"}}
    b = {"Target": {"Id": "i-b", "Port": 80}, "TargetHealth": {"State": "unhealthy"}}
    before = normalize({"Targets": [a, b]}, rules)
    assert normalize({"Targets": [b, a]}, rules) == before
    ops = json_patch(before, normalize({"Targets": [b]}, rules))
    assert [(op.op, op.path) for op in ops] == [("remove", "/Targets/0")]
