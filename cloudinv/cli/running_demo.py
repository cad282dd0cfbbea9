"""Commands started beside a running ``cloudinv demo`` talk to its simulated AWS.

``cloudinv scan --once``, ``report`` and ``producers`` read AWS. Against a running demo, the
AWS they should read is the demo's moto server, through the reader roles of its simulated
accounts: both are in the demo's connection file (``<data dir>/demo.json``). When nothing of
AWS is configured (no endpoint, no accounts, no Organizations discovery, no ``--role-arn``),
they take them from there and say so on stderr. The simulated AWS accepts any credentials;
cloudinv gives it moto's conventional ``testing`` ones when none are set, never real ones.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from cloudinv.catalog.spec import ResourceSpec
from cloudinv.core.connection import find_running_instance
from cloudinv.core.settings import AccountRole, AwsSettings
from cloudinv.simulator.coverage import unserved_types

__all__ = ["adopt_running_demo", "unserved_by_running_demo"]

_DEFAULT_REGIONS = AwsSettings().regions


def adopt_running_demo(aws: AwsSettings, data_dir: Path, *, quiet: bool = False) -> AwsSettings:
    """``aws``, pointed at the running demo's simulated AWS when it configures none."""
    if aws.effective_endpoint() or aws.accounts or aws.organization_role_name:
        return aws
    info = find_running_instance(data_dir)
    if info is None or info.mode != "demo" or not info.aws_endpoint_url:
        return aws
    if not info.aws_role_arns:
        return aws  # a demo from before the role ARNs were recorded
    # Simulated AWS only: never let real credentials from the environment sign for it.
    os.environ["AWS_ACCESS_KEY_ID"] = "testing"
    os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
    os.environ.pop("AWS_SESSION_TOKEN", None)
    os.environ.pop("AWS_PROFILE", None)
    os.environ.setdefault("AWS_DEFAULT_REGION", info.regions[0] if info.regions else "us-east-1")
    if not quiet:
        print(
            f"cloudinv: using the running demo's simulated AWS at {info.aws_endpoint_url} "
            f"({len(info.aws_role_arns)} accounts; {data_dir}/demo.json)",
            file=sys.stderr,
        )
    return aws.model_copy(
        update={
            "endpoint_url": info.aws_endpoint_url,
            "accounts": [AccountRole(role_arn=arn) for arn in info.aws_role_arns],
            # The demo's regions, unless the configuration names others.
            "regions": info.regions if aws.regions == _DEFAULT_REGIONS else aws.regions,
        }
    )


async def unserved_by_running_demo(
    aws: AwsSettings, data_dir: Path, specs: Sequence[ResourceSpec]
) -> dict[str, str]:
    """Of ``specs``, the types the running demo's simulated AWS cannot serve (with why),
    when ``aws`` is pointed at it; empty otherwise (real AWS, another endpoint, no demo).
    Read from moto itself (:mod:`cloudinv.simulator.coverage`; its imports on a thread)."""
    endpoint = aws.effective_endpoint()
    info = find_running_instance(data_dir)
    if endpoint is None or info is None or info.mode != "demo" or not info.aws_endpoint_url:
        return {}
    if endpoint.rstrip("/") != info.aws_endpoint_url.rstrip("/"):
        return {}
    return await asyncio.to_thread(unserved_types, specs)
