"""What leaves the integration: the metric catalogue, the v4 payload, HTTP to New Relic."""
