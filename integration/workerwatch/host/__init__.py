"""The host side: what runs in the forked, sandboxed probe child (``child``): ``/proc``
reading, discovery, and the per-worker probes. Probes return typed observations, never verdicts."""
