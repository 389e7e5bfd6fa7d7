"""What the fleet's programs share: elife-bot's log format, the SWF client, dying with parents."""

from __future__ import annotations

import ctypes
import logging
import logging.handlers
import os
import signal
import time
from collections.abc import Mapping
from typing import Any

REGION = "us-east-1"
TASK_LIST = "DefaultTaskList"
CANARY_WORKFLOW_ID = "cron_FiveMinute"
# Set by the fleet in every child's environment: the pid the child must die with.
PARENT_ENV = "WORKERWATCH_DEMO_PARENT"
PR_SET_PDEATHSIG = 1
# moto answers an empty poll after holding it one second (it has no 60 s long poll), so a
# read timeout of a few seconds is plenty and keeps shutdown quick. Real workers need at
# least 70 s: SWF holds PollForActivityTask up to 60 s (elife-bot uses read_timeout=70).
POLL_READ_TIMEOUT = 5.0
LOG_DATE_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

# Activity types and the SWF timeouts they are registered with (seconds, as strings). The
# FTPArticle values are elife-bot's (workflow_FTPArticle.py); the rest use its 5-minute
# default (workflow/helper.py). moto only enforces the heartbeat timeout, and the demo
# ends long before any of them.
ACTIVITIES: dict[str, dict[str, str]] = {
    "PingWorker": {"heartbeat": "300", "schedule_to_start": "300", "start_to_close": "300"},
    "ExpandArticle": {"heartbeat": "300", "schedule_to_start": "300", "start_to_close": "300"},
    "ConvertJATS": {"heartbeat": "300", "schedule_to_start": "300", "start_to_close": "300"},
    "DepositCrossref": {"heartbeat": "300", "schedule_to_start": "300", "start_to_close": "300"},
    "FTPArticle": {"heartbeat": "1800", "schedule_to_start": "300", "start_to_close": "7200"},
}
# Workflow type -> the activities its decider schedules, one after the other.
WORKFLOWS: dict[str, list[str]] = {
    "Ping": ["PingWorker"],
    "PublishArticle": ["ExpandArticle", "ConvertJATS", "DepositCrossref"],
    "FTPArticle": ["FTPArticle"],
}


def die_with_parent() -> None:
    """Have the kernel SIGKILL this process when the one that started it exits.

    A demo interrupted hard (SIGKILL, a crashed test run) must not leave a fleet behind;
    the hung worker in particular would never exit by itself.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    expected = os.environ.get(PARENT_ENV)
    # The parent may have died between our fork and the prctl call.
    if expected and os.getppid() != int(expected):
        os._exit(1)


def elife_logger(filename: str, identity: str) -> logging.Logger:
    """elife-bot's log.py: one shared file in the working directory, identity in each line.

    ``2021-01-28T22:01:02Z INFO worker_25690 polling for activity...``. elife-bot formats
    local time under a hard-coded ``Z``; the converter here makes the ``Z`` true anywhere.
    """
    logger = logging.getLogger(identity)
    handler = logging.handlers.WatchedFileHandler(os.path.join(os.getcwd(), filename))
    formatter = logging.Formatter(
        "%(asctime)s %(levelname)s " + identity + " %(message)s", LOG_DATE_FORMAT
    )
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def swf_client(
    endpoint_url: str,
    read_timeout: float = POLL_READ_TIMEOUT,
    env: Mapping[str, str] | None = None,
) -> Any:
    """A boto3 SWF client for the endpoint; credentials from ``env``, else the environment."""
    import boto3
    from botocore.config import Config

    keys = {}
    if env and env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        keys = {
            "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
        }
    return boto3.client(
        "swf",
        region_name=REGION,
        endpoint_url=endpoint_url,
        **keys,
        config=Config(
            connect_timeout=2,
            read_timeout=read_timeout,
            retries={"mode": "standard", "max_attempts": 2},
        ),
    )


class Flag:
    """elife-bot's provider/process.py: SIGTERM only asks the loop to stop after this turn.

    A worker blocked in a socket read never gets back to the check, which is why systemd
    has to SIGKILL a hung worker after ``TimeoutStopSec``.
    """

    def __init__(self) -> None:
        self.green = True
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)

    def _stop(self, signum: int, frame: Any) -> None:
        self.green = False
