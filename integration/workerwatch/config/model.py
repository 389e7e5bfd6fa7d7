"""The configuration's one definition: every key, its type, its default and its limits.

The rest of the code reads these frozen records. ``validate`` builds the pydantic models
that check a new file from them (imported only on a cache miss, so the agent's every-30-s
runs never import pydantic), and ``load`` builds them from the cached, already validated
data through ``records``. Adding a key is one field here plus its line in the README.

Field metadata (see ``records``): ``ge``/``le``/``min_length``/``max_length``/``one_of``
limits, which both paths check; ``before`` (a function of the raw value, e.g. a duration
string to seconds) and ``after`` (a check of the typed value), which only the validation
runs; ``each`` for the items of a list. ``__checks__`` hold the rules that span fields.
"""

# Fields are declared through small helpers that return dataclasses.field(...).

from __future__ import annotations

import fnmatch
import re
from dataclasses import field
from typing import Any, Literal

from workerwatch.records import record
from workerwatch.units import parse_duration

DEFAULT_STATE_DIR = "/var/db/newrelic-infra/data/nri-workerwatch"


class ConfigError(Exception):
    """A configuration problem, already phrased for the operator."""


# -- checks of single values (run by the validation only) ---------------------------------


def check_glob(value: Any) -> Any:
    """An absolute path pattern that ``fnmatch`` can compile (other types: the type check)."""
    if not isinstance(value, str):
        return value
    if not value or "\x00" in value:
        raise ValueError("glob must be a non-empty path pattern")
    if not value.startswith("/"):
        raise ValueError(f"glob {value!r} must be an absolute path")
    try:
        re.compile(fnmatch.translate(value))
    except re.error as exc:
        raise ValueError(f"glob {value!r} is invalid: {exc}") from exc
    return value


def check_regex(value: str | None) -> str | None:
    if value is None:
        return value
    if not value:
        raise ValueError("regex must not be empty")
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"invalid regex {value!r}: {exc}") from exc
    return value


def check_unit(value: str | None) -> str | None:
    if value is not None and not value:
        raise ValueError("unit pattern must not be empty")
    return value


def check_endpoint(value: str | None) -> str | None:
    if value is not None and not re.match(r"^https?://[^/\s]+", value):
        raise ValueError(f"endpoint_url must be an http(s) URL, got {value!r}")
    return value


def check_absolute(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"state_dir must be an absolute path, got {value!r}")
    return value


def one_or_many(value: Any) -> Any:
    """``logs: '/x/*.log'`` means ``logs: ['/x/*.log']``."""
    return [value] if isinstance(value, str) else value


def sqs_queue_name(queue: str) -> str:
    """The queue's name, whether the config gives a name or a queue URL."""
    if queue.startswith(("http://", "https://")):
        return queue.rstrip("/").rsplit("/", 1)[-1]
    return queue


# SQS queue names: up to 80 alphanumerics, hyphens and underscores, ".fifo" for FIFO queues
# (CreateQueue API reference, QueueName).
_SQS_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}(\.fifo)?$")


def check_queues(values: list[str]) -> list[str]:
    for queue in values:
        if queue.startswith(("http://", "https://")):
            if not re.match(r"^https?://[^/\s]+/[^/\s]+/[^/\s]+/?$", queue):
                raise ValueError(f"queue URL {queue!r} is not .../ACCOUNT/NAME")
        elif not _SQS_NAME.match(queue):
            raise ValueError(f"{queue!r} is neither a queue URL nor a valid queue name")
    _unique([sqs_queue_name(q) for q in values], "queue")
    return values


