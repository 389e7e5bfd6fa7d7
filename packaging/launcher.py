#!/usr/bin/env python3
# nri-workerwatch launcher: installed as
#   /var/db/newrelic-infra/newrelic-integrations/bin/nri-workerwatch
# and run by the agent as `PYTHON PROGRAM [ARGS]`. It runs the bundled build made for the
# interpreter running it (psutil and pydantic-core are compiled per CPython version).
#
# This file must parse and run up to its [FATAL] line on any interpreter an operator may
# point it at (Python 2.7 and 3.6+): no f-strings, no annotations, no keyword-only
# arguments, nothing imported that 2.7 lacks before the version is checked.
import errno
import os
import stat
import sys

# Filled in by packaging/build.py.
VERSION = "@VERSION@"
MACHINE = "@MACHINE@"

# The layout, relative to the root the package was installed into. Everything is found
# from this file's own location, so an install under any root (a chroot, a test
# directory, `make install PREFIX=...`) is self-consistent. packaging/build.py reads these
# names from here, so the layout is written down once.
PROGRAM = "var/db/newrelic-infra/newrelic-integrations/bin/nri-workerwatch"
ZIPAPPS = "usr/lib/nri-workerwatch"
DEFINITIONS = "usr/share/nri-workerwatch/definitions"
# The agent's data directory; the package never creates it (the agent does).
AGENT_DATA = "var/db/newrelic-infra/data"
UNPACKED = "nri-workerwatch/unpacked"
ZIPAPP_PREFIX = "nri-workerwatch-cp"
ZIPAPP_SUFFIX = ".pyz"


def fatal(message):
    # One line in the agent's stderr format; the agent logs [FATAL] lines as errors.
    sys.stderr.write("[FATAL] " + message + "\n")
    sys.stderr.flush()
    sys.exit(1)


def zipapp_name(major, minor):
    return "%s%d%d%s" % (ZIPAPP_PREFIX, major, minor, ZIPAPP_SUFFIX)


def supported_versions(zipapps):
    """(major, minor) of every bundled build, oldest first."""
    try:
        names = os.listdir(zipapps)
    except OSError:
        return []
    found = []
    for name in names:
        digits = name[len(ZIPAPP_PREFIX) : -len(ZIPAPP_SUFFIX)]
        if name.startswith(ZIPAPP_PREFIX) and name.endswith(ZIPAPP_SUFFIX) and digits.isdigit():
            found.append((int(digits[0]), int(digits[1:])))
    return sorted(found)


def install_root(here):
    """The directory this package was installed into (``/`` on a normal install)."""
    suffix = os.sep + PROGRAM.replace("/", os.sep)
    if not here.endswith(suffix):
        fatal(
            "nri-workerwatch %s: this launcher must be installed as /%s (it is at %s); "
            "reinstall the package" % (VERSION, PROGRAM, here)
        )
    return here[: -len(suffix)] or os.sep


def check_interpreter(root):
    """The bundled build for this interpreter, or one [FATAL] line saying what would work."""
    zipapps = os.path.join(root, ZIPAPPS)
    major, minor = sys.version_info[:2]
    pyz = os.path.join(zipapps, zipapp_name(major, minor))
    versions = supported_versions(zipapps)
    if not versions:
        fatal(
            "nri-workerwatch %s: no bundled builds in %s; the installation is incomplete, "
            "reinstall the package" % (VERSION, zipapps)
        )
    listed = ["%d.%d" % v for v in versions]
    names = ", ".join(listed[:-1]) + " or " + listed[-1] if len(listed) > 1 else listed[0]
    implementation = getattr(getattr(sys, "implementation", None), "name", "cpython")
    if implementation != "cpython" or not os.path.isfile(pyz):
        fatal(
            "nri-workerwatch %s runs on CPython %s, not on %s %s (%s): name one of those "
            "interpreters in the agent's exec (e.g. /usr/bin/python%d.%d)"
            % (
                VERSION,
                names,
                "Python" if implementation == "cpython" else implementation,
                sys.version.split()[0],
                sys.executable or "this interpreter",
                versions[-1][0],
                versions[-1][1],
            )
        )
    machine = os.uname()[4]
    if machine != MACHINE:
        fatal(
            "nri-workerwatch %s was built for %s; this host is %s: install the %s package"
            % (VERSION, MACHINE, machine, machine)
        )
    return pyz


