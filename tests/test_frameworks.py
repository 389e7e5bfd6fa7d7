"""Real Celery and RQ workers on a real Redis, judged by the one-shot collector.

One scene per module (about 40 s): Celery prefork (one idle worker, one busy), solo and
threads workers; RQ default workers (a work horse per job; one idle, one busy) and
SimpleWorkers (one idle, one busy). Each shape is deployed under its own root as
docs/frameworks.md lays it out, and judged with the guide's configuration for it, verbatim
except for the root and for ``stall_after``: every run judges the whole scene twice, with
10 s and with 30 s, each with its own state.

The busy workers get the jobs a fleet meets: a quick job, a silent CPU-bound job (8 s), a
job hung in ``recv`` on a server that never answers, and a job that runs a child process.

Tests marked ``xfail(strict=True)`` state what the collector must say once it judges a
worker by its pool and its work horses; each fails today on the finding it names, and
passes (so fails as an xfail) the day the behaviour lands.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from workerwatch.config import parse
from workerwatch.host.procfs import PPID, STATE, ProcGone, stat
from workerwatch.host.syscalls import name_of

from tests.fleet import SilentServer, wait_for
from tests.frameworks import (
    CHILDREN,
    GUIDE,
    NO_REDIS,
    Deployment,
    RedisServer,
    Worker,
    descendants,
    guide_config,
    guide_configs,
    needs_redis,
)
from tests.parallel import alone
from tests.v4 import check_line, find

SHORT, LONG = 10.0, 30.0
TICK = 3.0  # seconds between two runs of the collector
SCENE_SECONDS = 36.0  # runs from the queueing of the jobs: stall_after 30 s plus a run
CPU_SECONDS = 8.0
CHILD_SECONDS = 4.0
# A reason saying the main thread waits for its children: the wait named, or the child.
WAITS_FOR_CHILD = r"waits for its child processes \(wait4\)|main thread waits for a child\b"
# Each shape is deployed under its own root and judged with the guide's block of that name.
SHAPES = ("celery-prefork", "celery-solo", "celery-threads", "rq", "rq-simple")
RQ_DEFAULT, RQ_SIMPLE = "rq_jobs.BeatingWorker", "rq_jobs.BeatingSimpleWorker"


def in_scene(test: Callable) -> Callable:
    """A test of the scene: slow, and skipped without redis-server."""
    return pytest.mark.slow(needs_redis(test))


def not_yet(reason: str) -> Callable[[Callable], Callable]:
    """A test of the scene for behaviour still to come: it must fail until it lands."""

    def mark(test: Callable) -> Callable:
        return in_scene(pytest.mark.xfail(strict=True, reason=reason)(test))

    return mark


@dataclass
class Run:
    at: float  # seconds since the jobs were queued, when the run started
    payloads: dict[float, dict[str, Any]]  # by stall_after

    def verdicts(self, window: float) -> dict[int, dict[str, Any]]:
        """Per pid: the attributes of its ``workerwatch.worker.up`` metric, and its value."""
        return {
            m["attributes"]["process.pid"]: {**m["attributes"], "up": m["value"]}
            for m in find(self.payloads[window], "workerwatch.worker.up")
        }

    def state(self, window: float, pid: int) -> str | None:
        verdict = self.verdicts(window).get(pid)
        return verdict["worker.state"] if verdict else None

    def events(self, window: float) -> list[dict[str, Any]]:
        return [e for d in self.payloads[window]["data"] for e in d["events"]]

    def running(self, window: float, name: str = "workerwatch.group.running") -> dict[str, float]:
        return {
            m["attributes"]["worker.group"]: m["value"] for m in find(self.payloads[window], name)
        }


@dataclass
class Scene:
    started: float  # time.time() when the jobs were queued
    silent: SilentServer  # accepts the hung jobs' connections and never answers
    workers: dict[str, Worker]
    apps: dict[str, Deployment]
    runs: list[Run] = field(default_factory=list)

    def job(self, worker: str, task: str) -> dict[str, Any]:
        """Where and when ``task`` started on ``worker``; ``at`` is relative to the queueing."""
        (entry,) = self.workers[worker].started(task)
        return {**entry, "at": entry["time"] - self.started}

    @property
    def port(self) -> int:
        return self.silent.port

    def pid(self, worker: str) -> int:
        return self.workers[worker].pid

    def pool(self, worker: str) -> list[int]:
        """The pool processes of a Celery prefork worker (its direct children)."""
        main = self.pid(worker)
        return sorted(p for p in descendants(main) if _ppid(p) == main)

    def during(self, job: dict[str, Any], seconds: float) -> list[Run]:
        """The runs made while ``job`` ran (it took ``seconds``), with half a second of margin."""
        runs = [r for r in self.runs if job["at"] + 0.5 <= r.at <= job["at"] + seconds - 0.5]
        assert runs, f"no run while {job['task']} ran"
        return runs

    def due(self, since: float, window: float) -> int:
        """Index of the first run at which ``window`` had passed since ``since``."""
        return next(i for i, r in enumerate(self.runs) if r.at >= since + window)


def _ppid(pid: int) -> int:
    return int(stat(f"/proc/{pid}/stat")[PPID])


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ").strip()


def _alive(pid: int) -> bool:
    """Running or sleeping: a killed orphan may stay a zombie until its new parent reaps it."""
    try:
        return stat(f"/proc/{pid}/stat")[STATE] not in ("Z", "X")
    except ProcGone:
        return False


def _syscall(pid: int, tid: int | None = None) -> str:
    line = Path(f"/proc/{pid}/task/{tid or pid}/syscall").read_text().split()
    return name_of(int(line[0])) if line[0].lstrip("-").isdigit() else line[0]


def _collect(configs: dict[float, Path]) -> dict[float, dict[str, Any]]:
    """One run of the one-shot collector per config, side by side, as the agent runs it."""
    procs = {
        window: subprocess.Popen(
            [sys.executable, "-m", "workerwatch", "--config", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for window, path in configs.items()
    }
    payloads = {}
    for window, proc in procs.items():
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        payloads[window] = check_line(out)
    return payloads


def _scene_config(tmp: Path, roots: dict[str, Path], window: float) -> Path:
    """The guide's blocks for every shape, each moved to its root, in one config file."""
    groups = []
    for shape in SHAPES:
        config = guide_config(shape, roots[shape], tmp / "unused", stall_after=f"{window:.0f}s")
        groups.extend(config["groups"])
    path = tmp / f"config-{window:.0f}s.yml"
    state = tmp / f"state-{window:.0f}s"
    path.write_text(yaml.safe_dump({"state_dir": str(state), "groups": groups}))
    return path


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    if shutil.which("redis-server") is None:
        pytest.skip(NO_REDIS)
    tmp = tmp_path_factory.mktemp("frameworks")
    silent = SilentServer()
    redis = RedisServer(tmp / "redis")
    roots = {shape: tmp / shape for shape in SHAPES}
    apps = {shape: Deployment(roots[shape], "shop", redis) for shape in SHAPES}
    try:
        prefork, rq, simple = apps["celery-prefork"], apps["rq"], apps["rq-simple"]
        workers = {
            "prefork-idle": prefork.celery("prefork", "prefork-idle"),
            "prefork-busy": prefork.celery("prefork", "prefork-busy"),
            "solo": apps["celery-solo"].celery("solo", "solo"),
            # Without gossip: the line it would log about the scene's hung solo worker is a
            # log write after its own job hung, which makes that job's thread look like a
            # listener (README "Verdict rules", hung thread; docs/frameworks.md).
            "threads": apps["celery-threads"].celery(
                "threads", "threads", heartbeats=False, gossip=False
            ),
            "rq-idle": rq.rq(RQ_DEFAULT, "rq-idle"),
            "rq-busy": rq.rq(RQ_DEFAULT, "rq-busy"),
            "simple-idle": simple.rq(RQ_SIMPLE, "simple-idle"),
            "simple-busy": simple.rq(RQ_SIMPLE, "simple-busy"),
        }
        for worker in workers.values():
            worker.wait_ready()
        configs = {w: _scene_config(tmp, roots, w) for w in (SHORT, LONG)}
        hang = ("127.0.0.1", silent.port)
        # From the queueing to the last run the scene keeps a 3 s cadence next to jobs that
        # fill both cores: it runs with the machine to itself (tests/parallel.py).
        with alone():
            scene = Scene(time.time(), silent, workers, apps)
            # Queued in order: one worker runs its jobs one after the other (a prefork worker
            # two at a time), so each busy worker first computes, then hangs.
            for name, jobs in {
                "prefork-busy": [("hang", *hang), ("cpu", CPU_SECONDS), ("child", CHILD_SECONDS)],
                "solo": [("cpu", CPU_SECONDS), ("hang", *hang)],
                "rq-busy": [("quick",), ("cpu", CPU_SECONDS), ("hang", *hang)],
                "simple-busy": [("cpu", CPU_SECONDS), ("hang", *hang)],
            }.items():
                for job in jobs:
                    workers[name].enqueue(*job)
                workers[name].close_clients()
            while True:
                at = time.time() - scene.started
                scene.runs.append(Run(at, _collect(configs)))
                if len(scene.runs) == 1:
                    # After the first run: a job thread is told from a listener by its
                    # entry into its wait, which takes a look at the threads before it
                    # (README "Verdict rules", hung thread).
                    workers["threads"].enqueue("hang", *hang)
                    workers["threads"].close_clients()
                if at >= SCENE_SECONDS:
                    break
                time.sleep(max(0.0, scene.started + at + TICK - time.time()))
        yield scene
    finally:
        for app in apps.values():
            app.stop()
        redis.stop()
        silent.close()


