"""The BC entity catalogue: which entity sets rules may trigger on, their fields and relations.

The catalogue is data (engine/entities/*.yaml, one file per entity set). Adding another v2.0
entity such as salesOrders or generalLedgerEntries means adding one YAML file, no engine code.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

ENTITIES_DIR = Path(__file__).with_name("entities")

ScalarType = Literal["string", "phone", "email", "guid", "date", "datetime", "decimal", "integer", "boolean"]
# Types whose values can hold a phone number: a recipient path must end on one of these.
PHONE_TYPES: frozenset[str] = frozenset({"phone"})
TEXT_TYPES: frozenset[str] = frozenset({"string", "phone", "email", "guid", "enum"})
NUMBER_TYPES: frozenset[str] = frozenset({"decimal", "integer"})
DATE_TYPES: frozenset[str] = frozenset({"date", "datetime"})


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FieldSpec(_Frozen):
    """One field of an entity: a scalar type, or an enum with its allowed values."""

    type: ScalarType | Literal["enum"]
    values: tuple[str, ...] = ()


class Navigation(_Frozen):
    """A navigation property (`$expand` name) and the field on this record holding the related id."""

    entity: str
    key: str


class EntitySpec(_Frozen):
    entity: str
    title: str
    webhook: bool = Field(description="listed as webhook-enabled in BC API v2.0; otherwise poll it")
    number_field: str = "number"
    navigation: Mapping[str, Navigation] = Field(default_factory=dict)
    fields: Mapping[str, FieldSpec]
    sample: Mapping[str, Any]

    @field_validator("fields", mode="before")
    @classmethod
    def _short_types(cls, value: Any) -> Any:
        # `dueDate: date` is shorthand for `dueDate: {type: date}`; `{enum: [...]}` for an enum.
        if not isinstance(value, Mapping):
            return value
        out: dict[str, Any] = {}
        for name, spec in value.items():
            if isinstance(spec, str):
                out[name] = {"type": spec}
            elif isinstance(spec, Mapping) and "enum" in spec:
                out[name] = {"type": "enum", "values": spec["enum"]}
            else:
                out[name] = spec
        return out

    def field(self, name: str) -> FieldSpec | None:
        return self.fields.get(name)


class PathInfo(_Frozen):
    """What a field path such as `customer.phoneNumber` resolves to."""

    path: str
    entity: str  # the entity holding the final field
    field: FieldSpec
    navigation: str | None = None  # the navigation property crossed, if any


class PathError(ValueError):
    """A field path that does not resolve; `suggestion` is the closest valid name, if any."""

    def __init__(self, message: str, suggestion: str | None, segment: int) -> None:
        super().__init__(message)
        self.message = message
        self.suggestion = suggestion
        self.segment = segment  # index of the failing path segment


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """The closest candidate (difflib), or a case-insensitive match; None when nothing is close."""
    pool = list(candidates)
    matches = difflib.get_close_matches(word, pool, n=1, cutoff=0.6)
    if matches:
        return matches[0]
    return {c.lower(): c for c in pool}.get(word.lower())


class Catalogue:
    """All known entity sets, keyed by entity set name (e.g. `salesInvoices`)."""

    def __init__(self, entities: Mapping[str, EntitySpec]) -> None:
        self._entities = dict(entities)
        for spec in self._entities.values():
            for nav_name, nav in spec.navigation.items():
                if nav.entity not in self._entities:
                    raise ValueError(f"{spec.entity}.{nav_name} points at unknown entity {nav.entity!r}")

    def __contains__(self, name: object) -> bool:
        return name in self._entities

    def __getitem__(self, name: str) -> EntitySpec:
        return self._entities[name]

    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._entities))

    def get(self, name: str) -> EntitySpec | None:
        return self._entities.get(name)

    def resolve(self, entity: str, path: str) -> PathInfo:
        """Resolve `field` or `navigation.field` on `entity`; raises PathError with a suggestion."""
        spec = self._entities[entity]
        parts = path.split(".")
        head = parts[0]
        if len(parts) == 1:
            found = spec.field(head)
            if found is None:
                raise PathError(
                    f"unknown field {head!r} on {entity}",
                    did_you_mean(head, [*spec.fields, *spec.navigation]),
                    0,
                )
            return PathInfo(path=path, entity=entity, field=found)
        nav = spec.navigation.get(head)
        if nav is None:
            if head in spec.fields:
                raise PathError(f"{entity}.{head} is a plain field, not a related record", None, 0)
            raise PathError(
                f"unknown related record {head!r} on {entity}",
                did_you_mean(head, list(spec.navigation)),
                0,
            )
        if len(parts) > 2:
            raise PathError(f"path {path!r} goes deeper than one related record", None, 2)
        target = self._entities[nav.entity]
        found = target.field(parts[1])
        if found is None:
            raise PathError(
                f"unknown field {parts[1]!r} on {nav.entity} (the {head} of a {spec.title})",
                did_you_mean(parts[1], list(target.fields)),
                1,
            )
        return PathInfo(path=path, entity=nav.entity, field=found, navigation=head)

    def sample_record(self, entity: str) -> dict[str, Any]:
        """The entity's sample record with every navigation property expanded from its sample."""
        spec = self._entities[entity]
        record = dict(spec.sample)
        for nav_name, nav in spec.navigation.items():
            record[nav_name] = dict(self._entities[nav.entity].sample)
        return record


def load_catalogue(directory: Path | None = None) -> Catalogue:
    """Read every `*.yaml` entity file in `directory` (default: the shipped engine/entities)."""
    folder = directory or ENTITIES_DIR
    entities: dict[str, EntitySpec] = {}
    for path in sorted(folder.glob("*.yaml")):
        with path.open(encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
        spec = EntitySpec.model_validate(raw)
        if spec.entity != path.stem:
            raise ValueError(f"{path}: entity {spec.entity!r} must equal the file stem")
        entities[spec.entity] = spec
    return Catalogue(entities)


@lru_cache(maxsize=1)
def default_catalogue() -> Catalogue:
    return load_catalogue()
