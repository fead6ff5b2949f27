"""Alertmanager (roles/alertmanager) for inventory/homelab.py and lab.py alike: nothing differs from its defaults.

Routing itself is in alerts/routes.yaml. By default notifications go to the first alert_relay
host's webhook (homelab.topology finds its address and listen port) with the bearer token from the
vault secret alertmanager_webhook_token; set alertmanager = {"webhook_url": ...} here to send them
elsewhere.
"""
