"""Definition parameters: declared with a default, overridden with ``--set name=value``.

A string is scanned for ``${name}``; a string that is exactly one ``${name}`` takes the
parameter's typed value (so ``threshold: ${x}`` stays a number), otherwise the value is
formatted into the text. ``$$`` is a literal ``$``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Union, not ``bool | int | ...``: a module-level alias is evaluated at import, and ``|``
# between types needs CPython 3.10.
Value = Union[bool, int, float, str]

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_TOKEN = re.compile(r"\$\$|\$\{(" + _NAME + r")\}|\$\{([^}]*)\}?")
_WHOLE = re.compile(r"^\$\{(" + _NAME + r")\}$")
_VALID_NAME = re.compile(r"^" + _NAME + r"$")


class DefinitionError(Exception):
    """A problem in the definitions or the parameters, phrased for the person running the tool."""


class Parameter(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    default: Value
    description: str = ""
    min: float | None = None
    max: float | None = None
    choices: list[Value] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _default_is_valid(self) -> Parameter:
        check_value(self, self.default)
        return self

    @property
    def kind(self) -> str:
        # bool before int: True is an int to Python.
        if isinstance(self.default, bool):
            return "boolean"
        if isinstance(self.default, int):
            return "integer"
        if isinstance(self.default, float):
            return "number"
        return "string"


def check_value(param: Parameter, value: Value) -> Value:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("must be a finite number")
        if param.min is not None and value < param.min:
            raise ValueError(f"must be at least {_fmt(param.min)}, got {_fmt(value)}")
        if param.max is not None and value > param.max:
            raise ValueError(f"must be at most {_fmt(param.max)}, got {_fmt(value)}")
    if param.choices is not None and value not in param.choices:
        raise ValueError(f"must be one of {', '.join(map(str, param.choices))}, got {value!r}")
    return value


def coerce(param: Parameter, raw: str) -> Value:
    """Turn the text after ``--set name=`` into the parameter's type."""
    kind = param.kind
    text = raw.strip()
    if kind == "boolean":
        lowered = text.lower()
        if lowered in {"true", "yes", "on", "1"}:
            value: Value = True
        elif lowered in {"false", "no", "off", "0"}:
            value = False
        else:
            raise ValueError(f"must be true or false, got {raw!r}")
    elif kind == "integer":
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"must be a whole number, got {raw!r}") from None
    elif kind == "number":
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"must be a number, got {raw!r}") from None
    else:
        value = raw
    return check_value(param, value)


def parse_sets(items: Iterable[str]) -> dict[str, str]:
    """``["a=1", "b=x=y"]`` -> ``{"a": "1", "b": "x=y"}``; the last ``--set`` of a name wins."""
    result: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not _VALID_NAME.match(name):
            raise DefinitionError(
                f"--set {item!r}: expected NAME=VALUE, e.g. --set stall_minutes=10"
            )
        result[name] = value
    return result


def resolve(declared: Mapping[str, Parameter], overrides: Mapping[str, str]) -> dict[str, Value]:
    """Values for every declared parameter: the override when given, else the default."""
    values: dict[str, Value] = {}
    for name, param in declared.items():
        if name in overrides:
            try:
                values[name] = coerce(param, overrides[name])
            except ValueError as exc:
                raise DefinitionError(f"--set {name}: {exc}") from None
        else:
            values[name] = param.default
    return values


def check_overrides_known(overrides: Mapping[str, str], known: Iterable[str]) -> None:
    known_set = set(known)
    unknown = sorted(set(overrides) - known_set)
    if unknown:
        raise DefinitionError(
            f"unknown parameter(s) {', '.join(unknown)} in --set; "
            f"known: {', '.join(sorted(known_set)) or 'none'}"
        )


def _fmt(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def substitute(node: Any, values: Mapping[str, Value], where: str) -> Any:
    """Replace ``${name}`` in every string of a parsed YAML tree."""
    if isinstance(node, dict):
        return {
            key: substitute(val, values, f"{where}.{key}" if where else str(key))
            for key, val in node.items()
        }
    if isinstance(node, list):
        return [substitute(val, values, f"{where}[{i}]") for i, val in enumerate(node)]
    if not isinstance(node, str):
        return node
    whole = _WHOLE.match(node)
    if whole:
        return _lookup(whole.group(1), values, where)

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        if match.group(1) is None:
            raise DefinitionError(
                f"{where}: {match.group(0)!r} is not a parameter reference; write ${{name}}, "
                "or $$ for a literal $"
            )
        return _fmt(_lookup(match.group(1), values, where))

    return _TOKEN.sub(replace, node)


def _lookup(name: str, values: Mapping[str, Value], where: str) -> Value:
    if name not in values:
        known = ", ".join(sorted(values)) or "none"
        raise DefinitionError(f"{where}: unknown parameter ${{{name}}} (declared: {known})")
    return values[name]