# --- the fixtures themselves -------------------------------------------------------------


@in_scene
def test_real_workers_run_each_job_in_the_process_the_guide_says(scene):
    for name, worker in scene.workers.items():
        assert worker.proc.poll() is None, f"{name} exited: {worker.output()}"
    # Celery prefork: two pool processes forked with the main process's command line; the
    # jobs run in them, one after the other in the same one once the first is taken.
    for name in ("prefork-idle", "prefork-busy"):
        pool = scene.pool(name)
        assert len(pool) == 2, pool
        assert {_cmdline(p) for p in pool} == {_cmdline(scene.pid(name))}
    jobs = {t: scene.job("prefork-busy", t) for t in ("hang", "cpu", "child")}
    assert {j["pid"] for j in jobs.values()} == set(scene.pool("prefork-busy"))
    assert jobs["child"]["pid"] == jobs["cpu"]["pid"] != jobs["hang"]["pid"]
    assert jobs["child"]["at"] >= jobs["cpu"]["at"] + CPU_SECONDS - 0.5
    # Solo, threads and SimpleWorker run jobs in the main process.
    for name in ("solo", "threads", "simple-busy"):
        assert scene.job(name, "hang")["pid"] == scene.pid(name)
    # RQ's default worker forks a horse per job, with its command line, in a process group
    # of its own; the quick job's horse is gone, the hung one is still there.
    horses = [scene.job("rq-busy", t)["pid"] for t in ("quick", "cpu", "hang")]
    assert len(set(horses)) == 3 and scene.pid("rq-busy") not in horses
    assert descendants(scene.pid("rq-busy")) == [horses[2]]
    assert _cmdline(horses[2]) == _cmdline(scene.pid("rq-busy"))
    assert os.getpgid(horses[2]) == horses[2] != os.getpgid(scene.pid("rq-busy"))
    # Every worker writes its own log; every beating process its own heartbeat file.
    for name, worker in scene.workers.items():
        assert worker.log.stat().st_size > 0, name
    for shape, names in {
        "celery-prefork": scene.pool("prefork-idle") + scene.pool("prefork-busy"),
        "celery-solo": [scene.pid("solo")],
        "rq": [scene.pid("rq-idle"), scene.pid("rq-busy")],
        "rq-simple": [scene.pid("simple-idle"), scene.pid("simple-busy")],
    }.items():
        files = {p.name for p in scene.apps[shape].heartbeats.glob("*.json")}
        assert files == {f"worker-{pid}.json" for pid in names}, shape


