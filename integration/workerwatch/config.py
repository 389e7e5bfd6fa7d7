"""The integration's configuration: one YAML file, validated by pydantic models.

The file is found by ``--config PATH``, else ``CONFIG_PATH`` (the agent writes its inline
``config:`` block to a temp file and passes it that way), else ``WORKERWATCH_CONFIG``.
Every problem becomes one ``ConfigError`` whose message names the file, the key and what
is wrong; the CLI prints it as a single ``[FATAL]`` line.
"""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

DEFAULT_STATE_DIR = "/var/db/newrelic-infra/data/nri-workerwatch"
MAX_CONFIG_BYTES = 1_000_000

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


Duration = Annotated[float, BeforeValidator(parse_duration)]


def _check_glob(pattern: str) -> str:
    if not pattern or "\x00" in pattern:
        raise ValueError("glob must be a non-empty path pattern")
    if not pattern.startswith("/"):
        raise ValueError(f"glob {pattern!r} must be an absolute path")
    try:
        re.compile(fnmatch.translate(pattern))
    except re.error as exc:
        raise ValueError(f"glob {pattern!r} is invalid: {exc}") from exc
    return pattern


Glob = Annotated[str, BeforeValidator(lambda v: _check_glob(v) if isinstance(v, str) else v)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Match(_Strict):
    """How processes are recognised as members of a group; every given rule must hold."""

    cmdline: str | None = None
    systemd_unit: str | None = None
    pidfile: Glob | None = None

    @field_validator("cmdline")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not value:
            raise ValueError("regex must not be empty")
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regex {value!r}: {exc}") from exc
        return value

    @field_validator("systemd_unit")
    @classmethod
    def _unit(cls, value: str | None) -> str | None:
        if value is not None and not value:
            raise ValueError("unit pattern must not be empty")
        return value

    @model_validator(mode="after")
    def _at_least_one(self) -> Match:
        if self.cmdline is None and self.systemd_unit is None and self.pidfile is None:
            raise ValueError("give at least one of cmdline, systemd_unit, pidfile")
        return self


class Consumes(_Strict):
    """Which queue a group consumes, so the group's reason can mention its backlog.

    ``task_kind`` says which SWF count applies: workers consume activity tasks, deciders
    consume decision tasks, and elife-bot uses one task list name for both.
    """

    swf_domain: str | None = None
    task_list: str | None = None
    task_kind: Literal["activity", "decision"] = "activity"
    sqs_queue: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> Consumes:
        if (self.swf_domain is None) != (self.task_list is None):
            raise ValueError("swf_domain and task_list go together: give both or neither")
        if self.swf_domain is None and self.sqs_queue is None:
            raise ValueError("give swf_domain with task_list, or sqs_queue")
        return self


class Group(_Strict):
    name: str = Field(min_length=1, max_length=200)
    match: Match
    expected: int | None = Field(default=None, ge=0, le=100_000)
    logs: list[Glob] | None = None
    heartbeats: Glob | None = None
    stall_after: Duration = 300.0
    consumes: Consumes | None = None

    @field_validator("logs", mode="before")
    @classmethod
    def _logs_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [value]
        return value


class Canary(_Strict):
    workflow_id: str = Field(min_length=1, max_length=256)
    expect_every: Duration = 600.0


def _unique(values: list[str], what: str) -> list[str]:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{what} {value!r} is listed twice")
        seen.add(value)
    return values


def _check_endpoint(value: str | None) -> str | None:
    if value is not None and not re.match(r"^https?://[^/\s]+", value):
        raise ValueError(f"endpoint_url must be an http(s) URL, got {value!r}")
    return value


# SWF names: 1-256 characters (botocore swf service-2.json, shapes DomainName and Name).
SwfName = Annotated[str, Field(min_length=1, max_length=256)]


class SwfDomain(_Strict):
    name: SwfName
    activity_task_lists: list[SwfName] = Field(default_factory=list)
    decision_task_lists: list[SwfName] = Field(default_factory=list)
    timed_out_window: Duration = 3600.0
    canaries: list[Canary] = Field(default_factory=list)

    @model_validator(mode="after")
    def _no_repeats(self) -> SwfDomain:
        _unique(self.activity_task_lists, "activity task list")
        _unique(self.decision_task_lists, "decision task list")
        _unique([c.workflow_id for c in self.canaries], "canary workflow_id")
        return self


class Swf(_Strict):
    region: str = Field(default="us-east-1", min_length=1)
    endpoint_url: str | None = None
    sample_every: Duration = 60.0
    timeout: Duration = 5.0
    domains: list[SwfDomain] = Field(min_length=1)

    @field_validator("endpoint_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return _check_endpoint(value)

    @model_validator(mode="after")
    def _no_repeats(self) -> Swf:
        _unique([d.name for d in self.domains], "domain")
        return self


# SQS queue names: up to 80 alphanumerics, hyphens and underscores, ".fifo" for FIFO queues
# (CreateQueue API reference, QueueName).
_SQS_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}(\.fifo)?$")


def sqs_queue_name(queue: str) -> str:
    """The queue's name, whether the config gives a name or a queue URL."""
    if queue.startswith(("http://", "https://")):
        return queue.rstrip("/").rsplit("/", 1)[-1]
    return queue


class Sqs(_Strict):
    region: str = Field(default="us-east-1", min_length=1)
    endpoint_url: str | None = None
    sample_every: Duration = 60.0
    timeout: Duration = 5.0
    queues: list[str] = Field(min_length=1)

    @field_validator("endpoint_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return _check_endpoint(value)

    @field_validator("queues")
    @classmethod
    def _queues(cls, values: list[str]) -> list[str]:
        for queue in values:
            if queue.startswith(("http://", "https://")):
                if not re.match(r"^https?://[^/\s]+/[^/\s]+/[^/\s]+/?$", queue):
                    raise ValueError(f"queue URL {queue!r} is not .../ACCOUNT/NAME")
            elif not _SQS_NAME.match(queue):
                raise ValueError(f"{queue!r} is neither a queue URL nor a valid queue name")
        _unique([sqs_queue_name(q) for q in values], "queue")
        return values


class Config(_Strict):
    state_dir: str = DEFAULT_STATE_DIR
    groups: list[Group] = Field(min_length=1)
    deadline: Duration = 20.0
    forget_after: Duration = 3600.0
    swf: Swf | None = None
    sqs: Sqs | None = None

    @field_validator("state_dir")
    @classmethod
    def _abs_state_dir(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"state_dir must be an absolute path, got {value!r}")
        return value

    @model_validator(mode="after")
    def _unique_groups(self) -> Config:
        seen: set[str] = set()
        for group in self.groups:
            if group.name in seen:
                raise ValueError(f"group name {group.name!r} is used twice")
            seen.add(group.name)
        return self


def locate(cli_path: str | None, env: dict[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    for candidate in (cli_path, env.get("CONFIG_PATH"), env.get("WORKERWATCH_CONFIG")):
        if candidate:
            return candidate
    raise ConfigError(
        "no configuration given: pass --config PATH or set CONFIG_PATH or WORKERWATCH_CONFIG"
    )


def _describe(exc: ValidationError, path: str) -> str:
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


def parse(text: str, path: str = "<config>") -> Config:
    """Validate YAML text into a ``Config``; raise ``ConfigError`` with one clear line."""
    import yaml

    try:
        # SafeLoader refuses Python tags; the size cap bounds alias-expansion bombs' input,
        # and the node-count check below bounds their expansion.
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
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from None


def load(path: str) -> Config:
    try:
        size = Path(path).stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"config {path}: file is {size} bytes, larger than 1 MB")
        text = Path(path).read_text(encoding="utf-8")
    except ConfigError:
        raise
    except UnicodeDecodeError:
        raise ConfigError(f"config {path}: not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"config {path}: cannot read: {exc.strerror or exc}") from None
    return parse(text, path)


class _TooBig(Exception):
    pass


def _make_bounded_loader() -> type:
    import yaml

    class BoundedLoader(yaml.SafeLoader):
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
