"""What one collection costs the host: ``make bench`` (writes bench/RESULTS.md).

The agent starts the integration every 15-30 s on every production host, so its cost is
paid forever. This measures it as the agent runs it, against idle worker-like processes:

* **one-shot**: a fresh ``python -m workerwatch --config ...`` (the v4 one-shot path), with a
  state file left by a previous run, so every measured run is a steady-state cycle; CPU is
  user + system of the integration **and** of the host-phase child it forks (resource usage
  of waited-for children, taken around each run), wall time, and peak RSS (``ru_maxrss``:
  the larger of the two processes; the child shares the parent's pages copy-on-write);
* **floor**: the same interpreter importing only the third-party modules the one-shot path
  imports (read from ``python -X importtime`` of a real run) and exiting;
* **long-running**: ``nri-workerwatch run --interval ... --cycles K`` at two cycle counts; the
  difference of their CPU divided by the difference of cycles is the CPU of one cycle
  without the start-up.

The fleet is one process per worker, made cheaply with ``os.fork`` from one parent (which is
itself worker 0): each holds a log file opened for appending and a TCP connection to this
process, wakes up every second like a poller with a short timeout, and appends a line to its
log every few seconds. Every fleet process dies with its parent (``PR_SET_PDEATHSIG``), and
the parent dies with this process.

Usage: .venv/bin/python bench/bench_collect.py [--sizes 5,50,200] [--repeat 10] [--no-write]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import platform
import resource
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
PR_SET_PDEATHSIG = 1
LOG_EVERY = 5  # wakeups between two log lines of a bench worker
TARGET_RATIO, TARGET_RSS_MIB, TARGET_CYCLE_MS = 1.5, 60.0, 25.0
# The declared runtime dependencies as a program uses them (``import pydantic`` alone is
# lazy and nearly free; BaseModel is what costs), plus whatever a real run imports.
FLOOR_IMPORTS = "import psutil, yaml; from pydantic import BaseModel"
# Third-party packages whose modules make up the floor (the runtime dependencies).
RUNTIME_PACKAGES = ("psutil", "pydantic", "pydantic_core", "yaml", "_yaml", "annotated_types",
                    "typing_extensions", "typing_inspection")  # fmt: skip


# --- the fleet (runs in its own process: `bench_collect.py --fleet TAG N DIR PORT`) ------


def _die_with_parent(parent: int) -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent went away before the prctl
        os._exit(1)


def _idle_worker(index: int, directory: str, port: int) -> None:
    """Hold a log file and a connection; wake every second like a short-timeout poller."""
    log = open(f"{directory}/worker-{index}.log", "a")  # noqa: SIM115 - held for life
    sock = socket.create_connection(("127.0.0.1", port))
    wakeups = 0
    while True:
        if wakeups % LOG_EVERY == 0:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            log.write(f"{stamp} INFO worker_{os.getpid()} polling for activity...\n")
            log.flush()
        wakeups += 1
        readable, _, _ = select.select([sock], [], [], 1.0)
        if readable and not sock.recv(64):
            os._exit(0)  # the bench closed the connection: done


def fleet_main(count: int, directory: str, port: int, parent: int) -> None:
    _die_with_parent(parent)
    me = os.getpid()
    for index in range(1, count):
        if os.fork() == 0:
            _die_with_parent(me)
            try:
                _idle_worker(index, directory, port)
            finally:
                os._exit(1)
    # Children that exit are reaped at once, so none lingers as a zombie.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    _idle_worker(0, directory, port)


class Fleet:
    """``count`` idle workers and the connections they hold to this process."""

    def __init__(self, count: int, directory: Path) -> None:
        self.count = count
        self.directory = directory
        self.tag = f"wwbench-{os.getpid()}-{count}"
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=count + 16)
        self.conns: list[socket.socket] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--fleet", self.tag, str(count), str(directory),
             str(self.listener.getsockname()[1]), str(os.getpid())],
            stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def _accept(self) -> None:
        while len(self.conns) < self.count:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.conns.append(conn)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"fleet exited with {self.proc.returncode}")
            logs = list(self.directory.glob("worker-*.log"))
            full = len(self.conns) == self.count and len(logs) == self.count
            if full and all(p.stat().st_size for p in logs):
                return
            time.sleep(0.05)
        raise TimeoutError(f"{self.count} bench workers not ready within {timeout:.0f} s")

    def pids(self) -> list[int]:
        """Live fleet processes, from the process table (the integration's own view)."""
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    if self.tag.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                        found.append(int(entry))
        return found

    def log_fd(self, pid: int) -> int:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            if os.readlink(f"/proc/{pid}/fd/{fd}").endswith(".log"):
                return int(fd)
        raise RuntimeError(f"bench worker {pid} holds no log")

    def stop(self) -> None:
        self.proc.kill()  # its children get SIGKILL from PR_SET_PDEATHSIG
        self.proc.wait()
        for conn in self.conns:
            conn.close()
        self.listener.close()
        deadline = time.monotonic() + 10
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.pids():
            raise RuntimeError(f"bench workers of {self.tag} survived")


# --- measuring -----------------------------------------------------------------------


@dataclass
class Sample:
    cpu: float  # seconds, user + system, the process and the children it waited for
    wall: float
    rss_kib: int
    stdout: str = ""
    stderr: str = ""


def measure(cmd: list[str], env: dict[str, str]) -> Sample:
    """Run ``cmd`` once; its CPU from the rusage of waited-for children, taken around it."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
        # wait4 gives this child's own peak RSS; RUSAGE_CHILDREN's is a maximum over all
        # children ever waited for, useless per run.
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0 or "[ERR]" in stderr or "[FATAL]" in stderr:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Sample(cpu, wall, usage.ru_maxrss, stdout, stderr)


@dataclass
class Stats:
    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def spread(self, scale: float = 1.0, fmt: str = "{:.0f}") -> str:
        lo, mid, hi = min(self.values), self.median, max(self.values)
        return f"{fmt.format(mid * scale)} ({fmt.format(lo * scale)}–{fmt.format(hi * scale)})"


@dataclass
class SizeResult:
    workers: int
    cpu: Stats = field(default_factory=Stats)
    wall: Stats = field(default_factory=Stats)
    rss: Stats = field(default_factory=Stats)
    cycle: Stats = field(default_factory=Stats)  # long-running CPU per cycle, seconds
    raw: Stats = field(default_factory=Stats)  # bare /proc reads per cycle, seconds
    self_reported: list[str] = field(default_factory=list)


def write_config(directory: Path, tag: str, state: Path) -> Path:
    config = directory / "config.yml"
    config.write_text(
        json.dumps(  # JSON is YAML; no yaml import needed here
            {
                "state_dir": str(state),
                "groups": [
                    {
                        "name": "bench",
                        "match": {"cmdline": f"bench_collect\\.py --fleet {tag} "},
                        "logs": [f"{directory}/worker-*.log"],
                        "stall_after": "300s",
                    }
                ],
            }
        )
    )
    return config


def judged(sample: Sample) -> int:
    """Workers the payload reports (one workerwatch.worker.up each)."""
    count = 0
    for line in sample.stdout.splitlines():
        for dataset in json.loads(line)["data"]:
            count += sum(1 for m in dataset["metrics"] if m["name"] == "workerwatch.worker.up")
    return count


def floor_modules(config: Path, env: dict[str, str]) -> list[str]:
    """The runtime-dependency modules a real one-shot run imports, in import order.

    Read from ``sys.modules`` at the exit of a real run: ``-X importtime`` misses modules
    that pydantic imports lazily from its package ``__getattr__`` (``pydantic.main``...).
    """
    with tempfile.NamedTemporaryFile("r", suffix=".txt") as out:
        code = (
            "import atexit, runpy, sys\n"
            "def dump():\n"
            f"    with open({out.name!r}, 'w') as f: f.write('\\n'.join(sys.modules))\n"
            "atexit.register(dump)\n"
            f"sys.argv = ['workerwatch', '--config', {str(config)!r}]\n"
            "runpy.run_module('workerwatch', run_name='__main__', alter_sys=True)\n"
        )
        subprocess.run([sys.executable, "-c", code], env=env, check=True, stdout=subprocess.DEVNULL)
        names = out.read().split("\n")
    return [n for n in names if n.split(".")[0] in RUNTIME_PACKAGES]


# The /proc files the probes read per worker in a steady-state cycle (host/discover.py,
# host/process.py, host/log_offsets.py); kept in step with them by hand.
_PER_WORKER = ("cmdline", "stat", "cgroup", "stat", "task/{pid}/stat", "task/{pid}/status",
               "task/{pid}/syscall", "io")  # fmt: skip


def raw_reads(pids: list[int], log_fd: int, cycles: int = 10) -> float:
    """CPU seconds per cycle just to open, read and close those files, parsing nothing.

    What any implementation that gathers the same evidence from /proc pays at least,
    whatever it does with the bytes: the design's floor, next to the measured cycle.
    """

    def read(path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.read(fd, 65536)
        finally:
            os.close(fd)

    start = time.process_time()
    for _ in range(cycles):
        for entry in os.listdir("/proc"):  # discovery reads every process's cmdline
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    read(f"/proc/{entry}/cmdline")
        for pid in pids:
            for name in _PER_WORKER:
                read(f"/proc/{pid}/{name.format(pid=pid)}")
            for fd in os.listdir(f"/proc/{pid}/fd"):
                os.readlink(f"/proc/{pid}/fd/{fd}")
            read(f"/proc/{pid}/fdinfo/{log_fd}")
    return (time.process_time() - start) / cycles


def long_running(config: Path, env: dict[str, str], cycles: int, interval: float) -> Sample:
    cmd = [sys.executable, "-m", "workerwatch", "run", "--config", str(config),
           "--interval", f"{interval:g}s", "--cycles", str(cycles)]  # fmt: skip
    return measure(cmd, env)


def machine() -> list[str]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 2**20:.1f} GiB"
    commit = subprocess.run(
        ["git", "-C", str(HERE.parent), "describe", "--always", "--dirty"],
        capture_output=True, text=True, check=False,
    ).stdout.strip() or "?"  # fmt: skip
    changed = subprocess.run(
        ["git", "-C", str(HERE.parent), "status", "--short", "--", "integration"],
        capture_output=True, text=True, check=False,
    ).stdout.split("\n")  # fmt: skip
    changed = [line[3:] for line in changed if line.strip()]
    if changed:
        commit += " with uncommitted changes to " + ", ".join(f"`{c}`" for c in changed)
    return [
        f"- CPU: {model}, {os.cpu_count()} cores",
        f"- memory: {mem}",
        f"- Python {platform.python_version()} ({sys.executable})",
        f"- kernel: {platform.system()} {platform.release()} {platform.machine()}",
        f"- code: `{commit}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
    ]


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def report(
    results: list[SizeResult],
    floor: Stats,
    floor_rss: Stats,
    used: Stats,
    modules: list[str],
    args: argparse.Namespace,
) -> str:
    big = results[-1]
    lines = [
        BEGIN,
        "",
        "## Machine",
        "",
        *machine(),
        "",
        f"## Figures (median of {args.repeat} runs, min–max in brackets)",
        "",
        "| workers | one-shot CPU ms | × floor | one-shot wall ms | peak RSS MiB "
        "| long-running CPU ms / cycle | bare /proc reads ms / cycle |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.workers} | {r.cpu.spread(1000)} | {r.cpu.median / floor.median:.2f} "
            f"| {r.wall.spread(1000)} | {r.rss.spread(1 / 1024, '{:.1f}')} "
            f"| {r.cycle.spread(1000, '{:.1f}')} | {r.raw.spread(1000, '{:.1f}')} |"
        )
    lines += [
        f"| floor | {floor.spread(1000)} | 1.00 | | {floor_rss.spread(1 / 1024, '{:.1f}')} | | |",
        f"| imports only | {used.spread(1000)} | {used.median / floor.median:.2f} | | | | |",
        "",
        f"**floor**: `python -c '{FLOOR_IMPORTS}; import ...'`: the runtime dependencies as a "
        f"program uses them, plus the {len(modules)} third-party modules a steady-state one-shot "
        "run really imports (read from `sys.modules` at the end of a real run: "
        f"{', '.join(sorted({m.split('.')[0] for m in modules})) or 'none'}), then exit. "
        "**imports only**: those modules alone, without what the run does not import.",
        "",
    ]
    if len(results) >= 2:
        first, last = results[0], results[-1]
        span = last.workers - first.workers
        per_shot = (last.cpu.median - first.cpu.median) / span * 1e6
        per_cycle = (last.cycle.median - first.cycle.median) / span * 1e6
        mid = [r for r in results if first.workers < r.workers < last.workers]
        linear = ""
        for r in mid:
            predicted = first.cycle.median + (r.workers - first.workers) * per_cycle / 1e6
            linear += (
                f" At {r.workers} workers a straight line through the ends predicts "
                f"{predicted * 1000:.1f} ms per cycle; measured {r.cycle.median * 1000:.1f} ms."
            )
        lines += [
            "Cost per additional worker (from the smallest to the largest fleet): "
            f"one-shot {per_shot:.0f} µs, long-running {per_cycle:.0f} µs per cycle.{linear}",
            "",
        ]
    ratio = big.cpu.median / floor.median
    rss = big.rss.median / 1024
    cycle = big.cycle.median * 1000
    lines += [
        f"## Targets at {big.workers} workers",
        "",
        "| target | measured | |",
        "|---|---:|---|",
        f"| one-shot CPU under {TARGET_RATIO}× the import floor | {ratio:.2f}× "
        f"({big.cpu.median * 1000:.0f} ms vs {floor.median * 1000:.0f} ms) "
        f"| {verdict(ratio < TARGET_RATIO)} |",
        f"| (the same against *imports only*) | {big.cpu.median / used.median:.2f}× "
        f"({big.cpu.median * 1000:.0f} ms vs {used.median * 1000:.0f} ms) | for comparison |",
        f"| one-shot peak RSS under {TARGET_RSS_MIB:.0f} MiB | {rss:.1f} MiB "
        f"| {verdict(rss < TARGET_RSS_MIB)} |",
        f"| long-running CPU under {TARGET_CYCLE_MS:.0f} ms per cycle | {cycle:.1f} ms "
        f"| {verdict(cycle < TARGET_CYCLE_MS)} |",
        "",
        "The long-running process's own account of its cycles (stderr on exit), largest "
        "fleet: " + "; ".join(big.self_reported),
        "",
        END,
    ]
    return "\n".join(lines) + "\n"


def save(section: str) -> None:
    """Replace the measured section of RESULTS.md, keeping the analysis around it."""
    text = RESULTS.read_text() if RESULTS.exists() else f"# Benchmark results\n\n{BEGIN}\n{END}\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + section.rstrip("\n") + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_collect.py", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="5,50,200", help="fleet sizes (default 5,50,200)")
    parser.add_argument("--repeat", type=int, default=10, help="measured one-shot runs per size")
    parser.add_argument("--cycles", type=int, default=20, help="long-running cycles measured")
    parser.add_argument("--interval", type=float, default=0.5, help="long-running interval, s")
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    env = dict(os.environ)
    env.pop("NRI_CONFIG_INTERVAL", None)

    results: list[SizeResult] = []
    floor, floor_rss, used = Stats(), Stats(), Stats()
    modules: list[str] = []
    with tempfile.TemporaryDirectory(prefix="wwbench-") as tmp:
        for size in sizes:
            directory = Path(tmp) / f"fleet-{size}"
            directory.mkdir()
            fleet = Fleet(size, directory)
            try:
                fleet.wait_ready()
                config = write_config(directory, fleet.tag, directory / "state")
                result = SizeResult(size)
                # The first run leaves the state (and whatever else a first run prepares),
                # so every measured run is the steady-state cycle the agent repeats.
                warm = measure([sys.executable, "-m", "workerwatch", "--config", str(config)], env)
                if judged(warm) != size:
                    raise RuntimeError(f"expected {size} workers, payload has {judged(warm)}")
                if not modules:
                    modules = floor_modules(config, env)
                    imports = "import " + ", ".join(dict.fromkeys(modules)) if modules else "pass"
                    for _ in range(args.repeat):
                        s = measure([sys.executable, "-c", f"{FLOOR_IMPORTS}; {imports}"], env)
                        floor.values.append(s.cpu)
                        floor_rss.values.append(s.rss_kib)
                        used.values.append(measure([sys.executable, "-c", imports], env).cpu)
                    print(
                        f"floor: {floor.spread(1000)} ms CPU; only the modules a run imports: "
                        f"{used.spread(1000)} ms",
                        flush=True,
                    )
                for _ in range(args.repeat):
                    s = measure([sys.executable, "-m", "workerwatch", "--config", str(config)], env)
                    result.cpu.values.append(s.cpu)
                    result.wall.values.append(s.wall)
                    result.rss.values.append(s.rss_kib)
                for _ in range(2):
                    short = long_running(config, env, 2, args.interval)
                    long = long_running(config, env, 2 + args.cycles, args.interval)
                    result.cycle.values.append((long.cpu - short.cpu) / args.cycles)
                    result.self_reported = [
                        line.split("after ", 1)[-1]
                        for line in long.stderr.splitlines()
                        if "stopped by" in line
                    ]
                pids = fleet.pids()
                for _ in range(3):
                    result.raw.values.append(raw_reads(pids, fleet.log_fd(pids[0])))
                results.append(result)
                print(
                    f"{size:4d} workers: one-shot {result.cpu.spread(1000)} ms CPU, "
                    f"wall {result.wall.spread(1000)} ms, "
                    f"RSS {result.rss.spread(1 / 1024, '{:.1f}')} MiB; "
                    f"long-running {result.cycle.spread(1000, '{:.1f}')} ms CPU/cycle "
                    f"(bare /proc reads {result.raw.median * 1000:.1f} ms)",
                    flush=True,
                )
            finally:
                fleet.stop()
    section = report(results, floor, floor_rss, used, modules, args)
    print(section)
    if not args.no_write:
        save(section)
        print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "--fleet":
        fleet_main(int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), int(sys.argv[6]))
    else:
        raise SystemExit(main())