@in_scene
def test_the_hung_jobs_hang_in_recv_on_the_server_that_never_answers(scene):
    for name in ("prefork-busy", "solo", "rq-busy", "simple-busy"):
        job = scene.job(name, "hang")
        assert _syscall(job["pid"]) == "recvfrom", name
        fds = Path(f"/proc/{job['pid']}/fd")
        assert any(os.readlink(fd).startswith("socket:") for fd in fds.iterdir())
    # The threads pool's job hangs in a pool thread while the main thread polls.
    main = scene.pid("threads")
    tids = [int(t.name) for t in Path(f"/proc/{main}/task").iterdir()]
    assert _syscall(main) == "epoll_wait"
    assert len([t for t in tids if _syscall(main, t) == "recvfrom"]) == 1
    # Five connections, one per hung job, all accepted by the server and never answered.
    ports = {
        scene.job(name, "hang")["port"]
        for name in ("prefork-busy", "solo", "threads", "rq-busy", "simple-busy")
    }
    assert {conn.getpeername()[1] for conn in scene.silent.accepted} == ports


@needs_redis
def test_every_process_dies_with_the_test_redis_included(tmp_path, silent_server):
    redis = RedisServer(tmp_path / "redis")
    app = Deployment(tmp_path / "srv", "shop", redis)
    try:
        worker = app.rq(RQ_DEFAULT, "teardown", heartbeats=False).wait_ready()
        worker.enqueue("hang", "127.0.0.1", silent_server.port)
        (job,) = worker.started("hang")
        horse = job["pid"]
        wait_for(lambda: _syscall(horse) == "recvfrom", what="horse blocked in recv")
        assert os.getpgid(horse) == horse, "the horse left the worker's process group"
    finally:
        app.stop()
        redis.stop()
    for pid in (worker.pid, horse, redis.proc.pid):
        wait_for(lambda pid=pid: not _alive(pid), 5, f"{pid} gone")
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", redis.port), timeout=1):
        pass


