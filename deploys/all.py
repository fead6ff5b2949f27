"""Everything, everywhere: `pyinfra -y inventory/<name>.py deploys/all.py` (run from the repo root).

Every host gets the base roles; the other roles follow the inventory groups a host is in, in the
order of GROUP_ROLES. A bad settings file stops the run while operations are being prepared,
before any host is changed.

To apply only some roles: `--data only_roles=nginx,grafana`.
"""

from importlib import import_module

from pyinfra import host

from roles.promtail import DEFAULT_LOG_SHIPPER

BASE_ROLES = ["base", "tuning", "node_exporter"]

# inventory group -> role module under roles/, in the order they are applied on a host.
# nginx before grafana: Grafana's site is checked against the installed nginx. The relay before
# Alertmanager, whose webhook points at it; Prometheus last, once what it scrapes exists.
GROUP_ROLES = {
    "nginx": "nginx",
    "grafana": "grafana",
    "loki": "loki",
    "toy_redis": "toy_redis",
    "log_shipper": host.data.get("log_shipper", DEFAULT_LOG_SHIPPER),  # "promtail" or "alloy"
    "alert_relay": "alert_relay",
    "alertmanager": "alertmanager",
    "blackbox": "blackbox",
    "prometheus": "prometheus",
}

only = host.data.get("only_roles")
wanted = set(only.split(",")) if only else None

for role_name in BASE_ROLES + [role for group, role in GROUP_ROLES.items() if group in host.groups]:
    if wanted is None or role_name in wanted:
        import_module(f"roles.{role_name}").apply()
