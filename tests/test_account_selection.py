"""Account selection composes: explicit roles or Organizations discovery, filtered by the
[aws] include / exclude lists (accounts and OUs), so producers can split an organization;
``--role-arn`` is the whole selection even with discovery on. Against moto's Organizations."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import boto3
import pytest
from aiobotocore.session import AioSession

from cloudinv.core.errors import ConfigError
from cloudinv.core.settings import AwsSettings, load_settings, role_arn_overrides
from cloudinv.producers.accounts import OuMembers, is_selected, select_roles
from cloudinv.producers.credentials import AccountDiscoveryError, AwsAccess


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("CLOUDINV_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def test_lists_pick_a_share_and_exclusion_wins() -> None:
    a, b, c = "111111111111", "222222222222", "333333333333"
    roles = [
        {"role_arn": f"arn:aws:iam::{x}:role/reader"} for x in (a, b, c, a)
    ]  # a twice: the first wins
    aws = AwsSettings(accounts=roles)
    assert [r.account_id for r in select_roles(aws.accounts, aws)] == [a, b, c]
    first = AwsSettings(accounts=roles, include_accounts=[a, b])
    rest = AwsSettings(accounts=roles, exclude_accounts=[a, b])
    assert [r.account_id for r in select_roles(first.accounts, first)] == [a, b]
    assert [r.account_id for r in select_roles(rest.accounts, rest)] == [c]
    # OUs: included by membership, and an excluded OU beats an included account.
    ous = OuMembers(included=frozenset({c}), excluded=frozenset({b}))
    both = AwsSettings(accounts=roles, include_accounts=[b])
    assert [r.account_id for r in select_roles(both.accounts, both, ous)] == [c]
    assert not is_selected(b, both, ous)


def test_bad_selection_settings_fail_with_the_key_and_what_to_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLOUDINV_AWS__INCLUDE_ACCOUNTS", "12345,222222222222")
    with pytest.raises(ConfigError, match=r"aws\.include_accounts .*12-digit AWS account ids"):
        load_settings()
    monkeypatch.setenv("CLOUDINV_AWS__INCLUDE_ACCOUNTS", "222222222222")
    monkeypatch.setenv("CLOUDINV_AWS__EXCLUDE_ACCOUNTS", "222222222222")
    with pytest.raises(ConfigError, match="both in include_accounts and exclude_accounts"):
        load_settings()
    monkeypatch.delenv("CLOUDINV_AWS__EXCLUDE_ACCOUNTS")
    monkeypatch.setenv("CLOUDINV_AWS__INCLUDE_OUS", "ou-ab12-cd34ef56")
    with pytest.raises(ConfigError, match="set organization_role_name too"):
        load_settings()
    monkeypatch.setenv("CLOUDINV_AWS__INCLUDE_OUS", "engineering")
    with pytest.raises(ConfigError, match="organizational unit ids like ou-"):
        load_settings()
    monkeypatch.setenv("CLOUDINV_AWS__ORGANIZATION_ROLE_NAME", "reader")
    monkeypatch.setenv("CLOUDINV_AWS__INCLUDE_OUS", "ou-ab12-cd34ef56,r-ab12")
    assert load_settings().aws.include_ous == ["ou-ab12-cd34ef56", "r-ab12"]


def test_role_arn_is_the_whole_selection_even_with_discovery(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLOUDINV_AWS__ORGANIZATION_ROLE_NAME", "reader")
    monkeypatch.setenv("CLOUDINV_AWS__INCLUDE_OUS", "ou-ab12-cd34ef56")
    arn = "arn:aws:iam::222222222222:role/reader"
    aws = load_settings(aws=role_arn_overrides([arn])).aws
    assert aws.organization_role_name is None and aws.include_ous == []
    assert [a.role_arn for a in aws.accounts] == [arn]


@pytest.fixture(scope="module")
def organization(moto_endpoint: str) -> dict[str, Any]:
    """An organization: management account, an OU 'eng' with a nested OU 'eng/web', one
    account in each OU and one at the root."""
    management = f"6{random.randrange(10**10, 10**11):011d}"
    creds = boto3.client("sts", endpoint_url=moto_endpoint, region_name="us-east-1").assume_role(
        RoleArn=f"arn:aws:iam::{management}:role/admin", RoleSessionName="org"
    )["Credentials"]
    org = boto3.client(
        "organizations",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )
    org.create_organization(FeatureSet="ALL")
    root = org.list_roots()["Roots"][0]["Id"]
    eng = org.create_organizational_unit(ParentId=root, Name="eng")["OrganizationalUnit"]["Id"]
    web = org.create_organizational_unit(ParentId=eng, Name="web")["OrganizationalUnit"]["Id"]

    def account(name: str, parent: str | None) -> str:
        made = org.create_account(AccountName=name, Email=f"{name}-{management}@example.com")
        account_id: str = made["CreateAccountStatus"]["AccountId"]
        if parent is not None:
            org.move_account(AccountId=account_id, SourceParentId=root, DestinationParentId=parent)
        return account_id

    return {
        "creds": creds,
        "management": management,
        "root": root,
        "eng": eng,
        "web": web,
        "in_eng": account("eng-1", eng),
        "in_web": account("web-1", web),
        "at_root": account("ops-1", None),
    }


def _access(moto_endpoint: str, creds: dict[str, Any]) -> AwsAccess:
    base = AioSession()
    base.set_credentials(creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"])
    return AwsAccess(endpoint_url=moto_endpoint, base_session=base)


async def test_discovery_filtered_by_ous_and_accounts_splits_the_organization(
    moto_endpoint: str, organization: dict[str, Any]
) -> None:
    access = _access(moto_endpoint, organization["creds"])
    o = organization

    async def selected(**lists: Any) -> set[str]:
        aws = AwsSettings(organization_role_name="reader", **lists)
        return {t.account_id for t in await access.discover_accounts(aws)}

    everything = await selected()
    assert everything == {o["management"], o["in_eng"], o["in_web"], o["at_root"]}
    # Nested OUs count as under their parent.
    assert await selected(include_ous=[o["eng"]]) == {o["in_eng"], o["in_web"]}
    assert await selected(include_ous=[o["eng"]], exclude_ous=[o["web"]]) == {o["in_eng"]}
    # Two producers, complementary lists: each account scanned exactly once.
    share = [o["management"], o["in_web"]]
    first = await selected(include_accounts=share)
    second = await selected(exclude_accounts=share)
    assert first | second == everything and not first & second
    with pytest.raises(AccountDiscoveryError, match="none of the 4 account"):
        await selected(include_accounts=["999999999999"])


async def test_unknown_ou_is_a_discovery_error_naming_the_lists(
    moto_endpoint: str, organization: dict[str, Any]
) -> None:
    access = _access(moto_endpoint, organization["creds"])
    aws = AwsSettings(organization_role_name="reader", include_ous=["ou-zz99-zzzzzzzz"])
    with pytest.raises(AccountDiscoveryError, match=r"aws\.include_ous / exclude_ous"):
        await access.discover_accounts(aws)
