"""Probes: each reads one kind of evidence and returns typed observations, no verdicts."""
