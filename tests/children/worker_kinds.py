"""Worker-like child processes for the tests: each mode behaves like one kind of worker.

Usage: worker_kinds.py MODE TAG [args...]; TAG only makes the command line unique per test.
"""

import contextlib
import ctypes
import os
import signal
import socket
import sys
import time


def log_line(handle, text):
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    handle.write(f"{stamp} INFO worker_{os.getpid()} {text}\n")
    handle.flush()


def main():
    mode, _tag, *args = sys.argv[1:]
    if mode == "logger":  # appends to the shared log every `period` seconds
        path, period = args[0], float(args[1])
        with open(path, "a") as handle:
            while True:
                log_line(handle, "polled, no task")
                time.sleep(period)
    elif mode == "hung":  # logs once, then blocks forever in recv() like the incident
        path, host, port = args[0], args[1], int(args[2])
        with open(path, "a") as handle:
            log_line(handle, "starting FTPArticle")
            conn = socket.create_connection((host, port))  # no timeout, as in ftplib
            log_line(handle, "connected")
            conn.recv(1024)
            log_line(handle, "never reached")
    elif mode == "busy":  # burns CPU, never logs
        x = 0
        while True:
            x += 1
    elif mode == "poller":  # idle poller: wakes on a recv timeout (0.2 s or args[2]), never logs
        host, port = args[0], int(args[1])
        conn = socket.create_connection((host, port))
        conn.settimeout(float(args[2]) if len(args) > 2 else 0.2)
        while True:
            with contextlib.suppress(TimeoutError):
                conn.recv(1024)
    elif mode == "forkfleet":  # many cheap workers: forked copies, each holding log files
        count, files, directory = int(args[0]), int(args[1]), args[2]
        children = []
        for i in range(count):
            pid = os.fork()
            if pid == 0:
                # Die with the parent, so killing the fleet's one process cleans up all.
                ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
                handles = [open(f"{directory}/w{i}-{j}.log", "a") for j in range(files)]  # noqa: SIM115
                for handle in handles:
                    log_line(handle, "started")
                signal.pause()
                os._exit(0)
            children.append(pid)
        with open(f"{directory}/ready", "w") as marker:
            marker.write(" ".join(map(str, children)))
        while True:
            signal.pause()
    elif mode in ("joiner", "stuckjoiner"):  # the main thread only waits for a worker thread
        import threading

        def work():
            if mode == "joiner":
                while True:
                    time.sleep(0.1)
            conn = socket.create_connection((args[0], int(args[1])))
            conn.recv(1024)

        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
    elif mode == "apm":  # an agent thread keeps burning CPU while the main thread hangs
        import threading

        def harvest():
            while True:
                until = time.monotonic() + 0.03
                while time.monotonic() < until:
                    pass
                time.sleep(0.07)

        threading.Thread(target=harvest, daemon=True).start()
        socket.create_connection((args[0], int(args[1]))).recv(1024)
    elif mode == "forkshare":  # a parent opens the log, forks a logger and a hung child
        path, host, port = args[0], args[1], int(args[2])
        handle = open(path, "a")  # noqa: SIM115 - shared by the children on purpose
        log_line(handle, "parent started")
        if os.fork() == 0:
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)
            while True:
                log_line(handle, "child polled")
                time.sleep(0.2)
        if os.fork() == 0:
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)
            socket.create_connection((host, port)).recv(1024)
        while True:
            os.wait()
    elif mode == "backoff":  # retries nothing, sleeps `period` s between attempts, never logs
        period = float(args[0])
        while True:
            time.sleep(period)
    elif mode == "appender":  # writes SIZE bytes to the log at start and on every SIGUSR1
        path, size = args[0], int(args[1])
        handle = open(path, "a")  # noqa: SIM115 - held open for the process's life

        def write(*_):
            handle.write("x" * (size - 1) + "\n")
            handle.flush()

        signal.signal(signal.SIGUSR1, write)
        write()
        while True:
            signal.pause()
    elif mode == "openmodes":  # holds files open read-only, read-write and write-only
        directory = args[0]
        held = [
            open(f"{directory}/input.log"),  # noqa: SIM115 - read only, e.g. a file it tails
            open(f"{directory}/rw.log", "a+"),  # noqa: SIM115 - O_RDWR | O_APPEND
            open(f"{directory}/w.log", "a"),  # noqa: SIM115 - O_WRONLY | O_APPEND
        ]
        held[0].read(10)
        for handle in held[1:]:
            log_line(handle, "started")
        with open(f"{directory}/ready", "w"):
            pass
        while True:
            signal.pause()
    elif mode == "stdout":  # holds the shared log open, but writes only to its stdout
        path, period = args[0], float(args[1])
        with open(path, "a"):
            while True:
                print("polled, no task", flush=True)
                time.sleep(period)
    elif mode == "sleeper":
        while True:
            time.sleep(3600)
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