def test_the_guide_hooks_are_the_code_the_tests_run():
    """The hooks shown in docs/frameworks.md, character for character, in the test apps."""
    blocks = re.findall(r"^```python\n(.*?)^```", GUIDE.read_text(), re.M | re.S)
    for module in ("celery_app.py", "rq_jobs.py"):
        source = (CHILDREN / module).read_text()
        hook = source.split("# --- heartbeat hook (docs/frameworks.md) ---\n")[1]
        hook = hook.split("\n\n# --- end of heartbeat hook ---")[0].replace("  # noqa: E402", "")
        assert hook.strip() + "\n" in blocks, f"{module}'s hook is not in the guide"


def test_every_guide_configuration_is_valid():
    """Each block loads as it stands; the ones the scene runs are named after their group."""
    configs = guide_configs()
    assert set(configs) == {*SHAPES, "swf-worker"}
    for name, config in configs.items():
        parsed = parse(yaml.safe_dump(config), f"docs/frameworks.md#{name}")
        assert parsed.groups, name
        if name in SHAPES:
            assert [g.name for g in parsed.groups] == [name]


# --- what the collector already gets right ------------------------------------------------


def _stalled_in_time(scene: Scene, pid: int, since: float, window: float, late: int = 1) -> None:
    """Not stalled before ``window`` has passed since ``since``; stalled from the first run
    after that, or at most ``late`` runs later, and from then on."""
    states = [r.state(window, pid) for r in scene.runs]
    early = [r.state(window, pid) for r in scene.runs if r.at < since + window - 1.5]
    assert "stalled" not in early, states
    due = scene.due(since, window)
    first = states.index("stalled") if "stalled" in states else None
    assert first is not None and first <= due + late, (due, states)
    assert set(states[first:]) == {"stalled"}, states


