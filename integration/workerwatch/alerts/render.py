"""The plan as text: one line per resource, one indented line per changed field."""

from __future__ import annotations

from workerwatch.alerts.diff import show
from workerwatch.alerts.plan import CREATE, DELETE, NOOP, REPLACE, SKIP, SYMBOL, UPDATE, Plan


def render(plan: Plan, what: str) -> list[str]:
    lines = [f"Account {plan.account_id}: {what}"]
    for change in plan.changes:
        ident = (
            f" ({'guid' if change.kind == 'dashboard' else 'id'} {change.id})" if change.id else ""
        )
        if change.action == NOOP:
            lines.append(f"  = {change.kind} {change.name!r}{ident}: unchanged")
            continue
        head = f"  {SYMBOL[change.action]} {change.action} {change.kind} {change.name!r}{ident}"
        lines.append(f"{head}: {change.note}" if change.note else head)
        for path, old, new in change.fields:
            if change.action in (CREATE, REPLACE) and old is None:
                lines.append(f"      {path}: {show(new)}")
            else:
                lines.append(f"      {path}: {show(old)} -> {show(new)}")
    for note in plan.notes:
        lines.append(f"  note: {note}")
    counts = ", ".join(
        f"{plan.count(a)} to {a}" for a in (CREATE, UPDATE, REPLACE, DELETE) if plan.count(a)
    )
    unchanged, skipped = plan.count(NOOP), plan.count(SKIP)
    summary = counts or "no changes"
    lines.append(f"Plan: {summary}; {unchanged} unchanged, {skipped} skipped (not managed).")
    return lines
