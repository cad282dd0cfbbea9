"""IAM users, roles, groups and customer-managed policies (global).

Users, roles and groups are listed with GetAccountAuthorizationDetails, which returns each
principal with its inline policy documents, attached managed policies and tags in one
paginated call. Users add their access keys (metadata only), MFA devices and console login
profile. Customer-managed policies add their default version's document.
"""

from __future__ import annotations

from cloudinv.catalog.spec import DetailCall, Relationship, ResourceSpec

_USER = {"UserName": "UserName"}
_USER_IN_REQUEST = "requestParameters.userName"
_ROLE_IN_REQUEST = "requestParameters.roleName"
_GROUP_IN_REQUEST = "requestParameters.groupName"


def _authorization_details(
    cfn_type: str,
    filter_name: str,
    result_path: str,
    name_field: str,
    *,
    tags_field: str | None = None,
    details: tuple[DetailCall, ...] = (),
    volatile_fields: tuple[str, ...] = (),
    event_resource_ids: dict[str, str] | None = None,
    relationships: tuple[Relationship, ...] = (),
) -> ResourceSpec:
    return ResourceSpec(
        cfn_type=cfn_type,
        service="iam",
        list_operation="GetAccountAuthorizationDetails",
        list_params={"Filter": [filter_name]},
        result_path=result_path,
        id_field=name_field,
        name_field=name_field,
        arn_field="Arn",
        global_service=True,
        tags_field=tags_field,
        details=details,
        volatile_fields=volatile_fields,
        event_resource_ids=event_resource_ids or {},
        relationships=(
            Relationship(
                name="is attached to",
                path="AttachedManagedPolicies[].PolicyArn",
                target_type="AWS::IAM::ManagedPolicy",
                by="arn",
            ),
            *relationships,
        ),
    )


SPECS: tuple[ResourceSpec, ...] = (
    _authorization_details(
        "AWS::IAM::User",
        "User",
        "UserDetailList[]",
        "UserName",
        tags_field="Tags",
        details=(
            DetailCall(
                operation="ListAccessKeys",
                params=_USER,
                result_path="AccessKeyMetadata",
                merge_key="AccessKeys",
            ),
            DetailCall(
                operation="ListMFADevices",
                params=_USER,
                result_path="MFADevices",
                merge_key="MFADevices",
            ),
            DetailCall(
                operation="GetLoginProfile",
                params=_USER,
                result_path="LoginProfile",
                merge_key="LoginProfile",
                absent_codes=frozenset({"NoSuchEntity"}),
            ),
        ),
        event_resource_ids={
            name: _USER_IN_REQUEST
            for name in (
                "CreateUser",
                "DeleteUser",
                "UpdateUser",
                "TagUser",
                "UntagUser",
                "PutUserPolicy",
                "DeleteUserPolicy",
                "AttachUserPolicy",
                "DetachUserPolicy",
                "AddUserToGroup",
                "RemoveUserFromGroup",
                "CreateAccessKey",
                "UpdateAccessKey",
                "DeleteAccessKey",
                "CreateLoginProfile",
                "UpdateLoginProfile",
                "DeleteLoginProfile",
                "EnableMFADevice",
                "DeactivateMFADevice",
            )
        },
    ),
    _authorization_details(
        "AWS::IAM::Role",
        "Role",
        "RoleDetailList[]",
        "RoleName",
        tags_field="Tags",
        relationships=(
            Relationship(
                name="is associated with",
                path="InstanceProfileList[].Arn",
                target_type="AWS::IAM::InstanceProfile",
                by="arn",
            ),
        ),
        # Updated by AWS whenever the role is used: not a change of the role.
        volatile_fields=("RoleLastUsed",),
        event_resource_ids={
            name: _ROLE_IN_REQUEST
            for name in (
                "CreateRole",
                "DeleteRole",
                "UpdateRole",
                "UpdateAssumeRolePolicy",
                "TagRole",
                "UntagRole",
                "PutRolePolicy",
                "DeleteRolePolicy",
                "AttachRolePolicy",
                "DetachRolePolicy",
                "PutRolePermissionsBoundary",
                "DeleteRolePermissionsBoundary",
            )
        },
    ),
    _authorization_details(
        "AWS::IAM::Group",
        "Group",
        "GroupDetailList[]",
        "GroupName",
        event_resource_ids={
            name: _GROUP_IN_REQUEST
            for name in (
                "CreateGroup",
                "DeleteGroup",
                "UpdateGroup",
                "PutGroupPolicy",
                "DeleteGroupPolicy",
                "AttachGroupPolicy",
                "DetachGroupPolicy",
                "AddUserToGroup",
                "RemoveUserFromGroup",
            )
        },
    ),
    ResourceSpec(
        cfn_type="AWS::IAM::ManagedPolicy",
        service="iam",
        list_operation="ListPolicies",
        list_params={"Scope": "Local"},
        result_path="Policies[]",
        id_field="PolicyName",
        name_field="PolicyName",
        arn_field="Arn",
        tags_field="Tags",
        global_service=True,
        details=(
            DetailCall(
                operation="GetPolicyVersion",
                params={"PolicyArn": "Arn", "VersionId": "DefaultVersionId"},
                result_path="PolicyVersion",
                merge_key="DefaultVersion",
            ),
        ),
        # Follows the principals it is attached to, which are recorded on them.
        volatile_fields=("AttachmentCount",),
        event_resource_ids={"CreatePolicy": "responseElements.policy.policyName"},
    ),
)