@in_scene
def test_a_hung_job_is_stalled_naming_its_process_and_the_peer(scene):
    peer = f"127.0.0.1:{scene.port}"
    expected = {
        # worker -> the task its heartbeat names
        "prefork-busy": "celery_app.hang",
        "solo": "celery_app.hang",
        "simple-busy": "jobs.hang",
    }
    for name, task in expected.items():
        job = scene.job(name, "hang")
        _stalled_in_time(scene, job["pid"], job["at"], SHORT)
        last = scene.runs[-1].verdicts(SHORT)[job["pid"]]
        assert last["worker.reason"] == (
            f"busy on {task}, no beat; no log write; main thread blocked in recvfrom on {peer}"
        ), name
        (event,) = [
            e
            for r in scene.runs
            for e in r.events(SHORT)
            if e["attributes"]["process.pid"] == job["pid"] and "stalled" in e["summary"]
        ]
        assert re.fullmatch(
            rf"busy on {re.escape(task)} for \d+ s, no beat for \d+ s; no log write for \d+ s; "
            rf"main thread blocked in recvfrom on {re.escape(peer)} with no timeout for \d+ s, "
            r"0 wakeups in \d+ s; "
            r"cpu \+0\.00 s",
            event["attributes"]["worker.reason"],
        ), event
    # The prefork job hung from the start: stalled at 30 s as well.
    job = scene.job("prefork-busy", "hang")
    _stalled_in_time(scene, job["pid"], job["at"], LONG)
    # The RQ horse's hang stalls its parent: test_a_hung_rq_horse_stalls_its_parent_...


@in_scene
def test_a_silent_cpu_bound_job_is_never_stalled(scene):
    for name in ("prefork-busy", "solo", "rq-busy", "simple-busy"):
        job = scene.job(name, "cpu")
        during = scene.during(job, CPU_SECONDS)
        assert len(during) >= 2, name
        # An RQ horse's work is its worker's: the worker is judged, not the horse.
        pid = scene.pid(name) if name == "rq-busy" else job["pid"]
        for window in (SHORT, LONG):
            states = [r.state(window, pid) for r in during]
            assert set(states) <= {"working", "unknown"} and "working" in states, (name, states)


@in_scene
def test_celery_main_processes_and_a_job_waiting_for_its_child_are_not_stalled(scene):
    for window in (SHORT, LONG):
        for name in ("prefork-idle", "prefork-busy"):
            states = {r.state(window, scene.pid(name)) for r in scene.runs[1:]}
            assert states <= {"idle", "working"}, (name, states)
    job = scene.job("prefork-busy", "child")
    for run in scene.during(job, CHILD_SECONDS):
        verdict = run.verdicts(SHORT)[job["pid"]]
        assert verdict["worker.state"] in ("idle", "working"), verdict
        # The run that first finds the job in wait4 names the wait; the work tree is read
        # only once the main thread has not moved since the previous run (host/child.py,
        # enrich), and from then on the reason names the child that works. Which runs fall
        # in the job's seconds depends on the clock, so each run is held to its own case.
        before = scene.runs[scene.runs.index(run) - 1].verdicts(SHORT)[job["pid"]]
        if re.search(WAITS_FOR_CHILD, before["worker.reason"]):
            assert re.search(r"main thread waits for a child, which is (active|on CPU)\b",
                             verdict["worker.reason"]), (before, verdict)  # fmt: skip
        else:
            assert "waits for its child processes (wait4)" in verdict["worker.reason"], verdict


# --- what the collector must say once it judges pools and horses (issue 17) ----------------


@in_scene
def test_an_idle_celery_pool_child_is_idle_waiting_for_work_from_its_parent(scene):
    busy = scene.job("prefork-busy", "child")  # its process is idle again after that job
    idle_after = {p: 0.0 for p in scene.pool("prefork-idle")}
    idle_after[busy["pid"]] = busy["at"] + CHILD_SECONDS + TICK
    for pid, since in idle_after.items():
        parent = _ppid(pid)
        for window in (SHORT, LONG):
            for run in scene.runs[1:]:
                if run.at < since:
                    continue
                verdict = run.verdicts(window)[pid]
                assert verdict["worker.state"] == "idle", (run.at, window, verdict)
                assert re.search(
                    rf"\bwaits for work from its parent {parent} \(read on a pipe\)",
                    verdict["worker.reason"],
                ), verdict


