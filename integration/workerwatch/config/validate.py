"""The configuration's schema: pydantic models that validate the YAML and phrase errors.

Imported only when a configuration has to be validated (a new or changed file,
``check-config``): building these models costs more CPU than a whole collection, so the
agent's every-30-seconds path reuses the validated result (see ``config.load``).
"""

from __future__ import annotations

import fnmatch
import re
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

from workerwatch.config import DEFAULT_STATE_DIR, ConfigError, parse_duration, sqs_queue_name

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


def validate(data: dict[str, Any], path: str) -> dict[str, Any]:
    """Validated, normalised plain data (durations in seconds, defaults filled in)."""
    try:
        return Config.model_validate(data).model_dump(mode="json")
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from None
