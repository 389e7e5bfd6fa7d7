"""Validation of a configuration file: pydantic models generated from ``model``'s records.

Nothing here defines a key: each record of ``model`` becomes one pydantic model with the
same fields, defaults and limits (``Field``), its ``before``/``after`` hooks as validators
and its ``__checks__`` as a model validator. Unknown keys are errors (they catch typos),
and every problem becomes one line naming the key.

Imported only when a configuration has to be validated (a new or changed file,
``check-config``): building these models costs more CPU than a whole collection, so the
agent's every-30-seconds path reuses the validated result (see ``load``).
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    model_validator,
)

from workerwatch import records
from workerwatch.config.model import Config, ConfigError

_LIMITS = ("ge", "le", "min_length", "max_length")
_STRICT = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


def _annotated(kind: Any, meta: dict[str, Any]) -> Any:
    """``kind`` with the limits and hooks of ``meta`` attached."""
    extras: list[Any] = []
    limits = {k: meta[k] for k in _LIMITS if k in meta}
    if limits:
        extras.append(Field(**limits))
    if "before" in meta:
        extras.append(BeforeValidator(meta["before"]))
    if "after" in meta:
        extras.append(AfterValidator(meta["after"]))
    return Annotated[(kind, *extras)] if extras else kind


def _translate(kind: Any, each: dict[str, Any]) -> Any:
    """A resolved annotation with records replaced by their models, list items annotated."""
    if records.is_record(kind):
        return model_of(kind)
    origin = typing.get_origin(kind)
    if origin is list:
        (item,) = typing.get_args(kind)
        return list[_annotated(_translate(item, {}), each)]
    if origin is dict:
        key, item = typing.get_args(kind)
        return dict[key, _annotated(_translate(item, {}), each)]
    if origin is Literal or kind in (str, int, float, bool, type(None), Any):
        return kind
    raise TypeError(f"no pydantic type for {kind!r}")


def _field(spec: records.FieldSpec) -> tuple[Any, Any]:
    kinds = tuple(_translate(k, spec.meta.get("each", {})) for k in spec.kinds)
    kind = kinds[0] if len(kinds) == 1 else Union[kinds]  # noqa: UP007 - built at run time
    if spec.factory is not dataclasses.MISSING:
        default = Field(default_factory=spec.factory)
    elif spec.default is not dataclasses.MISSING:
        default = spec.default
    else:
        default = ...
    return _annotated(kind, spec.meta), default


@functools.cache
def model_of(cls: type) -> type[BaseModel]:
    """The pydantic model of one record of ``model`` (built once)."""
    validators: dict[str, Any] = {}
    checks = getattr(cls, "__checks__", ())
    if checks:

        def run_checks(self: Any) -> Any:
            for check in checks:
                check(self)
            return self

        validators["checks"] = model_validator(mode="after")(run_checks)
    fields = {spec.name: _field(spec) for spec in records.fields_of(cls)}
    return create_model(  # type: ignore[call-overload, no-any-return]
        cls.__name__, __config__=_STRICT, __validators__=validators, **fields
    )


def describe(exc: ValidationError, path: str) -> str:
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling)"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        problems.append(f"{where}: {msg}")
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"config {path}: {problems[0]}{more}"


def validate(data: Any, path: str) -> dict[str, Any]:
    """Validated, normalised plain data (durations in seconds, defaults filled in)."""
    try:
        return model_of(Config).model_validate(data).model_dump(mode="json")
    except ValidationError as exc:
        raise ConfigError(describe(exc, path)) from None
