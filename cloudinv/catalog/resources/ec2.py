"""EC2 and VPC resource types."""

from __future__ import annotations

from cloudinv.catalog.spec import (
    Relationship,
    ResourceSpec,
    in_subnets,
    in_vpc,
    uses_kms_key,
    with_security_groups,
)

# "This region has not been enabled" / "not offered here": an empty, complete scope.
NOT_IN_REGION = frozenset({"OptInRequired"})


def _ec2(
    cfn_type: str,
    operation: str,
    result_path: str,
    id_field: str,
    arn_suffix: str | None = None,
    *,
    arn_field: str | None = None,
    name_field: str | None = None,
    tags_field: str | None = "Tags",
    list_params: dict[str, object] | None = None,
    event_resource_ids: dict[str, str] | None = None,
    volatile_fields: tuple[str, ...] = (),
    relationships: tuple[Relationship, ...] = (),
    state_field: str | None = None,
    state_moves: tuple[str, ...] = (),
) -> ResourceSpec:
    """An EC2 type: tags in ``Tags`` as Key/Value, name from the ``Name`` tag. With both
    ``arn_field`` and ``arn_suffix``, the template builds the ARN of a resource that another
    one names by id (a subnet's ``SubnetArn`` is not in the instance naming it)."""
    return ResourceSpec(
        cfn_type=cfn_type,
        service="ec2",
        list_operation=operation,
        result_path=result_path,
        list_params=list_params or {},
        id_field=id_field,
        name_field=name_field,
        name_tag="Name",
        arn_field=arn_field,
        arn_template=(
            None
            if arn_suffix is None
            else f"arn:{{partition}}:ec2:{{region}}:{{account}}:{arn_suffix}"
        ),
        tags_field=tags_field,
        ignore_error_codes=NOT_IN_REGION,
        event_resource_ids=event_resource_ids or {},
        volatile_fields=volatile_fields,
        relationships=relationships,
        state_field=state_field,
        state_moves=state_moves,
    )


_INSTANCES_IN_REQUEST = "requestParameters.instancesSet.items[].instanceId"
_GROUP_IN_REQUEST = "requestParameters.groupId"
_TAGGED_RESOURCES = "requestParameters.resourcesSet.items[].resourceId"

