"""The incident on one machine: a simulated elife-bot fleet on loopback, for the demo and tests.

Nothing here is part of the integration. moto (SWF in server mode) and boto3 come from the
``test`` extra; the worker, decider and cron programs are written the way elife-bot's are
(see /work/shared/reference/elife_bot_and_swf.md), so the integration watches them exactly
as it would watch the real fleet: by their command lines, their open log files, their
heartbeat files and their main threads.

* :mod:`demo.fleet`    start and stop the whole fleet; inject the hanging FTP task
* :mod:`demo.agent`    run the integration the way the agent does (one-shot, every interval)
* :mod:`demo.worker`   the worker program (one process per worker)
* :mod:`demo.decider`  the decider program
* :mod:`demo.cron`     the cron-like starter (the ``Ping`` canary and the article feed)
* :mod:`demo.run`      ``make demo``: the scripted replay with the operator's status table
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
