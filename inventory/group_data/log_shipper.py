"""Log shipping on worker-node-12: which shipper, and its settings.

`log_shipper` picks the role applied to this group: "promtail" or "alloy" (Promtail reached end of
life; Alloy replaces it). Switching stops the other one. Both read toy-redis's log and push to Loki.
"""

log_shipper = "promtail"

# Pinned; without apt.grafana.com use {"source": "offline", "version": ...} with artifacts/<name>/*.deb.
promtail = {
    "install": {"source": "grafana-apt", "version": "3.5.0"},
}

alloy = {
    "install": {"source": "grafana-apt", "version": "1.10.0"},
}
