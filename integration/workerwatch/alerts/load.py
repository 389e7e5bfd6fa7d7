"""Reading the definition files: YAML, parameters, ``defaults:``, then the models."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from workerwatch.alerts.dashboard_models import DashboardDocument
from workerwatch.alerts.fields import unique_by
from workerwatch.alerts.models import AlertsDocument
from workerwatch.alerts.params import (
    DefinitionError,
    Parameter,
    Value,
    check_overrides_known,
    resolve,
    substitute,
)
from workerwatch.config.load import ConfigError, read_yaml

MAX_DEFINITION_BYTES = 1_000_000


def _read_yaml(path: Path) -> dict[str, Any]:
    # The config's YAML reader: the same bounded safe loader (aliases cannot expand
    # without limit) and the same one-phrase parse errors as a config file.
    try:
        size = path.stat().st_size
        if size > MAX_DEFINITION_BYTES:
            raise DefinitionError(f"{path}: larger than {MAX_DEFINITION_BYTES} bytes")
        data = read_yaml(path.read_text(encoding="utf-8"), str(path))
    except OSError as exc:
        raise DefinitionError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise DefinitionError(f"{path}: not UTF-8 text") from None
    except ConfigError as exc:
        raise DefinitionError(str(exc)) from None
    if not isinstance(data, dict):
        raise DefinitionError(f"{path}: expected a mapping at the top level")
    return data


def _definition_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise DefinitionError(f"{directory}: no such directory")
    files = sorted(
        p for p in directory.iterdir() if p.suffix in {".yml", ".yaml", ".json"} and p.is_file()
    )
    if not files:
        raise DefinitionError(f"{directory}: no definition files (*.yml, *.yaml, *.json)")
    return files


def _format_validation(path: Path, exc: ValidationError, data: Mapping[str, Any]) -> str:
    lines = []
    for error in exc.errors():
        loc = list(error.get("loc", ()))
        label = _loc_label(loc, data)
        message = error.get("msg", "invalid")
        message = message.removeprefix("Value error, ")
        lines.append(f"{path}: {label}: {message}" if label else f"{path}: {message}")
    return "\n".join(lines)


def _loc_label(loc: list[Any], data: Mapping[str, Any]) -> str:
    parts: list[str] = []
    node: Any = data
    for item in loc:
        if isinstance(item, int):
            named = ""
            if isinstance(node, list) and 0 <= item < len(node) and isinstance(node[item], dict):
                ident = node[item].get("key") or node[item].get("name") or node[item].get("title")
                named = f" ({ident})" if ident else ""
            parts.append(f"[{item}]{named}")
            node = node[item] if isinstance(node, list) and 0 <= item < len(node) else None
        else:
            # pydantic reports union/tagged branches as extra loc items; skip the type names.
            if isinstance(node, dict) and item not in node and parts:
                continue
            parts.append(f".{item}" if parts else str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return "".join(parts)


def _parameters(path: Path, raw: Any) -> dict[str, Parameter]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise DefinitionError(f"{path}: parameters: expected a mapping of name to definition")
    params: dict[str, Parameter] = {}
    for name, spec in raw.items():
        if not isinstance(name, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
            raise DefinitionError(f"{path}: parameters: {name!r} is not a valid parameter name")
        if not isinstance(spec, dict):
            spec = {"default": spec}
        try:
            params[name] = Parameter.model_validate(spec)
        except ValidationError as exc:
            raise DefinitionError(
                _format_validation(path, exc, spec).replace(f"{path}: ", f"{path}: {name}: ", 1)
            ) from None
    return params


def _load(
    directory: Path,
    overrides: Mapping[str, str],
    build: Callable[[Path, dict[str, Parameter], dict[str, Value], Any], Any],
    name_of: Callable[[Any], str],
    what: str,
) -> list[Any]:
    """Every definition file built into a document; the documents' names must be unique."""
    raw_docs = []
    for path in _definition_files(directory):
        data = _read_yaml(path)
        params = _parameters(path, data.pop("parameters", None))
        raw_docs.append((path, params, data))
    check_overrides_known(overrides, {name for _, params, _ in raw_docs for name in params})
    docs = []
    for path, params, data in raw_docs:
        values = resolve(params, overrides)
        try:
            resolved = substitute(data, values, "")
        except DefinitionError as exc:
            raise DefinitionError(f"{path}: {exc}") from None
        try:
            docs.append(build(path, params, values, resolved))
        except ValidationError as exc:
            raise DefinitionError(_format_validation(path, exc, resolved)) from None
    try:
        unique_by(docs, lambda d: name_of(d).casefold(), what)
    except ValueError as exc:
        raise DefinitionError(f"{directory}: {exc}") from None
    return docs


def _merge(defaults: Mapping[str, Any], item: Mapping[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = dict(defaults)
    for key, value in item.items():
        if value is None:
            # An explicit null drops an inherited default (event_timer takes no delay).
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_alerts(directory: Path, overrides: Mapping[str, str]) -> list[AlertsDocument]:
    """Every alert policy defined under ``directory`` (one per file), parameters applied."""

    def build(path: Path, params: dict[str, Parameter], values: dict[str, Value], data: Any):
        defaults = data.pop("defaults", None) or {}
        if not isinstance(defaults, dict):
            raise DefinitionError(f"{path}: defaults: expected a mapping")
        conditions = data.get("conditions")
        if isinstance(conditions, list):
            data["conditions"] = [
                _merge(defaults, c) if isinstance(c, dict) else c for c in conditions
            ]
        return AlertsDocument.model_validate(
            {**data, "source": str(path), "parameters": params, "values": values}
        )

    return _load(directory, overrides, build, lambda d: d.policy.name, "policy name")


def load_dashboards(directory: Path, overrides: Mapping[str, str]) -> list[DashboardDocument]:
    """Every dashboard defined under ``directory`` (one per file), parameters applied."""

    def build(path: Path, params: dict[str, Parameter], values: dict[str, Value], data: Any):
        return DashboardDocument.model_validate(
            {**data, "source": str(path), "parameters": params, "values": values}
        )

    return _load(directory, overrides, build, lambda d: d.dashboard.name, "dashboard name")
