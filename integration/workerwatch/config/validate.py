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
import difflib
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
from workerwatch.sanitize import MAX_ATTRIBUTE, clean_text

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
    kind = kinds[0] if len(kinds) == 1 else Union[kinds]
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


def _keys_at(loc: tuple[Any, ...]) -> list[str]:
    """The keys a record accepts at ``loc`` (a pydantic error location), for suggestions."""
    kind: Any = Config
    for part in loc:
        if isinstance(part, int):
            continue  # a list item: the item's record is found with its field below
        if not records.is_record(kind):
            return []
        spec = next((f for f in records.fields_of(kind) if f.name == part), None)
        if spec is None:
            return []
        kind = next((k for k in spec.kinds if k is not type(None)), None)
        if typing.get_origin(kind) is list:
            (kind,) = typing.get_args(kind)
    return [f.name for f in records.fields_of(kind)] if records.is_record(kind) else []


def describe(exc: ValidationError, path: str) -> str:
    """One line: the first problem, unknown keys first (a misspelled key also makes the key
    it meant "required"; naming the typo is what helps), with the key it probably meant."""
    errors = exc.errors()
    unknown = [e for e in errors if e["type"] == "extra_forbidden"]
    meant: set[tuple[Any, ...]] = set()
    problems = []
    for err in unknown:
        loc = tuple(err["loc"])
        close = difflib.get_close_matches(str(loc[-1]), _keys_at(loc[:-1]), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else "check the spelling"
        if close:
            meant.add((*loc[:-1], close[0]))
        problems.append(f"{_where(loc)}: unknown key ({hint})")
    for err in errors:
        loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden" or (err["type"] == "missing" and loc in meant):
            continue  # said above, or the key a typo above was meant to be
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        problems.append(f"{_where(loc)}: {msg}")
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    # A key is the operator's own text and may hold a newline or a control character; the
    # agent reads one line per message, so the [FATAL] line must stay one line.
    return clean_text(f"config {path}: {problems[0]}{more}", MAX_ATTRIBUTE)


def _where(loc: tuple[Any, ...]) -> str:
    # A key with a line break or other control character is quoted, so the message stays the
    # one [FATAL] line it promises.
    return ".".join(str(p) if str(p).isprintable() else repr(p) for p in loc) or "(top level)"


def validate(data: Any, path: str) -> dict[str, Any]:
    """Validated, normalised plain data (durations in seconds, defaults filled in)."""
    if isinstance(data, dict) and "integrations" in data and "groups" not in data:
        # The agent's own file (integrations.d) holds our config inline, under one entry.
        raise ConfigError(
            f"config {path}: this is an agent integrations.d file (top-level integrations:), "
            f"not an nri-workerwatch config; pass it with --agent-config {path}"
        )
    try:
        return model_of(Config).model_validate(data).model_dump(mode="json")
    except ValidationError as exc:
        raise ConfigError(describe(exc, path)) from None
