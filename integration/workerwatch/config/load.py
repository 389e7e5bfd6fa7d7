"""The integration's configuration: one YAML file, validated once, then read cheaply.

The file is found by ``--config PATH``, else ``CONFIG_PATH`` (the agent writes its inline
``config:`` block to a temp file and passes it that way), else ``WORKERWATCH_CONFIG``.
Every problem becomes one ``ConfigError`` whose message names the file, the key and what
is wrong; the CLI prints it as a single ``[FATAL]`` line.

Validation lives in ``config_schema`` (pydantic). Building those models costs more CPU than
a whole collection of 200 workers, and the agent starts us every 15-30 s with the same file,
so ``load`` keeps the validated, normalised result in ``<state_dir>/config.cache.json``
keyed by the file's SHA-256 and our version, and builds these plain frozen records from it.
A changed file, another version or an unusable cache simply means validating again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import stat
import tempfile
from dataclasses import dataclass, field
from typing import Any, ClassVar

DEFAULT_STATE_DIR = "/var/db/newrelic-infra/data/nri-workerwatch"
MAX_CONFIG_BYTES = 1_000_000
CACHE_FILE = "config.cache.json"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


class ConfigError(Exception):
    """A configuration problem, already phrased for the operator."""


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string such as ``'90s'``, ``'5m'``, ``'1.5h'``."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 300, '90s' or '5m', got a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"expected a duration such as 300, '90s' or '5m', got {value!r}")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError(f"expected a duration such as 300, '90s' or '5m', got {value!r}")
    if not (seconds == seconds) or seconds in (float("inf"), float("-inf")):
        raise ValueError("duration must be a finite number")
    if seconds <= 0:
        raise ValueError(f"duration must be positive, got {value!r}")
    return seconds


def sqs_queue_name(queue: str) -> str:
    """The queue's name, whether the config gives a name or a queue URL."""
    if queue.startswith(("http://", "https://")):
        return queue.rstrip("/").rsplit("/", 1)[-1]
    return queue


# Runtime records: the same names and fields as the schema's models, without pydantic.


@dataclass(frozen=True)
class _Record:
    _nested: ClassVar[dict[str, type]] = {}  # field -> record type (or list of it)

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Any:
        """Build from already validated data (the schema's ``model_dump``)."""
        values = {}
        for f in dataclasses.fields(cls):
            if f.name not in data:
                continue
            value = data[f.name]
            kind = cls._nested.get(f.name)
            if kind is not None and isinstance(value, list):
                value = [kind.from_data(item) for item in value]
            elif kind is not None and value is not None:
                value = kind.from_data(value)
            values[f.name] = value
        return cls(**values)

    @classmethod
    def model_validate(cls, data: dict[str, Any]) -> Any:
        """Validate plain data with the schema (for code and tests that build configs)."""
        from workerwatch import config_schema

        model = getattr(config_schema, cls.__name__)
        try:
            dumped = model.model_validate(data).model_dump(mode="json")
        except config_schema.ValidationError as exc:
            raise ConfigError(config_schema._describe(exc, "<data>")) from None
        return cls.from_data(dumped)

    def model_copy(self, update: dict[str, Any] | None = None) -> Any:
        return dataclasses.replace(self, **(update or {}))

    def model_dump(self, mode: str = "python", exclude_none: bool = False) -> dict[str, Any]:
        return _dump(self, exclude_none)


def _dump(value: Any, exclude_none: bool) -> Any:
    if isinstance(value, _Record):
        out = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if item is None and exclude_none:
                continue
            out[f.name] = _dump(item, exclude_none)
        return out
    if isinstance(value, list | tuple):
        return [_dump(item, exclude_none) for item in value]
    return value


@dataclass(frozen=True)
class Match(_Record):
    cmdline: str | None = None
    systemd_unit: str | None = None
    pidfile: str | None = None


@dataclass(frozen=True)
class Consumes(_Record):
    swf_domain: str | None = None
    task_list: str | None = None
    task_kind: str = "activity"
    sqs_queue: str | None = None


@dataclass(frozen=True)
class Group(_Record):
    _nested: ClassVar[dict[str, type]] = {"match": Match, "consumes": Consumes}
    name: str
    match: Match
    expected: int | None = None
    logs: list[str] | None = None
    heartbeats: str | None = None
    stall_after: float = 300.0
    consumes: Consumes | None = None


