"""The queue side: SWF and SQS backlog probes, their AWS client and fault handling, and
their cadence (``cadence.collect`` is the entry point)."""
