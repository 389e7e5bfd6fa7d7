"""A queue worker written like elife-bot's worker.py: poll, log, run the activity, respond.

One process, one thread, one synchronous loop. Every poll is logged (an idle worker writes a
line a second here, because moto answers an empty poll after one second), and so is every
task. The activity runs in the loop itself with no watchdog, exactly the shape that let
one hung FTP connection stop a worker for good.

``--heartbeat DIR`` adds the three lines of the heartbeat library (a beat per poll, the task
wrapped in ``hb.task``); without it the worker is log-only, as elife-bot's are.

Usage: python -m demo.worker --fleet TAG --endpoint URL --domain NAME [--heartbeat DIR]
(``--fleet`` only makes the command line unique, so the integration matches this fleet.)
"""

from __future__ import annotations

import argparse
import contextlib
import ftplib
import hashlib
import json
import logging
import os
import random
import time
from collections.abc import Sequence
from typing import Any

from demo.common import TASK_LIST, Flag, die_with_parent, elife_logger, swf_client


def ftp_article(data: dict[str, Any], logger: logging.Logger) -> str:
    """elife-bot's activity_FTPArticle.ftp_to_endpoint: ftplib with no timeout anywhere."""
    host, port = data["ftp_host"], int(data["ftp_port"])
    logger.info("FTPArticle: connecting to ftp://%s:%s for article %s", host, port, data["article"])
    # As in elife-bot: FTP() then connect(), no timeout argument and no socket default, so
    # the socket blocks forever. connect() waits for the server's greeting, which a
    # server that accepts and never answers never sends. (elife-bot's FTP_URI uses port
    # 21; the demo's server listens on a free loopback port, hence the explicit port.)
    ftp = ftplib.FTP()
    ftp.connect(host, port)
    ftp.login("elife", "not-a-real-password")
    ftp.quit()
    return "uploaded"


def article_step(name: str, data: dict[str, Any], logger: logging.Logger) -> str:
    """An ordinary activity: a little CPU and a little waiting, with progress in the log."""
    logger.info("%s: article %s started", name, data.get("article"))
    digest = hashlib.sha256()
    for _ in range(random.randint(2, 4)):
        digest.update(os.urandom(256 * 1024))
        time.sleep(random.uniform(0.1, 0.25))
        logger.info("%s: article %s progress %s", name, data.get("article"), digest.hexdigest()[:8])
    return digest.hexdigest()


def run_activity(name: str, data: dict[str, Any], logger: logging.Logger) -> str:
    if name == "FTPArticle":
        return ftp_article(data, logger)
    if name == "PingWorker":
        return "pong"
    return article_step(name, data, logger)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="demo.worker")
    parser.add_argument("--fleet", required=True)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--domain", required=True)
    parser.add_argument("--heartbeat", default=None, metavar="DIR")
    args = parser.parse_args(argv)
    die_with_parent()

    identity = f"worker_{os.getpid()}"
    logger = elife_logger("worker.log", identity)
    hb = None
    if args.heartbeat:
        from workerwatch.heartbeat import Heartbeat

        hb = Heartbeat(os.path.join(args.heartbeat, "worker-{pid}.json"))
    client = swf_client(args.endpoint)
    flag = Flag()
    logger.info("worker started (heartbeat library: %s)", "yes" if hb else "no")
    while flag.green:
        if hb is not None:
            hb.beat()
        logger.info("polling for activity...")
        try:
            task = client.poll_for_activity_task(
                domain=args.domain, taskList={"name": TASK_LIST}, identity=identity
            )
        except Exception as exc:  # the endpoint going away must not kill the loop
            logger.error("poll failed: %s", exc)
            time.sleep(1)
            continue
        token = task.get("taskToken")
        if not token:
            logger.info("got activity: none")
            continue
        name = task["activityType"]["name"]
        logger.info(
            "got activity: %s %s of %s",
            name,
            task["activityId"],
            task["workflowExecution"]["workflowId"],
        )
        data = json.loads(task.get("input") or "{}")
        scope = hb.task(name, task_id=task["activityId"]) if hb else contextlib.nullcontext()
        try:
            with scope:
                result = run_activity(name, data, logger)
        except Exception:
            logger.error("error executing activity %s", name, exc_info=True)
            with contextlib.suppress(Exception):
                client.respond_activity_task_failed(taskToken=token, reason="error")
            continue
        try:
            client.respond_activity_task_completed(taskToken=token, result=result)
            logger.info("activity %s completed", name)
        except Exception as exc:
            logger.error("respond_activity_task_completed failed: %s", exc)
    logger.info("worker stopping")
    if hb is not None:
        hb.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
