"""Grafana on master-node (roles/grafana: Settings lists every key and its default)."""

grafana = {
    # Pinned: a Grafana upgrade migrates its database, so it happens only when this line changes.
    # Without apt.grafana.com, use {"source": "offline", "version": ...} with artifacts/grafana/*.deb.
    "install": {"source": "grafana-apt", "version": "11.6.0"},
    # TLS on https_port (plain HTTP then redirects to it): both paths on master-node, e.g.
    # "tls_certificate": "/etc/ssl/certs/grafana.pem", "tls_certificate_key": "/etc/ssl/private/grafana.key",
}
