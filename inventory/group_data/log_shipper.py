"""Log shipping on worker-node-12: which shipper, and its settings.

`log_shipper` picks the role applied to this group: "alloy" (the default) or "promtail" (reached end
of life on 2026-03-02; still applied, with a warning). Switching stops the other one. Both read
toy-redis's log and push to Loki.
"""

log_shipper = "alloy"

# Pinned to release versions; without apt.grafana.com use {"source": "offline", "version": ...} with
# the release asset in artifacts/<name>/ (its name: roles/<name>/package.py, e.g. alloy-1.10.0-1.amd64.deb).
alloy = {
    "install": {"source": "grafana-apt", "version": "1.10.0"},
}

promtail = {
    "install": {"source": "grafana-apt", "version": "3.5.0"},
}
