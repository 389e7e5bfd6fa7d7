"""A real Celery app for the framework tests (tests/frameworks.py starts its workers).

The broker is the Redis in ``CELERY_BROKER_URL``; there is no result backend. The tasks are
the jobs of tests/children/jobs.py, named ``celery_app.<job>``.

The heartbeat hook below is the one docs/frameworks.md shows (a test checks they are equal).
"""

from __future__ import annotations

import os

import jobs
from celery import Celery

app = Celery("celery_app", broker=os.environ.get("CELERY_BROKER_URL"))
app.conf.update(
    broker_connection_retry_on_startup=True,
    # One job at a time per pool process, and acknowledged when done: a long job does not
    # hold back queued ones in its process's prefetch.
    worker_prefetch_multiplier=1,
    task_acks_late=True,
)
for job in (jobs.quick, jobs.cpu, jobs.hang, jobs.child):
    app.task(name=f"celery_app.{job.__name__}")(job)


# --- heartbeat hook (docs/frameworks.md) ---
from celery import signals  # noqa: E402
from workerwatch.heartbeat import Heartbeat  # noqa: E402

heartbeat = Heartbeat.from_env()  # one file per process: worker-<pid>.json
_running = {}


@signals.worker_process_init.connect
def _pool_process_started(**_):
    heartbeat.beat()  # a prefork pool process says "idle" once it is ready


@signals.task_prerun.connect
def _task_started(task_id=None, task=None, **_):
    scope = heartbeat.task(task.name, task_id=task_id)
    scope.__enter__()
    _running[task_id] = scope


@signals.task_postrun.connect
def _task_finished(task_id=None, **_):
    scope = _running.pop(task_id, None)
    if scope is not None:
        scope.__exit__(None, None, None)


# --- end of heartbeat hook ---
