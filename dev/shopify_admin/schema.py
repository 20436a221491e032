"""The Admin API schema built from the cached introspection, with the access scopes
Shopify publishes beside it (``offline_scopes`` in the same file)."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from graphql import GraphQLSchema, build_client_schema

from dev.shopify_admin.schema_cache import ensure_schema


@dataclass(frozen=True)
class Access:
    """What a type or field requires: any one of ``scopes`` (empty: nothing), and the
    sentence Shopify shows in ACCESS_DENIED errors."""

    scopes: frozenset[str]
    text: str


@dataclass(frozen=True)
class AdminSchema:
    schema: GraphQLSchema
    #: type name -> access needed to see any object of that type
    type_access: dict[str, Access]
    #: (type name, field name) -> access needed for that field
    field_access: dict[tuple[str, str], Access]

    def required(self, type_name: str, field_name: str, return_type: str) -> list[Access]:
        """The requirements a field selection must meet: its own and its return type's."""
        needs = []
        field = self.field_access.get((type_name, field_name))
        if field is not None and field.scopes:
            needs.append(field)
        kind = self.type_access.get(return_type)
        if kind is not None and kind.scopes:
            needs.append(kind)
        return needs


def _access(entry: dict[str, object]) -> Access:
    scopes = entry.get("offlineScopes") or []
    text = entry.get("requiredAccess") or ""
    assert isinstance(scopes, list) and isinstance(text, str)
    return Access(frozenset(str(s) for s in scopes), text)


def load_admin_schema(path: Path) -> AdminSchema:
    with gzip.open(path, "rb") as file:
        document = json.loads(file.read())
    # graphql-core 3.3's strict schema checks refuse a few entries of Shopify's
    # introspection; the schema is Shopify's own, so it is taken as valid.
    schema = build_client_schema(document["data"], assume_valid=True)
    type_access: dict[str, Access] = {}
    field_access: dict[tuple[str, str], Access] = {}
    for entry in document.get("offline_scopes", {}).get("items", []):
        if entry.get("type") == "type":
            type_access[entry["typeName"]] = _access(entry)
        elif entry.get("type") == "field":
            field_access[(entry["typeName"], entry["fieldName"])] = _access(entry)
    return AdminSchema(schema, type_access, field_access)


@lru_cache(maxsize=1)
def admin_schema() -> AdminSchema:
    """The process's schema (fetched first if the cache is empty)."""
    return load_admin_schema(ensure_schema())
