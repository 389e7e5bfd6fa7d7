"""Supervisor-shaped workers for the tests: a pre-forked pool fed through pipes, and a
worker that forks a work horse per job and waits for it. Standard library only.

Usage: supervisors.py MODE TAG INFO [args...]; TAG only makes the command line unique per
test; the facts (pids) are written as JSON to INFO once the shape is in place.

Modes:
  pool N [HOST PORT]   N pool processes, each reading jobs from its own pipe; the parent
                       sleeps in short naps and replaces a pool process that died. With
                       HOST PORT, pool process 0 gets a job that hangs in recv on it.
  horses N HOST PORT   N jobs of 0.6 s of CPU, each in a horse the parent waits for, then
                       a job whose horse hangs in recv on HOST:PORT.
"""

import ctypes
import json
import os
import signal
import socket
import sys
import time

PR_SET_PDEATHSIG = 1


def die_with_parent():
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def write_facts(path, facts):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as handle:
        json.dump(facts, handle)
    os.replace(tmp, path)


def pool_process(read_end):
    while True:
        job = os.read(read_end, 1024).decode().split()
        if job and job[0] == "hang":
            socket.create_connection((job[1], int(job[2]))).recv(1024)


def spawn(pool, slot):
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        die_with_parent()
        os.close(write_end)
        pool_process(read_end)
        os._exit(0)
    os.close(read_end)
    pool[slot] = (pid, write_end)


def pool_mode(info, count, hang):
    pool = {}
    for slot in range(count):
        spawn(pool, slot)
    if hang:
        os.write(pool[0][1], f"hang {hang[0]} {hang[1]}".encode())
    write_facts(info, {"parent": os.getpid(), "pool": [pool[s][0] for s in range(count)]})
    while True:
        time.sleep(0.2)
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            for slot, (child, write_end) in list(pool.items()):
                if child == pid:  # recycled: a new process takes the slot
                    os.close(write_end)
                    spawn(pool, slot)
        write_facts(info, {"parent": os.getpid(), "pool": [pool[s][0] for s in range(count)]})


def horses_mode(info, count, host, port):
    done = []
    for job in range(count + 1):
        pid = os.fork()
        if pid == 0:
            die_with_parent()
            # Written by the horse: its parent goes straight into wait4, as RQ's does.
            write_facts(info, {"parent": os.getppid(), "done": done, "current": os.getpid()})
            if job < count:
                end = time.process_time() + 0.6
                while time.process_time() < end:
                    pass
            else:
                socket.create_connection((host, port)).recv(1024)
            os._exit(0)
        os.waitpid(pid, 0)
        done.append(pid)
        time.sleep(0.3)


def main():
    mode, _tag, info, *args = sys.argv[1:]
    if mode == "pool":
        pool_mode(info, int(args[0]), (args[1], int(args[2])) if len(args) > 1 else None)
    elif mode == "horses":
        horses_mode(info, int(args[0]), args[1], int(args[2]))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
