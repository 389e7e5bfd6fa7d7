"""Typed records from plain data: one mechanism for the config model and the saved state.

A record is a dataclass. Each field's annotation is its type and ``field(metadata=...)``
carries its limits, so a record is defined once and :func:`load` derives every check from
that definition; no second table of types is kept anywhere. :func:`dump` goes back to
JSON-shaped data.

Limits a field's metadata may carry (the same words pydantic uses, so the config's
validation reads them too):

``ge``, ``le``                  bounds of a number
``min_length``, ``max_length``  bounds of a string's or a list's length
``one_of``                      the allowed values
``time``                        a moment: finite and within ``PAST`` before ``now`` and
                                ``ahead`` (default ``AHEAD``) after it
``keys``, ``each``              limits for a mapping's keys, a container's items
``tolerant``                    a bad item of this container is dropped (and reported) and
                                the rest kept; a bad value of any other field falls back to
                                the field's default (reported)

Anything else wrong makes the whole record invalid, which the nearest tolerant container
reports and drops. A record class may list ``__checks__``: functions of the built record
that raise ``ValueError`` for combinations of fields no single field can rule out.

Annotations are resolved without evaluating ``X | None`` as a whole, which keeps records
usable on CPython 3.9.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import types
import typing
from typing import Any, Literal

from workerwatch.units import finite

YEAR = 365.25 * 86400.0
PAST = 100 * YEAR  # further back than anything this program or a file system wrote
AHEAD = 86400.0  # a clock stepped back by less than this keeps its history


class Invalid(ValueError):
    """A value does not fit its field's definition; ``where`` is its path."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.where = where
        self.problem = problem


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    name: str
    kinds: tuple[Any, ...]  # the annotation's alternatives, e.g. (int, NoneType)
    meta: dict[str, Any]
    default: Any  # dataclasses.MISSING when required
    factory: Any


_NONE = type(None)
_UNIONS = (typing.Union, getattr(types, "UnionType", typing.Union))  # X | Y from 3.10


def _split_union(text: str) -> list[str]:
    """``'dict[int, int] | None'`` -> ``['dict[int, int]', 'None']`` (top level only)."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        elif char == "|" and depth == 0:
            parts.append(text[start:index].strip())
            start = index + 1
    parts.append(text[start:].strip())
    return parts


def _resolve(annotation: Any, namespace: dict[str, Any]) -> tuple[Any, ...]:
    if not isinstance(annotation, str):
        args = typing.get_args(annotation)
        is_union = typing.get_origin(annotation) in _UNIONS
        return tuple(args) if is_union else (annotation,)
    kinds = []
    for part in _split_union(annotation):
        kinds.append(_NONE if part == "None" else eval(part, namespace))
    return tuple(kinds)


@functools.cache
def fields_of(cls: type) -> tuple[FieldSpec, ...]:
    """The record's fields with their resolved types, in declaration order (cached)."""
    namespace = {**vars(typing), **vars(sys.modules[cls.__module__])}
    out = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        out.append(
            FieldSpec(
                f.name, _resolve(f.type, namespace), dict(f.metadata), f.default, f.default_factory
            )
        )
    return tuple(out)


def is_record(kind: Any) -> bool:
    return isinstance(kind, type) and dataclasses.is_dataclass(kind)


def _type_name(kind: Any) -> str:
    if kind is _NONE:
        return "null"
    origin = typing.get_origin(kind)
    if origin in _UNIONS:
        return " or ".join(_type_name(a) for a in typing.get_args(kind))
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(kind))
    if origin is not None:
        return {dict: "a mapping", list: "a list"}.get(origin, str(origin))
    if is_record(kind):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "a boolean"}.get(
        kind, getattr(kind, "__name__", str(kind))
    )


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class _Context:
    def __init__(self, now: float | None) -> None:
        self.now = now
        self.problems: list[str] = []


def _limits(value: Any, meta: dict[str, Any], where: str, ctx: _Context) -> None:
    if not meta:
        return
    if "one_of" in meta and value not in meta["one_of"]:
        raise Invalid(where, f"{_shown(value)} is not one of {', '.join(meta['one_of'])}")
    if isinstance(value, (int, float)):
        if "ge" in meta and value < meta["ge"]:
            raise Invalid(where, f"{_shown(value)} is below {meta['ge']}")
        if "le" in meta and value > meta["le"]:
            raise Invalid(where, f"{_shown(value)} is above {meta['le']}")
        if meta.get("time") and ctx.now is not None:
            ahead = meta.get("ahead", AHEAD)
            if not ctx.now - PAST <= value <= ctx.now + ahead:
                raise Invalid(where, f"{_shown(value)} is not a time near now")
    if isinstance(value, (str, list, dict)):
        if "min_length" in meta and len(value) < meta["min_length"]:
            raise Invalid(where, f"shorter than {meta['min_length']}")
        if "max_length" in meta and len(value) > meta["max_length"]:
            raise Invalid(where, f"longer than {meta['max_length']}")


