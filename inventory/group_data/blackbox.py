"""blackbox_exporter (roles/blackbox) for inventory/homelab.py and lab.py alike.

It probes every health path the roles declare (homelab.topology.ROLES: nginx, Loki, the relay,
Alertmanager, Prometheus) on every host serving them, with the http_2xx module; set `modules` or
`health_module` here to change how.
"""
