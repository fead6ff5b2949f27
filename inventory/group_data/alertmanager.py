"""Alertmanager (roles/alertmanager) for inventory/homelab.py and lab.py alike.

Routing itself is in alerts/routes.yaml. By default notifications go to the first alert_relay
host's webhook (http://<host>:9095/alertmanager) with the bearer token from the vault secret
alertmanager_webhook_token; set webhook_url / webhook_token_file here to send them elsewhere.
"""

alertmanager = {
    "listen_port": 9093,
}
