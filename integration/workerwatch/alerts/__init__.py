"""Alert policy and dashboard definitions as code: plan, apply and Terraform export.

The definitions live in ``definitions/alerts/*.yml`` and ``definitions/dashboards/*.yml``.
``nri-workerwatch alerts|dashboards plan|apply`` reconciles them with an account through
NerdGraph; ``... terraform`` writes the same resources as HCL.

This package is reached only through those subcommands. The agent's one-shot collection
path never imports it, and nothing here imports ``requests`` until a request is made.
"""

from __future__ import annotations

TOOL = "nri-workerwatch"

# The marker that says "this resource belongs to nri-workerwatch". It lives in the description
# of NRQL conditions and dashboards: that field is read back by the same query the diff uses,
# so ownership needs no extra call and is visible to a person in the UI.
MANAGED_MARKER = f"managed-by: {TOOL}"
MANAGED_NOTE = (
    f"{MANAGED_MARKER} (edit its definitions/, not this resource: "
    "the next apply reverts changes made here)"
)


def is_managed(description: str | None) -> bool:
    return bool(description) and MANAGED_MARKER in str(description)


def with_marker(text: str) -> str:
    text = text.strip()
    return f"{text}\n\n{MANAGED_NOTE}" if text else MANAGED_NOTE
