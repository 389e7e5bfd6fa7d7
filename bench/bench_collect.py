"""What one collection costs the host, side by side with its floor: ``make bench``.

The agent starts the integration every 15-30 s on every production host, so its cost is
paid forever. This measures it as the agent runs it, against worker-like processes, in
two fleet shapes: *sleep* (each worker sleeps a second between wakeups, like a poller with
a short sleep) and *select* (each worker holds a TCP connection and waits in ``select``
on it, like an idle SWF long-poller); in both, a worker appends a line to its own log
every few wakeups. Measured, as paired runs back to back (medians over the pairs):

* **one-shot**: a fresh ``python -m workerwatch --config ...`` (the v4 one-shot path), with
  the state a previous run left, so every measured run is the steady-state cycle the agent
  repeats; CPU is user + system of the whole process **and** of the host-phase child it
  forks (``wait4`` of the process, so interpreter start-up is included), and peak RSS
  (``ru_maxrss``, the larger of the two; see ``measure`` for how it is kept clean);
* **floor**: ``bench/floor_reads.py`` in the same interpreter: finds the same workers by
  command line and reads the six ``/proc`` files a verdict needs per worker, parsing
  nothing; its CPU is counted the same way (interpreter start-up included);
* **long-running**: ``nri-workerwatch run --interval ... --cycles K`` at two cycle counts;
  the difference of their CPU (forked host-phase children included) divided by the
  difference of cycles is one cycle without the start-up;
* **process-exporter**: Debian's ``prometheus-process-exporter`` (install it with
  ``apt-get install prometheus-process-exporter``; the column is skipped without it),
  started with its defaults and one name group matching the same workers, scraped
  repeatedly; its CPU per scrape from ``/proc/PID/stat`` (all its threads).

The fleet is made cheaply with ``os.fork`` from one parent (which is itself worker 0).
Every fleet process dies with its parent (``PR_SET_PDEATHSIG``), the parent dies with this
process. The load average is reported with the figures: the machine may be shared.

Usage: .venv/bin/python bench/bench_collect.py [--sizes 5,50,200] [--pairs 9] [--no-write]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import platform
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
FLOOR_SCRIPT = HERE / "floor_reads.py"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
PR_SET_PDEATHSIG = 1
LOG_EVERY = 5  # wakeups between two log lines of a bench worker
SHAPES = ("sleep", "select")
TARGET_RATIO, TARGET_CYCLE_MS, TARGET_EXPORTER = 2.0, 15.0, 0.5
EXPORTER = "prometheus-process-exporter"


# --- the fleet (runs in its own process: `bench_collect.py --fleet TAG SHAPE N DIR PORT PPID`)


def _die_with_parent(parent: int) -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent went away before the prctl
        os._exit(1)


def _idle_worker(shape: str, index: int, directory: str, port: int) -> None:
    """Hold a log file and a connection; wake every second; log every LOG_EVERY wakeups."""
    log = open(f"{directory}/worker-{index}.log", "a")  # noqa: SIM115 - held for life
    sock = socket.create_connection(("127.0.0.1", port))
    wakeups = 0
    while True:
        if wakeups % LOG_EVERY == 0:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            log.write(f"{stamp} INFO worker_{os.getpid()} polling for activity...\n")
            log.flush()
        wakeups += 1
        if shape == "sleep":
            time.sleep(1.0)
            continue
        readable, _, _ = select.select([sock], [], [], 1.0)
        if readable and not sock.recv(64):
            os._exit(0)  # the bench closed the connection: done


def fleet_main(shape: str, count: int, directory: str, port: int, parent: int) -> None:
    _die_with_parent(parent)
    me = os.getpid()
    for index in range(1, count):
        if os.fork() == 0:
            _die_with_parent(me)
            try:
                _idle_worker(shape, index, directory, port)
            finally:
                os._exit(1)
    # Children that exit are reaped at once, so none lingers as a zombie.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    _idle_worker(shape, 0, directory, port)


class Fleet:
    """``count`` idle workers of one shape and the connections they hold to this process."""

    def __init__(self, shape: str, count: int, directory: Path) -> None:
        self.shape = shape
        self.count = count
        self.directory = directory
        self.tag = f"wwbench-{os.getpid()}-{shape}-{count}"
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=count + 16)
        self.conns: list[socket.socket] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--fleet", self.tag, shape, str(count), str(directory),
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


# Runs the measured command as its own child and reports that child's rusage from wait4.
# Why a go-between: Linux carries a process's peak-RSS mark across exec, and a child forked
# (or vforked) from this bench starts with the bench's own RSS, which grows as it runs; a
# child forked from this small process starts small, so its ru_maxrss is its own peak.
# CPU comes from the same wait4: the command and the children it waited for (the one-shot's
# host-phase child), not this go-between's interpreter start.
_RUSAGE_OF = """
import os, sys
report = int(sys.argv[1])
pid = os.fork()
if pid == 0:
    os.close(report)
    os.execv(sys.argv[2], sys.argv[2:])
