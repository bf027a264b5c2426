"""A msgpack body decoded and checked in one pass, by msgspec, for the schemas it can say exactly.

`FastBody(schema)` turns a request schema of the `_schema` language into msgspec types: closed
objects into structs that forbid unknown fields, tagged objects into tagged unions, integers into
bounded ints (never a bool, never a float), arrays into bounded lists. msgspec decodes and checks
those in C. Strings are decoded as strings and matched against their patterns afterwards, in one
walk over the decoded value, with the very checks `String.check` uses (a pattern check inside
msgspec costs more than the rest of the decoding).

A body `FastBody.decode` accepts is one `schema.check` accepts, and the value it gives back is
equal to what ``schema.check`` gives back for the decoded body (tests/api/test_api_fastbody.py
holds the two to that). Anything it does not accept — a bad value, a bad body, a schema it cannot
express — is left to the slow path, which finds the error and words it: so the error a client
sees never depends on this module.

Imports msgspec and the schema language; no HTTP.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Final, Literal, Union

import msgspec

from budgetd.api._schema import (
    Array,
    Boolean,
    Choice,
    Integer,
    Nullable,
    Object,
    Schema,
    String,
    Tagged,
)

__all__ = ["FastBody"]

#: Checks a decoded value's strings: True when every one is valid.
Strings = Callable[[Any], bool]


class _Unsupported(Exception):
    """A schema (or part of one) msgspec cannot express exactly: it has no fast path."""


def _always(value: Any) -> bool:
    return True


class FastBody:
    """A msgpack decoder for ``schema``, or none (`decode` always answers None) when some part
    of it has no exact msgspec equivalent."""

    def __init__(self, schema: Schema) -> None:
        self._structs = 0
        try:
            kind, strings = self._compile(schema)
        except _Unsupported:
            self._decoder: msgspec.msgpack.Decoder[Any] | None = None
            self._strings: Strings = _always
        else:
            self._decoder = msgspec.msgpack.Decoder(kind)
            self._strings = strings or _always

    @property
    def supported(self) -> bool:
        return self._decoder is not None

    def decode(self, data: bytes) -> Any | None:
        """The checked value of the msgpack ``data``, or None when the slow path must judge it."""
        decoder = self._decoder
        if decoder is None:
            return None
        try:
            value = msgspec.to_builtins(decoder.decode(data))
        except (msgspec.MsgspecError, ValueError, RecursionError):
            return None  # invalid UTF-8 is a ValueError
        return value if self._strings(value) else None

    # --- the schema language, as msgspec types and a string walk

    def _compile(self, schema: Schema) -> tuple[Any, Strings | None]:
        """The msgspec type of ``schema``, and the check of the strings inside (None: none)."""
        if isinstance(schema, Integer):
            return Annotated[int, msgspec.Meta(ge=schema.minimum, le=schema.maximum)], None
        if isinstance(schema, Boolean):
            return bool, None
        if isinstance(schema, Choice):
            return Literal[schema.values], None
        if isinstance(schema, String):
            return str, _string(schema)
        if isinstance(schema, Nullable):
            kind, strings = self._compile(schema.inner)
            return (kind | None), (_nullable(strings) if strings else None)
        if isinstance(schema, Array):
            return self._array(schema)
        if isinstance(schema, Tagged):
            return self._tagged(schema)
        if isinstance(schema, Object):
            return self._object(schema)
        raise _Unsupported(type(schema).__name__)

    def _array(self, schema: Array) -> tuple[Any, Strings | None]:
        kind, strings = self._compile(schema.items)
        meta = msgspec.Meta(min_length=schema.min_items, max_length=schema.max_items)
        return Annotated[list[kind], meta], (_each(strings) if strings else None)  # type: ignore[valid-type]

    def _object(
        self, schema: Object, tag: tuple[str, str] | None = None
    ) -> tuple[Any, Strings | None]:
        if not schema.closed:
            raise _Unsupported("an open object")
        fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
        direct: list[tuple[str, Any, Any]] = []  # string members, checked inline
        nested: list[tuple[str, Strings]] = []
        for name, member in schema.properties.items():
            if tag is not None and name == tag[0]:
                continue  # the union's tag field: msgspec checks it
            if not name.isidentifier():
                raise _Unsupported(f"field name {name!r}")
            kind, strings = self._compile(member)
            if name in schema.required:
                fields.append((name, kind))
            else:
                fields.append((name, kind | msgspec.UnsetType, msgspec.UNSET))
            if isinstance(member, String):
                direct.append((name, member.fast()[1], member.accept))
            elif strings is not None:
                nested.append((name, strings))
        self._structs += 1
        options: dict[str, Any] = {"forbid_unknown_fields": True, "kw_only": True}
        if tag is not None:
            options.update(tag_field=tag[0], tag=tag[1])
        struct = msgspec.defstruct(f"_Body{self._structs}", fields, **options)
        return struct, (_members(tuple(direct), tuple(nested)) if direct or nested else None)

    def _tagged(self, schema: Tagged) -> tuple[Any, Strings | None]:
        kinds = []
        checks: dict[str, Strings] = {}
        for value, variant in schema.variants.items():
            if variant.properties.get(schema.tag) != Choice((value,)):
                raise _Unsupported(f"variant {value!r} does not fix its tag")
            if schema.tag not in variant.required:
                raise _Unsupported(f"variant {value!r} does not require its tag")
            kind, strings = self._object(variant, (schema.tag, value))
            kinds.append(kind)
            checks[value] = strings or _always
        return Union[tuple(kinds)], _by_tag(schema.tag, checks)  # noqa: UP007 (a runtime union)


def _string(schema: String) -> Strings:
    fullmatch = schema.fast()[1]
    accept = schema.accept

    def strings(value: str) -> bool:
        return fullmatch(value) is not None and (accept is None or bool(accept(value)))

    return strings


def _nullable(inner: Strings) -> Strings:
    def strings(value: Any) -> bool:
        return value is None or inner(value)

    return strings


def _each(inner: Strings) -> Strings:
    def strings(value: list[Any]) -> bool:
        return all(inner(item) for item in value)

    return strings


def _members(
    direct: tuple[tuple[str, Any, Any], ...], nested: tuple[tuple[str, Strings], ...]
) -> Strings:
    def strings(value: dict[str, Any]) -> bool:
        for name, fullmatch, accept in direct:
            item = value.get(name)  # a string when there: msgspec checked the type
            if item is not None and (
                fullmatch(item) is None or (accept is not None and not accept(item))
            ):
                return False
        for name, inner in nested:
            item = value.get(name, _ABSENT)
            if item is not _ABSENT and not inner(item):
                return False
        return True

    return strings


def _by_tag(tag: str, checks: dict[str, Strings]) -> Strings:
    def strings(value: dict[str, Any]) -> bool:
        return checks[value[tag]](value)

    return strings


_ABSENT: Final = object()
