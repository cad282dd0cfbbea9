"""Which accounts one process scans: the ``[aws]`` include / exclude lists applied to the
candidate accounts (the explicit roles and the accounts Organizations discovery found).

Selection composes so producers can split an organization: each producer process runs with
the same discovery and its own lists (``include_accounts`` for one share,
``exclude_accounts`` of the same ids for the rest, or one OU each), and scans exactly its
share. The rules, in order:

- an account in ``exclude_accounts`` or under an OU of ``exclude_ous`` is never scanned;
- when ``include_accounts`` or ``include_ous`` is given, only the accounts they name (or that
  are under the named OUs, nested OUs included) are scanned;
- otherwise every candidate is.

OU membership is read from Organizations (``ListAccountsForParent`` and
``ListOrganizationalUnitsForParent``, recursively) once per discovery.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cloudinv.core.settings import AccountRole, AwsSettings

__all__ = ["OuMembers", "accounts_under", "is_selected", "ou_members", "select_roles"]


@dataclass(frozen=True)
class OuMembers:
    """Account ids under the included and the excluded OUs (``None``: no OU is included)."""

    included: frozenset[str] | None = None
    excluded: frozenset[str] = frozenset()


async def accounts_under(organizations: Any, parent_id: str) -> set[str]:
    """Every account id under ``parent_id`` (a root or an OU), nested OUs included.

    ``organizations`` is an aiobotocore Organizations client."""
    found: set[str] = set()
    parents = [parent_id]
    while parents:
        parent = parents.pop()
        paginator = organizations.get_paginator("list_accounts_for_parent")
        async for page in paginator.paginate(ParentId=parent):
            found.update(a["Id"] for a in page["Accounts"])
        paginator = organizations.get_paginator("list_organizational_units_for_parent")
        async for page in paginator.paginate(ParentId=parent):
            parents.extend(ou["Id"] for ou in page["OrganizationalUnits"])
    return found


async def ou_members(organizations: Any, aws: AwsSettings) -> OuMembers:
    """The accounts under ``aws.include_ous`` and ``aws.exclude_ous``."""

    async def under(ous: Sequence[str]) -> frozenset[str]:
        members: set[str] = set()
        for ou in ous:
            members |= await accounts_under(organizations, ou)
        return frozenset(members)

    return OuMembers(
        included=await under(aws.include_ous) if aws.include_ous else None,
        excluded=await under(aws.exclude_ous),
    )


def is_selected(account_id: str, aws: AwsSettings, ous: OuMembers | None = None) -> bool:
    """Whether ``account_id`` is in this process's share (see the module docstring)."""
    ous = ous or OuMembers()
    if account_id in aws.exclude_accounts or account_id in ous.excluded:
        return False
    if not aws.include_accounts and ous.included is None:
        return True
    return account_id in aws.include_accounts or (
        ous.included is not None and account_id in ous.included
    )


def select_roles(
    roles: Sequence[AccountRole], aws: AwsSettings, ous: OuMembers | None = None
) -> list[AccountRole]:
    """The roles of the selected accounts, in order, one per account (the first wins)."""
    chosen: dict[str, AccountRole] = {}
    for role in roles:
        if role.account_id not in chosen and is_selected(role.account_id, aws, ous):
            chosen[role.account_id] = role
    return list(chosen.values())