@in_scene
def test_an_idle_rq_worker_is_idle_in_its_timed_blpop(scene):
    for name in ("rq-idle", "simple-idle"):
        for window in (SHORT, LONG):
            for run in scene.runs[1:]:
                verdict = run.verdicts(window)[scene.pid(name)]
                assert verdict["worker.state"] == "idle", (name, run.at, window, verdict)
                assert re.search(
                    r"\bwaiting with a timeout \(poll\b",
                    verdict["worker.reason"],
                ), verdict


@in_scene
def test_a_hung_rq_horse_stalls_its_parent_naming_the_horse_and_the_peer(scene):
    parent = scene.pid("rq-busy")
    job = scene.job("rq-busy", "hang")
    horse = job["pid"]
    # The horse's clock starts when it was forked (its start time), not when a run first saw
    # it: stalled within stall_after and one run of the hang.
    _stalled_in_time(scene, parent, job["at"], SHORT)
    verdict = scene.runs[-1].verdicts(SHORT)[parent]
    # "work horse" or "child": the wording of detection v2's chains is free, the facts are not.
    assert re.search(
        rf"\b(work horse|child) {horse} \(.*rq worker.*\)(, which is)? blocked in recvfrom "
        rf"on 127\.0\.0\.1:{scene.port}\b",
        verdict["worker.reason"],
    ), verdict
    for run in scene.runs:
        for window in (SHORT, LONG):
            assert horse not in run.verdicts(window), "the horse is not a worker of its own"


@in_scene
def test_finished_rq_horses_leave_no_gone_worker_and_no_event(scene):
    for window in (SHORT, LONG):
        for run in scene.runs:
            states = {
                v["worker.state"]
                for v in run.verdicts(window).values()
                if v["worker.group"] in ("rq", "rq-simple")
            }
            assert "gone" not in states, (run.at, window)
            assert not [e for e in run.events(window) if "disappeared" in e["summary"]]


@in_scene
def test_group_running_counts_the_workers_started_and_pools_apart(scene):
    expected = {"celery-prefork": 2, "celery-solo": 1, "celery-threads": 1, "rq": 2, "rq-simple": 2}
    for window in (SHORT, LONG):
        for run in scene.runs:
            assert run.running(window) == expected, (run.at, window)
            pools = run.running(window, "workerwatch.group.poolProcesses")
            assert pools == {**dict.fromkeys(expected, 0), "celery-prefork": 4}, (run.at, window)
            # Pool processes stay visible one by one, each with its own verdict.
            pids = set(run.verdicts(window))
            assert set(scene.pool("prefork-idle")) <= pids


@in_scene
def test_an_rq_worker_is_working_while_its_horse_computes(scene):
    job = scene.job("rq-busy", "cpu")
    for run in scene.during(job, CPU_SECONDS):
        if run is scene.runs[0]:
            continue  # a first sample has no verdict yet
        verdict = run.verdicts(SHORT)[scene.pid("rq-busy")]
        assert verdict["worker.state"] == "working", verdict
        assert re.search(
            rf"\b(work horse|child) {job['pid']} \(.*rq worker.*\)(, which is)? on CPU\b",
            verdict["worker.reason"],
        ), verdict


@not_yet("detection v2 (issue 12): a job's child process on the CPU is not counted as work")
def test_a_celery_job_waiting_for_its_busy_child_is_working(scene):
    job = scene.job("prefork-busy", "child")
    for run in scene.during(job, CHILD_SECONDS):
        verdict = run.verdicts(SHORT)[job["pid"]]
        assert verdict["worker.state"] == "working", verdict
        assert re.search(
            rf"\bchild {job['child']} \(.*python.*\) on CPU\b", verdict["worker.reason"]
        )


@in_scene
def test_a_job_hung_in_a_celery_pool_thread_is_stalled(scene):
    main = scene.pid("threads")
    _stalled_in_time(scene, main, scene.job("threads", "hang")["at"], SHORT)
    verdict = scene.runs[-1].verdicts(SHORT)[main]
    assert re.search(
        rf"\bthread \d+ blocked in recvfrom on 127\.0\.0\.1:{scene.port}\b",
        verdict["worker.reason"],
    ), verdict
