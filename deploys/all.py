"""Everything, everywhere: `pyinfra -y inventory/<name>.py deploys/all.py` (run from the repo root).

Each host gets the roles homelab.topology assigns it: the base roles on every host, the others by
the inventory groups it is in (and, for the log_shipper group, the shipper its data chooses), in
the order of homelab.topology.ROLES. A bad settings file stops the run while operations are being
prepared, before any host is changed.

To apply only some roles: `--data only_roles=nginx,grafana`. A run that changed a host ends by
stamping it (roles.node_exporter.stamp_deploy), which `homelab status` shows as its last deploy.
"""

from importlib import import_module

from pyinfra import host

from roles.common import current_topology
from roles.node_exporter import stamp_deploy

only = host.data.get("only_roles")
wanted = set(only.split(",")) if only else None

for role_name in current_topology().roles_of(host.name):
    if wanted is None or role_name in wanted:
        import_module(f"roles.{role_name}").apply()

stamp_deploy()
