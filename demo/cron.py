"""The cron-like starter: the ``Ping`` canary (workflowId ``cron_FiveMinute``) and the article feed.

elife-bot's cron.py starts ``Ping`` as ``cron_FiveMinute`` every five minutes, and only when
the previous one has closed. Here the same canary runs every ``--ping-every`` seconds, and
SWF's own rule does the "only when closed" part: a workflow id that is still open cannot be
started again (WorkflowExecutionAlreadyStartedFault). So when every worker is hung, the
open Ping is never completed, no new one starts, and the canary's age keeps growing.

The article feed stands in for queue_workflow_starter: a ``PublishArticle`` workflow every
``--articles-every`` seconds, so the workers have real work between polls.

Usage: python -m demo.cron --fleet TAG --endpoint URL --domain NAME [--ping-every S]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Sequence

from demo.common import (
    CANARY_WORKFLOW_ID,
    TASK_LIST,
    Flag,
    die_with_parent,
    elife_logger,
    swf_client,
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="demo.cron")
    parser.add_argument("--fleet", required=True)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--domain", required=True)
    parser.add_argument("--ping-every", type=float, default=4.0)
    parser.add_argument("--articles-every", type=float, default=5.0)
    args = parser.parse_args(argv)
    die_with_parent()

    logger = elife_logger("cron.log", f"cron_{random.randint(10000, 99999)}")
    client = swf_client(args.endpoint)
    flag = Flag()
    next_ping = next_article = time.monotonic()
    while flag.green:
        now = time.monotonic()
        if now >= next_ping:
            next_ping = now + args.ping_every
            try:
                client.start_workflow_execution(
                    domain=args.domain,
                    workflowId=CANARY_WORKFLOW_ID,
                    workflowType={"name": "Ping", "version": "1"},
                    taskList={"name": TASK_LIST},
                    input="{}",
                )
                logger.info("started Ping as %s", CANARY_WORKFLOW_ID)
            except client.exceptions.WorkflowExecutionAlreadyStartedFault:
                logger.info("%s is still open: not started again", CANARY_WORKFLOW_ID)
            except Exception as exc:
                logger.error("starting Ping failed: %s", exc)
        if args.articles_every > 0 and now >= next_article:
            next_article = now + args.articles_every
            article = f"{random.randint(10000, 99999)}"
            try:
                client.start_workflow_execution(
                    domain=args.domain,
                    workflowId=f"PublishArticle-{article}-{time.time_ns()}",
                    workflowType={"name": "PublishArticle", "version": "1"},
                    taskList={"name": TASK_LIST},
                    input=json.dumps({"article": article}),
                )
                logger.info("started PublishArticle for article %s", article)
            except Exception as exc:
                logger.error("starting PublishArticle failed: %s", exc)
        # Short naps: a SIGTERM only sets the flag, so the loop must come back to it soon.
        time.sleep(min(0.25, max(0.05, min(next_ping, next_article) - time.monotonic())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