@dataclass(frozen=True)
class Canary(_Record):
    workflow_id: str
    expect_every: float = 600.0


@dataclass(frozen=True)
class SwfDomain(_Record):
    _nested: ClassVar[dict[str, type]] = {"canaries": Canary}
    name: str
    activity_task_lists: list[str] = field(default_factory=list)
    decision_task_lists: list[str] = field(default_factory=list)
    timed_out_window: float = 3600.0
    canaries: list[Canary] = field(default_factory=list)


@dataclass(frozen=True)
class Swf(_Record):
    _nested: ClassVar[dict[str, type]] = {"domains": SwfDomain}
    domains: list[SwfDomain]
    region: str = "us-east-1"
    endpoint_url: str | None = None
    sample_every: float = 60.0
    timeout: float = 5.0


@dataclass(frozen=True)
class Sqs(_Record):
    queues: list[str]
    region: str = "us-east-1"
    endpoint_url: str | None = None
    sample_every: float = 60.0
    timeout: float = 5.0


@dataclass(frozen=True)
class Config(_Record):
    _nested: ClassVar[dict[str, type]] = {"groups": Group, "swf": Swf, "sqs": Sqs}
    groups: list[Group]
    state_dir: str = DEFAULT_STATE_DIR
    deadline: float = 20.0
    forget_after: float = 3600.0
    swf: Swf | None = None
    sqs: Sqs | None = None


