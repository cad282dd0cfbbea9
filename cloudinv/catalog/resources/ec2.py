"""EC2 and VPC resource types."""

from __future__ import annotations

from cloudinv.catalog.spec import ResourceSpec

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
) -> ResourceSpec:
    """An EC2 type: tags in ``Tags`` as Key/Value, name from the ``Name`` tag."""
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
            None if arn_field else f"arn:{{partition}}:ec2:{{region}}:{{account}}:{arn_suffix}"
        ),
        tags_field=tags_field,
        ignore_error_codes=NOT_IN_REGION,
        event_resource_ids=event_resource_ids or {},
        volatile_fields=volatile_fields,
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
    ),
    _ec2("AWS::EC2::Volume", "DescribeVolumes", "Volumes[]", "VolumeId", "volume/{id}"),
    _ec2(
        "AWS::EC2::Snapshot",
        "DescribeSnapshots",
        "Snapshots[]",
        "SnapshotId",
        "snapshot/{id}",
        list_params={"OwnerIds": ["self"]},
    ),
    _ec2("AWS::EC2::VPC", "DescribeVpcs", "Vpcs[]", "VpcId", "vpc/{id}"),
    _ec2("AWS::EC2::Subnet", "DescribeSubnets", "Subnets[]", "SubnetId", arn_field="SubnetArn"),
    _ec2(
        "AWS::EC2::NetworkInterface",
        "DescribeNetworkInterfaces",
        "NetworkInterfaces[]",
        "NetworkInterfaceId",
        "network-interface/{id}",
        tags_field="TagSet",
    ),
    _ec2(
        "AWS::EC2::InternetGateway",
        "DescribeInternetGateways",
        "InternetGateways[]",
        "InternetGatewayId",
        "internet-gateway/{id}",
    ),
    _ec2(
        "AWS::EC2::RouteTable",
        "DescribeRouteTables",
        "RouteTables[]",
        "RouteTableId",
        "route-table/{id}",
    ),
    _ec2(
        "AWS::EC2::NetworkAcl",
        "DescribeNetworkAcls",
        "NetworkAcls[]",
        "NetworkAclId",
        "network-acl/{id}",
    ),
    _ec2("AWS::EC2::EIP", "DescribeAddresses", "Addresses[]", "AllocationId", "elastic-ip/{id}"),
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
        arn_field="TransitGatewayArn",
    ),
    _ec2(
        "AWS::EC2::TransitGatewayAttachment",
        "DescribeTransitGatewayAttachments",
        "TransitGatewayAttachments[]",
        "TransitGatewayAttachmentId",
        "transit-gateway-attachment/{id}",
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
