"""The queue side of a run: SWF and SQS samples on their own cadence, inside the deadline.

``collector.Collector`` calls :func:`collect` only when the config has an ``swf:`` or
``sqs:`` section, so a run without them never imports boto3 or botocore (``aws``).

Per probe and run:

* **not due** (less than ``sample_every`` since the last sample): no API call; the values of
  the last sample are emitted again, with ``sampleAgeSeconds`` saying how old they are;
* **due**: the probe runs in a daemon thread that the run waits for until its deadline (minus
  a margin for emitting). Whatever the thread has read by then is used; a call still in
  flight is abandoned, counted, and named in the ``[ERR]`` line. A sample that was attempted
  replaces the last values, so a metric whose call failed is absent (not stale) until a
  later sample reads it again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import field
from typing import Any

from workerwatch.config import Config, Sqs, Swf
from workerwatch.judge.memory import UNSUPPORTED_RECHECK_S, Probes, ProbeState
from workerwatch.observations import MetricSample
from workerwatch.output import catalogue
from workerwatch.queues import sqs, swf
from workerwatch.queues.aws import MIN_CALL_S, ProbeRun, aws_client, fingerprint, forget_client
from workerwatch.queues.notes import group_notes
from workerwatch.queues.stuck import with_stuck
from workerwatch.records import record

# Leave this much of the run for judging groups, saving state and writing the payload.
EMIT_MARGIN_S = 0.25
# Agent intervals jitter by a little; without slack a 60 s cadence on a 30 s agent interval
# would sample every third run instead of every second.
CADENCE_SLACK = 0.1


@record
class BacklogOutcome:
    """What one run of the queue-side probes gives the collector."""

    metrics: list[MetricSample] = field(default_factory=list)
    group_notes: dict[str, str] = field(default_factory=dict)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (probe, one-line message)


def probe_state(previous: ProbeState | None, section: Swf | Sqs) -> ProbeState:
    """This probe's saved state, kept only as far as it still applies to ``section``.

    Everything keyed to the endpoint (backlog history, queue URLs, unsupported operations)
    is dropped when region or endpoint change; the last values also when anything in the
    section changes, so a new domain or queue is sampled at once.
    """
    endpoint = fingerprint([section.region, section.endpoint_url])
    config = fingerprint(section)
    out = ProbeState(endpoint=endpoint, config=config)
    if previous is None or previous.endpoint != endpoint:
        return out
    out.levels, out.urls, out.unsupported = previous.levels, previous.urls, previous.unsupported
    if previous.config == config:
        out.sampled_at, out.values, out.units = previous.sampled_at, previous.values, previous.units
    return out


def _due(pstate: ProbeState, now: float, every: float) -> bool:
    last = pstate.sampled_at
    if last is None or now < last:
        return True  # never sampled, or the clock went backwards
    return now - last >= every * (1 - CADENCE_SLACK)


@record
class _Job:
    name: str  # "swf" or "sqs": also the probe attribute of integration.errors
    section: Swf | Sqs
    unit_attr: str  # attribute that sampleAgeSeconds carries
    age_name: str
    sample: Callable[[Any, ProbeRun, float], None]
    planned: Callable[[Any, dict[str, str]], int]


def _jobs(config: Config) -> list[_Job]:
    jobs = []
    if config.swf is not None:
        jobs.append(
            _Job("swf", config.swf, "swf.domain", catalogue.SWF_AGE, swf.sample, swf.planned)
        )
    if config.sqs is not None:
        jobs.append(
            _Job("sqs", config.sqs, "sqs.queue", catalogue.SQS_AGE, sqs.sample, sqs.planned)
        )
    return jobs


# The previous sample's thread per probe: in the long-running mode a thread abandoned at one
# run's deadline may still be waiting on a slow endpoint when the next run starts.
_INFLIGHT: dict[str, threading.Thread] = {}


def _run_probe(job: _Job, run: ProbeRun, now: float) -> None:
    try:
        job.sample(job.section, run, now)
    except Exception as exc:  # a probe bug must cost its metrics, never the run
        run.fail("the probe", f"failed: {type(exc).__name__}: {run.describe(exc)}")


def collect(config: Config, probes: Probes, now: float, deadline: float) -> BacklogOutcome:
    """Sample the due probes (or re-emit their last values) and say what the groups consume.

    ``probes`` is the saved state's ``probes``; this function owns its ``swf`` and ``sqs``.
    ``deadline`` is a ``time.monotonic()`` value the whole run must end by.
    """
    outcome = BacklogOutcome()
    started: list[tuple[_Job, ProbeState, ProbeRun, threading.Thread]] = []
    pstates: dict[str, ProbeState] = {}
    for job in _jobs(config):
        pstate = pstates[job.name] = probe_state(getattr(probes, job.name), job.section)
        setattr(probes, job.name, pstate)
        if not _due(pstate, now, job.section.sample_every):
            continue
        previous = _INFLIGHT.get(job.name)
        if previous is not None and previous.is_alive():
            outcome.errors.append(
                (job.name, f"{job.name} backlog probe: the previous sample is still waiting "
                 "on the endpoint; not sampling this run")
            )  # fmt: skip
            continue
        if time.monotonic() > deadline - EMIT_MARGIN_S - MIN_CALL_S:
            outcome.errors.append(
                (job.name, f"{job.name} backlog probe: run deadline reached before sampling; "
                 "trying again next run")
            )  # fmt: skip
            continue
        section = job.section
        pstate.unsupported = {
            api: until for api, until in pstate.unsupported.items() if now < until
        }
        run = ProbeRun(
            job.name,
            lambda name=job.name, section=section: aws_client(name, section),
            deadline - EMIT_MARGIN_S,
            cache=pstate.urls,
            unsupported=set(pstate.unsupported),
        )
        run.planned = job.planned(section, pstate.urls)
        thread = threading.Thread(
            target=_run_probe, args=(job, run, now), name=f"workerwatch-{job.name}", daemon=True
        )
        _INFLIGHT[job.name] = thread
        thread.start()
        started.append((job, pstate, run, thread))

    for job, pstate, run, thread in started:
        thread.join(max(0.0, deadline - EMIT_MARGIN_S - time.monotonic()))
        in_flight = run.cancel()
        if thread.is_alive() and in_flight is None:
            in_flight = "the client (importing boto3 or resolving credentials)"
        newly_unsupported = []
        if run.succeeded:
            # Other operations worked, so the endpoint is up and only this one is missing.
            suspects = set(run.suspect_unsupported) - run.succeeded - run.unsupported
            newly_unsupported = sorted(suspects)
            for api in newly_unsupported:
                pstate.unsupported[api] = now + UNSUPPORTED_RECHECK_S
        if run.stop_reason is not None or in_flight is not None:
            forget_client(job.name, job.section)  # credentials or connections may be stale
        message = run.summary(in_flight, newly_unsupported)
        if message:
            outcome.errors.append((job.name, message))
        samples = with_stuck(run.samples, pstate.levels, now, config.forget_after)
        pstate.sampled_at = now
        pstate.values = samples
        pstate.units = sorted(
            {str(s.attributes[job.unit_attr]) for s in samples if job.unit_attr in s.attributes}
        )
        pstate.urls = dict(run.cache)

    for job in _jobs(config):
        outcome.metrics.extend(_emitted(job, pstates[job.name], now))
    outcome.group_notes = group_notes(config, outcome.metrics)
    return outcome


def _emitted(job: _Job, pstate: ProbeState, now: float) -> list[MetricSample]:
    if pstate.sampled_at is None:
        return []
    age = max(0.0, now - pstate.sampled_at)
    ages = [MetricSample(job.age_name, age, {job.unit_attr: unit}) for unit in pstate.units]
    return [*pstate.values, *ages]
