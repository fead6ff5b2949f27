"""alert-relay (roles/alert_relay) on the alert_relay group, for inventory/homelab.py and lab.py alike.

Nothing differs from its defaults (roles/alert_relay/__init__.py, class Settings, which extends the
relay's own RelayTuning). Routes are alerts/routes.yaml; tokens are the vault secrets
slack_bot_token, faxplus_token, alertmanager_webhook_token and fax_webhook_token. Alertmanager and
Prometheus find the relay through homelab.topology, from its `listen` setting.
"""
