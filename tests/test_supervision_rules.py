"""Table tests of the pure supervision rules (judge/supervision.py): typed observations in,
state and reason out. The real processes are in tests/test_supervision.py."""

from __future__ import annotations

from workerwatch.judge.states import IDLE, STALLED, WORKING
from workerwatch.judge.supervision import command_words, supervise
from workerwatch.judge.verdict import judge
from workerwatch.observations import HorseObservation, Worker, WorkerObservation

from tests.test_verdict import T0, proc

PARENT = Worker(group="g", pid=40, create_time=T0 - 1000, start_ticks=1)
CHILD = Worker(group="g", pid=41, create_time=T0 - 900, start_ticks=2, parent=40, parent_key="40:1")


def horse(cpu: float, vol: int = 3, started: float = T0, syscall: str = "recvfrom"):
    return HorseObservation(
        pid=77,
        start_ticks=9,
        create_time=started,
        cmdline="/srv/venv/bin/python /srv/venv/bin/rq worker --url redis://u:secret@h/0",
        process=proc(cpu=cpu, main_cpu=cpu, vol=vol, syscall=syscall, fd=6),
        peer="10.0.0.5:21",
    )


def run(sequence, stall_after=30.0, parent_state=IDLE):
    """(offset, observation) pairs through judge and supervise; the verdicts."""
    memory, verdicts = None, []
    for offset, observation in sequence:
        now = T0 + offset
        verdict, new = judge(observation, "w", memory, now, stall_after)
        supervise(verdict, new, observation, memory, now, stall_after, parent_state)
        memory = new
        verdicts.append(verdict)
    return verdicts


def reading(at: float) -> tuple[float, WorkerObservation]:
    waiting = proc(cpu=1.0, main_cpu=1.0, vol=10, syscall="read", fd=9)
    return at, WorkerObservation(CHILD, process=waiting, waits_for_parent="read on a pipe")


def test_a_pool_process_waiting_for_its_healthy_parent_stays_idle():
    verdicts = run([reading(t) for t in (0, 20, 40, 60, 80)])
    assert [v.state for v in verdicts[1:]] == [IDLE] * 4
    assert verdicts[-1].summary == "waits for work from its parent 40 (read on a pipe)"


def test_a_stalled_parent_cannot_vouch_for_its_pool_process():
    verdicts = run([reading(t) for t in (0, 20, 40)], parent_state=STALLED)
    assert verdicts[-1].state == STALLED
    assert "waits for work" not in verdicts[-1].reason


def test_a_task_that_hangs_in_a_pool_process_is_timed_from_the_end_of_its_wait():
    hung = proc(cpu=1.2, main_cpu=1.2, vol=14, syscall="recvfrom", fd=11)
    hangs = ((t, WorkerObservation(CHILD, process=hung)) for t in (40, 55, 69, 72))
    states = [v.state for v in run([reading(0), reading(20), *hangs])]
    assert states == ["unknown", IDLE, IDLE, IDLE, IDLE, STALLED]


def _parent(offset: float, h: HorseObservation | None):
    waiting = proc(cpu=5.0, main_cpu=5.0, vol=100, syscall="wait4", fd=None)
    return offset, WorkerObservation(PARENT, process=waiting, horse=h)


def test_a_horse_on_the_cpu_makes_its_worker_working():
    verdicts = run([_parent(0, None), _parent(10, horse(0.5)), _parent(20, horse(8.0))])
    assert verdicts[-1].state == WORKING
    assert verdicts[-1].summary.endswith(
        "work horse 77 (python rq worker --url redis://h/0) on CPU"
    )


def test_a_horse_idle_since_its_start_stalls_its_worker_stall_after_from_that_start():
    start = T0 + 5
    verdicts = run(
        [
            _parent(0, None),
            _parent(10, horse(0.01, started=start)),
            _parent(30, horse(0.01, started=start)),
            _parent(36, horse(0.01, started=start)),
        ]
    )
    assert [v.state for v in verdicts[1:]] == [IDLE, IDLE, STALLED]
    assert verdicts[-1].blocked_peer == "10.0.0.5:21"
    assert verdicts[-1].summary == (
        "work horse 77 (python rq worker --url redis://h/0) blocked in recvfrom on 10.0.0.5:21"
    )


def test_a_horse_that_had_worked_before_it_was_seen_is_timed_from_its_first_sight():
    start = T0 - 100
    verdicts = run(
        [
            _parent(0, None),
            _parent(10, horse(3.0, started=start)),
            _parent(35, horse(3.0, started=start)),
            _parent(41, horse(3.0, started=start)),
        ]
    )
    assert [v.state for v in verdicts[1:]] == [IDLE, IDLE, STALLED]


def test_a_reason_shows_programs_by_base_name_without_credentials():
    assert command_words("/usr/bin/python3 /srv/bin/rq worker -u redis://a:b@h/0") == (
        "python3 rq worker -u redis://h/0"
    )
    assert len(command_words("x " * 100)) == 80