_, status, ru = os.wait4(pid, 0)
os.write(report, f"{ru.ru_utime} {ru.ru_stime} {ru.ru_maxrss}".encode())
sys.exit(os.waitstatus_to_exitcode(status))
"""


def measure(cmd: list[str], env: dict[str, str]) -> Sample:
    """Run ``cmd`` once: CPU (user + system, with its waited-for children) and peak RSS."""
    read_end, write_end = os.pipe()
    try:
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            start = time.perf_counter()
            proc = subprocess.Popen(
                [sys.executable, "-S", "-c", _RUSAGE_OF, str(write_end), *cmd],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, pass_fds=(write_end,),
            )  # fmt: skip
            os.close(write_end)
            write_end = -1
            proc.wait()
            wall = time.perf_counter() - start
            report = os.read(read_end, 256).decode().split()
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read().decode(), err.read().decode()
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
    if proc.returncode != 0 or "[ERR]" in stderr or "[FATAL]" in stderr or len(report) != 3:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {stderr}")
    user, system, rss_kib = float(report[0]), float(report[1]), int(report[2])
    return Sample(user + system, wall, rss_kib, stdout, stderr)


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
class ShapeResult:
    """One fleet size in one shape: every figure in seconds (RSS in KiB)."""

    workers: int
    shape: str
    shot: Stats = field(default_factory=Stats)
    floor: Stats = field(default_factory=Stats)
    ratio: Stats = field(default_factory=Stats)  # one-shot / floor, per pair
    rss: Stats = field(default_factory=Stats)
    floor_rss: Stats = field(default_factory=Stats)
    cycle: Stats = field(default_factory=Stats)  # long-running CPU per cycle
    exporter: Stats = field(default_factory=Stats)  # process-exporter CPU per scrape
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


class Exporter:
    """A prometheus-process-exporter watching the fleet's processes (one name group)."""

    def __init__(self, tag: str, directory: Path) -> None:
        config = directory / "process-exporter.yml"
        config.write_text(
            "process_names:\n"
            "  - name: bench\n"
            "    cmdline:\n"
            f"      - 'bench_collect\\.py --fleet {tag} '\n"
        )
        with socket.create_server(("127.0.0.1", 0)) as probe:
            self.port = probe.getsockname()[1]
        self.proc = subprocess.Popen(
            [EXPORTER, "-config.path", str(config),
             "-web.listen-address", f"127.0.0.1:{self.port}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                self.scrape()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def scrape(self) -> bytes:
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.read()

    def cpu(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def per_scrape(self, scrapes: int, gap: float) -> float:
        """CPU seconds per scrape (the clock ticks at 10 ms: many scrapes are averaged)."""
        self.scrape()
        before = self.cpu()
        for _ in range(scrapes):
            body = self.scrape()
            time.sleep(gap)
        if b'namedprocess_namegroup_num_procs{groupname="bench"}' not in body:
            raise RuntimeError("process-exporter reports no bench group")
        return (self.cpu() - before) / scrapes

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def one_shot(config: Path, env: dict[str, str]) -> Sample:
    return measure([sys.executable, "-m", "workerwatch", "--config", str(config)], env)


def floor_run(fleet: Fleet, env: dict[str, str]) -> Sample:
    pids = fleet.pids()
    s = measure([sys.executable, str(FLOOR_SCRIPT), fleet.tag, str(fleet.log_fd(pids[0]))], env)
    if int(s.stdout.strip() or 0) != fleet.count:
        raise RuntimeError(f"floor found {s.stdout.strip()} of {fleet.count} workers")
    return s


def long_running(config: Path, env: dict[str, str], cycles: int, interval: float) -> Sample:
    cmd = [sys.executable, "-m", "workerwatch", "run", "--config", str(config),
           "--interval", f"{interval:g}s", "--cycles", str(cycles)]  # fmt: skip
    return measure(cmd, env)


def bench_one(
    fleet: Fleet, directory: Path, env: dict[str, str], args: argparse.Namespace
) -> ShapeResult:
    config = write_config(directory, fleet.tag, directory / "state")
    result = ShapeResult(fleet.count, fleet.shape)
    # The first run leaves the state (and the config cache), so every measured run is the
    # steady-state cycle the agent repeats.
    warm = one_shot(config, env)
    if judged(warm) != fleet.count:
        raise RuntimeError(f"expected {fleet.count} workers, payload has {judged(warm)}")
    floor_run(fleet, env)
    for i in range(args.pairs):
        # Paired and alternating in order, so a burst of load on the shared machine
        # lands on both sides of the ratio as often as not.
        if i % 2:
            shot, floor = one_shot(config, env), floor_run(fleet, env)
        else:
            floor, shot = floor_run(fleet, env), one_shot(config, env)
        result.shot.values.append(shot.cpu)
        result.floor.values.append(floor.cpu)
        result.ratio.values.append(shot.cpu / floor.cpu if floor.cpu else float("inf"))
        result.rss.values.append(shot.rss_kib)
        result.floor_rss.values.append(floor.rss_kib)
    exporter = Exporter(fleet.tag, directory) if args.exporter else None
    try:
        for _ in range(args.cycle_pairs):
            short = long_running(config, env, 2, args.interval)
            long = long_running(config, env, 2 + args.cycles, args.interval)
            result.cycle.values.append((long.cpu - short.cpu) / args.cycles)
            result.self_reported = [
                line.split("after ", 1)[-1]
                for line in long.stderr.splitlines()
                if "stopped by" in line
            ]
            if exporter is not None:
                result.exporter.values.append(exporter.per_scrape(args.scrapes, args.interval))
    finally:
        if exporter is not None:
            exporter.stop()
    return result


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


def _ms(stats: Stats, digits: str = "{:.1f}") -> str:
    return stats.spread(1000, digits) if stats.values else "–"


def report(results: list[ShapeResult], load: list[str], args: argparse.Namespace) -> str:
    have_exporter = any(r.exporter.values for r in results)
    lines = [
        BEGIN,
        "",
        "## Machine",
        "",
        *machine(),
        f"- load average (1, 5, 15 min): {'; '.join(load)}",
        "",
        f"## Figures (medians; one-shot and floor: {args.pairs} paired runs; long-running"
        f" and process-exporter: {args.cycle_pairs} pairs; min–max in brackets)",
        "",
        "CPU is user + system of the whole process and the children it forks, in ms.",
        "",
        "| workers | shape | one-shot | floor | one-shot ÷ floor | peak RSS MiB (floor) "
        "| long-running per cycle | process-exporter per scrape | cycle ÷ scrape |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        over = (
            f"{r.cycle.median / r.exporter.median:.2f}"
            if r.exporter.values and r.exporter.median
            else "–"
        )
        lines.append(
            f"| {r.workers} | {r.shape} | {_ms(r.shot, '{:.0f}')} | {_ms(r.floor, '{:.0f}')} "
            f"| {r.ratio.spread(1, '{:.2f}')} "
            f"| {r.rss.median / 1024:.1f} ({r.floor_rss.median / 1024:.1f}) "
            f"| {_ms(r.cycle)} | {_ms(r.exporter)} | {over} |"
        )
    lines.append("")
    if not have_exporter:
        lines += [
            f"process-exporter: not measured ({EXPORTER} is not installed; "
            f"`apt-get install {EXPORTER}`, or it was turned off with --no-exporter).",
            "",
        ]
    else:
        lines += [
            f"process-exporter: Debian's `{EXPORTER}` with its defaults (threads and smaps "
            "gathered), one name group matching the bench workers by command line, "
            f"{args.scrapes} scrapes {args.interval:g} s apart per measurement.",
            "",
        ]
    for shape in SHAPES:
        mine = [r for r in results if r.shape == shape]
        if len(mine) < 2:
            continue
        first, last = mine[0], mine[-1]
        span = last.workers - first.workers
        per_shot = (last.shot.median - first.shot.median) / span * 1e6
        per_floor = (last.floor.median - first.floor.median) / span * 1e6
        per_cycle = (last.cycle.median - first.cycle.median) / span * 1e6
        lines += [
            f"Cost per additional worker ({shape}, from {first.workers} to {last.workers} "
            f"workers): one-shot {per_shot:.0f} µs, floor {per_floor:.0f} µs, "
            f"long-running {per_cycle:.0f} µs per cycle.",
            "",
        ]
    biggest = max(r.workers for r in results)
    lines += [
        f"## Targets at {biggest} workers",
        "",
        "| target | shape | measured | |",
        "|---|---|---:|---|",
    ]
    for r in (r for r in results if r.workers == biggest):
        ratio = r.ratio.median
        cycle = r.cycle.median * 1000
        lines.append(
            f"| one-shot CPU <= {TARGET_RATIO:g}× the bare-read floor | {r.shape} "
            f"| {ratio:.2f}× ({r.shot.median * 1000:.0f} vs {r.floor.median * 1000:.0f} ms) "
            f"| {verdict(ratio <= TARGET_RATIO)} |"
        )
        lines.append(
            f"| long-running <= {TARGET_CYCLE_MS:g} ms CPU per cycle | {r.shape} "
            f"| {cycle:.1f} ms | {verdict(cycle <= TARGET_CYCLE_MS)} |"
        )
        if r.exporter.values and r.exporter.median:
            over = r.cycle.median / r.exporter.median
            lines.append(
                f"| long-running <= {TARGET_EXPORTER:g}× process-exporter per scrape "
                f"| {r.shape} | {over:.2f}× ({cycle:.1f} vs {r.exporter.median * 1000:.1f} ms) "
                f"| {verdict(over <= TARGET_EXPORTER)} |"
            )
    big = [r for r in results if r.workers == biggest]
    lines += [
        "",
        "The long-running process's own account of its cycles (stderr on exit), "
        + "; ".join(f"{r.shape}: " + "; ".join(r.self_reported) for r in big),
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


def _load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_collect.py", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="5,50,200", help="fleet sizes (default 5,50,200)")
    parser.add_argument("--shapes", default=",".join(SHAPES), help="fleet shapes (sleep,select)")
    parser.add_argument("--pairs", type=int, default=9, help="one-shot/floor pairs per fleet")
    parser.add_argument("--cycles", type=int, default=20, help="long-running cycles measured")
    parser.add_argument("--cycle-pairs", type=int, default=3, help="long-running measurements")
    parser.add_argument("--interval", type=float, default=0.5, help="long-running interval, s")
    parser.add_argument("--scrapes", type=int, default=10, help="process-exporter scrapes")
    parser.add_argument("--no-exporter", dest="exporter", action="store_false",
                        help=f"skip {EXPORTER} even when installed")  # fmt: skip
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    shapes = [s for s in args.shapes.split(",") if s]
    if set(shapes) - set(SHAPES):
        parser.error(f"--shapes: one of {', '.join(SHAPES)}")
    if args.exporter and shutil.which(EXPORTER) is None:
        print(f"{EXPORTER} not installed (apt-get install {EXPORTER}): column skipped")
        args.exporter = False
    env = dict(os.environ)
    env.pop("NRI_CONFIG_INTERVAL", None)
    # The agent's environment lets Python cache bytecode: measure that steady state (the
    # warm-up run writes it), not a compile of every module on every run.
    env.pop("PYTHONDONTWRITEBYTECODE", None)

    results: list[ShapeResult] = []
    load = [f"{_load()} at the start"]
    with tempfile.TemporaryDirectory(prefix="wwbench-") as tmp:
        for size in sizes:
            for shape in shapes:
                directory = Path(tmp) / f"fleet-{shape}-{size}"
                directory.mkdir()
                fleet = Fleet(shape, size, directory)
                try:
                    fleet.wait_ready()
                    r = bench_one(fleet, directory, env, args)
                finally:
                    fleet.stop()
                results.append(r)
                print(
                    f"{size:4d} {shape:6s}: one-shot {_ms(r.shot, '{:.0f}')} ms, floor "
                    f"{_ms(r.floor, '{:.0f}')} ms, ratio {r.ratio.spread(1, '{:.2f}')}, "
                    f"RSS {r.rss.median / 1024:.1f} MiB; long-running {_ms(r.cycle)} ms/cycle; "
                    f"process-exporter {_ms(r.exporter)} ms/scrape; load {_load()}",
                    flush=True,
                )
    load.append(f"{_load()} at the end")
    section = report(results, load, args)
    print(section)
    if not args.no_write:
        save(section)
        print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 8 and sys.argv[1] == "--fleet":
        fleet_main(sys.argv[3], int(sys.argv[4]), sys.argv[5], int(sys.argv[6]), int(sys.argv[7]))
    else:
        raise SystemExit(main())
