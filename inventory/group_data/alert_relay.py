"""alert-relay (roles/alert_relay) on the alert_relay group, for inventory/homelab.py and lab.py alike.

Keys and defaults: roles/alert_relay/__init__.py, class Settings. Routes are alerts/routes.yaml;
tokens are the vault secrets slack_bot_token, faxplus_token, alertmanager_webhook_token and
fax_webhook_token. Alertmanager finds the relay from `listen`'s port.
"""

alert_relay = {
    "listen": "0.0.0.0:9095",
    "routes": "alerts/routes.yaml",
}
