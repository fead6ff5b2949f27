"""The reference cluster as local systemd-nspawn nodes (`lab up inventory/lab.py`).

Same host names and groups as inventory/homelab.py, so every deploy runs unchanged against either.
Addresses come from the lab subnet (HOMELAB_LAB_SUBNET, default 10.77.0.0/24). Every node runs
Debian 13 (the default release); `debian_release=12` on a host boots it as Debian 12 instead.
"""

from homelab.lab.settings import lab_host

_master_node = lab_host("master-node", 10)
_worker_node_11 = lab_host("worker-node-11", 11)
_worker_node_12 = lab_host("worker-node-12", 12)
_worker_node_14 = lab_host("worker-node-14", 14)

# Groups are named by role; a host's roles are the groups it is in (see deploys/all.py).
grafana = [_master_node]
nginx = [_master_node]
loki = [_worker_node_11]
toy_redis = [_worker_node_12]
log_shipper = [_worker_node_12]
prometheus = [_worker_node_14]
blackbox = [_worker_node_14]
alertmanager = [_worker_node_14]
alert_relay = [_worker_node_14]
