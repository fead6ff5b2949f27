"""Settings shared by every host, in inventory/homelab.py and inventory/lab.py alike.

Each role reads the key named after it (roles/<role>/__init__.py, class Settings, lists the keys
and their defaults); set only what differs from the defaults.
"""

tuning_file = "inventory/tuning.yaml"
# Alert thresholds; the prometheus role refuses them unless alerts/generated/ was rendered from them.
thresholds_file = "alerts/thresholds.yaml"

node_exporter = {
    "listen_port": 9100,
}
