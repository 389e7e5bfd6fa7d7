"""Worker shapes the version-2 verdict must judge: work in children and threads, timed and
untimed waits, clock-skewed heartbeats.

Usage: shapes_v2.py MODE TAG INFO [args...]. TAG only makes the command line unique per
test. INFO is a path where the process that reaches the interesting state writes what a
test needs to know about it (pids, thread ids, fds) as JSON, just before it blocks; the
test then waits until /proc shows the thread inside the expected call.

Standard library only, and no code from the project: any CPython the project supports
can run it.
"""

import contextlib
import ctypes
import json
import os
import platform
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

SELF = os.path.abspath(__file__)
# futex(2) and epoll_pwait2(2) have no wrapper in every libc: called by number.
FUTEX_NR = {"x86_64": 202, "aarch64": 98}.get(platform.machine())
EPOLL_PWAIT2_NR = 441  # the same on x86_64 and aarch64
FUTEX_WAIT_PRIVATE = 128  # FUTEX_WAIT | FUTEX_PRIVATE_FLAG
PR_SET_PDEATHSIG = 1


class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class PollFd(ctypes.Structure):
    _fields_ = [("fd", ctypes.c_int), ("events", ctypes.c_short), ("revents", ctypes.c_short)]


LIBC = ctypes.CDLL(None, use_errno=True)


def tell(info, **facts):
    """Write the facts atomically, so a test never reads half a file."""
    facts.setdefault("pid", os.getpid())
    facts.setdefault("ppid", os.getppid())
    facts.setdefault("tid", threading.get_native_id())
    tmp = f"{info}.{os.getpid()}.tmp"
    with open(tmp, "w") as handle:
        json.dump(facts, handle)
    os.replace(tmp, info)


def seconds_or_none(text):
    return None if text == "none" else float(text)


def timespec(seconds):
    whole = int(seconds)
    return Timespec(whole, round((seconds - whole) * 1e9))


def connect(host, port):
    return socket.create_connection((host, int(port)))  # no timeout, as in ftplib


def child(mode, tag, info, *args, capture=False):
    """Run another mode of this script as a child, the way a worker shells out."""
    command = [sys.executable, SELF, mode, tag, info, *map(str, args)]
    return subprocess.run(command, capture_output=capture, check=False)


def burn():
    x = 0
    while True:
        x += 1


