"""Worker-side heartbeat: a progress beacon written from the worker's own work loop.

Standard library only and cheap to import, because workers install just this: it is its
own distribution, ``workerwatch-heartbeat`` (``heartbeat/pyproject.toml``), without
anything the integration needs. The integration bundles it and re-exports it as
``workerwatch.heartbeat``.

The beacon is only honest because it is written by the code path that can stall. A beat
from a side thread, a timer or a parent process keeps a worker hung in ``recv()`` looking
alive, which is exactly how Celery, RQ, Sidekiq and Resque miss this failure. So this
module never starts a thread: nothing is written unless the loop calls ``beat()`` or
enters or leaves ``task()``.

Usage (see docs/heartbeat.md)::

    hb = Heartbeat.from_env()
    while True:
        hb.beat()
        task = poll()
        if task:
            with hb.task("FTPArticle", task_id=task.token):
                run(task)

The file format is docs/heartbeat-format.md (version 1).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sys
import threading
import time
from json.encoder import encode_basestring_ascii as _json_string

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs import time that workers should not pay
    from collections.abc import Callable
    from types import TracebackType
    from typing import Any, TextIO, TypeVar

    _F = TypeVar("_F", bound=Callable[..., Any])

__all__ = [
    "DEFAULT_MIN_INTERVAL",
    "ENV_DIR",
    "ENV_WORKER",
    "FORMAT_VERSION",
    "Heartbeat",
    "enable_stack_dump",
]

__version__ = "0.1.0"
FORMAT_VERSION = 1
ENV_DIR = "WORKERWATCH_HEARTBEAT_DIR"
ENV_WORKER = "WORKERWATCH_WORKER_NAME"
DEFAULT_MIN_INTERVAL = 1.0
DEFAULT_WORKER = "worker-{pid}"
# The reader truncates strings to 255 characters; capping here as well keeps every file
# far below the reader's 64 KiB limit whatever a task id looks like.
MAX_STRING = 255
NR_EVENT_TYPE = "WorkerWatchSlowTask"
NR_BEAT_METRIC = "Custom/WorkerWatch/Beat"
NR_TASK_METRIC = "Custom/WorkerWatch/Task/"

logger = logging.getLogger("workerwatch.heartbeat")
_default_logger = logger  # Heartbeat's ``logger`` parameter shadows the module name

_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
_dump_files: list[Any] = []  # faulthandler writes to these from a signal handler: keep them open

# Bumped in the child by os.fork(): lets a throttled beat notice a fork without paying for
# a getpid() syscall (about half its cost). Every write still compares getpid(), which
# catches a fork done behind Python's back by C code before a wrong pid is ever written.
_fork_generation = 0


def _after_fork_in_child() -> None:
    global _fork_generation
    _fork_generation += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _text(value: object) -> str:
    text = value if isinstance(value, str) else str(value)
    return text[:MAX_STRING]


def _file_name(worker: str) -> str:
    name = worker.replace(os.sep, "_").replace("\0", "_")
    # A leading dot would hide the file from globs such as "*.json".
    if name.startswith("."):
        name = "_" + name[1:]
    return name + ".json"


class _TaskScope:
    """The context manager returned by :meth:`Heartbeat.task`."""

    __slots__ = ("_hb", "id", "json", "name", "reported", "started", "started_mono")

    def __init__(self, hb: Heartbeat, name: str, task_id: str | None) -> None:
        self._hb = hb
        self.name = name
        self.id = task_id
        self.started = 0.0
        self.started_mono = 0.0
        self.reported = False
        self.json = ""

    def __enter__(self) -> _TaskScope:
        self.started = time.time()
        self.started_mono = time.monotonic()
        # Encoded once per task rather than on every write of the busy state.
        task_id = "" if self.id is None else f',"id":{_json_string(self.id)}'
        self.json = (
            f'"state":"busy","task":{{"name":{_json_string(self.name)}{task_id},'
            f'"started":{round(self.started, 3)!r}}}}}\n'
        )
        self._hb._enter(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._hb._exit(self)


class _Notifier:
    """sd_notify(3) over the datagram socket systemd passes in ``NOTIFY_SOCKET``."""

    __slots__ = ("_address", "_failing", "_log", "_sock", "last_ping", "watchdog_interval")

    def __init__(self, address: str, watchdog_interval: float | None, log: logging.Logger) -> None:
        self._address = address
        self.watchdog_interval = watchdog_interval
        self._log = log
        self._sock: Any = None
        self._failing = False
        self.last_ping = float("-inf")

    @classmethod
    def from_env(cls, pid: int, log: logging.Logger) -> _Notifier | None:
        address = os.environ.get("NOTIFY_SOCKET", "")
        if not address:
            return None
        watchdog_pid = os.environ.get("WATCHDOG_PID", "")
        if watchdog_pid:
            # systemd names the process it expects pings from; a forked child inherits the
            # parent's value and must stay quiet, or NotifyAccess=main floods the journal.
            try:
                if int(watchdog_pid) != pid:
                    return None
            except ValueError:
                return None
        if address.startswith("@"):
            address = "\0" + address[1:]
        elif not address.startswith("/"):
            log.debug("heartbeat: NOTIFY_SOCKET=%r is not a unix socket path; ignored", address)
            return None
        interval = None
        try:
            usec = int(os.environ.get("WATCHDOG_USEC", ""))
        except ValueError:
            usec = 0
        if usec > 0:
            # systemd recommends pinging at half the timeout; a quarter leaves room for one
            # slow loop iteration without turning every beat into a syscall.
            interval = usec / 4_000_000
        return cls(address, interval, log)

    def send(self, message: bytes) -> bool:
        try:
            if self._sock is None:
                import socket

                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                # A full receive queue in PID 1 must not stall the worker loop.
                sock.setblocking(False)
                self._sock = sock
            self._sock.sendto(message, self._address)
        except OSError as exc:
            self.close()
            if not self._failing:
                self._failing = True
                self._log.warning(
                    "heartbeat: cannot notify systemd at %r: %s (retrying on later beats)",
                    self._address.replace("\0", "@"),
                    exc,
                )
            return False
        self._failing = False
        return True

    def ping(self, now: float) -> None:
        interval = self.watchdog_interval
        if interval is not None and now - self.last_ping >= interval and self.send(b"WATCHDOG=1"):
            self.last_ping = now

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None


def _newrelic() -> tuple[Any, Any] | None:
    """The agent module and its active application, only when the worker already runs one.

    Never imports or starts the agent: a worker that did not ask for it must not get a
    harvest thread or a collector connection as a side effect of beating.
    """
    agent = sys.modules.get("newrelic.agent")
    if agent is None:
        return None
    # activate=False returns None rather than creating an application object.
    app = agent.application(activate=False)
    if app is None or not app.active:
        return None
    return agent, app


class Heartbeat:
    """Writes one worker's heartbeat file; see docs/heartbeat.md.

    ``path`` and ``worker`` may contain ``{pid}``, replaced by the process id and
    re-evaluated in a forked child. ``path=None`` writes no file but keeps the systemd
    watchdog and the New Relic hook working.

    Not meant to be shared by several threads: use one per work loop.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        worker: str | None = None,
        *,
        min_interval: float = DEFAULT_MIN_INTERVAL,
        slow_task_seconds: float | None = None,
        watchdog: bool = True,
        logger: logging.Logger | None = None,
    ) -> None:
        min_interval = float(min_interval)
        if not 0 <= min_interval < float("inf"):
            raise ValueError(f"min_interval must be a finite number >= 0, got {min_interval!r}")
        if slow_task_seconds is not None and not slow_task_seconds >= 0:
            raise ValueError(f"slow_task_seconds must be >= 0, got {slow_task_seconds!r}")
        self._path_template = None if path is None else os.fspath(path)
        self._worker_template = worker
        self._min_interval = min_interval
        self._slow_task_seconds = slow_task_seconds
        self._watchdog = watchdog
        self._log = logger if logger is not None else _default_logger
        self._tasks: list[_TaskScope] = []
        self._closed = False
        self._notifier: _Notifier | None = None
        self._generation = _fork_generation
        self._reset(os.getpid())

    @classmethod
    def from_env(
        cls,
        worker: str | None = None,
        *,
        directory: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> Heartbeat:
        """A heartbeat at ``$WORKERWATCH_HEARTBEAT_DIR/<worker>.json``.

        The worker name is ``worker``, else ``$WORKERWATCH_WORKER_NAME``, else
        ``worker-{pid}``. Without a directory no file is written (logged once at INFO),
        so the same worker code runs unchanged where no heartbeat is wanted.
        """
        name = worker or os.environ.get(ENV_WORKER) or DEFAULT_WORKER
        directory = directory if directory is not None else os.environ.get(ENV_DIR)
        path = os.path.join(os.fspath(directory), _file_name(name)) if directory else None
        hb = cls(path, name, **kwargs)
        if path is None:
            hb._log.info("heartbeat: %s is not set; no heartbeat file is written", ENV_DIR)
        return hb

    def _reset(self, pid: int) -> None:
        """Start afresh as process ``pid``: at construction and in a forked child."""
        self._pid = pid
        pid_text = str(pid)
        template = self._path_template
        self._path = None if template is None else template.replace("{pid}", pid_text)
        worker = self._worker_template
        self._worker = None if worker is None else _text(worker.replace("{pid}", pid_text))
        worker_json = "" if self._worker is None else f'"worker":{_json_string(self._worker)},'
        self._json_prefix = f'{{"version":{FORMAT_VERSION},{worker_json}"pid":{pid},'
        if self._path is not None:
            directory, base = os.path.split(self._path)
            # Hidden and not ending in .json, so a "*.json" glob never picks up a half
            # written file; the pid (and thread) keep a forked child off the parent's file.
            self._tmp_prefix = os.path.join(directory, f".{base}.{pid}.")
        self._seq = 0
        self._last_write = float("-inf")
        self._dirty = True
        self._failing = False
        self._warned: set[str] = set()
        self._status_updates = False
        if self._notifier is not None:
            self._notifier.close()
        self._notifier = _Notifier.from_env(pid, self._log)

    @property
    def path(self) -> str | None:
        return self._path

    @property
    def worker(self) -> str | None:
        return self._worker

    @property
    def seq(self) -> int:
        """Sequence number of the last file written by this process (0 before the first)."""
        return self._seq

    @property
    def state(self) -> str:
        return "busy" if self._tasks else "idle"

    @property
    def current_task(self) -> str | None:
        return self._tasks[-1].name if self._tasks else None

    def beat(self) -> bool:
        """Say "this loop is alive". Call once per poll loop, and inside long tasks.

        Writes the file at most once per ``min_interval`` (at once after a state change),
        pings the systemd watchdog when it is enabled, and never raises: an I/O error is
        logged once and retried on the next beat. Returns whether the file was written.
        """
        try:
            if self._generation != _fork_generation:
                self._check_pid()
            if self._closed:
                return False
            now = time.monotonic()
            if self._notifier is not None and self._watchdog:
                self._notifier.ping(now)
            if self._dirty or now - self._last_write >= self._min_interval:
                return self._write(now)
            return False
        except Exception as exc:
            self._warn_once("beat", "heartbeat: unexpected error in beat(): %r", exc)
            return False

    def task(self, name: str, task_id: object = None) -> _TaskScope:
        """Context manager: busy on task ``name`` from entry to exit.

        Nested tasks form a stack: the file names the innermost task, and when it ends
        the enclosing task is shown again with its original start time.
        """
        return _TaskScope(self, _text(name), None if task_id is None else _text(task_id))

    def track(
        self,
        name: str | Callable[..., Any] | None = None,
        *,
        task_id: Callable[..., object] | None = None,
    ) -> Any:
        """Decorator form of :meth:`task` for synchronous task functions.

        ``@hb.track("FTPArticle")``, or bare ``@hb.track`` to use the function's
        qualified name. ``task_id`` is called with the function's arguments to get the
        task id; if it raises, the task runs without an id.
        """
        if callable(name):
            return self.track()(name)

        def decorate(func: _F) -> _F:
            task_name = name if name is not None else func.__qualname__

            @functools.wraps(func)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                tid = None
                if task_id is not None:
                    try:
                        tid = task_id(*args, **kwargs)
                    except Exception as exc:
                        self._warn_once("task_id", "heartbeat: task_id callable failed: %r", exc)
                with self.task(task_name, task_id=tid):
                    return func(*args, **kwargs)

            return wrapper  # type: ignore[return-value]

        return decorate

    def ready(self, status: str | None = None) -> bool:
        """Send ``READY=1`` (for ``Type=notify`` units) and a ``STATUS=`` line.

        From then on every task start and end updates ``STATUS=``, which
        ``systemctl status`` shows. Returns whether systemd was notified.
        """
        try:
            self._check_pid()
            if self._notifier is None:
                return False
            self._status_updates = True
            text = status if status is not None else self._status_text()
            return self._notifier.send(f"READY=1\nSTATUS={text}".encode())
        except Exception as exc:
            self._warn_once("ready", "heartbeat: unexpected error in ready(): %r", exc)
            return False

    def close(self, remove: bool = True) -> None:
        """Stop beating; with ``remove``, delete the file if this process wrote it last.

        A heartbeat file left behind with a dead pid tells the integration the worker
        died without cleaning up, so call this on a clean shutdown.
        """
        if self._closed:
            return
        self._closed = True
        if self._notifier is not None:
            self._notifier.close()
        if not remove or self._path is None or self._seq == 0:
            return
        try:
            with open(self._path, "rb") as f:
                owner = json.loads(f.read(65536)).get("pid")
            if owner == os.getpid():
                os.unlink(self._path)
        except (OSError, ValueError, AttributeError):
            pass

    def __enter__(self) -> Heartbeat:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Heartbeat(path={self._path!r}, worker={self._worker!r}, state={self.state!r})"

    def _check_pid(self) -> None:
        self._generation = _fork_generation
        pid = os.getpid()
        if pid != self._pid:
            self._reset(pid)

    def _enter(self, scope: _TaskScope) -> None:
        self._tasks.append(scope)
        self._dirty = True
        self.beat()
        self._update_status()

    def _exit(self, scope: _TaskScope) -> None:
        try:
            if self._tasks and self._tasks[-1] is scope:
                self._tasks.pop()
            elif scope in self._tasks:
                # Scopes left out of order (a generator closed late): drop just this one.
                self._tasks.remove(scope)
        except Exception as exc:
            self._warn_once("exit", "heartbeat: unexpected error leaving a task: %r", exc)
        self._dirty = True
        self.beat()
        self._update_status()
        self._report_task(scope, finished=True)

    def _status_text(self) -> str:
        if not self._tasks:
            return "idle"
        scope = self._tasks[-1]
        suffix = f" {scope.id}" if scope.id is not None else ""
        return f"busy on {scope.name}{suffix}"

    def _update_status(self) -> None:
        if self._status_updates and self._notifier is not None and not self._closed:
            try:
                self._notifier.send(f"STATUS={self._status_text()}".encode())
            except Exception as exc:
                self._warn_once("status", "heartbeat: unexpected error sending STATUS: %r", exc)

    def _write(self, now: float) -> bool:
        self._check_pid()
        self._report_beat(now)
        if self._path is None:
            self._last_write = now
            self._dirty = False
            return False
        seq = self._seq + 1
        state = self._tasks[-1].json if self._tasks else '"state":"idle"}\n'
        data = f'{self._json_prefix}"time":{round(time.time(), 3)!r},"seq":{seq},{state}'.encode()
        tmp = f"{self._tmp_prefix}{threading.get_ident()}.tmp"
        try:
            fd = os.open(tmp, _OPEN_FLAGS, 0o644)
            try:
                if os.write(fd, data) != len(data):
                    raise OSError(f"short write to {tmp}")
            finally:
                os.close(fd)
            os.replace(tmp, self._path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if not self._failing:
                self._failing = True
                self._log.warning(
                    "heartbeat: cannot write %s: %s (the worker carries on; retrying each beat)",
                    self._path,
                    exc,
                )
            return False
        self._seq = seq
        self._last_write = now
        self._dirty = False
        if self._failing:
            self._failing = False
            self._log.info("heartbeat: writing %s again", self._path)
        return True

    def _report_beat(self, now: float) -> None:
        try:
            nr = _newrelic()
            if nr is None:
                return
            agent, app = nr
            if self._last_write != float("-inf"):
                agent.record_custom_metric(NR_BEAT_METRIC, now - self._last_write, application=app)
            if self._tasks:
                self._report_task(self._tasks[-1], finished=False, nr=nr)
        except Exception as exc:
            self._warn_once("newrelic", "heartbeat: New Relic agent call failed: %r", exc)

    def _report_task(
        self, scope: _TaskScope, *, finished: bool, nr: tuple[Any, Any] | None = None
    ) -> None:
        try:
            if nr is None:
                nr = _newrelic()
                if nr is None:
                    return
            agent, app = nr
            running = time.monotonic() - scope.started_mono
            if finished:
                agent.record_custom_metric(NR_TASK_METRIC + scope.name, running, application=app)
            limit = self._slow_task_seconds
            if limit is None or scope.reported or running < limit:
                return
            scope.reported = True
            event: dict[str, Any] = {
                "taskName": scope.name,
                "runningSeconds": round(running, 3),
                "thresholdSeconds": limit,
                "finished": finished,
                "pid": self._pid,
            }
            if scope.id is not None:
                event["taskId"] = scope.id
            if self._worker is not None:
                event["worker"] = self._worker
            agent.record_custom_event(NR_EVENT_TYPE, event, application=app)
        except Exception as exc:
            self._warn_once("newrelic", "heartbeat: New Relic agent call failed: %r", exc)

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self._log.warning(message, *args)


def enable_stack_dump(
    sig: int | None = None,
    file: TextIO | str | os.PathLike[str] | None = None,
    *,
    on_fatal: bool = False,
) -> bool:
    """Dump every thread's Python stack when the process receives ``sig`` (SIGUSR1).

    ``kill -USR1 <pid>`` then shows where a hung worker is blocked, without ptrace and
    without disturbing it: a blocked ``recv()`` simply resumes. ``file`` is a text file or
    a path opened for appending (default: stderr). With ``on_fatal`` the stacks are also
    dumped on SIGABRT/SIGSEGV, so a systemd watchdog kill (SIGABRT by default) leaves the
    stall's traceback in the journal. Replaces any other handler of ``sig``. Returns
    whether the handler was installed; a failure is logged, never raised.
    """
    import faulthandler
    import signal

    signum = signal.SIGUSR1 if sig is None else sig
    try:
        if file is None:
            out: Any = sys.stderr
        elif isinstance(file, (str, os.PathLike)):
            out = open(file, "a", encoding="utf-8")  # noqa: SIM115 - must outlive this call
            _dump_files.append(out)
        else:
            out = file
        faulthandler.register(signum, file=out, all_threads=True, chain=False)
        if on_fatal:
            faulthandler.enable(file=out, all_threads=True)
    except (OSError, RuntimeError, ValueError, AttributeError) as exc:
        logger.warning("heartbeat: cannot enable stack dumps on signal %s: %s", signum, exc)
        return False
    return True
