"""The reference cluster as local systemd-nspawn nodes (`lab up inventory/lab.py`).

The same hosts in the same groups as inventory/homelab.py, read from it, so every deploy runs
unchanged against either. Only each host's data differs: a lab address from the lab subnet
(HOMELAB_LAB_SUBNET, default 10.77.0.0/24; _LAB_INDEX gives each host's place in it, so a host
added to homelab.py needs a line there), the lab's SSH keys and its test vault
(homelab.lab.settings.lab_host). Every node runs Debian 13, the default release; lab_host's
`debian_release=12` boots a node as Debian 12 instead.
"""

import runpy as _runpy
from pathlib import Path as _Path

from homelab.lab.settings import lab_host as _lab_host

# Host -> its address's last number in the lab subnet (10 upward: room below for the host machine).
_LAB_INDEX = {"master-node": 10, "worker-node-11": 11, "worker-node-12": 12, "worker-node-14": 14}

_cluster = _runpy.run_path(str(_Path(__file__).with_name("homelab.py")))
_unplaced = sorted({name for members in _cluster.values() if isinstance(members, list) for name, _data in members}
                   - set(_LAB_INDEX))
if _unplaced:
    raise ValueError(f"inventory/lab.py: _LAB_INDEX: expected a lab address index for {', '.join(_unplaced)}")
_lab_nodes = {name: _lab_host(name, index) for name, index in _LAB_INDEX.items()}
# Each of homelab.py's groups (module-level lists of hosts), with its hosts as lab nodes.
globals().update({
    group: [_lab_nodes[name] for name, _data in members]
    for group, members in _cluster.items()
    if not group.startswith("_") and isinstance(members, list)
})