def main():
    mode, tag, info, *args = sys.argv[1:]
    # Die with the parent: a test kills the process it started, and the children this
    # script starts in turn must not outlive it.
    LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    # --- work in child processes -----------------------------------------------------
    if mode == "capture_compute":  # parent polls the pipes of a child computing silently
        child("compute", tag, info, capture=True)
    elif mode == "compute":
        tell(info)
        burn()
    elif mode == "wait_hung_child":  # parent in wait4; the child (or a descendant) hangs
        host, port, levels = args[0], args[1], int(args[2]) if len(args) > 2 else 1
        if levels > 1:
            child("wait_hung_child", tag, info, host, port, levels - 1)
        else:
            child("recv", tag, info, host, port)
    elif mode == "wait_timeout_child":  # parent in wait4; the child reads with a timeout
        child("recv_timeout", tag, info, *args)

    # --- work in threads ---------------------------------------------------------------
    elif mode == "pool_burn":  # main waits on future.result() while a pool thread burns
        from concurrent.futures import ThreadPoolExecutor

        started = threading.Event()
        pool_tid = []

        def task():
            pool_tid.append(threading.get_native_id())
            started.set()
            burn()

        with ThreadPoolExecutor(max_workers=1) as pool:
            future = pool.submit(task)
            started.wait()
            tell(info, main=threading.get_native_id(), pool=pool_tid[0])
            future.result()
    elif mode == "pool_capture":  # a pool thread shells out; main waits on the future
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(child, "compute", tag, info, capture=True).result()
    elif mode in ("housekeeping_recv", "housekeeping_lock"):
        # A thread waking every 0.5 s (an APM harvest thread, a metrics reporter) next to
        # a task thread hung in recv. In housekeeping_lock the main thread waits for a
        # lock that the hung thread holds; in housekeeping_recv it joins the hung thread.
        host, port = args
        lock = threading.Lock()
        ready = threading.Event()
        tids = {}

        def housekeeping():
            tids["housekeeping"] = threading.get_native_id()
            ticks = 0
            while True:
                time.sleep(0.5)
                ticks += 1

        def task():
            tids["task"] = threading.get_native_id()
            with lock:
                conn = connect(host, port)
                tids["fd"] = conn.fileno()
                ready.set()
                conn.recv(1024)

        threading.Thread(target=housekeeping, daemon=True).start()
        worker = threading.Thread(target=task)
        worker.start()
        ready.wait()
        while "housekeeping" not in tids:
            time.sleep(0.01)
        tell(info, main=threading.get_native_id(), **tids)
        if mode == "housekeeping_lock":
            lock.acquire()
        else:
            worker.join()

    elif mode == "dispatcher":
        # A plain Python worker: the main thread polls its queue with a timeout (0.2 s) and
        # hands each job to a ThreadPoolExecutor; SIGUSR1 queues a job that hangs in recv
        # with no timeout on HOST:PORT (its thread's facts go to INFO.job). FLAGS, comma
        # separated: "listener" keeps a thread blocked in an untimed recv on HOST:PORT from
        # before the worker's last log line on; "chatty" logs every poll.
        import queue
        from concurrent.futures import ThreadPoolExecutor

        log_path, host, port, flags = args
        flags = set(flags.split(","))
        log = open(log_path, "a")  # noqa: SIM115 - the worker's log for its whole life
        inbox = queue.Queue()
        facts = {"main": threading.get_native_id()}

        def line(text):
            log.write(f"{time.strftime('%H:%M:%S')} {text}\n")
            log.flush()

        def hang():
            conn = connect(host, port)
            tell(info + ".job", tid=threading.get_native_id(), fd=conn.fileno())
            conn.recv(1024)

        def listen(ready):
            facts["listener"] = threading.get_native_id()
            conn = connect(host, port)
            ready.set()
            conn.recv(1024)

        signal.signal(signal.SIGUSR1, lambda *_: inbox.put(hang))
        pool = ThreadPoolExecutor(max_workers=2)
        for _ in range(2):  # both pool threads started, then idle on the pool's queue
            pool.submit(time.sleep, 0.05).result()
        if "listener" in flags:
            ready = threading.Event()
            threading.Thread(target=listen, args=(ready,), daemon=True).start()
            ready.wait()
            time.sleep(0.2)
        line("ready")  # after the listener: it waits from before the last log line on
        tell(info, **facts)
        while True:
            try:
                job = inbox.get(timeout=0.2)
            except queue.Empty:
                if "chatty" in flags:
                    line("polled, no job")
                continue
            line(f"job received: {job.__name__}")
            pool.submit(job)

    # --- waits, timed and untimed ------------------------------------------------------
    elif mode == "dump_recv":  # hung in recv, stack dumps on SIGUSR1 into its own log
        import faulthandler

        log = open(args[0], "a")  # noqa: SIM115 - faulthandler writes to it later
        log.write("started\n")
        log.flush()
        faulthandler.register(signal.SIGUSR1, file=log, all_threads=True, chain=False)
        conn = connect(args[1], args[2])
        tell(info, fd=conn.fileno())
        conn.recv(1024)
    elif mode == "recv":  # blocked forever in recv(): the incident
        conn = connect(*args)
        tell(info, fd=conn.fileno())
        conn.recv(1024)
    elif mode == "recv_sockopt":  # recv on a socket with SO_RCVTIMEO, as C clients do
        host, port, timeout = args
        conn = connect(host, port)
        timeval = struct.pack("@ll", int(float(timeout)), 0)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        tell(info, fd=conn.fileno())
        while True:
            with contextlib.suppress(BlockingIOError, TimeoutError, socket.timeout):
                conn.recv(1024)
    elif mode == "pipe_read":  # read(2) on a pipe nobody writes to
        read_end, _write_end = os.pipe()  # the write end stays open: read blocks
        tell(info, fd=read_end)
        os.read(read_end, 1)
    elif mode == "recv_timeout":  # recv with a socket timeout: CPython polls first
        host, port, timeout = args
        conn = connect(host, port)
        conn.settimeout(float(timeout))
        tell(info, fd=conn.fileno())
        while True:
            with contextlib.suppress(TimeoutError, socket.timeout):
                conn.recv(1024)
    elif mode == "sleep":  # a backoff sleep
        tell(info)
        while True:
            time.sleep(float(args[0]))
    elif mode == "poll":  # poll(fd, 1, ms); ms -1 for none
        ms, host, port = int(args[0]), args[1], args[2]
        conn = connect(host, port)
        poller = select.poll()
        poller.register(conn, select.POLLIN)
        tell(info, fd=conn.fileno())
        while True:
            poller.poll(ms)
    elif mode == "ppoll":  # ppoll(fds, 1, tsp|NULL, NULL)
        timeout, host, port = seconds_or_none(args[0]), args[1], args[2]
        conn = connect(host, port)
        fds = PollFd(conn.fileno(), select.POLLIN, 0)
        tsp = ctypes.byref(timespec(timeout)) if timeout is not None else None
        tell(info, fd=conn.fileno())
        while True:
            LIBC.ppoll(ctypes.byref(fds), ctypes.c_ulong(1), tsp, None)
    elif mode == "epoll":  # epoll_wait(epfd, ev, max, ms); "none" for no timeout
        timeout, host, port = seconds_or_none(args[0]), args[1], args[2]
        conn = connect(host, port)
        ep = select.epoll()
        ep.register(conn, select.EPOLLIN)
        tell(info, fd=conn.fileno(), epfd=ep.fileno())
        while True:
            ep.poll(-1 if timeout is None else timeout)
    elif mode == "epoll_pwait2":  # epoll_pwait2(epfd, ev, max, tsp|NULL, NULL, 0)
        timeout, host, port = seconds_or_none(args[0]), args[1], args[2]
        conn = connect(host, port)
        ep = select.epoll()
        ep.register(conn, select.EPOLLIN)
        events = ctypes.create_string_buffer(16 * 8)  # 8 epoll_events, 12 or 16 bytes each
        tsp = ctypes.byref(timespec(timeout)) if timeout is not None else None
        tell(info, fd=conn.fileno(), epfd=ep.fileno())
        while True:
            LIBC.syscall(
                ctypes.c_long(EPOLL_PWAIT2_NR),
                ctypes.c_long(ep.fileno()),
                events,
                ctypes.c_long(8),
                tsp,
                None,
                ctypes.c_long(0),
            )
    elif mode == "select":  # select([fd], [], [], timeout); "none" for no timeout
        timeout, host, port = seconds_or_none(args[0]), args[1], args[2]
        conn = connect(host, port)
        tell(info, fd=conn.fileno())
        while True:
            select.select([conn], [], [], timeout)
    elif mode == "lock":  # a lock that nobody releases, with or without a timeout
        timeout = seconds_or_none(args[0])
        lock = threading.Lock()
        lock.acquire()
        tell(info)
        while True:
            lock.acquire(timeout=-1 if timeout is None else timeout)
    elif mode == "futex_wait":  # FUTEX_WAIT with a relative timeout, as C code does
        word = ctypes.c_int(0)
        tsp = ctypes.byref(timespec(float(args[0])))
        tell(info)
        while True:
            LIBC.syscall(
                ctypes.c_long(FUTEX_NR),
                ctypes.byref(word),
                ctypes.c_long(FUTEX_WAIT_PRIVATE),
                ctypes.c_long(0),
                tsp,
                None,
                ctypes.c_long(0),
            )

    # --- heartbeats written on a skewed clock -----------------------------------------
    elif mode == "skewed_beat":
        # Beats (docs/heartbeat-format.md) whose time and mtime are SKEW seconds off; after
        # BEATS beats (0: forever, every 0.2 s) it hangs in recv on HOST:PORT if given.
        path, skew, beats = args[0], float(args[1]), int(args[2])
        seq = 0
        while beats == 0 or seq < beats:
            seq += 1
            stamp = time.time() + skew
            body = {"version": 1, "pid": os.getpid(), "time": stamp, "seq": seq, "state": "idle"}
            tmp = os.path.join(os.path.dirname(path), f".beat.{os.getpid()}.tmp")
            with open(tmp, "w") as handle:
                json.dump(body, handle)
            os.utime(tmp, (stamp, stamp))
            os.replace(tmp, path)
            if seq == 1:
                tell(info)
            if beats == 0 or seq < beats:
                time.sleep(0.2)
        if len(args) > 3:
            connect(args[3], args[4]).recv(1024)
        while True:
            time.sleep(3600)
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