SPECS: tuple[ResourceSpec, ...] = (
    _ec2(
        "AWS::EC2::Instance",
        "DescribeInstances",
        "Reservations[].Instances[]",
        "InstanceId",
        "instance/{id}",
        event_resource_ids={
            "RunInstances": "responseElements.instancesSet.items[].instanceId",
            "StartInstances": _INSTANCES_IN_REQUEST,
            "StopInstances": _INSTANCES_IN_REQUEST,
            "RebootInstances": _INSTANCES_IN_REQUEST,
            "TerminateInstances": _INSTANCES_IN_REQUEST,
            "ModifyInstanceAttribute": "requestParameters.instanceId",
            "ModifyInstanceMetadataOptions": "requestParameters.instanceId",
            "AssociateIamInstanceProfile": "requestParameters.instanceId",
            "CreateTags": _TAGGED_RESOURCES,
            "DeleteTags": _TAGGED_RESOURCES,
        },
        relationships=(
            in_subnets(),
            in_vpc(),
            with_security_groups("SecurityGroups[].GroupId"),
            Relationship(
                name="is attached to",
                path="BlockDeviceMappings[].Ebs.VolumeId",
                target_type="AWS::EC2::Volume",
            ),
            Relationship(
                name="contains",
                path="NetworkInterfaces[].NetworkInterfaceId",
                target_type="AWS::EC2::NetworkInterface",
            ),
            Relationship(
                name="is associated with",
                path="IamInstanceProfile.Arn",
                target_type="AWS::IAM::InstanceProfile",
                by="arn",
            ),
            Relationship(name="uses", path="KeyName", target_type="AWS::EC2::KeyPair", by="name"),
        ),
        # pending -> running, stopping -> stopped, shutting-down -> terminated: seconds to
        # minutes after the call; stopping drops the public address.
        state_field="State.Name",
        state_moves=(
            "State.Code",
            "StateTransitionReason",
            "StateReason",
            "PublicIpAddress",
            "PublicDnsName",
        ),
    ),
    _ec2(
        "AWS::EC2::SecurityGroup",
        "DescribeSecurityGroups",
        "SecurityGroups[]",
        "GroupId",
        "security-group/{id}",
        arn_field=None,
        name_field="GroupName",
        event_resource_ids={
            "CreateSecurityGroup": "responseElements.groupId",
            "DeleteSecurityGroup": _GROUP_IN_REQUEST,
            "AuthorizeSecurityGroupIngress": _GROUP_IN_REQUEST,
            "AuthorizeSecurityGroupEgress": _GROUP_IN_REQUEST,
            "RevokeSecurityGroupIngress": _GROUP_IN_REQUEST,
            "RevokeSecurityGroupEgress": _GROUP_IN_REQUEST,
            "ModifySecurityGroupRules": _GROUP_IN_REQUEST,
            "UpdateSecurityGroupRuleDescriptionsIngress": _GROUP_IN_REQUEST,
            "UpdateSecurityGroupRuleDescriptionsEgress": _GROUP_IN_REQUEST,
            "CreateTags": _TAGGED_RESOURCES,
            "DeleteTags": _TAGGED_RESOURCES,
        },
        relationships=(in_vpc(),),
    ),
    _ec2(
        "AWS::EC2::Volume",
        "DescribeVolumes",
        "Volumes[]",
        "VolumeId",
        "volume/{id}",
        relationships=(
            Relationship(
                name="is attached to",
                path="Attachments[].InstanceId",
                target_type="AWS::EC2::Instance",
            ),
            uses_kms_key("KmsKeyId"),
        ),
        state_field="State",
    ),
    _ec2(
        "AWS::EC2::Snapshot",
        "DescribeSnapshots",
        "Snapshots[]",
        "SnapshotId",
        "snapshot/{id}",
        list_params={"OwnerIds": ["self"]},
        relationships=(
            Relationship(
                name="is associated with", path="VolumeId", target_type="AWS::EC2::Volume"
            ),
            uses_kms_key("KmsKeyId"),
        ),
        state_field="State",  # pending -> completed
        state_moves=("Progress", "StateMessage"),
    ),
    _ec2("AWS::EC2::VPC", "DescribeVpcs", "Vpcs[]", "VpcId", "vpc/{id}"),
    _ec2(
        "AWS::EC2::Subnet",
        "DescribeSubnets",
        "Subnets[]",
        "SubnetId",
        "subnet/{id}",
        arn_field="SubnetArn",
        relationships=(in_vpc(),),
    ),
    _ec2(
        "AWS::EC2::NetworkInterface",
        "DescribeNetworkInterfaces",
        "NetworkInterfaces[]",
        "NetworkInterfaceId",
        "network-interface/{id}",
        tags_field="TagSet",
        relationships=(
            in_subnets(),
            in_vpc(),
            with_security_groups("Groups[].GroupId"),
            Relationship(
                name="is attached to",
                path="Attachment.InstanceId",
                target_type="AWS::EC2::Instance",
            ),
        ),
    ),
    _ec2(
        "AWS::EC2::InternetGateway",
        "DescribeInternetGateways",
        "InternetGateways[]",
        "InternetGatewayId",
        "internet-gateway/{id}",
        relationships=(
            Relationship(
                name="is attached to", path="Attachments[].VpcId", target_type="AWS::EC2::VPC"
            ),
        ),
    ),
    _ec2(
        "AWS::EC2::RouteTable",
        "DescribeRouteTables",
        "RouteTables[]",
        "RouteTableId",
        "route-table/{id}",
        relationships=(
            in_vpc(),
            Relationship(
                name="is associated with",
                path="Associations[].SubnetId",
                target_type="AWS::EC2::Subnet",
            ),
            Relationship(
                name="uses", path="Routes[].NatGatewayId", target_type="AWS::EC2::NatGateway"
            ),
            Relationship(
                name="uses",
                path="Routes[].TransitGatewayId",
                target_type="AWS::EC2::TransitGateway",
            ),
        ),
    ),
    _ec2(
        "AWS::EC2::NetworkAcl",
        "DescribeNetworkAcls",
        "NetworkAcls[]",
        "NetworkAclId",
        "network-acl/{id}",
        relationships=(
            in_vpc(),
            Relationship(
                name="is associated with",
                path="Associations[].SubnetId",
                target_type="AWS::EC2::Subnet",
            ),
        ),
    ),
    _ec2(
        "AWS::EC2::EIP",
        "DescribeAddresses",
        "Addresses[]",
        "AllocationId",
        "elastic-ip/{id}",
        relationships=(
            Relationship(
                name="is attached to", path="InstanceId", target_type="AWS::EC2::Instance"
            ),
            Relationship(
                name="is attached to",
                path="NetworkInterfaceId",
                target_type="AWS::EC2::NetworkInterface",
            ),
        ),
    ),
    _ec2(
        "AWS::EC2::KeyPair",
        "DescribeKeyPairs",
        "KeyPairs[]",
        "KeyPairId",
        "key-pair/{KeyName}",
        name_field="KeyName",
    ),
    _ec2(
        "AWS::EC2::DHCPOptions",
        "DescribeDhcpOptions",
        "DhcpOptions[]",
        "DhcpOptionsId",
        "dhcp-options/{id}",
    ),
    _ec2(
        "AWS::EC2::Image",
        "DescribeImages",
        "Images[]",
        "ImageId",
        "image/{id}",
        name_field="Name",
        list_params={"Owners": ["self"]},
    ),
    _ec2(
        "AWS::EC2::PrefixList",
        "DescribeManagedPrefixLists",
        "PrefixLists[]",
        "PrefixListId",
        arn_field="PrefixListArn",
        name_field="PrefixListName",
    ),
    _ec2(
        "AWS::EC2::NatGateway",
        "DescribeNatGateways",
        "NatGateways[]",
        "NatGatewayId",
        "natgateway/{id}",
        relationships=(in_subnets(), in_vpc()),
    ),
    _ec2(
        "AWS::EC2::PlacementGroup",
        "DescribePlacementGroups",
        "PlacementGroups[]",
        "GroupId",
        arn_field="GroupArn",
        name_field="GroupName",
    ),
    _ec2(
        "AWS::EC2::ReservedInstances",
        "DescribeReservedInstances",
        "ReservedInstances[]",
        "ReservedInstancesId",
        "reserved-instances/{id}",
    ),
    _ec2(
        "AWS::EC2::TransitGateway",
        "DescribeTransitGateways",
        "TransitGateways[]",
        "TransitGatewayId",
        "transit-gateway/{id}",
        arn_field="TransitGatewayArn",
    ),
    _ec2(
        "AWS::EC2::TransitGatewayAttachment",
        "DescribeTransitGatewayAttachments",
        "TransitGatewayAttachments[]",
        "TransitGatewayAttachmentId",
        "transit-gateway-attachment/{id}",
        relationships=(
            Relationship(
                name="is attached to",
                path="TransitGatewayId",
                target_type="AWS::EC2::TransitGateway",
            ),
            Relationship(
                name="is attached to",
                path="ResourceId",
                target_type="AWS::EC2::VPC",
                when="ResourceType == 'vpc'",
            ),
        ),
    ),
    _ec2(
        "AWS::EC2::TransitGatewayRouteTable",
        "DescribeTransitGatewayRouteTables",
        "TransitGatewayRouteTables[]",
        "TransitGatewayRouteTableId",
        "transit-gateway-route-table/{id}",
    ),
    _ec2(
        "AWS::EC2::VPCEndpoint",
        "DescribeVpcEndpoints",
        "VpcEndpoints[]",
        "VpcEndpointId",
        "vpc-endpoint/{id}",
        relationships=(
            in_vpc(),
            in_subnets("SubnetIds[]"),
            with_security_groups("Groups[].GroupId"),
            Relationship(
                name="is associated with",
                path="RouteTableIds[]",
                target_type="AWS::EC2::RouteTable",
            ),
        ),
    ),
    _ec2(
        "AWS::EC2::VPCPeeringConnection",
        "DescribeVpcPeeringConnections",
        "VpcPeeringConnections[]",
        "VpcPeeringConnectionId",
        "vpc-peering-connection/{id}",
    ),
    _ec2(
        "AWS::EC2::VPNGateway",
        "DescribeVpnGateways",
        "VpnGateways[]",
        "VpnGatewayId",
        "vpn-gateway/{id}",
        relationships=(
            Relationship(
                name="is attached to",
                path="VpcAttachments[].VpcId",
                target_type="AWS::EC2::VPC",
            ),
        ),
    ),
    _ec2(
        "AWS::EC2::CustomerGateway",
        "DescribeCustomerGateways",
        "CustomerGateways[]",
        "CustomerGatewayId",
        "customer-gateway/{id}",
    ),
    _ec2(
        "AWS::EC2::VPNConnection",
        "DescribeVpnConnections",
        "VpnConnections[]",
        "VpnConnectionId",
        "vpn-connection/{id}",
        relationships=(
            Relationship(
                name="is attached to", path="VpnGatewayId", target_type="AWS::EC2::VPNGateway"
            ),
            Relationship(
                name="is attached to",
                path="CustomerGatewayId",
                target_type="AWS::EC2::CustomerGateway",
            ),
            Relationship(
                name="is attached to",
                path="TransitGatewayId",
                target_type="AWS::EC2::TransitGateway",
            ),
        ),
    ),
    _ec2(
        "AWS::EC2::LaunchTemplate",
        "DescribeLaunchTemplates",
        "LaunchTemplates[]",
        "LaunchTemplateId",
        "launch-template/{id}",
        name_field="LaunchTemplateName",
    ),
    _ec2(
        "AWS::EC2::FlowLog",
        "DescribeFlowLogs",
        "FlowLogs[]",
        "FlowLogId",
        "vpc-flow-log/{id}",
    ),
)
