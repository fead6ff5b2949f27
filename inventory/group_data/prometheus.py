"""Prometheus (roles/prometheus) for inventory/homelab.py and lab.py alike; the settings users tune (defaults: roles/prometheus Settings)."""

prometheus = {
    "scrape_interval": "15s",
    "evaluation_interval": "15s",
    "retention_time": "30d",
}
