"""Loki on worker-node-11 (roles/loki: Settings lists every key and its default)."""

loki = {
    # Pinned; without apt.grafana.com use {"source": "offline", "version": ...} with artifacts/loki/*.deb.
    "install": {"source": "grafana-apt", "version": "3.5.0"},
    "retention": "31d",
}