def locate(cli_path: str | None, env: dict[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    for candidate in (cli_path, env.get("CONFIG_PATH"), env.get("WORKERWATCH_CONFIG")):
        if candidate:
            return candidate
    raise ConfigError(
        "no configuration given: pass --config PATH or set CONFIG_PATH or WORKERWATCH_CONFIG"
    )


def _yaml(text: str, path: str) -> dict[str, Any]:
    import yaml

    try:
        # SafeLoader refuses Python tags; the size cap bounds alias-expansion bombs' input,
        # and the node-count check bounds their expansion.
        data = yaml.load(text, Loader=_BoundedLoader)
    except _TooBig as exc:
        raise ConfigError(f"config {path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"config {path}: not valid YAML{where}: {problem}") from None
    if data is None:
        raise ConfigError(f"config {path}: the file is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"config {path}: expected a mapping at the top level")
    return data


def parse(text: str, path: str = "<config>") -> Config:
    """Validate YAML text into a ``Config``; raise ``ConfigError`` with one clear line."""
    from workerwatch.config_schema import validate

    return Config.from_data(validate(_yaml(text, path), path))


def load(path: str, use_cache: bool = True) -> Config:
    """Read, validate (or reuse the validation of this exact file) and return the config."""
    try:
        size = os.stat(path).st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"config {path}: file is {size} bytes, larger than 1 MB")
        with open(path, "rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
        text = raw.decode("utf-8")
    except ConfigError:
        raise
    except UnicodeDecodeError:
        raise ConfigError(f"config {path}: not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"config {path}: cannot read: {exc.strerror or exc}") from None
    if not use_cache:
        return parse(text, path)
    key = _cache_key(raw)
    # Where the cache would be, found without parsing the YAML; the key is the file's hash,
    # so an entry found anywhere is this very file's validation, and a miss only costs a
    # full validation.
    match = _STATE_DIR_LINE.search(text)
    cached = _read_cache(match.group(1) if match else DEFAULT_STATE_DIR, key)
    if cached is not None:
        with contextlib.suppress(TypeError, KeyError, AttributeError, ValueError, ConfigError):
            if _has_userinfo(cached):
                cached = _with_endpoints(cached, _yaml(text, path))
            return Config.from_data(cached)
    from workerwatch.config_schema import validate

    validated = validate(_yaml(text, path), path)
    _write_cache(validated["state_dir"], key, _without_userinfo(validated))
    return Config.from_data(validated)


# Block YAML (``state_dir: /x``) and flow style or JSON (``{"state_dir": "/x", ...}``). Only
# the top level may hold this key (unknown keys are errors), and a wrong guess only costs
# a validation.
_STATE_DIR_LINE = re.compile(r"""["']?\bstate_dir["']?[ \t]*:[ \t]*["']?(/[^"'#,\s}\]]*)""")


_SECRET_BEARING = ("swf", "sqs")  # sections whose endpoint_url may carry user:password@


def _without_userinfo(validated: dict[str, Any]) -> dict[str, Any]:
    """The cache must hold no credentials: endpoint URLs are stored without their userinfo."""
    out = dict(validated)
    for section in _SECRET_BEARING:
        url = out[section].get("endpoint_url") if isinstance(out.get(section), dict) else None
        if url and _strip_userinfo(url) != url:
            out[section] = {**out[section], "endpoint_url": _strip_userinfo(url)}
            out["_userinfo_removed"] = True
    return out


def _has_userinfo(cached: dict[str, Any]) -> bool:
    return cached.pop("_userinfo_removed", False) is True


def _with_endpoints(cached: dict[str, Any], raw: dict[str, Any]) -> dict[str, Any]:
    """Put back the endpoint URLs from the file itself (validated when the cache was made)."""
    out = dict(cached)
    for section in _SECRET_BEARING:
        url = (
            raw.get(section, {}).get("endpoint_url") if isinstance(raw.get(section), dict) else None
        )
        if isinstance(out.get(section), dict) and isinstance(url, str):
            out[section] = {**out[section], "endpoint_url": url.strip()}
    return out


def _cache_key(raw: bytes) -> str:
    from workerwatch import __version__

    return f"{__version__}:{hashlib.sha256(raw).hexdigest()}"


def _read_cache(state_dir: str, key: str) -> dict[str, Any] | None:
    """The cached validation of this exact file, if trustworthy (ours, not writable by others)."""
    try:
        fd = os.open(os.path.join(state_dir, CACHE_FILE), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if info.st_uid != os.geteuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return None
        with os.fdopen(fd, "rb", closefd=False) as handle:
            entry = json.loads(handle.read(4 * MAX_CONFIG_BYTES))
    except (OSError, ValueError, RecursionError):
        return None
    finally:
        os.close(fd)
    if not isinstance(entry, dict) or entry.get("key") != key:
        return None
    config = entry.get("config")
    return config if isinstance(config, dict) else None


def _write_cache(state_dir: str, key: str, validated: dict[str, Any]) -> None:
    """Best effort: without a usable state_dir every run just validates again."""
    tmp = None
    try:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".config.", dir=state_dir)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"key": key, "config": validated}, handle, allow_nan=False)
        os.replace(tmp, os.path.join(state_dir, CACHE_FILE))
        tmp = None
    except (OSError, ValueError):
        pass
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


class _TooBig(Exception):
    pass


def _make_bounded_loader() -> type:
    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class BoundedLoader(base):  # type: ignore[misc, valid-type]
        """SafeLoader that refuses documents expanding into too many nodes (YAML bombs)."""

        max_nodes = 100_000

        def construct_document(self, node: Any) -> Any:
            count = 0
            stack = [node]
            while stack:
                current = stack.pop()
                count += 1
                if count > self.max_nodes:
                    raise _TooBig("document expands to too many nodes (aliases?)")
                if isinstance(current, yaml.SequenceNode):
                    stack.extend(current.value)
                elif isinstance(current, yaml.MappingNode):
                    for key, value in current.value:
                        stack.append(key)
                        stack.append(value)
            return super().construct_document(node)

    return BoundedLoader


class _LazyLoader:
    _cls: type | None = None

    def __call__(self, stream: Any) -> Any:
        if _LazyLoader._cls is None:
            _LazyLoader._cls = _make_bounded_loader()
        return _LazyLoader._cls(stream)


_BoundedLoader = _LazyLoader()


def redacted(config: Config) -> dict[str, Any]:
    """The effective configuration without anything secret-looking, for inventory."""
    data = config.model_dump(mode="json", exclude_none=True)
    for section in ("swf", "sqs"):
        if section in data and "endpoint_url" in data[section]:
            data[section]["endpoint_url"] = _strip_userinfo(data[section]["endpoint_url"])
    return data


def _strip_userinfo(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        if "@" in rest.split("/", 1)[0]:
            return f"{scheme}://{rest.split('@', 1)[1]}"
    return url
