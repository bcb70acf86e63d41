"""The fleet: autoscaler requests, node departures, spot fallback, drains and the cluster launcher config."""