def _unique(values: list[str], what: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{what} {value!r} is listed twice")
        seen.add(value)


def key(default: Any = None, **meta: Any) -> Any:
    """A config key with a default; ``meta`` as in the module docstring."""
    if isinstance(default, list):
        return field(default_factory=list, metadata=meta)
    return field(default=default, metadata=meta)


def required(**meta: Any) -> Any:
    """A key without a default (dataclasses want these before the keys that have one)."""
    return field(metadata=meta)


DURATION = {"before": parse_duration}
GLOB = {"before": check_glob}
# The swf: and sqs: sections' shared keys (each section has its own copy of the key).
AWS_REGION = "us-east-1"
SAMPLE_EVERY = 60.0  # seconds between samples of the queue side
AWS_TIMEOUT = 5.0  # connect and read timeout of each AWS call
# SWF names: 1-256 characters (botocore swf service-2.json, shapes DomainName and Name).
SWF_NAME = {"min_length": 1, "max_length": 256}


# -- the records --------------------------------------------------------------------------


def _at_least_one_rule(match: Match) -> None:
    if match.cmdline is None and match.systemd_unit is None and match.pidfile is None:
        raise ValueError("give at least one of cmdline, systemd_unit, pidfile")


@record(frozen=True)
class Match:
    """How processes are recognised as members of a group; every given rule must hold."""

    __checks__ = (_at_least_one_rule,)

    cmdline: str | None = key(after=check_regex)  # regex searched in the command line
    systemd_unit: str | None = key(after=check_unit)  # fnmatch against the unit
    pidfile: str | None = key(**GLOB)  # glob; each file holds one pid


def _complete(consumes: Consumes) -> None:
    if (consumes.swf_domain is None) != (consumes.task_list is None):
        raise ValueError("swf_domain and task_list go together: give both or neither")
    if consumes.swf_domain is None and consumes.sqs_queue is None:
        raise ValueError("give swf_domain with task_list, or sqs_queue")


@record(frozen=True)
class Consumes:
    """Which queue a group consumes, so the group's reason can mention its backlog.

    ``task_kind`` says which SWF count applies: workers consume activity tasks, deciders
    consume decision tasks, and elife-bot uses one task list name for both.
    """

    __checks__ = (_complete,)

    swf_domain: str | None = key()
    task_list: str | None = key()
    task_kind: Literal["activity", "decision"] = key("activity")
    sqs_queue: str | None = key()


@record(frozen=True)
class Group:
    """One group of workers: how to find them and when one counts as stalled."""

    name: str = required(min_length=1, max_length=200)
    match: Match = required()
    expected: int | None = key(ge=0, le=100_000)
    logs: list[str] | None = key(before=one_or_many, each=GLOB)
    heartbeats: str | None = key(**GLOB)
    # 2 minutes: with the agent's interval and the Worker stalled condition's window and delay,
    # a hang opens an incident within 5 minutes (docs/alerts.md, "Hang to incident").
    stall_after: float = key(120.0, **DURATION)
    consumes: Consumes | None = key()


@record(frozen=True)
class Canary:
    """The SWF canary workflow: started on a schedule, expected to complete."""

    workflow_id: str = required(min_length=1, max_length=256)
    expect_every: float = key(600.0, **DURATION)


def _no_repeated_lists(domain: SwfDomain) -> None:
    _unique(domain.activity_task_lists, "activity task list")
    _unique(domain.decision_task_lists, "decision task list")
    _unique([c.workflow_id for c in domain.canaries], "canary workflow_id")


@record(frozen=True)
class SwfDomain:
    """One SWF domain and the task lists whose backlog is watched."""

    __checks__ = (_no_repeated_lists,)

    name: str = required(**SWF_NAME)
    activity_task_lists: list[str] = key([], each=SWF_NAME)
    decision_task_lists: list[str] = key([], each=SWF_NAME)
    timed_out_window: float = key(3600.0, **DURATION)
    canaries: list[Canary] = key([])


def _no_repeated_domains(swf: Swf) -> None:
    _unique([d.name for d in swf.domains], "domain")


@record(frozen=True)
class Swf:
    """The ``swf:`` section: the SWF backlog probes."""

    __checks__ = (_no_repeated_domains,)

    domains: list[SwfDomain] = required(min_length=1)
    region: str = key(AWS_REGION, min_length=1)
    endpoint_url: str | None = key(after=check_endpoint)  # may carry user:password@
    sample_every: float = key(SAMPLE_EVERY, **DURATION)
    timeout: float = key(AWS_TIMEOUT, **DURATION)


@record(frozen=True)
class Sqs:
    """The ``sqs:`` section: the SQS backlog probes."""

    queues: list[str] = required(min_length=1, after=check_queues)  # names or queue URLs
    region: str = key(AWS_REGION, min_length=1)
    endpoint_url: str | None = key(after=check_endpoint)  # may carry user:password@
    sample_every: float = key(SAMPLE_EVERY, **DURATION)
    timeout: float = key(AWS_TIMEOUT, **DURATION)


def _unique_groups(config: Config) -> None:
    seen: set[str] = set()
    for group in config.groups:
        if group.name in seen:
            raise ValueError(f"group name {group.name!r} is used twice")
        seen.add(group.name)


@record(frozen=True)
class Config:
    """The whole configuration file."""

    __checks__ = (_unique_groups,)

    groups: list[Group] = required(min_length=1)
    state_dir: str = key(DEFAULT_STATE_DIR, after=check_absolute)
    deadline: float = key(20.0, **DURATION)  # a run ends by then whatever a probe does
    forget_after: float = key(3600.0, **DURATION)  # how long a vanished worker is reported
    swf: Swf | None = key()
    sqs: Sqs | None = key()
