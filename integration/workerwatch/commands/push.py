"""``nri-workerwatch push``: collect and send to the Metric and Event APIs, without the agent.

The license key comes from ``NEW_RELIC_LICENSE_KEY`` only (never a flag, so it is not in
``ps``). The transport rules are ``output.ingest_api``'s.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from workerwatch import log
from workerwatch.commands import common
from workerwatch.output.ingest_api import (
    DEFAULT_QUEUE,
    EVENT_URLS,
    LICENSE_ENV,
    METRIC_URLS,
    AuthRefused,
    Sender,
    event_records,
    host_attributes,
)
from workerwatch.sanitize import redact
from workerwatch.units import parse_duration

ACCOUNT_ENV = "NEW_RELIC_ACCOUNT_ID"
REGION_ENV = "NEW_RELIC_REGION"


def _urls(ns: argparse.Namespace, env: dict[str, str]) -> tuple[str, str | None]:
    region = (ns.region or env.get(REGION_ENV) or "US").upper()
    if region not in METRIC_URLS:
        log.fatal(f"--region must be US or EU, got {region!r}")
        raise SystemExit(1)
    metric_url = ns.metric_url or METRIC_URLS[region]
    account = ns.account_id or env.get(ACCOUNT_ENV)
    template = ns.event_url or EVENT_URLS[region]
    event_url: str | None
    if "{account_id}" in template:
        if account and account.strip().isdigit():
            event_url = template.replace("{account_id}", account.strip())
        else:
            log.warn(
                f"events are not sent: the Event API needs the account id in its URL; set "
                f"{ACCOUNT_ENV} or --account-id (metrics are sent either way)"
            )
            event_url = None
    else:
        event_url = template
    for url in (metric_url, event_url):
        if url is None:
            continue
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            log.fatal(f"endpoint {url!r} is not an http(s) URL")
            raise SystemExit(1)
        loopback = parts.hostname in ("localhost", "127.0.0.1", "::1")
        if parts.scheme == "http" and not loopback:
            log.warn(f"endpoint {parts.netloc} is plain http: the license key travels unencrypted")
    return metric_url, event_url


def _labels(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            log.fatal(f"--label expects key=value, got {pair!r}")
            raise SystemExit(1)
        out[key.strip()] = value.strip()
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nri-workerwatch push",
        description=(
            f"Send the metrics to the Metric API and the events to the Event API, without "
            f"the agent. The license key is read from {LICENSE_ENV} only."
        ),
    )
    common.add_common_flags(parser)
    parser.add_argument("--interval", default="30s", help="time between pushes (default 30s)")
    parser.add_argument("--once", action="store_true", help="collect and push once, then exit")
    parser.add_argument("--region", default=None, help=f"US or EU (default: {REGION_ENV}, US)")
    parser.add_argument("--account-id", default=None, help=f"for the Event API ({ACCOUNT_ENV})")
    parser.add_argument("--metric-url", default=None, help="override the Metric API URL")
    parser.add_argument(
        "--event-url", default=None,
        help="override the Event API URL ('{account_id}' is replaced)",
    )  # fmt: skip
    parser.add_argument(
        "--label", action="append", default=[], metavar="KEY=VALUE",
        help="add label.KEY=VALUE to every metric and event (like the agent's labels:)",
    )  # fmt: skip
    parser.add_argument(
        "--queue", type=int, default=DEFAULT_QUEUE,
        help=f"batches kept while the endpoint is down (default {DEFAULT_QUEUE})",
    )  # fmt: skip
    parser.add_argument("--timeout", default="10s", help="HTTP read timeout (default 10s)")
    return parser


def main(argv: Sequence[str]) -> int:
    ns = build_parser().parse_args(list(argv))
    log.set_verbose(bool(ns.verbose))
    env = dict(os.environ)
    key = env.get(LICENSE_ENV, "").strip()
    if not key:
        log.fatal(f"set {LICENSE_ENV} to an ingest License key (it is never taken as a flag)")
        return 1
    try:
        interval = parse_duration(ns.interval)
        timeout = parse_duration(ns.timeout)
    except ValueError as exc:
        log.fatal(f"push: {exc}")
        return 1
    metric_url, event_url = _urls(ns, env)
    labels = _labels(ns.label)
    config = common.load_config_or_exit(ns.config, ns.state_dir)

    from workerwatch.collector import Collector
    from workerwatch.commands.loop import Stopper, run_loop
    from workerwatch.output.v4 import all_metrics
    from workerwatch.state import RESIDENT_WRITE_EVERY, RESIDENT_WRITE_GAP, FileStateStore

    collector = Collector(config, resident=not ns.once)
    attrs = host_attributes(labels)
    stopper = Stopper()
    sender = Sender(
        key, metric_url, event_url, timeout=timeout, queue_size=ns.queue, sleep=stopper.wait
    )

    def collect_into(store: Any) -> None:
        result = collector.collect(store)
        result.errors.update(sender.errors)
        sender.errors.clear()
        if result.interval_s is None:
            result.interval_s = interval
        common = {
            "timestamp": int(result.now * 1000),
            "interval.ms": int(result.interval_s * 1000),
            "attributes": attrs,
        }
        sender.add_metrics(all_metrics(result), common)
        sender.add_events(event_records(result.events, result.now, attrs))

    try:
        if ns.once:
            with FileStateStore(config.state_dir) as store:
                collect_into(store)
            report = sender.flush(final=True)
            log.debug(f"push: {report.sent} batches sent, {report.dropped} dropped")
            return 0 if report.dropped == 0 and not sender.errors else 1

        stopper.install()
        with FileStateStore(
            config.state_dir, write_every=RESIDENT_WRITE_EVERY, write_gap=RESIDENT_WRITE_GAP
        ) as store:

            def cycle(_n: int) -> None:
                stopper.interruptible = True
                try:
                    collect_into(store)
                finally:
                    stopper.interruptible = False
                report = sender.flush()
                if report.pending:
                    log.warn(f"push: {report.pending} batches waiting for the endpoint")

            stats = run_loop(stopper, interval, cycle, heartbeat=None, fatal=(AuthRefused,),
                             kept_child=lambda: collector.host_child)  # fmt: skip
        log.info(f"push: stopped after {stats.summary()}")
        return 0
    except AuthRefused as exc:
        log.fatal(redact(str(exc), (key,)))
        return 1
    finally:
        stopper.close()
        collector.close()
