"""Which file names count as a group's log: the glob itself, and the names rotation gives it."""

from __future__ import annotations

import pytest
from workerwatch.host.log_offsets import is_log_path

LOGS = ["/var/log/app/worker.log"]


@pytest.mark.parametrize(
    "path",
    [
        "/var/log/app/worker.log",
        "/var/log/app/worker.log.1",
        "/var/log/app/worker.log-20261130",  # dateext
        "/var/log/app/worker.log-2026113014",  # dateext with %H
        "/var/log/app/worker.log-2026-11-30",  # dateformat -%Y-%m-%d
        "/var/log/app/worker.log-2026-11-30.gz",  # compress
        "/var/log/app/worker.log.2.gz",
        "/var/log/app/worker.log-20261130.xz (deleted)",
    ],
)
def test_rotated_names_are_still_the_log(path):
    assert is_log_path(path, LOGS)


@pytest.mark.parametrize(
    "path",
    [
        "/var/log/app/worker.log-backup",
        "/var/log/app/worker.log-2026-11",
        "/var/log/app/worker.log.gz.txt",
        "/var/log/app/other.log-2026-11-30",
    ],
)
def test_other_names_are_not(path):
    assert not is_log_path(path, LOGS)
