"""The reference cluster (the original notes' machines).

master-node's address is a placeholder: set MASTER_NODE_ADDRESS or edit it here before deploying.
Everything about a node that is not its address lives in group_data/, shared with inventory/lab.py.
"""

import os as _os

# Placeholder from the original notes, which never recorded master-node's address.
_MASTER_NODE_ADDRESS = _os.environ.get("MASTER_NODE_ADDRESS", "192.168.1.10")

_master_node = ("master-node", {"ssh_hostname": _MASTER_NODE_ADDRESS})
_worker_node_11 = ("worker-node-11", {"ssh_hostname": "192.168.1.11"})
_worker_node_12 = ("worker-node-12", {"ssh_hostname": "192.168.1.12"})
_worker_node_14 = ("worker-node-14", {"ssh_hostname": "192.168.1.14"})

grafana = [_master_node]
nginx = [_master_node]
loki = [_worker_node_11]
toy_redis = [_worker_node_12]
log_shipper = [_worker_node_12]
prometheus = [_worker_node_14]
blackbox = [_worker_node_14]
alertmanager = [_worker_node_14]
alert_relay = [_worker_node_14]
