"""``records.record``: a dataclass without code generated for it at import.

Its repr, ==, hash and frozen ``__setattr__``/``__delattr__`` are shared functions, and its
``__init__`` is compiled at the first instance. It must behave as ``@dataclass`` /
``@dataclass(frozen=True)`` does wherever the program and its tests rely on it: the
constructor (order, defaults, a fresh ``default_factory`` value, its errors), the repr's
text, equality, hashing (frozen) or none (mutable), ``FrozenInstanceError``,
``dataclasses.fields`` / ``replace`` / ``is_dataclass``, and the pickling that carries
observations from the host-phase child to the parent.
"""

from __future__ import annotations

import dataclasses
import math
import pickle
import types
from dataclasses import field

import pytest
from workerwatch import collector, observations, records
from workerwatch.config import model as config_model
from workerwatch.host import child
from workerwatch.judge import memory, states
from workerwatch.output import catalogue, v4


def _pair(frozen: bool) -> tuple[type, type]:
    def body() -> dict:
        return {
            "__annotations__": {"a": "int", "b": "float | None", "c": "list[int]"},
            "__doc__": "a record",
            "b": None,
            "c": field(default_factory=list),
        }

    plain = dataclasses.dataclass(frozen=frozen)(type("Sample", (), body()))
    ours = records.record(frozen=frozen)(type("Sample", (), body()))
    return plain, ours


@pytest.mark.parametrize("frozen", [False, True])
def test_a_record_behaves_as_the_dataclass_it_replaces(frozen):
    plain, ours = _pair(frozen)
    for args in ((1,), (2, 0.5), (3, math.nan, [1, 2])):
        p, o = plain(*args), ours(*args)
        assert repr(o) == repr(p)
        assert (o == ours(*args)) == (p == plain(*args))
        assert (o == ours(9)) == (p == plain(9)) and o != p
        assert [f.name for f in dataclasses.fields(o)] == [f.name for f in dataclasses.fields(p)]
        assert dataclasses.is_dataclass(o)
        assert dataclasses.replace(o, a=7) == ours(7, *args[1:])
    nan = math.nan
    assert (ours(1, nan) == ours(1, nan)) == (plain(1, nan) == plain(1, nan))  # one NaN object
    if frozen:
        assert hash(ours(1, 0.5, ())) == hash(ours(1, 0.5, ())) == hash(plain(1, 0.5, ()))
        with pytest.raises(dataclasses.FrozenInstanceError):
            ours(1).a = 2  # type: ignore[misc]
        with pytest.raises(dataclasses.FrozenInstanceError):
            del ours(1).a
    else:
        with pytest.raises(TypeError):
            hash(ours(1))
        o = ours(1)
        o.a = 5
        assert o == ours(5)


@pytest.mark.parametrize("frozen", [False, True])
def test_a_record_is_constructed_as_the_dataclass_is(frozen):
    plain, ours = _pair(frozen)
    assert ours.__init__ is records._first_init, "compiled only for a first instance"
    for args, kwargs in (((1,), {}), ((1, 2.0), {}), ((), {"a": 1, "c": [3]}), ((1,), {"b": None})):
        assert repr(ours(*args, **kwargs)) == repr(plain(*args, **kwargs))
    assert ours.__init__ is not records._first_init
    first, second = ours(1), ours(1)
    first.c.append(5)
    assert second.c == [] and first.c is not second.c, "a fresh default_factory value"
    for args, kwargs in (((), {}), ((1, 2.0, [], 4), {}), ((1,), {"d": 1}), ((1,), {"a": 2})):
        with pytest.raises(TypeError) as ours_error:
            ours(*args, **kwargs)
        with pytest.raises(TypeError) as plain_error:
            plain(*args, **kwargs)
        assert str(ours_error.value) == str(plain_error.value)


def test_a_required_field_after_a_default_is_refused_when_defined():
    body = {"__annotations__": {"a": "int", "b": "int"}, "a": 1}
    with pytest.raises(TypeError, match="non-default argument 'b' follows default argument"):
        records.record(type("Bad", (), body))


def test_an_observation_crosses_the_pipe_whole():
    """The host-phase child pickles observations; the parent gets equal records back."""
    worker = observations.Worker(group="g", pid=42, create_time=1.5, start_ticks=7, horses=(3,))
    log = observations.LogObservation(fds=(observations.LogFd(3, "/w.log", 10, 99),))
    seen = observations.WorkerObservation(worker=worker, log=log, process=None)
    again = pickle.loads(pickle.dumps(seen, protocol=pickle.HIGHEST_PROTOCOL))
    assert again == seen and repr(again) == repr(seen) and hash(again.worker) == hash(worker)
    with pytest.raises(dataclasses.FrozenInstanceError):
        again.worker.pid = 1  # type: ignore[misc]


def test_a_frozen_record_hashes_by_value():
    a = observations.LogFd(fd=3, path="/var/log/w.log", pos=10, inode=7)
    b = observations.LogFd(fd=3, path="/var/log/w.log", pos=10, inode=7)
    assert a is not b and a == b and len({a, b}) == 1
    assert a != dataclasses.replace(a, pos=11)


MODULES = (observations, config_model, memory, states, catalogue, v4, collector, child)


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_the_collection_path_defines_its_records_with_record(module):
    found = [
        kind
        for kind in vars(module).values()
        if dataclasses.is_dataclass(kind) and kind.__module__ == module.__name__
    ]
    assert found
    for kind in found:
        names = tuple(f.name for f in dataclasses.fields(kind))
        assert kind.__record_fields__ == names, kind
        assert kind.__repr__ is records._repr and kind.__eq__ is records._eq, kind


def test_ready_compiles_a_modules_constructors_ahead():
    """What a resident process does before forking the children that make observations."""
    module = types.ModuleType("made_up")
    plain, ours = _pair(frozen=True)
    module.Sample = ours
    assert ours.__init__ is records._first_init
    records.ready(module)
    assert ours.__init__ is not records._first_init
    assert repr(ours(1)) == repr(plain(1))
