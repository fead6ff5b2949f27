"""The reference cluster (the original notes' machines).

master-node's address is a placeholder: set MASTER_NODE_ADDRESS or edit it here before deploying.
Everything about a node that is not its address lives in group_data/, shared with inventory/lab.py.
"""

import os as _os

# Placeholder from the original notes, which never recorded master-node's address.
_MASTER_NODE_ADDRESS = _os.environ.get("MASTER_NODE_ADDRESS", "192.168.1.10")

# The real secrets: an ansible-vault file in the repo, its password outside it (secrets/README.md).
_VAULT = {
    "vault_file": "secrets/homelab.vault.yml",
    "vault_password_file": _os.environ.get("HOMELAB_VAULT_PASSWORD_FILE", "~/.config/homelab-ops/vault-password"),
}

_master_node = ("master-node", {"ssh_hostname": _MASTER_NODE_ADDRESS, **_VAULT})
_worker_node_11 = ("worker-node-11", {"ssh_hostname": "192.168.1.11", **_VAULT})
_worker_node_12 = ("worker-node-12", {"ssh_hostname": "192.168.1.12", **_VAULT})
_worker_node_14 = ("worker-node-14", {"ssh_hostname": "192.168.1.14", **_VAULT})

grafana = [_master_node]
nginx = [_master_node]
loki = [_worker_node_11]
toy_redis = [_worker_node_12]
log_shipper = [_worker_node_12]
prometheus = [_worker_node_14]
blackbox = [_worker_node_14]
alertmanager = [_worker_node_14]
alert_relay = [_worker_node_14]
