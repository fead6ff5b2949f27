"""Prometheus (roles/prometheus) for inventory/homelab.py and lab.py alike: what differs from its defaults."""

prometheus = {
    "retention_time": "30d",
}
