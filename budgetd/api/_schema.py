"""A small schema language: one definition both checks a decoded body strictly and describes it
as JSON Schema for the OpenAPI document, so the two cannot disagree.

Owns no routes and no HTTP. Imports only the stdlib. A failed check raises `Invalid` with the
path of the offending field (``ops[3].amount_micros``). Closed objects and arrays check their
members without building those paths; only when one fails are they checked again with paths, for
the error (checks are pure, so the second run fails the same way).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "AnyOf",
    "Array",
    "Boolean",
    "Choice",
    "Integer",
    "Invalid",
    "Nullable",
    "Number",
    "Object",
    "Schema",
    "String",
    "Tagged",
    "components",
    "quoted",
]


class Invalid(ValueError):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path or 'the body'} {message}")
        self.path = path
        self.message = message


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if type(value) is bool:
        return "a boolean"
    if type(value) is float:
        return "a float"
    if type(value) is int:
        return "an integer"
    if type(value) is str:
        return "a string"
    if type(value) in (list, tuple):
        return "an array"
    if type(value) is dict:
        return "an object"
    return type(value).__name__


#: An error names at most this many offending fields, each quoted to at most NAME_CHARS_MAX
#: characters: the answer to a hostile body stays small whatever the body holds.
NAMES_SHOWN_MAX: Final = 10
NAME_CHARS_MAX: Final = 64


def quoted(name: object) -> str:
    """``repr(name)``, clipped for an error message."""
    text = repr(name)
    return text if len(text) <= NAME_CHARS_MAX else text[: NAME_CHARS_MAX - 1] + "…"


def _integer(value: int) -> str:
    """An integer for an error message: in full up to 20 digits (any int64)."""
    return str(value) if -(10**20) < value < 10**20 else "an integer of more than 20 digits"


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


#: How a closed `Object` checks a member in its fast path (see `Schema.fast`).
_INT: Final = 0
_STR: Final = 1
_CALL: Final = 2


class Schema:
    description: str

    def check(self, value: Any, path: str = "") -> Any:
        """``value`` if it conforms (objects copied), else raise Invalid."""
        raise NotImplementedError

    def fast(self) -> tuple[Any, ...]:
        """How a closed `Object` may check this member inline, without a call: ``(_INT, low,
        high)``, ``(_STR, fullmatch, accept)``, or ``(_CALL, check)``. The inline checks accept
        exactly what `check` accepts; anything they refuse is checked again by `check`."""
        return (_CALL, self.check)

    def json_schema(self) -> dict[str, Any]:
        raise NotImplementedError

    def _with_description(self, schema: dict[str, Any]) -> dict[str, Any]:
        if self.description:
            schema["description"] = self.description
        return schema


@dataclass(frozen=True, slots=True)
class Integer(Schema):
    """An integer in [minimum, maximum]; a bool or a float (even 1.0) is not an integer."""

    minimum: int
    maximum: int
    description: str = ""

    def check(self, value: Any, path: str = "") -> Any:
        if type(value) is not int or not self.minimum <= value <= self.maximum:
            raise Invalid(
                path,
                f"must be an integer from {self.minimum} to {self.maximum}, "
                f"got {_describe(value) if type(value) is not int else _integer(value)}",
            )
        return value

    def fast(self) -> tuple[Any, ...]:
        return (_INT, self.minimum, self.maximum)

    def json_schema(self) -> dict[str, Any]:
        return self._with_description(
            {"type": "integer", "minimum": self.minimum, "maximum": self.maximum}
        )


@dataclass(frozen=True, slots=True)
class Number(Schema):
    """A number in responses only (``pass_through_rate``); never accepted in a request."""

    minimum: float
    maximum: float
    description: str = ""

    def check(self, value: Any, path: str = "") -> Any:
        raise Invalid(path, "is not accepted in a request")

    def json_schema(self) -> dict[str, Any]:
        return self._with_description(
            {"type": "number", "minimum": self.minimum, "maximum": self.maximum}
        )


@dataclass(frozen=True, slots=True)
class Boolean(Schema):
    description: str = ""

    def check(self, value: Any, path: str = "") -> Any:
        if type(value) is not bool:
            raise Invalid(path, f"must be a boolean, got {_describe(value)}")
        return value

    def json_schema(self) -> dict[str, Any]:
        return self._with_description({"type": "boolean"})


@dataclass(frozen=True, slots=True)
class String(Schema):
    """A string matching ``pattern`` in full (Python and ECMA-262 agree on the syntax used), and,
    when given, passing ``accept`` (a further check the pattern cannot say, e.g. ISO 4217)."""

    pattern: str
    description: str = ""
    #: What a valid value looks like, for the error message.
    meaning: str = ""
    accept: Callable[[str], bool] | None = field(default=None, compare=False)
    _compiled: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_compiled", re.compile(self.pattern))

    def check(self, value: Any, path: str = "") -> Any:
        if (
            type(value) is not str
            or not self._compiled.fullmatch(value)
            or (self.accept is not None and not self.accept(value))
        ):
            meaning = self.meaning or f"a string matching {self.pattern}"
            got = f"{value!r}" if type(value) is str and len(value) <= 80 else _describe(value)
            raise Invalid(path, f"must be {meaning}, got {got}")
        return value

    def fast(self) -> tuple[Any, ...]:
        return (_STR, self._compiled.fullmatch, self.accept)

    def json_schema(self) -> dict[str, Any]:
        return self._with_description({"type": "string", "pattern": f"^(?:{self.pattern})$"})


@dataclass(frozen=True, slots=True)
class Choice(Schema):
    values: tuple[str, ...]
    description: str = ""

    def check(self, value: Any, path: str = "") -> Any:
        if type(value) is not str or value not in self.values:
            got = f"{value!r}" if type(value) is str and len(value) <= 80 else _describe(value)
            raise Invalid(path, f"must be one of {', '.join(self.values)}, got {got}")
        return value

    def json_schema(self) -> dict[str, Any]:
        return self._with_description({"type": "string", "enum": list(self.values)})


@dataclass(frozen=True, slots=True)
class Nullable(Schema):
    """``inner`` or null; a null optional field means the same as the field left out."""

    inner: Schema
    description: str = ""

    def check(self, value: Any, path: str = "") -> Any:
        return None if value is None else self.inner.check(value, path)

    def json_schema(self) -> dict[str, Any]:
        inner = self.inner.json_schema()
        if "$ref" not in inner and isinstance(inner.get("type"), str):
            inner["type"] = [inner["type"], "null"]
            if "enum" in inner:
                inner["enum"] = [*inner["enum"], None]
            schema = inner
        else:
            schema = {"anyOf": [inner, {"type": "null"}]}
        return self._with_description(schema)


@dataclass(frozen=True, slots=True)
class Array(Schema):
    items: Schema
    min_items: int = 0
    max_items: int | None = None
    description: str = ""

    def check(self, value: Any, path: str = "") -> Any:
        if type(value) is not list:
            raise Invalid(path, f"must be an array, got {_describe(value)}")
        if len(value) < self.min_items or (
            self.max_items is not None and len(value) > self.max_items
        ):
            bound = f"at most {self.max_items}" if self.max_items is not None else "any number of"
            raise Invalid(path, f"must hold at least {self.min_items} and {bound} items")
        check = self.items.check
        try:
            return [check(item) for item in value]
        except Invalid:
            return [check(item, f"{path}[{index}]") for index, item in enumerate(value)]

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "array", "items": self.items.json_schema()}
        if self.min_items:
            schema["minItems"] = self.min_items
        if self.max_items is not None:
            schema["maxItems"] = self.max_items
        return self._with_description(schema)


@dataclass(frozen=True, slots=True)
class Object(Schema):
    """A map with string keys. ``closed`` (requests): an unknown field is an error. ``name``: the
    schema is a named component of the OpenAPI document, referred to by ``$ref``."""

    properties: Mapping[str, Schema]
    required: frozenset[str] = frozenset()
    name: str | None = None
    closed: bool = True
    description: str = ""
    _fast: dict[str, tuple[Any, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        assert self.required <= self.properties.keys(), self.required - self.properties.keys()
        fast = {name: schema.fast() for name, schema in self.properties.items()}
        object.__setattr__(self, "_fast", fast)

    def check(self, value: Any, path: str = "") -> Any:
        if type(value) is not dict:
            raise Invalid(path, f"must be an object, got {_describe(value)}")
        properties = self.properties
        if self.closed:
            # The common case: every field known and valid, every required one there; the
            # members' checks inlined (`Schema.fast`): a body of many small objects (a batch)
            # spends its time here.
            fast = self._fast
            checked: dict[str, Any] = {}
            for name, item in value.items():
                how = fast.get(name)
                if how is None:
                    break
                kind = how[0]
                if kind is _INT:
                    if type(item) is not int or not how[1] <= item <= how[2]:
                        break
                elif kind is _STR:
                    if (
                        type(item) is not str
                        or how[1](item) is None
                        or (how[2] is not None and not how[2](item))
                    ):
                        break
                else:
                    try:
                        item = how[1](item)
                    except Invalid:
                        break
                checked[name] = item
            else:
                if checked.keys() >= self.required:
                    return checked
            # Something is wrong: find what, and where.
            if not value.keys() <= properties.keys():
                unknown = [name for name in value if name not in properties]
                names = ", ".join(sorted(quoted(name) for name in unknown)[:NAMES_SHOWN_MAX])
                more = len(unknown) - NAMES_SHOWN_MAX
                suffix = f" and {more} more" if more > 0 else ""
                raise Invalid(path, f"has unknown field(s): {names}{suffix}")
        if not value.keys() >= self.required:
            missing = sorted(self.required - value.keys())
            raise Invalid(path, f"misses required field(s): {', '.join(missing)}")
        return {
            name: properties[name].check(item, _join(path, name))
            for name, item in value.items()
            if name in properties
        }

    def json_schema(self) -> dict[str, Any]:
        if self.name is not None:
            return {"$ref": f"#/components/schemas/{self.name}"}
        return self.definition()

    def definition(self) -> dict[str, Any]:
        """The schema itself (what a ``$ref`` to this component points to)."""
        schema: dict[str, Any] = {
            "type": "object",
            "properties": {name: item.json_schema() for name, item in self.properties.items()},
        }
        if self.required:
            schema["required"] = [name for name in self.properties if name in self.required]
        if self.closed:
            schema["additionalProperties"] = False
        return self._with_description(schema)


@dataclass(frozen=True, slots=True)
class Tagged(Schema):
    """One of several objects, told apart by the string field ``tag`` (``op`` in a batch)."""

    tag: str
    variants: Mapping[str, Object]
    name: str | None = None
    description: str = ""

    def check(self, value: Any, path: str = "") -> Any:
        if type(value) is not dict:
            raise Invalid(path, f"must be an object, got {_describe(value)}")
        tag = value.get(self.tag)
        variant = self.variants.get(tag) if type(tag) is str else None
        if variant is None:
            raise Invalid(_join(path, self.tag), f"must be one of {', '.join(self.variants)}")
        return variant.check(value, path)

    def json_schema(self) -> dict[str, Any]:
        if self.name is not None:
            return {"$ref": f"#/components/schemas/{self.name}"}
        return self.definition()

    def definition(self) -> dict[str, Any]:
        return self._with_description(
            {
                "oneOf": [variant.json_schema() for variant in self.variants.values()],
                "discriminator": {
                    "propertyName": self.tag,
                    "mapping": {
                        tag: f"#/components/schemas/{variant.name}"
                        for tag, variant in self.variants.items()
                        if variant.name is not None
                    },
                },
            }
        )


def _collect(schema: Schema, found: dict[str, Any]) -> None:
    if isinstance(schema, Object | Tagged) and schema.name is not None:
        if schema.name in found:
            assert found[schema.name] is schema, f"two schemas named {schema.name}"
            return
        found[schema.name] = schema
    if isinstance(schema, Object):
        for item in schema.properties.values():
            _collect(item, found)
    elif isinstance(schema, Tagged):
        for variant in schema.variants.values():
            _collect(variant, found)
    elif isinstance(schema, Array):
        _collect(schema.items, found)
    elif isinstance(schema, Nullable):
        _collect(schema.inner, found)
    elif isinstance(schema, AnyOf):
        for option in schema.options:
            _collect(option, found)


def components(*schemas: Schema) -> dict[str, dict[str, Any]]:
    """The named schemas reachable from ``schemas``, as OpenAPI components, sorted by name."""
    found: dict[str, Any] = {}
    for schema in schemas:
        _collect(schema, found)
    return {name: found[name].definition() for name in sorted(found)}


@dataclass(frozen=True, slots=True)
class AnyOf(Schema):
    """One of several shapes (responses: a batch result is an op's result or a problem)."""

    options: tuple[Schema, ...]
    description: str = ""

    def check(self, value: Any, path: str = "") -> Any:
        for option in self.options:
            try:
                return option.check(value, path)
            except Invalid:
                continue
        raise Invalid(path, "matches none of the allowed shapes")

    def json_schema(self) -> dict[str, Any]:
        return self._with_description({"anyOf": [option.json_schema() for option in self.options]})
