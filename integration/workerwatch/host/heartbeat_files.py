"""Heartbeat files written by workers (format: docs/heartbeat-format.md).

Files are written by unprivileged workers and read by us as root, so they are hostile:
opened with O_NOFOLLOW|O_NONBLOCK (no symlink to /etc/shadow, no FIFO that blocks us),
required to be regular files, read up to a small cap, and only parsed, validated fields
leave this module, never raw content.
"""

from __future__ import annotations

import glob
import json
import os
import stat

from workerwatch.observations import HeartbeatObservation, Task
from workerwatch.sanitize import clean_text
from workerwatch.units import finite, human_duration

MAX_BYTES = 64 * 1024
MAX_FILES = 10_000
FUTURE_SKEW = 5.0  # seconds of clock skew tolerated before a beat time counts as future


class BadHeartbeat(Exception):
    """The file cannot be used at all (not a regular file, unreadable)."""


def _read(path: str) -> tuple[bytes, float]:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise BadHeartbeat(f"cannot open: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise BadHeartbeat("not a regular file")
        data = os.read(fd, MAX_BYTES + 1)
    except OSError as exc:
        raise BadHeartbeat(f"cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    return data, info.st_mtime


def _int(value: object, low: int, high: int) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if low <= value <= high else None


def parse(path: str, data: bytes, mtime: float, now: float) -> HeartbeatObservation:
    """Turn a heartbeat body into an observation; never raises on bad content."""
    base = HeartbeatObservation(path=path, beat_time=mtime)
    if len(data) > MAX_BYTES:
        return _with(base, problem=f"larger than {MAX_BYTES} bytes; using mtime")
    text = data.strip()
    if not text:
        return base  # a touched empty file is a valid minimal heartbeat
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):
        return _with(base, problem="not valid JSON; using mtime")
    if not isinstance(body, dict):
        return _with(base, problem="not a JSON object; using mtime")
    if body.get("version") != 1:
        return _with(base, problem="unknown format version; using mtime")

    problems = []
    beat_time = finite(body.get("time"))
    if beat_time is None or beat_time <= 0:
        problems.append("no valid time; using mtime")
        beat_time = mtime
    elif beat_time > now + FUTURE_SKEW:
        problems.append(f"beat time {human_duration(beat_time - now)} in the future; using mtime")
        beat_time = mtime
    pid = _int(body.get("pid"), 1, 1 << 22)
    seq = _int(body.get("seq"), 0, 1 << 62)
    state = body.get("state") if body.get("state") in ("idle", "busy") else None
    worker = clean_text(body.get("worker")) if isinstance(body.get("worker"), str) else None
    task = None
    raw_task = body.get("task")
    if state == "busy" and isinstance(raw_task, dict) and isinstance(raw_task.get("name"), str):
        started = finite(raw_task.get("started"))
        if started is not None and (started <= 0 or started > now + FUTURE_SKEW):
            problems.append("task start time out of range")
            started = None
        task_id = raw_task.get("id")
        task = Task(
            name=clean_text(raw_task["name"]) or "?",
            id=clean_text(task_id) if isinstance(task_id, (str, int)) else None,
            started=started,
        )
    return HeartbeatObservation(
        path=path,
        beat_time=beat_time,
        seq=seq,
        state=state,
        task=task,
        pid=pid,
        worker=worker or None,
        problem="; ".join(problems) or None,
    )


def _with(obs: HeartbeatObservation, problem: str) -> HeartbeatObservation:
    return HeartbeatObservation(path=obs.path, beat_time=obs.beat_time, problem=problem)


def observe(pattern: str, now: float) -> tuple[list[HeartbeatObservation], list[str]]:
    """All heartbeat files matching ``pattern``, and problems with files that were unusable."""
    found: list[HeartbeatObservation] = []
    problems: list[str] = []
    for path in sorted(glob.glob(pattern))[:MAX_FILES]:
        shown = clean_text(path)
        try:
            data, mtime = _read(path)
        except BadHeartbeat as exc:
            problems.append(f"heartbeat {shown}: {exc}")
            continue
        obs = parse(shown, data, mtime, now)
        if obs.problem:
            problems.append(f"heartbeat {shown}: {obs.problem}")
        found.append(obs)
    return found, problems