def made_dir(path):
    """The lstat of ``path``, created with mode 0700 if missing; None if it cannot be had."""
    try:
        os.mkdir(path, 0o700)
    except OSError as exc:
        if exc.errno != errno.EEXIST:
            return None
    try:
        return os.lstat(path)
    except OSError:
        return None


def private_dir(path):
    """``path`` if it is (or can be made) a directory only this user can use, else None.

    Code is imported from it, so a directory another user could write to is refused.
    """
    info = made_dir(path)
    if info is None or not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        return None
    if info.st_mode & 0o077:
        try:
            os.chmod(path, 0o700)
        except OSError:
            return None
    if not os.access(path, os.W_OK | os.X_OK):
        return None
    return path


def safe_parent(path):
    """A directory no one but its owner (us or root) can change, created 0700 if missing."""
    info = made_dir(path)
    return (
        info is not None
        and stat.S_ISDIR(info.st_mode)
        and info.st_uid in (0, os.getuid())
        and not info.st_mode & 0o022
    )


def unpack_dir(root):
    """Where the zipapp unpacks itself; needs no HOME (the agent sets none).

    ``<agent data>/nri-workerwatch/unpacked`` when this user may write there (the agent's
    own user), else ``$TMPDIR/nri-workerwatch-<uid>`` (TMPDIR defaults to /tmp), both 0700.
    """
    agent_data = os.path.join(root, AGENT_DATA)
    preferred = os.path.join(agent_data, UNPACKED)
    tried = []
    if os.path.isdir(agent_data):
        if safe_parent(os.path.dirname(preferred)) and private_dir(preferred):
            return preferred
        tried.append(preferred)
    fallback = os.path.join(os.environ.get("TMPDIR") or "/tmp", "nri-workerwatch-%d" % os.getuid())
    if private_dir(fallback):
        return fallback
    tried.append(fallback)
    fatal(
        "nri-workerwatch %s: no private directory to unpack into (tried %s: not writable, "
        "owned by another user, or open to others); set SHIV_ROOT to a directory only "
        "this user can write" % (VERSION, ", ".join(tried))
    )


def main():
    root = install_root(os.path.realpath(os.path.abspath(__file__)))
    pyz = check_interpreter(root)
    # From here on the interpreter is one of the supported CPython versions.
    import runpy

    os.environ.setdefault("WORKERWATCH_DEFINITIONS", os.path.join(root, DEFINITIONS))
    if not os.environ.get("SHIV_ROOT"):
        os.environ["SHIV_ROOT"] = unpack_dir(root)
    # Python put this file's directory (the agent's bin/) first on sys.path; nothing is
    # imported from there.
    if sys.path and sys.path[0] == os.path.dirname(os.path.abspath(__file__)):
        del sys.path[0]
    try:
        # In this process: the zipapp's bootstrap unpacks it once (keyed by its build id),
        # puts it on sys.path and calls workerwatch.cli:entry, which ends us.
        runpy.run_path(pyz, run_name="__main__")
    except ImportError as exc:
        fatal(
            "nri-workerwatch %s: a bundled module did not load under Python %s (%s); the "
            "build %s is for CPython %d.%d on linux %s: reinstall the package"
            % (
                VERSION,
                sys.version.split()[0],
                exc,
                os.path.basename(pyz),
                sys.version_info[0],
                sys.version_info[1],
                MACHINE,
            )
        )
    except OSError as exc:
        fatal(
            "nri-workerwatch %s: cannot unpack %s into %s: %s"
            % (VERSION, os.path.basename(pyz), os.environ.get("SHIV_ROOT"), exc)
        )


if __name__ == "__main__":
    main()
