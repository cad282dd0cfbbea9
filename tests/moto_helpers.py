"""Shared by the tests that work in a fresh account of the simulated AWS (moto): the account's
reader role, boto3 clients inside it (for seeding, on the test's thread), and the settings and
access the producers reach it with."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import boto3
from aiobotocore.session import get_session

from cloudinv.core.settings import AccountRole, AwsSettings
from cloudinv.producers.credentials import AwsAccess


def account_session(endpoint: str, account: str, region: str | None = None) -> Any:
    """A boto3 session in ``account`` through its reader role (seeding only, on the test's
    thread: product code is async)."""
    sts = boto3.client("sts", endpoint_url=endpoint, region_name=region or "us-east-1")
    credentials = sts.assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/cloudinv-reader", RoleSessionName="seed"
    )["Credentials"]
    return boto3.Session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
        region_name=region,
    )


@dataclass(frozen=True)
class MemberAccount:
    """A fresh moto account (a random id starting with ``first_digit``) and its reader role."""

    endpoint: str
    account: str
    role: str
    credentials: dict[str, Any]

    @classmethod
    def create(cls, endpoint: str, first_digit: int) -> MemberAccount:
        account = f"{first_digit}{random.randrange(10**10, 10**11)}"
        role = f"arn:aws:iam::{account}:role/cloudinv-reader"
        sts = boto3.client("sts", endpoint_url=endpoint, region_name="us-east-1")
        credentials = sts.assume_role(RoleArn=role, RoleSessionName="seed")["Credentials"]
        return cls(endpoint, account, role, credentials)

    def client(self, service: str, region: str) -> Any:
        """A boto3 client in this account (seeding only: product code is async)."""
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=region,
            aws_access_key_id=self.credentials["AccessKeyId"],
            aws_secret_access_key=self.credentials["SecretAccessKey"],
            aws_session_token=self.credentials["SessionToken"],
        )

    def aws(self, regions: list[str]) -> AwsSettings:
        """Settings that scan this account through its reader role."""
        return AwsSettings(
            accounts=[AccountRole(role_arn=self.role)], regions=regions, endpoint_url=self.endpoint
        )

    def access(self, aws: AwsSettings) -> AwsAccess:
        """The producers' access for ``aws``, from moto's test credentials."""
        session = get_session()
        session.set_credentials("testing", "testing")
        return AwsAccess.from_settings(aws, base_session=session)