def _one(value: Any, kind: Any, meta: dict[str, Any], where: str, ctx: _Context) -> Any:
    """``value`` as ``kind``, or raise ``_Mismatch`` (wrong type) / ``Invalid`` (wrong value)."""
    if kind is Any:
        return value
    if kind is _NONE:
        if value is None:
            return None
        raise _Mismatch
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Mismatch
        number = finite(value)
        if number is None:
            raise Invalid(where, f"{_shown(value)} is not a finite number")
        return number
    if kind is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if is_record(kind):
        if not isinstance(value, dict):
            raise _Mismatch
        return _record(kind, value, where, ctx)
    origin = typing.get_origin(kind)
    if origin in _UNIONS:  # a union inside a container: dict[str, str | int]
        for alternative in typing.get_args(kind):
            try:
                return _one(value, alternative, meta, where, ctx)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is Literal:
        if value in typing.get_args(kind) and isinstance(value, (str, int)):
            return value
        raise _Mismatch
    if origin is list:
        if not isinstance(value, list):
            raise _Mismatch
        (item_kind,) = typing.get_args(kind)
        return _items(value, (item_kind,), meta, where, ctx)
    if origin is dict:
        if not isinstance(value, dict):
            raise _Mismatch
        key_kind, item_kind = typing.get_args(kind)
        return _entries(value, key_kind, (item_kind,), meta, where, ctx)
    raise TypeError(f"records cannot check {kind!r}")


class _Mismatch(Exception):
    pass


def _value(value: Any, kinds: tuple[Any, ...], meta: dict[str, Any], where: str, ctx: _Context):
    for kind in kinds:
        try:
            out = _one(value, kind, meta, where, ctx)
        except _Mismatch:
            continue
        if out is not None:
            _limits(out, meta, where, ctx)
        return out
    expected = " or ".join(_type_name(k) for k in kinds)
    raise Invalid(where, f"{_shown(value)} is not {expected}")


def _items(values: list[Any], kinds: tuple[Any, ...], meta: dict[str, Any], where: str, ctx):
    each = meta.get("each", {})
    out = []
    for index, item in enumerate(values):
        try:
            out.append(_value(item, kinds, each, f"{where}[{index}]", ctx))
        except Invalid as exc:
            if not meta.get("tolerant"):
                raise
            ctx.problems.append(str(exc))
    return out


def _entries(
    values: dict[str, Any], key_kind: Any, kinds: tuple[Any, ...], meta: dict[str, Any], where, ctx
) -> dict[Any, Any]:
    each, keys = meta.get("each", {}), meta.get("keys", {})
    out = {}
    for raw_key, item in values.items():
        at = f"{where}[{raw_key!r}]"
        try:
            key = raw_key
            if key_kind is int:  # JSON object keys are strings; int keys come back as digits
                if not isinstance(raw_key, (str, int)) or not str(raw_key).isdigit():
                    raise Invalid(at, "key is not a number")
                key = int(raw_key)
            elif not isinstance(raw_key, str):
                raise Invalid(at, "key is not a string")
            _limits(key, keys, at, ctx)
            out[key] = _value(item, kinds, each, at, ctx)
        except Invalid as exc:
            if not meta.get("tolerant"):
                raise
            ctx.problems.append(str(exc))
    return out


def _record(cls: type, data: dict[str, Any], where: str, ctx: _Context) -> Any:
    specs = fields_of(cls)
    known = {spec.name for spec in specs}
    unknown = [key for key in data if key not in known]
    if unknown:
        raise Invalid(where, f"unknown key {_shown(unknown[0])}")
    values: dict[str, Any] = {}
    for spec in specs:
        at = f"{where}.{spec.name}" if where else spec.name
        if spec.name not in data:
            if spec.default is dataclasses.MISSING and spec.factory is dataclasses.MISSING:
                raise Invalid(at, "missing")
            continue
        try:
            values[spec.name] = _value(data[spec.name], spec.kinds, spec.meta, at, ctx)
        except Invalid as exc:
            if not spec.meta.get("tolerant"):
                raise
            ctx.problems.append(str(exc))  # the default stands in
    record = cls(**values)
    for check in getattr(cls, "__checks__", ()):
        try:
            check(record)
        except ValueError as exc:
            raise Invalid(where or cls.__name__, str(exc)) from None
    return record


def load(cls: type, data: Any, now: float | None = None) -> tuple[Any, list[str]]:
    """Build ``cls`` from JSON-shaped ``data``, checking every field against its definition.

    Returns the record and the problems met in tolerant fields (each already dropped);
    raises ``Invalid`` when the record itself cannot be built. ``now`` anchors ``time``
    limits (None: not checked).
    """
    if not isinstance(data, dict):
        raise Invalid(cls.__name__, f"{_shown(data)} is not a mapping")
    ctx = _Context(now)
    return _record(cls, data, "", ctx), ctx.problems


# -- back to plain data ------------------------------------------------------------------


@functools.cache
def _nested(cls: type) -> tuple[str, ...]:
    """Fields that may hold records (directly or in containers): the rest copy as they are."""

    def holds_record(kind: Any) -> bool:
        return is_record(kind) or any(holds_record(a) for a in typing.get_args(kind))

    return tuple(s.name for s in fields_of(cls) if any(holds_record(k) for k in s.kinds))


def dump(value: Any, exclude_none: bool = False) -> Any:
    """Records (and containers of them) as JSON-shaped data; other values as they are.

    A flat record is one ``dict(vars(...))``: the state of 1,000 workers is dumped every run.
    """
    if is_record(type(value)):
        out = dict(vars(value))
        for name in _nested(type(value)):
            out[name] = dump(out[name], exclude_none)
        if exclude_none:
            out = {k: v for k, v in out.items() if v is not None}
        return out
    if isinstance(value, (list, tuple)):
        return [dump(item, exclude_none) for item in value]
    if isinstance(value, dict):
        return {key: dump(item, exclude_none) for key, item in value.items()}
    return value
