"""The derived resource types: ``derived_types.json`` read into :class:`ResourceSpec` objects.

The file is generated offline by :mod:`cloudinv.catalog.derive` from cfn-lint's CloudFormation
schemas and botocore's models, and committed; reading it is one JSON parse at start-up.
A type that the derivation could not resolve safely is listed under ``excluded`` with why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from cloudinv.catalog.spec import DetailCall, Relationship, ResourceSpec

DATA_FILE = Path(__file__).with_name("derived_types.json")


@dataclass(frozen=True)
class DerivedCatalog:
    specs: tuple[ResourceSpec, ...]
    excluded: dict[str, str]
    """CloudFormation type → why it is not derived."""
    generated_from: dict[str, str]


def spec_from_declaration(declaration: dict[str, Any]) -> ResourceSpec:
    """A :class:`ResourceSpec` from one entry of the data file (its keyword arguments)."""
    fields = dict(declaration)
    fields["details"] = tuple(DetailCall(**detail) for detail in fields.get("details", ()))
    fields["relationships"] = tuple(
        Relationship(**relationship) for relationship in fields.get("relationships", ())
    )
    return ResourceSpec(**fields, derived=True)


@cache
def derived_catalog() -> DerivedCatalog:
    data = json.loads(DATA_FILE.read_text(encoding="utf-8"))
    return DerivedCatalog(
        specs=tuple(spec_from_declaration(d) for d in data["types"]),
        excluded=dict(data["excluded"]),
        generated_from=dict(data["generated_from"]),
    )
