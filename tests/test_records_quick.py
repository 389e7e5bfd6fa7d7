"""records' quick test of plainly valid values agrees with the full field checkers.

``records.load`` accepts a value of a plain field (one of int, float, str, bool, maybe
None, with simple limits) without the full checker when the quick test passes; every
other value goes to the full checker. So the quick test may only pass a value the full
checker returns unchanged, for every field of every record loaded from data (the saved
state and the config).
"""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st
from workerwatch import records
from workerwatch.config import model as config_model
from workerwatch.judge import memory

RECORDS = [
    kind
    for module in (memory, config_model)
    for kind in vars(module).values()
    if records.is_record(kind) and kind.__module__ == module.__name__
]
FIELDS = [(cls, spec) for cls in RECORDS for spec in records.fields_of(cls)]
QUICK = [
    (cls, spec, quick, records._checker(spec.kinds, spec.meta))
    for cls, spec in FIELDS
    if (quick := records._quick(spec.kinds, spec.meta)) is not None
]
NOW = 1.8e9
EDGES = [0, 1, -1, 4194304, 4194305, 2147483648, 2147483649, 2**63, 2**63 + 1, 2**64]
TIMES = [NOW, NOW - records.PAST, NOW - records.PAST - 1, NOW + records.AHEAD, NOW + 1e10]

values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(EDGES),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.inf, -math.inf, math.nan, 1.7976931348623157e308, *map(float, TIMES)]),
    st.text(max_size=20),
    st.sampled_from(["", "x" * 4096, "x" * 4097, "idle", "stalled", "nope"]),
    st.lists(st.integers(), max_size=2),
)


def test_the_plain_fields_of_the_saved_state_take_the_quick_test():
    """Most of a worker's saved fields are plain: the quick test is what they meet."""
    plain = {spec.name for cls, spec, _, _ in QUICK if cls is memory.WorkerMemory}
    assert {"pid", "state", "first_seen", "cpu", "main_voluntary", "cgroup_unit"} <= plain
    assert "log_pos" not in plain and "units" not in plain


@settings(max_examples=400, deadline=None)
@given(value=values, now=st.sampled_from([None, NOW]))
def test_the_quick_test_passes_only_what_the_checker_returns_unchanged(value, now):
    for cls, spec, quick, check in QUICK:
        if not quick(value, now):
            continue
        where = f"{cls.__name__}.{spec.name}"
        ctx = records._Context(now)
        try:
            out = check(value, lambda w=where: w, ctx)
        except records.Invalid as exc:
            raise AssertionError(
                f"{where}: quick passed {value!r}, the checker says {exc}"
            ) from None
        assert type(out) is type(value) and (out == value or out is value), where
        assert not ctx.problems, where


def test_values_the_quick_test_refuses_are_still_checked_in_full():
    """A refused value reaches the full checker: its problem is named, a default stands."""
    data = {"name": "g:1", "group": "g", "pid": 1, "first_seen": NOW, "last_seen": NOW}
    loaded, problems = records.load(memory.WorkerMemory, {**data, "cpu": 3}, NOW)
    assert loaded.cpu == 3.0 and type(loaded.cpu) is float and problems == []
    for bad, words in ((-1.0, "below 0"), (math.inf, "not a finite number"), ("x", "not")):
        try:
            records.load(memory.WorkerMemory, {**data, "cpu": bad}, NOW)
        except records.Invalid as exc:
            assert "cpu" in str(exc) and words in str(exc), exc
        else:
            raise AssertionError(f"cpu {bad!r} was accepted")
    try:
        records.load(memory.WorkerMemory, {**data, "last_seen": NOW + 1e9}, NOW)
    except records.Invalid as exc:
        assert "last_seen" in str(exc) and "not a time near now" in str(exc)
    else:
        raise AssertionError("a last_seen far ahead was accepted")
