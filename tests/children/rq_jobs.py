"""RQ worker classes for the framework tests: the heartbeat hook docs/frameworks.md shows.

Started with ``rq worker -w rq_jobs.BeatingWorker`` (or ``BeatingSimpleWorker``); the jobs
are those of tests/children/jobs.py, queued as ``jobs.<job>``. A test checks that the hook
below is the guide's, character for character.
"""

from __future__ import annotations

# --- heartbeat hook (docs/frameworks.md) ---
from rq.worker import SimpleWorker, Worker
from workerwatch.heartbeat import Heartbeat


class BeatingMixin:
    """Beats once per dequeue and marks the worker busy for the length of each job."""

    def dequeue_job_and_maintain_ttl(self, *args, **kwargs):
        if not hasattr(self, "heartbeat_file"):
            self.heartbeat_file = Heartbeat.from_env()  # worker-<pid>.json
        self.heartbeat_file.beat()
        return super().dequeue_job_and_maintain_ttl(*args, **kwargs)

    def execute_job(self, job, queue):
        with self.heartbeat_file.task(job.func_name, task_id=job.id):
            return super().execute_job(job, queue)


class BeatingWorker(BeatingMixin, Worker):
    """The default worker: forks a work horse per job; the file belongs to the parent."""


class BeatingSimpleWorker(BeatingMixin, SimpleWorker):
    """Runs each job in its own process."""


# --- end of heartbeat hook ---
