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
from collections.abc import Callable
from typing import Any, Literal

from workerwatch.units import finite

YEAR = 365.25 * 86400.0
PAST = 100 * YEAR  # further back than anything this program or a file system wrote
AHEAD = 86400.0  # a clock stepped back by less than this keeps its history


def _names(self: Any) -> tuple[str, ...]:
    return type(self).__record_fields__  # type: ignore[no-any-return]


def _repr(self: Any) -> str:
    shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in _names(self))
    return f"{type(self).__qualname__}({shown})"


def _values(self: Any) -> tuple[Any, ...]:
    return tuple(getattr(self, name) for name in _names(self))


def _eq(self: Any, other: Any) -> Any:
    # Tuples, as @dataclass compares: an item is equal to itself even when it is NaN.
    if other.__class__ is not self.__class__:
        return NotImplemented
    return _values(self) == _values(other)


def _hash(self: Any) -> int:
    return hash(_values(self))


def _frozen_setattr(self: Any, name: str, value: Any) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: Any, name: str) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")


_FACTORY = object()  # "no value given": the field's default_factory makes one


def _make_init(cls: type) -> Any:
    """The ``__init__`` ``@dataclass`` would write for ``cls``: one parameter per field in
    order, its default or a fresh ``default_factory()`` when not given."""
    setter = "__set(self, {0!r}, {1})" if cls.__record_frozen__ else "self.{0} = {1}"  # type: ignore[attr-defined]
    scope: dict[str, Any] = {"__set": object.__setattr__, "__FACTORY": _FACTORY}
    params, body = [], []
    for f in dataclasses.fields(cls):
        name, value = f.name, f.name
        if f.default is not dataclasses.MISSING:
            scope[f"__default_{name}"] = f.default
            params.append(f"{name}=__default_{name}")
        elif f.default_factory is not dataclasses.MISSING:
            scope[f"__factory_{name}"] = f.default_factory
            params.append(f"{name}=__FACTORY")
            value = f"__factory_{name}() if {name} is __FACTORY else {name}"
        else:
            params.append(name)
        body.append(setter.format(name, value))
    source = f"def __init__(self, {', '.join(params)}):\n    " + "\n    ".join(body or ["pass"])
    made: dict[str, Any] = {}
    exec(source, scope, made)  # our own text, from the class's fields
    init = made["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    return init


def _first_init(self: Any, *args: Any, **kwargs: Any) -> None:
    """Every record's ``__init__`` until its class makes its first instance: the real one is
    compiled then, once per class and process. Records only unpickled (a parent gets the
    child's observations that way) or never made in a run never pay for it."""
    cls = type(self)
    cls.__init__ = _make_init(cls)  # type: ignore[misc]
    cls.__init__(self, *args, **kwargs)  # type: ignore[misc]


def ready(module: Any) -> None:
    """Compile now the ``__init__`` of every record ``module`` defines: a resident process
    does it once for what its forked children make every cycle."""
    for value in list(vars(module).values()):
        if isinstance(value, type) and vars(value).get("__init__") is _first_init:
            value.__init__ = _make_init(value)  # type: ignore[misc]


def record(cls: type | None = None, *, frozen: bool = False) -> Any:
    """``@dataclass`` (or ``@dataclass(frozen=True)``) for the records of this program.

    The same class as ``@dataclass`` makes, with the same ``__init__``, ``__repr__``, ``==``,
    (frozen) hash and ``FrozenInstanceError``, but without the code ``@dataclass`` generates
    and compiles for every class at import: the repr, ==, hash and a frozen class's
    ``__setattr__``/``__delattr__`` are shared functions, and ``__init__`` is compiled at
    the class's first instance (``_first_init``). That compilation was ~20 ms of every
    one-shot's start-up (210 functions for 43 classes). ``dataclasses.fields``, ``replace``
    and ``is_dataclass`` work as on any dataclass.
    """

    def wrap(cls: type) -> type:
        cls = dataclasses.dataclass(cls, init=False, repr=False, eq=False)
        fields = dataclasses.fields(cls)
        # What @dataclass refuses when it writes __init__, refused here at once too.
        defaulted = None
        for f in fields:
            has_default = not (f.default is f.default_factory is dataclasses.MISSING)
            if defaulted is not None and not has_default:
                raise TypeError(f"non-default argument {f.name!r} follows default argument")
            defaulted = f.name if has_default else defaulted
        cls.__record_fields__ = tuple(f.name for f in fields)  # type: ignore[attr-defined]
        cls.__record_frozen__ = frozen  # type: ignore[attr-defined]
        cls.__init__ = _first_init  # type: ignore[misc]
        cls.__repr__ = _repr  # type: ignore[assignment]
        cls.__eq__ = _eq  # type: ignore[assignment]
        if frozen:
            cls.__setattr__ = _frozen_setattr  # type: ignore[assignment]
            cls.__delattr__ = _frozen_delattr  # type: ignore[assignment]
        # As @dataclass: a frozen record hashes by value, a mutable one is unhashable.
        cls.__hash__ = _hash if frozen else None  # type: ignore[assignment]
        return cls

    return wrap if cls is None else wrap(cls)


class Invalid(ValueError):
    """A value does not fit its field's definition; ``where`` is its path."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.where = where
        self.problem = problem


class FieldSpec:
    """One field of a record with its resolved types and limits.

    A plain class, not a dataclass: creating a dataclass costs about half a millisecond at
    every start-up, and this one is internal.
    """

    __slots__ = ("default", "factory", "kinds", "meta", "name")

    def __init__(
        self, name: str, kinds: tuple[Any, ...], meta: dict[str, Any], default: Any, factory: Any
    ) -> None:
        self.name = name
        self.kinds = kinds  # the annotation's alternatives, e.g. (int, NoneType)
        self.meta = meta
        self.default = default  # dataclasses.MISSING when required
        self.factory = factory


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


# A checker turns a JSON value into the field's value or raises Invalid; ``where`` is a
# function giving the value's path, so a path is only formatted for a problem. Checkers are
# built once per field (``_plan``): the state of 1,000 workers is checked every run.
Checker = Callable[[Any, Callable[[], str], _Context], Any]
_NO = object()  # "not this alternative"


def _limit_checks(meta: dict[str, Any]) -> list[Callable[[Any, Callable[[], str], _Context], None]]:
    checks: list[Callable[[Any, Callable[[], str], _Context], None]] = []
    if "one_of" in meta:
        allowed = meta["one_of"]

        def one_of(value: Any, where: Callable[[], str], ctx: _Context) -> None:
            if value not in allowed:
                raise Invalid(where(), f"{_shown(value)} is not one of {', '.join(allowed)}")

        checks.append(one_of)
    low, high = meta.get("ge"), meta.get("le")
    if low is not None or high is not None:

        def bounds(value: Any, where: Callable[[], str], ctx: _Context) -> None:
            if isinstance(value, (int, float)):
                if low is not None and value < low:
                    raise Invalid(where(), f"{_shown(value)} is below {low}")
                if high is not None and value > high:
                    raise Invalid(where(), f"{_shown(value)} is above {high}")

        checks.append(bounds)
    if meta.get("time"):
        ahead = meta.get("ahead", AHEAD)

        def near_now(value: Any, where: Callable[[], str], ctx: _Context) -> None:
            if ctx.now is not None and not ctx.now - PAST <= value <= ctx.now + ahead:
                raise Invalid(where(), f"{_shown(value)} is not a time near now")

        checks.append(near_now)
    shortest, longest = meta.get("min_length"), meta.get("max_length")
    if shortest is not None or longest is not None:

        def length(value: Any, where: Callable[[], str], ctx: _Context) -> None:
            if isinstance(value, (str, list, dict)):
                if shortest is not None and len(value) < shortest:
                    raise Invalid(where(), f"shorter than {shortest}")
                if longest is not None and len(value) > longest:
                    raise Invalid(where(), f"longer than {longest}")

        checks.append(length)
    return checks


def _alternative(kind: Any, meta: dict[str, Any]) -> Checker:
    """A checker for one alternative of a type: returns ``_NO`` when the type differs."""
    if kind is Any:
        return lambda value, where, ctx: value
    if kind is int and meta.get("key"):
        return _int_key
    if kind in (bool, int, str):
        # JSON gives exactly these types; a bool is not an int here.
        return lambda value, where, ctx: value if type(value) is kind else _NO
    if kind is float:

        def number(value: Any, where: Callable[[], str], ctx: _Context) -> Any:
            if type(value) is float or type(value) is int:
                out = finite(value)
                if out is None:
                    raise Invalid(where(), f"{_shown(value)} is not a finite number")
                return out
            return _NO

        return number
    if is_record(kind):
        return lambda value, where, ctx: (
            _record(kind, value, where(), ctx) if type(value) is dict else _NO
        )
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if origin in _UNIONS:  # a union inside a container: dict[str, str | int]
        parts = [_alternative(a, meta) for a in args]

        def either(value: Any, where: Callable[[], str], ctx: _Context) -> Any:
            for part in parts:
                out = part(value, where, ctx)
                if out is not _NO:
                    return out
            return _NO

        return either
    if origin is Literal:
        return lambda value, where, ctx: (
            value if isinstance(value, (str, int)) and value in args else _NO
        )
    tolerant = bool(meta.get("tolerant"))
    if origin is list:
        return _items_checker(list, None, _checker(args, meta.get("each", {})), tolerant)
    if origin is dict:
        keys = _checker((args[0],), {**meta.get("keys", {}), "key": True})
        items = _checker(args[1:], meta.get("each", {}))
        return _items_checker(dict, keys, items, tolerant)
    raise TypeError(f"records cannot check {kind!r}")


def _checker(kinds: tuple[Any, ...], meta: dict[str, Any]) -> Checker:
    """A checker for a field of type ``kinds`` (its alternatives) with ``meta``'s limits."""
    nullable = _NONE in kinds
    parts = [_alternative(k, meta) for k in kinds if k is not _NONE]
    limits = _limit_checks(meta)
    expected = " or ".join(_type_name(k) for k in kinds)

    def check(value: Any, where: Callable[[], str], ctx: _Context) -> Any:
        if value is None and nullable:
            return None
        for part in parts:
            out = part(value, where, ctx)
            if out is not _NO:
                for limit in limits:
                    limit(out, where, ctx)
                return out
        raise Invalid(where(), f"{_shown(value)} is not {expected}")

    return check


def _items_checker(of: type, keys: Checker | None, items: Checker, tolerant: bool) -> Checker:
    """A list's or a mapping's items; a tolerant container drops (and reports) a bad item."""

    def check(values: Any, where: Callable[[], str], ctx: _Context) -> Any:
        if type(values) is not of:
            return _NO
        listed: list[Any] = []
        mapped: dict[Any, Any] = {}
        for raw_key, item in enumerate(values) if of is list else values.items():

            def at(k: Any = raw_key) -> str:
                return f"{where()}[{k!r}]"

            try:
                value = items(item, at, ctx)
                if keys is None:
                    listed.append(value)
                else:
                    mapped[keys(raw_key, at, ctx)] = value
            except Invalid as exc:
                if not tolerant:
                    raise
                ctx.problems.append(str(exc))
        return listed if keys is None else mapped

    return check


def _int_key(value: Any, where: Callable[[], str], ctx: _Context) -> Any:
    """JSON object keys are strings: an int key comes back as digits.

    ``isdecimal``, not ``isdigit``: ``'²'`` is a digit that ``int()`` refuses.
    """
    if isinstance(value, (str, int)) and str(value).isdecimal():
        return int(value)
    return _NO


_INF = float("inf")
_SIMPLE_LIMITS = frozenset(("ge", "le", "time", "ahead", "min_length", "max_length", "one_of"))


def _quick(kinds: tuple[Any, ...], meta: dict[str, Any]) -> Callable[[Any, Any], bool] | None:
    """For a field of one plain type (``int``, ``float``, ``str``, ``bool``, maybe None), a
    test that a value is plainly valid: exactly that type and within every limit, so the
    full checker would return it unchanged. None for other fields. A value it does not
    pass goes to the full checker, which decides and says what is wrong; the state of
    1,000 workers is checked every run, nearly every value plainly valid.
    """
    plain = [k for k in kinds if k is not _NONE]
    if len(plain) != 1 or plain[0] not in (int, float, str, bool) or meta.keys() - _SIMPLE_LIMITS:
        return None
    kind = plain[0]
    tests: list[Callable[[Any, Any], bool]] = []
    # A float must be finite: NaN fails every comparison, and finite bounds or a time
    # window shut out the infinities; without either, the test is its own.
    low, high = meta.get("ge"), meta.get("le")
    if kind is not str and (low is not None or high is not None):
        low = -sys.float_info.max if low is None else low
        high = sys.float_info.max if high is None else high
        tests.append(lambda v, now: low <= v <= high)
    if meta.get("time"):
        ahead = meta.get("ahead", AHEAD)
        tests.append(
            lambda v, now: -_INF < v < _INF if now is None else now - PAST <= v <= now + ahead
        )
    if kind is float and not tests:
        tests.append(lambda v, now: -_INF < v < _INF)
    shortest, longest = meta.get("min_length"), meta.get("max_length")
    if kind is str and (shortest is not None or longest is not None):
        shortest = 0 if shortest is None else shortest
        longest = _INF if longest is None else longest
        tests.append(lambda v, now: shortest <= len(v) <= longest)
    if "one_of" in meta:
        allowed = meta["one_of"]
        tests.append(lambda v, now: v in allowed)
    nullable = _NONE in kinds
    # One test is the common case: called directly, without a loop over one.
    test = tests[0] if len(tests) == 1 else lambda v, now: all(t(v, now) for t in tests)
    if not tests:
        test = lambda v, now: True  # noqa: E731

    def quick(value: Any, now: Any) -> bool:
        if value is None:
            return nullable
        return type(value) is kind and test(value, now)

    return quick


@functools.cache
def _plan(
    cls: type,
) -> tuple[frozenset[str], tuple[tuple[FieldSpec, Checker, bool, Any], ...]]:
    specs = fields_of(cls)
    return frozenset(s.name for s in specs), tuple(
        (s, _checker(s.kinds, s.meta), bool(s.meta.get("tolerant")), _quick(s.kinds, s.meta))
        for s in specs
    )


def _record(cls: type, data: dict[str, Any], where: str, ctx: _Context) -> Any:
    known, plan = _plan(cls)
    if not known.issuperset(data):
        unknown = next(key for key in data if key not in known)
        raise Invalid(where, f"unknown key {_shown(unknown)}")
    values: dict[str, Any] = {}
    now = ctx.now
    for spec, check, tolerant, quick in plan:
        name = spec.name
        if name not in data:
            if spec.default is dataclasses.MISSING and spec.factory is dataclasses.MISSING:
                raise Invalid(f"{where}.{name}" if where else name, "missing")
            continue
        value = data[name]
        if quick is not None and quick(value, now):
            values[name] = value
            continue
        try:
            values[name] = check(value, lambda n=name: f"{where}.{n}" if where else n, ctx)
        except Invalid as exc:
            if not tolerant:
                raise
            ctx.problems.append(str(exc))  # the default stands in
    record = cls(**values)
    for rule in getattr(cls, "__checks__", ()):
        try:
            rule(record)
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


@functools.cache
def _none_by_default(cls: type) -> frozenset[str]:
    """Fields whose default is None: left out of a compact dump when None."""
    return frozenset(s.name for s in fields_of(cls) if s.default is None)


def dump(value: Any, exclude_none: bool = False, compact: bool = False) -> Any:
    """Records (and containers of them) as JSON-shaped data; other values as they are.

    ``exclude_none`` leaves out every None; ``compact`` only a None that is the field's
    default, so ``load`` builds the same record from the shorter data (the saved state:
    most of a worker's fields are None most of the time, and writing and reading them
    back was a third of the state file's size and parsing).

    A flat record is one ``dict(vars(...))``: the state of 1,000 workers is dumped every run.
    """
    if is_record(type(value)):
        out = dict(vars(value))
        for name in _nested(type(value)):
            out[name] = dump(out[name], exclude_none, compact)
        if exclude_none:
            out = {k: v for k, v in out.items() if v is not None}
        elif compact:
            skip = _none_by_default(type(value))
            out = {k: v for k, v in out.items() if v is not None or k not in skip}
        return out
    if isinstance(value, (list, tuple)):
        return [dump(item, exclude_none, compact) for item in value]
    if isinstance(value, dict):
        return {key: dump(item, exclude_none, compact) for key, item in value.items()}
    return value
