"""The swf: and sqs: sections of a proposal, from what the workers show of AWS."""

from __future__ import annotations

import argparse
import re
import socket
from dataclasses import field
from urllib.parse import urlsplit

from workerwatch.commands.discover.render import yaml_quote
from workerwatch.config.model import AWS_REGION
from workerwatch.host import survey
from workerwatch.records import record
from workerwatch.sanitize import redact

_AWS_HOST = re.compile(r"^(swf|sqs)[.-](?:fips[.-])?([a-z]{2}(?:-[a-z]+)+-\d)\.amazonaws\.com")
_QUEUE_HOST = re.compile(r"^([a-z]{2}(?:-[a-z]+)+-\d)\.queue\.amazonaws\.com")


@record
class AwsSeen:
    region: str | None = None
    region_from: str = ""
    endpoint: str | None = None
    endpoint_from: str = ""
    queues: list[str] = field(default_factory=list)
    connected: list[str] = field(default_factory=list)


def _peers_of(url: str) -> set[tuple[str, int]]:
    """The (address, port) pairs a connection to ``url`` would have as its peer."""
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        host = parts.hostname or ""
    except ValueError:
        return set()
    try:
        return {(info[4][0], port) for info in socket.getaddrinfo(host, port, type=1)}
    except OSError:
        return set()


def infer_aws(workers: list[survey.Seen], service: str, named: bool = False) -> AwsSeen:
    """Region and endpoint of ``service`` (swf, sqs) from what the workers show.

    A peer's reverse DNS says nothing reliable about the service, so only what is written
    down counts: the environment's region and endpoint variables, and service URLs in the
    command line or environment; an established connection to such an endpoint's host and
    port confirms it. With ``named`` (the operator named the service's domains or queues),
    any URL in a worker's command line that it is connected to counts as the endpoint.
    """
    seen = AwsSeen()
    variable = f"AWS_ENDPOINT_URL_{service.upper()}"
    for m in workers:
        for key in ("AWS_REGION", "AWS_DEFAULT_REGION"):
            if m.env.get(key) and seen.region is None:
                seen.region, seen.region_from = m.env[key], f"{key} in pid {m.pid}'s environment"
        for key in (variable, "AWS_ENDPOINT_URL"):
            if m.env.get(key) and seen.endpoint is None:
                seen.endpoint, seen.endpoint_from = m.env[key], f"{key} of pid {m.pid}"
        for url in m.urls:
            host = urlsplit(url).hostname or ""
            aws = _AWS_HOST.match(host)
            queue_host = _QUEUE_HOST.match(host)
            if service == "sqs" and (queue_host or (aws and aws.group(1) == "sqs")):
                path = urlsplit(url).path.strip("/").split("/")
                if len(path) == 2 and redact(url) not in seen.queues:
                    seen.queues.append(redact(url))
                region = queue_host.group(1) if queue_host else aws.group(2)  # type: ignore[union-attr]
                if seen.region is None:
                    seen.region, seen.region_from = region, f"the host of {redact(url)}"
            elif service == "swf" and aws and aws.group(1) == "swf":
                if seen.region is None:
                    seen.region, seen.region_from = aws.group(2), f"the host of {redact(url)}"
                if seen.endpoint is None:
                    seen.endpoint = f"{urlsplit(url).scheme}://{urlsplit(url).netloc}"
                    seen.endpoint_from = f"pid {m.pid}'s command line or environment"
    if seen.endpoint is None and named:
        for m in workers:
            for url in m.urls:
                if _peers_of(url) & set(m.peers):
                    seen.endpoint = f"{urlsplit(url).scheme}://{urlsplit(url).netloc}"
                    seen.endpoint_from = f"a URL in pid {m.pid}'s command line or environment"
                    break
            if seen.endpoint:
                break
    if seen.endpoint:
        addresses = _peers_of(seen.endpoint)
        for m in workers:
            if addresses & set(m.peers):
                seen.connected.append(str(m.pid))
    return seen


def aws_lines(workers: list[survey.Seen], ns: argparse.Namespace) -> list[str]:
    lines: list[str] = []
    domains = list(ns.swf_domain or [])
    swf = infer_aws(workers, "swf", named=bool(domains))
    sqs = infer_aws(workers, "sqs", named=bool(ns.sqs_queue))
    if domains or (swf.endpoint and "swf" in (swf.endpoint or "")) or swf.connected:
        lines += _section("swf", swf, domains=domains)
    queues = list(dict.fromkeys([*sqs.queues, *(ns.sqs_queue or [])]))
    if queues:
        lines += _section("sqs", sqs, queues=queues)
    if not lines:
        lines = [
            "# No SWF or SQS endpoint is written in the workers' command lines or environment:",
            "# add swf: / sqs: sections by hand (or rerun with --swf-domain / --sqs-queue).",
        ]
        connected = sorted(
            {redact(u) for m in workers for u in m.urls if _peers_of(u) & set(m.peers)}
        )
        if connected:
            lines.append(f"# The workers are connected to {', '.join(connected[:5])}, named in")
            lines.append("# their command lines: if that is SWF or SQS, the options above use it.")
    return lines


def _section(
    service: str, seen: AwsSeen, domains: list[str] | None = None, queues: list[str] | None = None
) -> list[str]:
    out = [f"{service}:"]
    if seen.region:
        out.append(f"  # from {seen.region_from}")
        out.append(f"  region: {yaml_quote(seen.region)}")
    else:
        out.append(f"  # no region visible in the workers' environment: the default, {AWS_REGION}")
    if seen.endpoint:
        connected = (
            f"; pid(s) {', '.join(seen.connected)} connected to it now" if seen.connected else ""
        )
        out.append(f"  # from {seen.endpoint_from}{connected}")
        out.append(f"  endpoint_url: {yaml_quote(redact(seen.endpoint))}")
    if service == "swf":
        if domains:
            out.append("  # given with --swf-domain (domain names are not visible on the host)")
            out.append("  domains:")
            for name in domains:
                out.append(f"    - name: {yaml_quote(name)}")
            out.append("      # task lists are not visible either: add activity_task_lists")
        else:
            return [
                "# SWF endpoint seen, but domain names are not visible on the host: rerun",
                "# with --swf-domain NAME, or uncomment and complete:",
                *("# " + line for line in out),
                "#   domains:",
                "#     - name: DOMAIN",
            ]
    else:
        out.append("  # queue URLs written in the workers' command lines or environment")
        out.append("  queues:")
        out.extend(f"    - {yaml_quote(q)}" for q in queues or [])
    return out
