"""AWS region names as botocore's endpoint data knows them, for checking configuration.

A region name of the right shape is not enough (``xx-nowhere-9``, ``us-east1``): a scan of a
region that does not exist fails every scope, one by one. botocore ships every partition's
regions; a name it does not know is refused at start with the nearest known names.
"""

from __future__ import annotations

import difflib
from functools import cache

__all__ = ["known_regions", "unknown_region_message"]


@cache
def known_regions() -> frozenset[str]:
    """Every region of every partition in botocore's endpoint data."""
    # Imported here for start-up speed: settings import this module, and most commands
    # (cloudtrail backfill --path, sql, report) never check a region nor load botocore.
    from botocore.loaders import create_loader

    endpoints = create_loader().load_data("endpoints")
    return frozenset(
        region for partition in endpoints["partitions"] for region in partition["regions"]
    )


def unknown_region_message(names: list[str]) -> str | None:
    """What is wrong with ``names``, or None when every one is a known region."""
    known = known_regions()
    unknown = [name for name in names if name not in known]
    if not unknown:
        return None
    import botocore  # loaded by known_regions() already (lazy for start-up speed)

    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, sorted(known), n=2, cutoff=0.6)
        hints.append(f"{name!r}" + (f" (did you mean {' or '.join(close)}?)" if close else ""))
    return (
        f"unknown AWS region {', '.join(hints)}: botocore {botocore.__version__} knows "
        f"{len(known)} regions (aws ec2 describe-regions lists yours); a region newer than "
        "that needs a newer cloudinv"
    )
