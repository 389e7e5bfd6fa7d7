#!/bin/sh
# nri-workerwatch on PATH for operators (status, diagnose, check-config, alerts, ...):
# runs the program the agent runs, under the first interpreter on PATH that has a bundled
# build: python3 first, then the versions built, newest first. Paths are relative to this
# file, so the package works the same installed under any root.
# @...@ are filled in by packaging/build.py (paths relative to the root).
root=$(dirname "$(readlink -f "$0")")/../..
program="$root/@PROGRAM@"
zipapps="$root/@ZIPAPPS@"

for python in python3 @PYTHONS@; do
    command -v "$python" >/dev/null 2>&1 || continue
    tag=$("$python" -c 'import sys; print("%d%d" % sys.version_info[:2])' 2>/dev/null) || continue
    if [ -f "$zipapps/@ZIPAPP_PREFIX@$tag@ZIPAPP_SUFFIX@" ]; then
        exec "$python" "$program" "$@"
    fi
done
if command -v python3 >/dev/null 2>&1; then
    exec python3 "$program" "$@"  # unsupported: the launcher's [FATAL] line says what is
fi
echo "[FATAL] nri-workerwatch needs one of: @PYTHONS@ on PATH" >&2
exit 1
