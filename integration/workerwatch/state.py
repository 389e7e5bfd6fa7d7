"""The state file between runs: what the previous run saw, so deltas and "silent since" work.

The agent starts the integration afresh every interval, so everything that spans runs lives
here; what it holds is defined in ``judge.memory``. Written atomically (temp file + rename in
the same directory), guarded by an flock so overlapping runs take turns, and tolerant of a
missing, truncated, garbage or foreign-format file: the run starts fresh and says so once on
stderr, losing at worst one cycle of deltas. Entries that are not what we write are dropped
with one warning (``judge.memory.from_json``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from typing import Any

from workerwatch import log
from workerwatch.judge.memory import (
    FORMAT_VERSION,
    MIGRATES,
    SavedState,
    WorkerMemory,
    from_json,
    to_json,
)

STATE_FILE = "state.json"
LOCK_FILE = "state.lock"
MAX_STATE_BYTES = 64 * 1024 * 1024
LOCK_WAIT = 5.0
# A resident process writes its state file when a worker's verdict or one of its clocks
# changes course (``_shape``), but at most every RESIDENT_WRITE_GAP seconds (less than one
# interval at the agent's 15 s minimum, so it only binds at test intervals), at least
# every RESIDENT_WRITE_EVERY seconds, and on exit. A crash (SIGKILL, OOM) loses at most
# RESIDENT_WRITE_GAP seconds of those changes and RESIDENT_WRITE_EVERY seconds of the
# counters; docs/operating.md says what that costs.
RESIDENT_WRITE_EVERY = 60.0
RESIDENT_WRITE_GAP = 5.0


MAX_REPORTED = 3  # dropped entries named in the one warning


def _valid(data: Any) -> bool:
    return (
        isinstance(data, dict)
        and (data.get("version") == FORMAT_VERSION or data.get("version") in MIGRATES)
        and all(isinstance(data.get(k), dict) for k in ("workers", "names", "probes"))
    )


class StateStore:
    """In-memory state (long-running mode keeps one; tests use it directly).

    ``load`` and ``save`` take and give the typed ``SavedState``; a file store reads the
    file at ``__enter__`` and checks its entries at the first ``load``, against that run's
    clock.
    """

    where = "saved state"

    def __init__(self) -> None:
        self.state: SavedState | None = None
        self.raw: dict[str, Any] | None = None  # as read from the file, not yet checked
        self.problems: list[str] = []
        # Why no state can be kept between runs (None: it can): said in the verdicts that
        # stay unknown for want of a previous run.
        self.unusable: str | None = None

    def load(self, now: float) -> SavedState:
        if self.state is None:
            self.state = SavedState()
            if self.raw is not None:
                self.state, dropped = from_json(self.raw, now)
                self.raw = None
                if dropped:
                    self._dropped(dropped)
        return self.state

    def save(self, state: SavedState) -> None:
        self.state = state

    def reset(self) -> None:
        """Forget everything (long-running mode after repeated failures)."""
        self.state, self.raw = SavedState(), None

    def _problem(self, message: str, error: bool = False) -> None:
        """Said once and counted in ``errors{probe=state}``. ``error``: an [ERR] line, for a
        state that cannot be kept or saved. The agent logs an integration's [INFO]/[WARN]
        lines at debug level only, and [ERR]/[FATAL] as errors (infrastructure-agent
        ``internal/integrations/v4/runner/runner.go`` ``handleStderr``: "We only want to
        respect Fatal and Error levels"), so a [WARN] here would leave every verdict
        ``unknown`` with nothing in the agent's log at its default level. Those error lines
        carry the ``integration-errors`` component, filtered by default since agent 1.50
        (docs/operating.md says how to include them); the metric is seen either way."""
        self.problems.append(message)
        (log.error if error else log.warn)(message)

    def _dropped(self, dropped: list[str]) -> None:
        shown = "; ".join(dropped[:MAX_REPORTED])
        more = f" (and {len(dropped) - MAX_REPORTED} more)" if len(dropped) > MAX_REPORTED else ""
        entries = "entry" if len(dropped) == 1 else "entries"
        self._problem(
            f"{self.where}: dropped {len(dropped)} {entries} this version does not "
            f"write: {shown}{more}"
        )

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class FileStateStore(StateStore):
    """State in ``<state_dir>/state.json``, held under an exclusive lock while in use."""

    def __init__(
        self,
        state_dir: str,
        lock_wait: float = LOCK_WAIT,
        write_every: float | None = None,
        write_gap: float = 0.0,
    ) -> None:
        """``write_every``: for a resident process, which keeps the state in memory and
        writes the file when what ``_shape`` describes changed (but not within
        ``write_gap`` seconds of the last write), at least every ``write_every`` seconds,
        and on exit (None: at every save, as a one-shot run needs)."""
        super().__init__()
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, STATE_FILE)
        self.where = f"state file {self.path}"
        self.lock_wait = lock_wait
        self._lock_fd: int | None = None
        self.writable = True
        self.write_every = write_every
        self.write_gap = write_gap
        self._written: tuple[float, Any] | None = None  # (monotonic time, _shape) at last write
        self._pending: SavedState | None = None  # saved in memory, not yet in the file
        self._before: dict[str, WorkerMemory] | None = None  # the workers of the last save

    def __enter__(self) -> FileStateStore:
        try:
            os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
            self._lock_fd = os.open(
                os.path.join(self.state_dir, LOCK_FILE),
                os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                0o600,
            )
        except OSError as exc:
            self.unusable = f"state_dir {self.state_dir} not writable: {exc.strerror or exc}"
            self._problem(
                f"{self.unusable}; nothing is kept between runs, so a worker's verdict "
                f"stays unknown (make it writable for this user, or set state_dir)",
                error=True,
            )
            self.writable = False
            return self
        deadline = time.monotonic() + self.lock_wait
        while True:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    # Another run holds the state: read-only this time, rather than clobber it.
                    self._problem("state file locked by another run; not saving this run")
                    self.writable = False
                    break
                time.sleep(0.05)
        self.raw = self._read()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pending is not None and self._lock_fd is not None:
            self._write(self._pending)
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    def _read(self) -> dict[str, Any] | None:
        """The file's document when it is one of our formats; None (start fresh) otherwise."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._problem(f"state file {self.path} unreadable ({exc.strerror}); starting fresh")
            return None
        try:
            with os.fdopen(fd, "rb") as handle:
                raw = handle.read(MAX_STATE_BYTES + 1)
            if len(raw) > MAX_STATE_BYTES:
                raise ValueError("too large")
            data = json.loads(raw)
        except (OSError, ValueError, RecursionError) as exc:
            reason = "truncated or not JSON" if isinstance(exc, ValueError) else str(exc)
            self._problem(f"state file {self.path} {reason}; starting fresh")
            return None
        if not _valid(data):
            version = data.get("version") if isinstance(data, dict) else None
            self._problem(
                f"state file {self.path} has format version {version!r}, "
                f"expected {FORMAT_VERSION}; starting fresh"
            )
            return None
        return data

    def save(self, state: SavedState) -> None:
        self.state = state
        if not self.writable:
            return
        shape = None
        if self.write_every is not None:
            shape = _shape(state, self._before)
            # A copy: the collector sets the next run's workers on this same object.
            self._before = dict(state.workers)
            last = self._written
            if last is not None:
                elapsed = time.monotonic() - last[0]
                if elapsed < self.write_gap or (elapsed < self.write_every and last[1] == shape):
                    self._pending = state
                    return
        self._write(state, shape)

    def reset(self) -> None:
        super().reset()
        self._written = self._before = None  # the next save writes

    def _write(self, state: SavedState, shape: Any = None) -> None:
        """Write ``state``; ``shape`` (a resident store's save): remembered with the time."""
        self._pending = None
        if shape is not None:
            self._written = (time.monotonic(), shape)
        data = to_json(state)
        tmp = None
        try:
            # What tempfile.mkstemp does, without importing tempfile (a few ms every run).
            name = os.path.join(self.state_dir, f".state.{os.getpid()}.{time.time_ns()}")
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            tmp = name
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                # dumps, not dump: json.dump always takes the pure-Python encoder (about 4x
                # slower for a 200-worker state).
                handle.write(json.dumps(data, separators=(",", ":"), allow_nan=False))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
            tmp = None
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self._problem(
                f"state file {self.path} not saved ({reason}); deltas lost next run", error=True
            )
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)


# The clocks a restart must not lose the stopping of: when a worker last made progress,
# last wrote its log, its heartbeat last advanced, its work horse last moved.
_CLOCKS = ("last_progress", "last_log_activity", "hb_seen", "horse_progress")


def _shape(state: SavedState, before: dict[str, WorkerMemory] | None) -> Any:
    """What a resident process writes at once when it changes, against the workers saved
    the run ``before``: each worker's verdict state and recovery count (so every transition,
    and workers that appear or go), which of its clocks moved in this run (so the run in
    which one stops moving is written, and a restart still knows since when it stopped),
    and the hung probe steps."""
    old = before or {}
    shape = {}
    for key, m in state.workers.items():
        p = old.get(key)
        moved = tuple(
            getattr(m, c) is not None and (p is None or getattr(m, c) != getattr(p, c))
            for c in _CLOCKS
        )
        shape[key] = (m.state, m.wake_runs, moved)
    return shape, frozenset(state.probes.hung)
